"""A training run's checkpoint: weights, optimiser, scheduler, the moving average, the loop's
:class:`TrainState` and the RNG, written after every epoch (and at a SIGTERM, after the current
step), so ``resume=True`` continues exactly where a stopped run left off.

Loaded with ``torch.load(weights_only=True)``: tensors, dicts, lists and numbers only, so a file
that would run code when unpickled is refused, as is a state this loop does not know.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sononet.io import atomic_write, open_regular

CHECKPOINT_DIR, CHECKPOINT = "checkpoint", "last.pt"  # <out>/checkpoint/last.pt
# Written by every checkpoint since the loop's state was first saved; the rest have defaults.
_REQUIRED = ("epoch", "history", "best_score", "best_epoch", "bad_epochs", "step")


@dataclass
class TrainState:
    """Where the loop stands: everything early stopping, the warm-up and a mid-epoch resume need."""

    epoch: int = 0  # epochs finished
    history: list[dict] = field(default_factory=list)  # one row per finished epoch (history.json)
    best_score: float = -math.inf  # the best selection score so far (config.selection_score)
    best_epoch: int = -1  # the epoch that scored it (1-based); -1 before any
    bad_epochs: int = 0  # epochs since the last improvement
    step: int = 0  # optimiser steps taken: drives the per-step warm-up
    batch: int = 0  # steps of the epoch in progress (a SIGTERM stops mid-epoch; 0 between epochs)
    partial: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # that epoch's [loss x n, correct, n]

    def next_epoch(self) -> None:
        """An epoch ended: count it, and start the next with no step taken and no loss summed."""
        self.epoch += 1
        self.batch, self.partial = 0, [0.0, 0.0, 0.0]

    @classmethod
    def from_dict(cls, doc: Any, path: Path) -> TrainState:
        """A stored state; one without the mid-epoch fields (written before SIGTERM stops) starts the next epoch."""
        names = [f.name for f in fields(cls)]
        if not isinstance(doc, dict) or set(_REQUIRED) - set(doc) or set(doc) - set(names):
            found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
            raise ValueError(
                f"checkpoint {path} holds no training state this SonoNet can resume (expected {names}, found "
                f"{found}); delete it to start this model over, or rerun without --resume"
            )
        return cls(**doc)


def checkpoint_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR / CHECKPOINT


def rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available() and rng.get("cuda") is not None:
        torch.cuda.set_rng_state_all(rng["cuda"])


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau,
    ema: nn.Module | None,
    state: TrainState,
    rng: dict | None = None,
) -> None:
    """Write everything a resume needs, atomically (a crash mid-write leaves the previous checkpoint);
    ``rng``: the RNG state to store instead of the current one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "state": asdict(state),
        "rng": rng or rng_state(),
    }
    if ema is not None:
        payload["ema"] = ema.state_dict()
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: Path) -> dict:
    """The checkpoint's payload with ``state`` as a :class:`TrainState`; unreadable or foreign files are refused."""
    with open_regular(path):  # a FIFO planted as last.pt is refused, never read
        pass
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged or refused file
        raise ValueError(
            f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); delete it to start this model "
            "over, or rerun without --resume"
        ) from e
    if not isinstance(ckpt, dict) or not {"model", "optimizer", "scheduler", "state", "rng"} <= set(ckpt):
        raise ValueError(f"checkpoint {path} is not a SonoNet training checkpoint; delete it or rerun without --resume")
    ckpt["state"] = TrainState.from_dict(ckpt["state"], path)
    return ckpt
