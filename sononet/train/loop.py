"""The training loop shared by every registered model.

AdamW with a linear warm-up, gradient clipping, ReduceLROnPlateau and early stopping on the
validation score (UA by default); SpecAugment and noise (``augment``); statistics from the
training split only (``normalize``); bf16 autocast on CUDA; a checkpoint after every epoch
holding model, optimiser, scheduler, early-stopping and RNG state, so ``resume=True``
continues exactly where a killed run stopped; DDP when launched by torchrun (``ddp``).
SIGTERM (:mod:`sononet.stopping`) stops after the current optimizer step (or batch of the
end-of-epoch passes) with a checkpoint of that step: the resume continues mid-epoch, skipping
the batches already trained, and ends with the same weights as an uninterrupted run.

Why these choices (measured on RAVDESS with actor-grouped folds, ``results/ravdess``): on a
corpus of a few hundred clips an epoch is a dozen steps, so BatchNorm's running statistics
(momentum 0.1) still remember their initial values after the first epochs and the model in
eval mode answers one class; ``bn_recalibrate`` recomputes them from the training clips each
epoch. Validation loss on a few speakers rises early while accuracy still climbs (the model
grows confident on the voices it knows), so selecting and stopping on it kept epoch-1
models; UA, with a minimum number of epochs, keeps the model that recognises emotions.
With 16 training voices, most of what tells clips apart is who speaks; removing each speaker's
mean log-mel (``speaker_norm``, ``features/normalize.py``) raised validation UA by 10 points.
With so few voices, four more help as well: a refit (``train/refit.py``) trains again on the
training and validation speakers for the epochs chosen on validation. ``ema_epochs`` validates a
moving average of the weights instead; it helped without a refit but not beside one, so it is off.

The pieces live beside this file: the knobs in ``config.py``, the checkpoint and the loop's
:class:`~sononet.train.checkpoint.TrainState` in ``checkpoint.py``, validation and BatchNorm
passes in ``passes.py``, scoring a trained model in ``predict.py``.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from sononet import stopping
from sononet.device import seed_everything
from sononet.features.mel import FeatureConfig
from sononet.features.normalize import Normalizer, mel_band_stats, model_inputs, speaker_means
from sononet.features.reader import INTENSITY_INDEX, ShardStream, load_metadata, split_speakers
from sononet.features.shards import read_manifest
from sononet.io import atomic_write_json
from sononet.models.registry import MODELS, build_model
from sononet.models.saving import save_model
from sononet.stopping import TerminatedError
from sononet.train.augment import MelAugment, NoisyMel, WaveAugment, mixup
from sononet.train.checkpoint import TrainState, checkpoint_path, load_checkpoint, restore_rng, rng_state
from sononet.train.checkpoint import save_checkpoint as write_checkpoint
from sononet.train.config import TrainConfig, selection_score
from sononet.train.ddp import DistInfo, all_reduce_mean, any_rank, average_buffers, gather_digests
from sononet.train.passes import amp_context, evaluate_loss, recalibrate_batchnorm
from sononet.train.tensorboard import TrainingBoard

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model_dir: Path
    history: list[dict]
    best_epoch: int
    digests: list[str]  # one per rank: equal when DDP kept the replicas in sync


@dataclass(frozen=True)
class TrainData:
    """What one training run reads: the shards, its clips by role, the class labels and the shards' features."""

    shards: Path
    train_ids: list[str]
    val_ids: list[str]  # empty for a refit
    labels: list[str]
    feature_config: dict  # the shards' own (their manifest's)

    @classmethod
    def of(
        cls, shards: Path, splits: dict[str, str], labels: list[str], feature_config: dict, refit: bool
    ) -> TrainData:
        train_ids = [c for c, s in splits.items() if s == "train"]
        val_ids = [c for c, s in splits.items() if s == "val"]
        if not train_ids or not (val_ids or refit):
            raise ValueError(f"need train and val clips. Found: {len(train_ids)} train, {len(val_ids)} val")
        return cls(shards, train_ids, val_ids, labels, feature_config)


