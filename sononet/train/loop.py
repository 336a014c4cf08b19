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
With so few voices, four more help as well: ``refit_model`` trains again on the training and
validation speakers for the epochs chosen on validation (CNN +5.7 UA on held-out actors, nested
inside the training actors), counted by ``refit_epochs`` from a 5-epoch mean rather than one
noisy epoch. ``ema_epochs`` validates a moving average of the weights instead; it helped
without a refit but not beside one, so it is off.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from sononet import stopping
from sononet.device import seed_everything
from sononet.features.normalize import mel_band_stats, model_inputs, speaker_means
from sononet.features.reader import INTENSITY_INDEX, ShardStream, load_metadata, split_speakers
from sononet.features.shards import read_manifest
from sononet.io import atomic_write, atomic_write_json, open_regular
from sononet.models.outputs import NonFiniteOutputError, is_distribution
from sononet.models.registry import MODELS, build_model
from sononet.models.saving import save_model
from sononet.stopping import TerminatedError
from sononet.train.augment import MelAugment, WaveAugment, mixup
from sononet.train.config import TrainConfig, selection_score
from sononet.train.ddp import DistInfo, all_reduce_mean, any_rank, average_buffers, gather_digests
from sononet.train.tensorboard import TrainingBoard

log = logging.getLogger(__name__)
CHECKPOINT = "last.pt"


@dataclass
class TrainResult:
    model_dir: Path
    history: list[dict]
    best_epoch: int
    digests: list[str]  # one per rank: equal when DDP kept the replicas in sync


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


def _amp_context(device: torch.device, enabled: bool) -> torch.autocast:
    on = enabled and device.type == "cuda"
    dtype = torch.bfloat16 if on and torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=on)


