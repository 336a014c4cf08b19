"""The training loop shared by every registered model.

AdamW with a linear warm-up, gradient clipping, ReduceLROnPlateau and early stopping on the
validation score (UA by default); SpecAugment and noise (``augment``); statistics from the
training split only (``normalize``); bf16 autocast on CUDA; a checkpoint after every epoch
holding model, optimiser, scheduler, early-stopping and RNG state, so ``resume=True``
continues exactly where a killed run stopped; DDP when launched by torchrun (``ddp``).

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

import logging
import math
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from sononet.device import seed_everything
from sononet.features.normalize import mel_band_stats, model_inputs, speaker_means
from sononet.features.reader import INTENSITY_INDEX, ShardStream, load_metadata
from sononet.io import atomic_write, atomic_write_json
from sononet.models.outputs import NonFiniteOutputError, is_distribution
from sononet.models.registry import MODELS, build_model
from sononet.models.saving import save_model
from sononet.train.augment import AugmentConfig, MelAugment, WaveAugment, mixup
from sononet.train.ddp import DistInfo, all_reduce_mean, average_buffers, gather_digests
from sononet.train.tensorboard import TrainingBoard

log = logging.getLogger(__name__)
CHECKPOINT = "last.pt"
SELECT_ON = ("val_ua", "val_loss")
# Epoch budgets when TrainConfig.epochs is unset. The demo only shows that the pipeline runs
# (about 5 CPU minutes); for real speech 60 is an upper bound that early stopping undercuts.
PROFILE_EPOCHS = {"demo": 6, "real": 60}


@dataclass
class TrainConfig:
    epochs: int | None = None  # upper bound; None: the profile's (PROFILE_EPOCHS)
    min_epochs: int = 15  # early stopping waits at least this long: the first epochs' scores are noise
    batch_size: int = 32  # fits wav2vec2-base on a 16 GB GPU at 3 s clips
    lr: float | None = None  # None: the model's own rate (its config's ``lr``)
    weight_decay: float = 1e-2
    grad_clip: float = 5.0  # GRUs and transformers occasionally spike early on
    warmup_epochs: int = 2  # linear learning-rate warm-up, in epochs: AdamW's first steps are the wildest
    select_on: str = "val_ua"  # val_ua | val_loss: keeps the best model and drives the plateau and stopping
    patience: int = 10  # epochs without a better validation score before stopping
    plateau_patience: int = 4  # epochs before ReduceLROnPlateau halves the learning rate
    plateau_factor: float = 0.5
    bn_recalibrate: bool = True  # recompute BatchNorm statistics on the training clips after each epoch
    # After selection, train again on the training and validation clips for the selected epochs;
    # the test split scores that model. None: the profile's (on for real speech, off for the demo).
    refit: bool | None = None
    # The refit's epoch count: the centre of the `refit_window` consecutive epochs with the best mean
    # validation score; 1 = the best epoch. One epoch's UA on 4 voices is noisy (results/ravdess, seventh round).
    refit_window: int = 5
    ema_epochs: float = 0.0  # > 0: validate and keep a moving average of the weights over about this many epochs
    speaker_norm: bool = True  # log-mel: remove each speaker's per-band mean first (features/normalize.py)
    clip_norm: bool = False  # log-mel: remove each clip's own per-band mean before the global standardisation
    class_weights: bool = False  # inverse-frequency CE weights (CREMA-D's NEU is 15 % rarer)
    intensity_aux: bool = False  # auxiliary LO/MD/HI head where intensity labels exist (RAVDESS: normal/strong)
    aux_weight: float = 0.3
    amp: bool = True  # bf16 autocast on CUDA; ignored on the CPU
    seed: int = 0
    window_shards: int = 4  # shards shuffled together; bounds memory
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tensorboard: bool = True  # curves in <out>/tb for `tensorboard --logdir runs` (needs the tensorboard extra)
    # Per model: its config's fields, and an `augment` table (AugmentConfig fields) for it alone,
    # e.g. {"wav2vec2": {"tiny": True}, "bigru": {"augment": {"vtlp": 0.1}}}
    model_overrides: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"train.epochs must be at least 1 (or unset for the profile's). Found: {self.epochs}")
        for name in ("batch_size", "window_shards", "refit_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be at least 1. Found: {getattr(self, name)}")
        for name in ("min_epochs", "warmup_epochs", "patience", "plateau_patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0. Found: {getattr(self, name)}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"train.lr must be positive (or unset for the model's own). Found: {self.lr}")
        if not self.grad_clip > 0:  # `not >` also refuses NaN
            raise ValueError(f"train.grad_clip must be positive. Found: {self.grad_clip}")
        for name in ("weight_decay", "aux_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"train.{name} must be >= 0. Found: {getattr(self, name)}")
        for name in ("", *self.model_overrides):  # the run's augmentation, then each model's own
            self.augment_for(name)
        if self.speaker_norm and self.clip_norm:
            raise ValueError(
                "train.speaker_norm and train.clip_norm cannot be combined: the clip's own mean would replace "
                "its speaker's; set one of them to false"
            )
        if self.select_on not in SELECT_ON:
            raise ValueError(f"train.select_on must be one of {SELECT_ON}. Found: {self.select_on!r}")
        if not self.ema_epochs >= 0:  # also refuses NaN
            raise ValueError(f"train.ema_epochs must be >= 0 (0 turns it off). Found: {self.ema_epochs}")
        if not 0 < self.plateau_factor < 1:  # also refuses NaN
            raise ValueError(f"train.plateau_factor must be in (0, 1). Found: {self.plateau_factor}")

    def augment_for(self, name: str) -> AugmentConfig:
        """The augmentation model ``name`` trains with: ``augment`` and its own
        ``model_overrides[name]["augment"]`` on top (checked)."""
        changes = self.model_overrides.get(name, {}).get("augment", {})
        where = f"train.model_overrides.{name}.augment" if "mixup_alpha" in changes else "train.augment"
        try:
            augment = replace(self.augment, **changes)
        except TypeError as e:
            fields = ", ".join(AugmentConfig.__dataclass_fields__)
            raise ValueError(f"train.model_overrides.{name}.augment takes {fields}. Found: {sorted(changes)}") from e
        if augment.mixup_alpha > 0 and self.intensity_aux:
            raise ValueError(
                f"{where}.mixup_alpha and train.intensity_aux cannot be combined: mixup has no intensity target"
            )
        return augment


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
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged or refused file
        raise ValueError(
            f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); delete it to start this model "
            "over, or rerun without --resume"
        ) from e


def _score(row: dict, select_on: str) -> float:
    """Higher is better, whichever criterion is chosen."""
    return row["val_ua"] if select_on == "val_ua" else -row["val_loss"]


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, stream: ShardStream, kind: str, norm: dict, device: torch.device, amp: bool
) -> None:
    """Replace BatchNorm running statistics by their exact average over ``stream`` ("precise BN").

    With momentum 0.1 the running estimate needs ~30 steps to forget its initial value, more
    than a small corpus gives in an epoch; the eval-mode model then sees wrongly scaled features.
    """
    layers = _batchnorms(model)
    if not layers:
        return
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    model.train()
    for batch in stream:
        with _amp_context(device, amp):
            model(model_inputs(batch.x, batch.lengths, kind, norm, device, batch.offsets), batch.lengths.to(device))
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
) -> dict[str, float]:
    """Validation loss, accuracy (WA) and unweighted average recall (UA) of ``model`` on ``stream``.

    Adds the (true, pred) counts into ``confusion`` when given.
    """
    model.eval()
    tot_loss = 0.0
    truth: list[np.ndarray] = []
    preds: list[np.ndarray] = []
    for batch in stream:
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
        self.epochs = cfg.epochs if cfg.epochs is not None else PROFILE_EPOCHS["real"]
        if schedule is not None:
            self.epochs = len(schedule)
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
        n_mels = int(feature_config.get("n_mels", 128))
        self.model = build_model(name, n_classes=len(labels), n_mels=n_mels, **overrides).to(device)
        self.norm: dict[str, torch.Tensor] = {}
        offsets = None  # clip_id -> its speaker's mean, for every train and val clip
        if self.kind == "mel":
            if cfg.speaker_norm:
                speakers = speaker_means(shards, [*train_ids, *val_ids])
                offsets = speakers.offsets()
            mean, std = mel_band_stats(shards, train_ids, per_clip=cfg.clip_norm, offsets=offsets)
            self.norm = {"mean": torch.from_numpy(mean), "std": torch.from_numpy(std)}
            if cfg.clip_norm:
                self.norm["per_clip"] = torch.tensor(1.0)
            if cfg.speaker_norm:  # unknown speakers (label, the API) get the training speakers' average
                self.norm["speaker"] = torch.tensor(1.0)
                self.norm["speaker_default"] = torch.from_numpy(speakers.average(train_ids))
        sample_rate = int(feature_config.get("sample_rate", 16_000))
        if self.kind == "mel":
            fmin, fmax = float(feature_config.get("fmin", 0.0)), feature_config.get("fmax")
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
        self.state = ckpt["state"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        if torch.cuda.is_available() and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        log.info("%s: resumed after epoch %d", self.name, self.state["epoch"])

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
        tot_loss = tot_correct = tot_n = 0.0
        bar = tqdm(
            self.train_stream, total=len(self.train_stream), desc=f"{self.name} epoch {epoch + 1}/{self.epochs}",
            disable=not (progress and self.dist.is_main), leave=False, dynamic_ncols=True,
        )  # fmt: skip
        for batch in bar:
            x = model_inputs(batch.x, batch.lengths, self.kind, self.norm, self.device, batch.offsets)
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
            self.state["step"] += 1
            n = labels_t.shape[0]
            tot_loss += float(loss.detach()) * n
            tot_correct += float((logits.argmax(-1) == labels_t).sum())
            tot_n += n
            bar.set_postfix(loss=f"{tot_loss / tot_n:.3f}", acc=f"{tot_correct / tot_n:.3f}")
        if self.calib_stream is not None:
            recalibrate_batchnorm(self.scored, self.calib_stream, self.kind, self.norm, self.device, cfg.amp)
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
        val = evaluate_loss(self.scored, self.val_stream, self.kind, self.norm, self.device, cfg.amp, confusion)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, **val}
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        score = _score(row, cfg.select_on)
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
        state["epoch"] = epoch + 1
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
        state["epoch"] = epoch
        if self.dist.is_main:
            log.info("%s refit epoch %d/%d: train loss %.3f acc %.3f", self.name, epoch, self.epochs, train_loss,
                     train_acc)  # fmt: skip
            if epoch == self.epochs:
                state["best_epoch"] = epoch
                save_model(self.out_dir / "model", self.scored, self.name, {**save_meta, "best_epoch": epoch})
            self.save_checkpoint()

    def save_checkpoint(self) -> None:
        self.ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        rng = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "state": self.state,
            "rng": rng,
        }
        if self.ema is not None:
            payload["ema"] = self.ema.state_dict()
        atomic_write(self.ckpt_path, lambda tmp: torch.save(payload, tmp))
        atomic_write_json(self.out_dir / "history.json", self.state["history"])


def refit_epochs(history: list[dict], select_on: str, window: int) -> int:
    """Epochs a refit trains for: the centre (the later of two) of the ``window`` consecutive epochs
    of ``history`` with the best mean validation score; with ``window`` 1, the best epoch.

    The best single epoch is often a spike: validation UA on 4 actors (192 clips) moves by a few
    points from epoch to epoch on noise alone, and a refit that stops on a spike's epoch count
    inherits the noise, not the skill. Measured nested on RAVDESS (held-out validation actors,
    6 folds), a window of 5 against the best epoch: CNN 62.6 vs 62.2 UA, BiGRU 63.7 vs 60.9.
    """
    scores = np.array([_score(row, select_on) for row in history], dtype=np.float64)
    if not len(scores):
        raise ValueError("refit_epochs needs at least one validated epoch")
    k = min(window, len(scores))
    means = np.convolve(scores, np.ones(k) / k, mode="valid")  # means[i]: epochs i+1 .. i+k
    return int(means.argmax()) + k // 2 + 1


def refit_model(
    name: str,
    shards: str | Path,
    clip_ids: list[str],
    labels: list[str],
    cfg: TrainConfig,
    out_dir: str | Path,
    device: torch.device,
    selected: list[dict],
    resume: bool = False,
    meta: dict | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``name`` again from scratch on ``clip_ids`` (a fold's training and validation clips) for
    the epochs of the selected run's history, ``selected`` (up to :func:`refit_epochs`), at the learning
    rate each of those epochs ran at; no validation, and the last epoch is the model.

    More speakers to learn from, at the cost of a model whose validation score is unknown; the
    epoch count and the learning-rate drops were chosen by the validation clips it now trains on.
    """
    schedule = [float(row["lr"]) for row in selected]
    splits = dict.fromkeys(clip_ids, "train")
    meta = {**(meta or {}), "refit": {"epochs": len(schedule), "clips": len(clip_ids)}}
    return train_model(name, shards, splits, labels, cfg, out_dir, device, resume, meta=meta, progress=progress,
                       schedule=schedule)  # fmt: skip


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
    (with ``schedule``, one learning rate per epoch: that many epochs, no ``val``: see ``refit_model``).

    ``meta`` travels into the saved model; its ``feature_config`` (the shards' own, from their
    manifest) sets the model's input size and the augmentation's sample rate.
    """
    meta = dict(meta or {})
    feature_config = meta.get("feature_config") or {}
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
    }
    board = TrainingBoard(Path(out_dir) / "tb" if cfg.tensorboard and dist.is_main else None, labels)
    while not trainer.done():
        train_loss, train_acc = trainer.train_epoch(progress)
        trainer.end_epoch(train_loss, train_acc, save_meta)
        board.epoch(trainer.state["history"][-1])
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
    offsets = speaker_means(shards, clip_ids).offsets() if "speaker" in norm and known_speakers else None
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