def _ema_average(horizon: float):
    """AveragedModel's ``avg_fn``: the plain mean of the first ``horizon`` steps' weights, then an
    exponential moving average over about ``horizon`` steps (decay 1 - 1 / horizon).

    Starting as a mean, not as an EMA of the initial weights, forgets the random start within a
    horizon instead of dragging it along for several."""
    decay = 1 - 1 / max(horizon, 1.0)

    def average(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = torch.clamp(n / (n + 1), max=decay)  # n weights averaged so far
        return averaged + (current - averaged) * (1 - d)

    return average


def _model_overrides(name: str, cfg: TrainConfig, labels: list[str], train_meta: pd.DataFrame) -> dict:
    overrides = dict(cfg.model_overrides.get(name, {}))
    if cfg.class_weights:
        counts = Counter(train_meta.label)
        overrides["class_weights"] = [len(train_meta) / (len(labels) * max(counts.get(lab, 0), 1)) for lab in labels]
    if cfg.intensity_aux and train_meta.intensity.isin(list(INTENSITY_INDEX)).any():
        overrides.update(n_intensity=3, aux_weight=cfg.aux_weight)
    if cfg.lr is not None:
        overrides["lr"] = cfg.lr
    return overrides


class _Trainer:
    """One model's training run: the pieces ``train_model`` wires together, one method per step."""

    def __init__(
        self, name: str, data: TrainData, cfg: TrainConfig, out_dir: Path, device: torch.device, dist: DistInfo,
        schedule: list[float] | None = None,
    ) -> None:  # fmt: skip
        self.name, self.data, self.cfg, self.out_dir, self.device, self.dist = name, data, cfg, out_dir, device, dist
        self.schedule = schedule  # a refit's learning rate per epoch: no validation, no early stopping
        self.epochs = len(schedule) if schedule is not None else cfg.epochs_for(name)
        self.kind = MODELS[name].input_kind
        self.best_confusion: np.ndarray | None = None  # the best epoch's val confusion, for TensorBoard
        self.augment_cfg = cfg.augment_for(name)  # checked again: model_overrides may change after init
        # The order below is the RNG's: the model's random init comes first, as it always has.
        self.model = self._build_model()
        self.norm, offsets = self._normalisation()
        self.augment = self._augmenter()
        self.noisy: NoisyMel | None = None  # multi-condition training: log-mel of noisy waveforms
        if self.kind == "mel" and self.augment_cfg.noise_p > 0:
            self.noisy = NoisyMel(self.augment_cfg, FeatureConfig(**self.data.feature_config))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.base_lr = float(self.model.config.lr)
        self.optimizer = torch.optim.AdamW(self.params, lr=self.base_lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience, threshold=1e-4,
            threshold_mode="abs",
        )  # fmt: skip
        self.wrapped: nn.Module = self.model
        if dist.enabled:
            self.wrapped = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
            )
        self.train_stream, self.calib_stream, self.val_stream = self._streams(offsets)
        self.ema: AveragedModel | None = None
        if cfg.ema_epochs > 0:  # the horizon in steps; a stream's len() is its batches per epoch
            horizon = cfg.ema_epochs * len(self.train_stream)
            self.ema = AveragedModel(self.model, avg_fn=_ema_average(horizon), use_buffers=True)
        self.state = TrainState()
        self.rng_after_steps: dict | None = None  # the RNG after the epoch's last step, until the epoch ends

    def _build_model(self) -> nn.Module:
        data, cfg = self.data, self.cfg
        train_meta = load_metadata(data.shards, ["clip_id", "label", "intensity"]).to_pandas()
        train_meta = train_meta[train_meta.clip_id.isin(set(data.train_ids))]
        overrides = _model_overrides(self.name, cfg, data.labels, train_meta)
        overrides.pop("augment", None)  # the model's own augmentation, not a model field
        overrides.pop("epochs", None)  # its own epoch cap (TrainConfig.epochs_for), not a model field
        n_mels = int(data.feature_config["n_mels"])
        return build_model(self.name, n_classes=len(data.labels), n_mels=n_mels, **overrides).to(self.device)

    def _normalisation(self) -> tuple[Normalizer | None, dict[str, np.ndarray] | None]:
        """The saved statistics (``features.normalize.Normalizer``) from the training clips, and each
        train and val clip's speaker mean (None without speaker normalisation); waveforms need neither."""
        data, cfg = self.data, self.cfg
        if self.kind != "mel":
            return None, None
        offsets = None  # clip_id -> its speaker's mean, for every train and val clip
        if cfg.speaker_norm:
            speakers = speaker_means(data.shards, [*data.train_ids, *data.val_ids], level=cfg.level_norm)
            offsets = speakers.offsets()
        mean, std = mel_band_stats(data.shards, data.train_ids, cfg.clip_norm, offsets, cfg.level_norm)
        # unknown speakers (label, the API) get the training speakers' average
        default = torch.from_numpy(speakers.average(data.train_ids)) if cfg.speaker_norm else None
        norm = Normalizer(torch.from_numpy(mean), torch.from_numpy(std), cfg.level_norm, cfg.clip_norm, default)
        return norm, offsets

    def _augmenter(self) -> nn.Module:
        fc = self.data.feature_config
        if self.kind == "mel":
            return MelAugment(self.augment_cfg, int(fc["sample_rate"]), float(fc["fmin"]), fc["fmax"]).to(self.device)
        return WaveAugment(self.augment_cfg, int(fc["sample_rate"])).to(self.device)

    def _streams(self, offsets: dict | None) -> tuple[ShardStream, ShardStream | None, ShardStream | None]:
        """Training batches (shuffled, this rank's share), the same clips in order without augmentation for
        BatchNorm statistics (``bn_recalibrate``), and validation batches (none for a refit)."""
        data, cfg, kind = self.data, self.cfg, self.kind
        rank, world, bs = self.dist.rank, self.dist.world_size, cfg.batch_size

        def stream(ids: list[str], shuffle: bool, with_wave: bool = False) -> ShardStream:
            return ShardStream(data.shards, ids, data.labels, kind, bs, shuffle, cfg.seed, cfg.window_shards, rank,
                               world, offsets, with_wave=with_wave)  # fmt: skip

        train = stream(data.train_ids, True, with_wave=self.noisy is not None)  # the waveform only for noise
        calib = stream(data.train_ids, False) if cfg.bn_recalibrate else None
        val = (
            ShardStream(data.shards, data.val_ids, data.labels, kind, bs, shuffle=False, offsets=offsets)
            if data.val_ids
            else None
        )
        return train, calib, val

    @property
    def scored(self) -> nn.Module:
        """The weights that are validated and saved: their moving average when ``train.ema_epochs`` is set."""
        return self.model if self.ema is None else self.ema.module

    @property
    def ckpt_path(self) -> Path:
        return checkpoint_path(self.out_dir)

    def resume(self) -> None:
        ckpt = load_checkpoint(self.ckpt_path)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.ema is not None:
            if "ema" not in ckpt:
                raise ValueError(
                    f"checkpoint {self.ckpt_path} was written without train.ema_epochs; rerun without --resume "
                    "or with the same train.ema_epochs"
                )
            self.ema.load_state_dict(ckpt["ema"])
        self.state = ckpt["state"]
        restore_rng(ckpt["rng"])
        if self.state.batch:
            log.info("%s: resumed in epoch %d after step %d of %d", self.name, self.state.epoch + 1,
                     self.state.batch, len(self.train_stream))  # fmt: skip
        else:
            log.info("%s: resumed after epoch %d", self.name, self.state.epoch)

    def stop_requested(self) -> bool:
        """A SIGTERM in this process (or, in a worker, its parent), agreed on by every DDP rank."""
        return any_rank(stopping.requested(), self.dist, self.device)

    def save_stop_checkpoint(self) -> None:
        """The checkpoint of the last finished step; in the end-of-epoch passes, with the RNG as the
        last step left it, so the resume's passes draw what the uninterrupted run's did."""
        if not self.dist.is_main:
            return
        at_end = self.state.batch == len(self.train_stream)
        self.save_checkpoint(self.rng_after_steps if at_end else None)
        log.warning("%s: stopped in epoch %d after step %d of %d; checkpoint %s", self.name, self.state.epoch + 1,
                 self.state.batch, len(self.train_stream), self.ckpt_path)  # fmt: skip

    def done(self) -> bool:
        s, cfg = self.state, self.cfg
        if self.val_stream is None:
            return s.epoch >= self.epochs
        return s.epoch >= self.epochs or (s.epoch >= cfg.min_epochs and s.bad_epochs >= cfg.patience)

    def _warmup(self) -> None:
        warm_steps = self.cfg.warmup_epochs * len(self.train_stream)
        if self.state.step < warm_steps:
            for group in self.optimizer.param_groups:
                group["lr"] = self.base_lr * (self.state.step + 1) / warm_steps

    def train_epoch(self, progress: bool) -> tuple[float, float]:
        cfg, epoch = self.cfg, self.state.epoch
        if self.schedule is not None and epoch >= cfg.warmup_epochs:  # warm-up epochs ramp per step as before
            for group in self.optimizer.param_groups:
                group["lr"] = self.schedule[epoch]
        self.train_stream.set_epoch(epoch)
        self.wrapped.train()
        self.augment.train()
        self.rng_after_steps = None
        skip = self.state.batch  # steps of this epoch a stopped run already took: its stream replays them
        tot_loss, tot_correct, tot_n = self.state.partial
        bar = tqdm(
            itertools.islice(self.train_stream, skip, None), total=len(self.train_stream), initial=skip,
            desc=f"{self.name} epoch {epoch + 1}/{self.epochs}", disable=not (progress and self.dist.is_main),
            leave=False, dynamic_ncols=True,
        )  # fmt: skip
        for batch in bar:
            offsets = batch.offsets
            if offsets is not None and cfg.speaker_default_p > 0:  # these clips get the unknown-speaker offset
                swap = torch.rand(offsets.shape[0]) < cfg.speaker_default_p  # (B,)
                offsets = torch.where(swap[:, None], self.norm.speaker_default, offsets)
            x = batch.x if self.noisy is None else self.noisy.train()(batch.x, batch.wave, batch.wave_lengths)
            x = model_inputs(x, batch.lengths, self.kind, self.norm, self.device, offsets)
            lengths = batch.lengths.to(self.device)
            if self.kind == "mel":
                x = self.augment(x)
            else:
                x, lengths = self.augment(x, lengths)
            labels_t = batch.labels.to(self.device)
            with amp_context(self.device, cfg.amp):
                if self.augment_cfg.mixup_alpha > 0:
                    x, lengths, perm, lam = mixup(x, lengths, self.augment_cfg.mixup_alpha)
                    logits, _ = self.wrapped(x, lengths)
                    head = self.model.head
                    loss = lam * head.emotion_loss(logits, labels_t) + (1 - lam) * head.emotion_loss(
                        logits, labels_t[perm]
                    )
                else:
                    logits, loss = self.wrapped(x, lengths, labels_t, batch.intensity.to(self.device))
            self._warmup()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            n = labels_t.shape[0]
            tot_loss += float(loss.detach()) * n
            tot_correct += float((logits.argmax(-1) == labels_t).sum())
            tot_n += n
            self.state.step += 1
            self.state.batch += 1
            self.state.partial = [tot_loss, tot_correct, tot_n]
            bar.set_postfix(loss=f"{tot_loss / tot_n:.3f}", acc=f"{tot_correct / tot_n:.3f}")
            if self.stop_requested():
                raise TerminatedError
        self.rng_after_steps = rng_state()
        # A refit validates nothing, so only its last epoch's statistics are ever used: training mode
        # normalises with batch statistics, and each recalibration replaces the previous one whole.
        if self.calib_stream is not None and (self.schedule is None or epoch + 1 == self.epochs):
            recalibrate_batchnorm(
                self.scored, self.calib_stream, self.kind, self.norm, self.device, cfg.amp, self.stop_requested
            )
        average_buffers(self.scored, self.dist)
        return all_reduce_mean(tot_loss / max(tot_n, 1), self.dist), all_reduce_mean(
            tot_correct / max(tot_n, 1), self.dist
        )

    def end_epoch(self, train_loss: float, train_acc: float, save_meta: dict) -> None:
        cfg, state, epoch = self.cfg, self.state, self.state.epoch
        if self.val_stream is None:
            self._end_refit_epoch(train_loss, train_acc, save_meta)
            return
        n = len(self.data.labels)
        confusion = np.zeros((n, n), np.int64)  # (true, pred) on val
        val = evaluate_loss(
            self.scored, self.val_stream, self.kind, self.norm, self.device, cfg.amp, confusion, self.stop_requested
        )
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, **val}
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        score = selection_score(row, cfg.select_on)
        if epoch + 1 >= cfg.warmup_epochs:
            self.scheduler.step(score)
        state.history.append(row)
        improved = score > state.best_score + 1e-6
        if improved:
            state.best_score, state.best_epoch, state.bad_epochs = score, epoch + 1, 0
            self.best_confusion = confusion
            if self.dist.is_main:
                meta = {**save_meta, "best_epoch": epoch + 1, "val_loss": row["val_loss"], "val_ua": row["val_ua"]}
                save_model(self.out_dir / "model", self.scored, self.name, meta)
        else:
            state.bad_epochs += 1
        state.next_epoch()
        if self.dist.is_main:
            log.info(
                "%s epoch %d: train loss %.3f acc %.3f | val loss %.3f acc %.3f UA %.3f%s",
                self.name, epoch + 1, train_loss, train_acc, row["val_loss"], row["val_acc"], row["val_ua"],
                " *" if improved else "",
            )  # fmt: skip
            self.save_checkpoint()

    def _end_refit_epoch(self, train_loss: float, train_acc: float, save_meta: dict) -> None:
        """A refit has nothing to validate on: its last epoch is the model."""
        state, epoch = self.state, self.state.epoch + 1
        lr = self.optimizer.param_groups[0]["lr"]
        state.history.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "lr": lr})
        state.next_epoch()
        if self.dist.is_main:
            log.info("%s refit epoch %d/%d: train loss %.3f acc %.3f", self.name, epoch, self.epochs, train_loss,
                     train_acc)  # fmt: skip
            if epoch == self.epochs:
                state.best_epoch = epoch
                save_model(self.out_dir / "model", self.scored, self.name, {**save_meta, "best_epoch": epoch})
            self.save_checkpoint()

    def save_checkpoint(self, rng: dict | None = None) -> None:
        """Everything a resume needs; ``rng``: the RNG state to store instead of the current one."""
        write_checkpoint(self.ckpt_path, self.model, self.optimizer, self.scheduler, self.ema, self.state, rng)
        atomic_write_json(self.out_dir / "history.json", self.state.history)