def _load_checkpoint(path: Path) -> dict:
    # weights_only: tensors, dicts, lists and numbers only; a pickle that would run code is refused
    with open_regular(path):  # a FIFO planted as last.pt is refused, never read
        pass
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged or refused file
        raise ValueError(
            f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); delete it to start this model "
            "over, or rerun without --resume"
        ) from e


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    stream: ShardStream,
    kind: str,
    norm: dict,
    device: torch.device,
    amp: bool,
    stop: Callable[[], bool] | None = None,
) -> None:
    """Replace BatchNorm running statistics by their exact average over ``stream`` ("precise BN").

    With momentum 0.1 the running estimate needs ~30 steps to forget its initial value, more
    than a small corpus gives in an epoch; the eval-mode model then sees wrongly scaled features.
    The pass runs in training mode (dropout as in training) on its own copy of the random state,
    so training draws the same numbers whether or not an epoch recalibrates. ``stop``, polled
    before each batch, raises :class:`TerminatedError` (the statistics are then partial).
    """
    layers = _batchnorms(model)
    if not layers:
        return
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    model.train()
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        for batch in stream:
            if stop is not None and stop():
                raise TerminatedError
            with _amp_context(device, amp):
                x = model_inputs(batch.x, batch.lengths, kind, norm, device, batch.offsets)
                model(x, batch.lengths.to(device))
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    stream: ShardStream,
    kind: str,
    norm: dict,
    device: torch.device,
    amp: bool,
    confusion: np.ndarray | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """Validation loss, accuracy (WA) and unweighted average recall (UA) of ``model`` on ``stream``.

    Adds the (true, pred) counts into ``confusion`` when given; ``stop`` is polled before each batch.
    """
    model.eval()
    tot_loss = 0.0
    truth: list[np.ndarray] = []
    preds: list[np.ndarray] = []
    for batch in stream:
        if stop is not None and stop():
            raise TerminatedError
        x = model_inputs(batch.x, batch.lengths, kind, norm, device, batch.offsets)
        labels_t = batch.labels.to(device)
        with _amp_context(device, amp):
            logits, loss = model(x, batch.lengths.to(device), labels_t)
        tot_loss += float(loss) * labels_t.shape[0]
        truth.append(batch.labels.numpy())
        preds.append(logits.argmax(-1).cpu().numpy())
    if not truth:
        return {"val_loss": math.nan, "val_acc": math.nan, "val_ua": math.nan}
    y, p = np.concatenate(truth), np.concatenate(preds)
    if confusion is not None:
        np.add.at(confusion, (y, p), 1)
    return {
        "val_loss": tot_loss / y.size,
        "val_acc": float((y == p).mean()),
        "val_ua": float(balanced_accuracy_score(y, p)),
    }


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
        self,
        name: str,
        shards: Path,
        splits: dict[str, str],
        labels: list[str],
        cfg: TrainConfig,
        out_dir: Path,
        device: torch.device,
        dist: DistInfo,
        feature_config: dict,
        schedule: list[float] | None = None,
    ) -> None:
        self.name, self.cfg, self.device, self.dist, self.out_dir = name, cfg, device, dist, out_dir
        self.schedule = schedule  # a refit's learning rate per epoch: no validation, no early stopping
        self.epochs = len(schedule) if schedule is not None else cfg.epochs
        self.kind = MODELS[name].input_kind
        self.n_classes, self.best_confusion = len(labels), None  # the best epoch's val confusion, for TensorBoard
        train_ids = [c for c, s in splits.items() if s == "train"]
        val_ids = [c for c, s in splits.items() if s == "val"]
        if not train_ids or not (val_ids or schedule):
            raise ValueError(f"need train and val clips. Found: {len(train_ids)} train, {len(val_ids)} val")
        train_meta = load_metadata(shards, ["clip_id", "label", "intensity"]).to_pandas()
        train_meta = train_meta[train_meta.clip_id.isin(set(train_ids))]
        overrides = _model_overrides(name, cfg, labels, train_meta)
        overrides.pop("augment", None)  # the model's own augmentation, not a model field
        self.augment_cfg = cfg.augment_for(name)  # checked again: model_overrides may change after init
        n_mels = int(feature_config["n_mels"])
        self.model = build_model(name, n_classes=len(labels), n_mels=n_mels, **overrides).to(device)
        self.norm: dict[str, torch.Tensor] = {}
        offsets = None  # clip_id -> its speaker's mean, for every train and val clip
        if self.kind == "mel":
            if cfg.speaker_norm:
                speakers = speaker_means(shards, [*train_ids, *val_ids], level=cfg.level_norm)
                offsets = speakers.offsets()
            mean, std = mel_band_stats(shards, train_ids, cfg.clip_norm, offsets, cfg.level_norm)
            self.norm = {"mean": torch.from_numpy(mean), "std": torch.from_numpy(std)}
            if cfg.level_norm:
                self.norm["level"] = torch.tensor(1.0)
            if cfg.clip_norm:
                self.norm["per_clip"] = torch.tensor(1.0)
            if cfg.speaker_norm:  # unknown speakers (label, the API) get the training speakers' average
                self.norm["speaker"] = torch.tensor(1.0)
                self.norm["speaker_default"] = torch.from_numpy(speakers.average(train_ids))
        sample_rate = int(feature_config["sample_rate"])
        if self.kind == "mel":
            fmin, fmax = float(feature_config["fmin"]), feature_config["fmax"]
            self.augment: nn.Module = MelAugment(self.augment_cfg, sample_rate, fmin, fmax).to(device)
        else:
            self.augment = WaveAugment(self.augment_cfg, sample_rate).to(device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.base_lr = float(self.model.config.lr)
        self.optimizer = torch.optim.AdamW(self.params, lr=self.base_lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer,
            mode="max",
            factor=cfg.plateau_factor,
            patience=cfg.plateau_patience,
            threshold=1e-4,
            threshold_mode="abs",
        )
        self.wrapped: nn.Module = self.model
        if dist.enabled:
            self.wrapped = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
            )
        rank, world = dist.rank, dist.world_size
        bs = cfg.batch_size
        self.train_stream = ShardStream(
            shards, train_ids, labels, self.kind, bs, True, cfg.seed, cfg.window_shards, rank, world, offsets
        )
        self.calib_stream = (  # the training clips in order, without augmentation, for BatchNorm statistics
            ShardStream(
                shards, train_ids, labels, self.kind, bs, False, cfg.seed, cfg.window_shards, rank, world, offsets
            )
            if cfg.bn_recalibrate
            else None
        )
        self.val_stream = (
            ShardStream(shards, val_ids, labels, self.kind, bs, shuffle=False, offsets=offsets) if val_ids else None
        )
        self.ema: AveragedModel | None = None
        if cfg.ema_epochs > 0:  # the horizon in steps; a stream's len() is its batches per epoch
            horizon = cfg.ema_epochs * len(self.train_stream)
            self.ema = AveragedModel(self.model, avg_fn=_ema_average(horizon), use_buffers=True)
        self.state = {"epoch": 0, "history": [], "best_score": -math.inf, "best_epoch": -1, "bad_epochs": 0, "step": 0}
        self.state.update(_EPOCH_START)  # where the epoch in progress stands, for a mid-epoch resume
        self.rng_after_steps: dict | None = None  # the RNG after the epoch's last step, until the epoch ends

    @property
    def scored(self) -> nn.Module:
        """The weights that are validated and saved: their moving average when ``train.ema_epochs`` is set."""
        return self.model if self.ema is None else self.ema.module

    @property
    def ckpt_path(self) -> Path:
        return self.out_dir / "checkpoint" / CHECKPOINT

    def resume(self) -> None:
        ckpt = _load_checkpoint(self.ckpt_path)
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
        self.state = {**_EPOCH_START, **ckpt["state"]}  # checkpoints from before mid-epoch stops lack the keys
        torch.set_rng_state(ckpt["rng"]["torch"])
        if torch.cuda.is_available() and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        if self.state["batch"]:
            log.info("%s: resumed in epoch %d after step %d of %d", self.name, self.state["epoch"] + 1,
                     self.state["batch"], len(self.train_stream))  # fmt: skip
        else:
            log.info("%s: resumed after epoch %d", self.name, self.state["epoch"])

    def stop_requested(self) -> bool:
        """A SIGTERM in this process (or, in a worker, its parent), agreed on by every DDP rank."""
        return any_rank(stopping.requested(), self.dist, self.device)

    def save_stop_checkpoint(self) -> None:
        """The checkpoint of the last finished step; in the end-of-epoch passes, with the RNG as the
        last step left it, so the resume's passes draw what the uninterrupted run's did."""
        if not self.dist.is_main:
            return
        at_end = self.state["batch"] == len(self.train_stream)
        self.save_checkpoint(self.rng_after_steps if at_end else None)
        log.info("%s: stopped in epoch %d after step %d of %d; checkpoint %s", self.name, self.state["epoch"] + 1,
                 self.state["batch"], len(self.train_stream), self.ckpt_path)  # fmt: skip

    def done(self) -> bool:
        s, cfg = self.state, self.cfg
        if self.val_stream is None:
            return s["epoch"] >= self.epochs
        return s["epoch"] >= self.epochs or (s["epoch"] >= cfg.min_epochs and s["bad_epochs"] >= cfg.patience)

    def _warmup(self) -> None:
        warm_steps = self.cfg.warmup_epochs * len(self.train_stream)
        if self.state["step"] < warm_steps:
            for group in self.optimizer.param_groups:
                group["lr"] = self.base_lr * (self.state["step"] + 1) / warm_steps

    def train_epoch(self, progress: bool) -> tuple[float, float]:
        cfg, epoch = self.cfg, self.state["epoch"]
        if self.schedule is not None and epoch >= cfg.warmup_epochs:  # warm-up epochs ramp per step as before
            for group in self.optimizer.param_groups:
                group["lr"] = self.schedule[epoch]
        self.train_stream.set_epoch(epoch)
        self.wrapped.train()
        self.augment.train()
        self.rng_after_steps = None
        skip = self.state["batch"]  # steps of this epoch a stopped run already took: its stream replays them
        tot_loss, tot_correct, tot_n = self.state["partial"]
        bar = tqdm(
            itertools.islice(self.train_stream, skip, None), total=len(self.train_stream), initial=skip,
            desc=f"{self.name} epoch {epoch + 1}/{self.epochs}", disable=not (progress and self.dist.is_main),
            leave=False, dynamic_ncols=True,
        )  # fmt: skip
        for batch in bar:
            offsets = batch.offsets
            if offsets is not None and cfg.speaker_default_p > 0:  # these clips get the unknown-speaker offset
                swap = torch.rand(offsets.shape[0]) < cfg.speaker_default_p  # (B,)
                offsets = torch.where(swap[:, None], self.norm["speaker_default"], offsets)
            x = model_inputs(batch.x, batch.lengths, self.kind, self.norm, self.device, offsets)
            lengths = batch.lengths.to(self.device)
            if self.kind == "mel":
                x = self.augment(x)
            else:
                x, lengths = self.augment(x, lengths)
            labels_t = batch.labels.to(self.device)
            with _amp_context(self.device, cfg.amp):
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
            self.state["step"] += 1
            self.state["batch"] += 1
            self.state["partial"] = [tot_loss, tot_correct, tot_n]
            bar.set_postfix(loss=f"{tot_loss / tot_n:.3f}", acc=f"{tot_correct / tot_n:.3f}")
            if self.stop_requested():
                raise TerminatedError
        self.rng_after_steps = _rng_state()
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
        cfg, state, epoch = self.cfg, self.state, self.state["epoch"]
        if self.val_stream is None:
            self._end_refit_epoch(train_loss, train_acc, save_meta)
            return
        confusion = np.zeros((self.n_classes, self.n_classes), np.int64)  # (true, pred) on val
        val = evaluate_loss(
            self.scored, self.val_stream, self.kind, self.norm, self.device, cfg.amp, confusion, self.stop_requested
        )
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, **val}
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        score = selection_score(row, cfg.select_on)
        if epoch + 1 >= cfg.warmup_epochs:
            self.scheduler.step(score)
        state["history"].append(row)
        improved = score > state["best_score"] + 1e-6
        if improved:
            state.update(best_score=score, best_epoch=epoch + 1, bad_epochs=0)
            self.best_confusion = confusion
            if self.dist.is_main:
                meta = {**save_meta, "best_epoch": epoch + 1, "val_loss": row["val_loss"], "val_ua": row["val_ua"]}
                save_model(self.out_dir / "model", self.scored, self.name, meta)
        else:
            state["bad_epochs"] += 1
        state.update(epoch=epoch + 1, **_EPOCH_START)
        if self.dist.is_main:
            log.info(
                "%s epoch %d: train loss %.3f acc %.3f | val loss %.3f acc %.3f UA %.3f%s",
                self.name, epoch + 1, train_loss, train_acc, row["val_loss"], row["val_acc"], row["val_ua"],
                " *" if improved else "",
            )  # fmt: skip
            self.save_checkpoint()

    def _end_refit_epoch(self, train_loss: float, train_acc: float, save_meta: dict) -> None:
        """A refit has nothing to validate on: its last epoch is the model."""
        state, epoch = self.state, self.state["epoch"] + 1
        lr = self.optimizer.param_groups[0]["lr"]
        state["history"].append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "lr": lr})
        state.update(epoch=epoch, **_EPOCH_START)
        if self.dist.is_main:
            log.info("%s refit epoch %d/%d: train loss %.3f acc %.3f", self.name, epoch, self.epochs, train_loss,
                     train_acc)  # fmt: skip
            if epoch == self.epochs:
                state["best_epoch"] = epoch
                save_model(self.out_dir / "model", self.scored, self.name, {**save_meta, "best_epoch": epoch})
            self.save_checkpoint()

    def save_checkpoint(self, rng: dict | None = None) -> None:
        """Everything a resume needs; ``rng``: the RNG state to store instead of the current one."""
        self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "state": self.state,
            "rng": rng or _rng_state(),
        }
        if self.ema is not None:
            payload["ema"] = self.ema.state_dict()
        atomic_write(self.ckpt_path, lambda tmp: torch.save(payload, tmp))
        atomic_write_json(self.out_dir / "history.json", self.state["history"])


