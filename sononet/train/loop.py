"""The training loop shared by every registered model.

AdamW, gradient clipping, ReduceLROnPlateau and early stopping on validation loss;
SpecAugment and noise (``augment``); statistics from the training split only
(``normalize``); bf16 autocast on CUDA; a checkpoint after every epoch holding model,
optimiser, scheduler, early-stopping and RNG state, so ``resume=True`` continues exactly
where a killed run stopped; DDP when launched by torchrun (``ddp``).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from sononet.features.reader import Batch, ShardStream, load_metadata
from sononet.train.augment import AugmentConfig, MelAugment, WaveAugment
from sononet.train.ddp import DistInfo, all_reduce_mean, average_buffers, gather_digests
from sononet.train.normalize import mel_band_stats, normalize_mel, normalize_wave

log = logging.getLogger(__name__)
CHECKPOINT = "last.pt"


@dataclass
class TrainConfig:
    epochs: int = 15  # upper bound; early stopping usually ends sooner
    batch_size: int = 32  # fits wav2vec2-base on a 16 GB GPU at 3 s clips
    lr: float = 1e-3  # AdamW for the CNN/BiGRU; wav2vec2 uses its own config's lr
    weight_decay: float = 1e-2
    grad_clip: float = 5.0  # GRUs and transformers occasionally spike early on
    patience: int = 5  # epochs without a better validation loss before stopping
    plateau_patience: int = 2  # epochs before ReduceLROnPlateau halves the learning rate
    plateau_factor: float = 0.5
    class_weights: bool = False  # inverse-frequency CE weights (CREMA-D's NEU is 15 % rarer)
    intensity_aux: bool = False  # auxiliary LO/MD/HI head where intensity labels exist
    aux_weight: float = 0.3
    amp: bool = True  # bf16 autocast on CUDA; ignored on the CPU
    seed: int = 0
    window_shards: int = 4  # shards shuffled together; bounds memory
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model_overrides: dict[str, dict] = field(default_factory=dict)  # e.g. {"wav2vec2": {"tiny": True}}

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience", "window_shards"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1. Found: {getattr(self, name)}")
        for name in ("lr", "grad_clip"):
            if not getattr(self, name) > 0:  # `not >` also refuses NaN
                raise ValueError(f"{name} must be positive. Found: {getattr(self, name)}")
        for name in ("weight_decay", "aux_weight", "plateau_patience"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0. Found: {getattr(self, name)}")
        if not 0 < self.plateau_factor < 1:
            raise ValueError(f"plateau_factor must be in (0, 1). Found: {self.plateau_factor}")


@dataclass
class TrainResult:
    model_dir: Path
    history: list[dict]
    best_epoch: int
    digests: list[str]  # one per rank: equal when DDP kept the replicas in sync


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _amp_context(device: torch.device, enabled: bool) -> torch.autocast:
    on = enabled and device.type == "cuda"
    dtype = torch.bfloat16 if on and torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=on)


def model_inputs(batch: Batch, kind: str, norm: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    x = batch.x.to(device, non_blocking=True)
    if kind == "mel":
        return normalize_mel(x, norm["mean"].to(device), norm["std"].to(device))
    return normalize_wave(x, batch.lengths.to(device))


def _load_checkpoint(path: Path) -> dict:
    # weights_only: tensors, dicts, lists and numbers only; a pickle that would run code is refused
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged or refused file
        raise ValueError(
            f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); delete it to start this model "
            "over, or rerun without --resume"
        ) from e


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
) -> TrainResult:
    """Train ``name`` on the ``train`` clips of ``splits``, early-stop on ``val``, save the best."""
    from sononet.models.registry import MODELS, build_model
    from sononet.models.saving import save_model

    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoint"
    seed_everything(cfg.seed)
    train_ids = [c for c, s in splits.items() if s == "train"]
    val_ids = [c for c, s in splits.items() if s == "val"]
    if not train_ids or not val_ids:
        raise ValueError(f"need train and val clips. Found: {len(train_ids)} train, {len(val_ids)} val")
    kind = MODELS[name].input_kind
    overrides = dict(cfg.model_overrides.get(name, {}))
    train_meta = load_metadata(shards, ["clip_id", "label", "intensity"]).to_pandas()
    train_meta = train_meta[train_meta.clip_id.isin(set(train_ids))]
    if cfg.class_weights:
        counts = Counter(train_meta.label)
        overrides["class_weights"] = [len(train_meta) / (len(labels) * max(counts.get(lab, 0), 1)) for lab in labels]
    if cfg.intensity_aux and train_meta.intensity.isin(["LO", "MD", "HI"]).any():
        overrides.update(n_intensity=3, aux_weight=cfg.aux_weight)
    model = build_model(name, n_classes=len(labels), **overrides).to(device)

    norm: dict[str, torch.Tensor] = {}
    if kind == "mel":
        mean, std = mel_band_stats(shards, train_ids)
        norm = {"mean": torch.from_numpy(mean), "std": torch.from_numpy(std)}
    augment = (MelAugment(cfg.augment) if kind == "mel" else WaveAugment(cfg.augment)).to(device)
    lr = getattr(model.config, "lr", None) or cfg.lr
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=cfg.plateau_factor, patience=cfg.plateau_patience
    )
    wrapped: torch.nn.Module = model
    if dist.enabled:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )

    train_stream = ShardStream(
        shards,
        train_ids,
        labels,
        kind,
        cfg.batch_size,
        True,
        cfg.seed,
        cfg.window_shards,
        dist.rank,
        dist.world_size,
    )
    val_stream = ShardStream(shards, val_ids, labels, kind, cfg.batch_size, shuffle=False)
    state = {"epoch": 0, "history": [], "best_val": math.inf, "best_epoch": -1, "bad_epochs": 0}
    if resume and (ckpt_dir / CHECKPOINT).exists():
        ckpt = _load_checkpoint(ckpt_dir / CHECKPOINT)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state = ckpt["state"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        if torch.cuda.is_available() and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        log.info("%s: resumed after epoch %d", name, state["epoch"])

    save_meta = {
        **(meta or {}),
        "labels": labels,
        "norm": {k: v.tolist() for k, v in norm.items()},
        "input_kind": kind,
        "train_config": asdict(cfg),
    }
    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
        epoch = state["epoch"]
        train_stream.set_epoch(epoch)
        wrapped.train()
        augment.train()
        tot_loss = tot_correct = tot_n = 0.0
        bar = tqdm(
            train_stream, total=len(train_stream), desc=f"{name} epoch {epoch + 1}/{cfg.epochs}",
            disable=not (progress and dist.is_main), leave=False, dynamic_ncols=True,
        )  # fmt: skip
        for batch in bar:
            x = model_inputs(batch, kind, norm, device)
            lengths = batch.lengths.to(device)
            if kind == "mel":
                x = augment(x)
            else:
                x, lengths = augment(x, lengths)
            labels_t = batch.labels.to(device)
            with _amp_context(device, cfg.amp):
                logits, loss = wrapped(x, lengths, labels_t, batch.intensity.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            n = labels_t.shape[0]
            tot_loss += float(loss.detach()) * n
            tot_correct += float((logits.argmax(-1) == labels_t).sum())
            tot_n += n
            bar.set_postfix(loss=f"{tot_loss / tot_n:.3f}", acc=f"{tot_correct / tot_n:.3f}")
        average_buffers(model, dist)
        val_loss, val_acc = evaluate_loss(model, val_stream, kind, norm, device, cfg.amp)
        train_loss = all_reduce_mean(tot_loss / max(tot_n, 1), dist)
        train_acc = all_reduce_mean(tot_correct / max(tot_n, 1), dist)
        scheduler.step(val_loss)
        row = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": optimizer.param_groups[0]["lr"],
        }
        state["history"].append(row)
        improved = val_loss < state["best_val"] - 1e-6
        if improved:
            state.update(best_val=val_loss, best_epoch=epoch + 1, bad_epochs=0)
            if dist.is_main:
                save_model(
                    out_dir / "model",
                    model,
                    name,
                    {**save_meta, "best_epoch": epoch + 1, "val_loss": val_loss},
                )
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        if dist.is_main:
            log.info(
                "%s epoch %d: train loss %.3f acc %.3f | val loss %.3f acc %.3f%s",
                name, epoch + 1, train_loss, train_acc, val_loss, val_acc, " *" if improved else "",
            )  # fmt: skip
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            tmp = ckpt_dir / f".{CHECKPOINT}.tmp"
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "state": state,
                    "rng": {
                        "torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    },
                },
                tmp,
            )
            tmp.replace(ckpt_dir / CHECKPOINT)
            (out_dir / "history.json").write_text(json.dumps(state["history"], indent=2) + "\n")
    digests = gather_digests(model, dist)
    return TrainResult(out_dir / "model", state["history"], state["best_epoch"], digests)


@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module, stream: ShardStream, kind: str, norm: dict, device: torch.device, amp: bool
) -> tuple[float, float]:
    model.eval()
    tot_loss = correct = n = 0.0
    for batch in stream:
        x = model_inputs(batch, kind, norm, device)
        labels_t = batch.labels.to(device)
        with _amp_context(device, amp):
            logits, loss = model(x, batch.lengths.to(device), labels_t)
        tot_loss += float(loss) * labels_t.shape[0]
        correct += float((logits.argmax(-1) == labels_t).sum())
        n += labels_t.shape[0]
    return tot_loss / max(n, 1), correct / max(n, 1)


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    meta: dict,
    shards: str | Path,
    clip_ids: list[str],
    device: torch.device,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Class probabilities for ``clip_ids``: columns clip_id, true, pred, prob_<label>..."""
    labels = meta["labels"]
    kind = meta["input_kind"]
    norm = {k: torch.tensor(v) for k, v in meta.get("norm", {}).items()}
    model.eval().to(device)
    stream = ShardStream(shards, clip_ids, labels, kind, batch_size, shuffle=False)
    rows = []
    for batch in stream:
        logits, _ = model(model_inputs(batch, kind, norm, device), batch.lengths.to(device))
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
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