def train_model(
    name: str,
    shards: str | Path,
    splits: dict[str, str],
    labels: list[str],
    cfg: TrainConfig,
    out_dir: str | Path,
    device: torch.device,
    resume: bool = False,
    dist: DistInfo = DistInfo(),
    meta: dict | None = None,
    progress: bool = True,
    schedule: list[float] | None = None,
) -> TrainResult:
    """Train ``name`` on the ``train`` clips of ``splits``, early-stop on ``val``, save the best
    (with ``schedule``, one learning rate per epoch: that many epochs, no ``val``: see ``refit.refit_model``).

    ``meta`` travels into the saved model, with the shards' own feature and audio configs (their
    manifest's); the first sets the model's input size and the augmentation's sample rate. A
    ``meta["feature_config"]`` or ``meta["audio_config"]`` that differs from the shards' is refused.
    ``cfg.epochs`` must be set (``train.profiles`` resolves it).
    """
    meta = dict(meta or {})
    manifest = read_manifest(shards)
    feature_config = manifest["feature_config"]
    # The decoder settings travel too (shards prepared before they were recorded: the model's readers
    # assume the defaults), so inference decodes as the training clips were.
    recorded = {k: manifest[k] for k in ("feature_config", "audio_config") if k in manifest}
    for key, value in recorded.items():
        if meta.setdefault(key, value) != value:
            raise ValueError(
                f"train_model({name!r}): meta[{key!r}] differs from the shards' own in {shards}: "
                f"{meta[key]} against {value}"
            )
    if cfg.epochs is None and schedule is None:
        raise ValueError(f"train_model({name!r}) needs train.epochs; resolve the profile first (train/profiles.py)")
    data = TrainData.of(Path(shards), splits, labels, feature_config, refit=schedule is not None)
    seed_everything(cfg.seed)
    trainer = _Trainer(name, data, cfg, Path(out_dir), device, dist, schedule)
    if resume and trainer.ckpt_path.exists():
        trainer.resume()
    save_meta = {
        **meta,
        "labels": labels,
        "norm": trainer.norm.to_meta() if trainer.norm is not None else {},
        "input_kind": trainer.kind,
        "train_config": asdict(cfg),
        "speakers": split_speakers(shards, splits),  # so evaluate can tell a same-speaker test from a new one
    }
    board = TrainingBoard(Path(out_dir) / "tb" if cfg.tensorboard and dist.is_main else None, labels)
    try:
        with stopping.cooperative():  # SIGTERM: finish the step, then the checkpoint below
            while not trainer.done():
                if trainer.stop_requested():  # asked during the set-up (a worker's) or between epochs
                    raise TerminatedError
                train_loss, train_acc = trainer.train_epoch(progress)
                trainer.end_epoch(train_loss, train_acc, save_meta)
                board.epoch(trainer.state.history[-1])
    except TerminatedError:
        trainer.save_stop_checkpoint()
        board.close()
        raise
    if trainer.best_confusion is not None:  # None when a resumed run had no epoch left to run
        board.confusion(trainer.best_confusion, trainer.state.best_epoch)
    board.close()
    digests = gather_digests(trainer.model, dist)
    return TrainResult(Path(out_dir) / "model", trainer.state.history, trainer.state.best_epoch, digests)