# A new epoch's place: no step taken, no loss summed ([loss x n, correct, n] of the steps so far).
_EPOCH_START = {"batch": 0, "partial": [0.0, 0.0, 0.0]}


def _rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


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

    ``meta`` travels into the saved model, with the shards' own feature config (their manifest's),
    which sets the model's input size and the augmentation's sample rate; a ``meta["feature_config"]``
    that differs from it is refused. ``cfg.epochs`` must be set (``train.profiles`` resolves it).
    """
    meta = dict(meta or {})
    feature_config = read_manifest(shards)["feature_config"]
    if meta.setdefault("feature_config", feature_config) != feature_config:
        raise ValueError(
            f"train_model({name!r}): meta['feature_config'] differs from the shards' own in {shards}: "
            f"{meta['feature_config']} against {feature_config}"
        )
    if cfg.epochs is None and schedule is None:
        raise ValueError(f"train_model({name!r}) needs train.epochs; resolve the profile first (train/profiles.py)")
    seed_everything(cfg.seed)
    trainer = _Trainer(name, Path(shards), splits, labels, cfg, Path(out_dir), device, dist, feature_config, schedule)
    if resume and trainer.ckpt_path.exists():
        trainer.resume()
    save_meta = {
        **meta,
        "labels": labels,
        "norm": {k: v.tolist() for k, v in trainer.norm.items()},
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
                board.epoch(trainer.state["history"][-1])
    except TerminatedError:
        trainer.save_stop_checkpoint()
        board.close()
        raise
    if trainer.best_confusion is not None:  # None when a resumed run had no epoch left to run
        board.confusion(trainer.best_confusion, trainer.state["best_epoch"])
    board.close()
    digests = gather_digests(trainer.model, dist)
    return TrainResult(Path(out_dir) / "model", trainer.state["history"], trainer.state["best_epoch"], digests)


@torch.no_grad()
def predict(
    model: nn.Module,
    meta: dict,
    shards: str | Path,
    clip_ids: list[str],
    device: torch.device,
    batch_size: int = 64,
    known_speakers: bool = True,
) -> pd.DataFrame:
    """Class probabilities for ``clip_ids``: columns clip_id, true, pred, prob_<label>...

    A speaker-normalised model gets each speaker's mean over its clips among ``clip_ids``; with
    ``known_speakers=False`` the training speakers' average instead, as ``sononet label`` does.
    """
    labels = meta["labels"]
    kind = meta["input_kind"]
    norm = {k: torch.tensor(v) for k, v in meta.get("norm", {}).items()}
    model.eval().to(device)
    offsets = None
    if "speaker" in norm and known_speakers:
        offsets = speaker_means(shards, clip_ids, level="level" in norm).offsets()
    stream = ShardStream(shards, clip_ids, labels, kind, batch_size, shuffle=False, offsets=offsets)
    rows = []
    for batch in stream:
        x = model_inputs(batch.x, batch.lengths, kind, norm, device, batch.offsets)
        logits, _ = model(x, batch.lengths.to(device))
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        bad = np.flatnonzero(~is_distribution(probs))
        if bad.size:  # NaN argmaxes to the first class: never a prediction
            raise NonFiniteOutputError(f"clip {batch.clip_ids[bad[0]]} (and {bad.size - 1} more in its batch)")
        for cid, y, p in zip(batch.clip_ids, batch.labels.tolist(), probs):
            rows.append(
                {
                    "clip_id": cid,
                    "true": labels[y],
                    "pred": labels[int(p.argmax())],
                    **{f"prob_{lab}": float(q) for lab, q in zip(labels, p)},
                }
            )
    return pd.DataFrame(rows)
