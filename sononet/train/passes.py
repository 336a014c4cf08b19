"""Forward passes outside the optimiser step: validation (loss, WA, UA) and BatchNorm recalibration,
with the autocast context every pass of the loop shares. Both poll ``stop`` before each batch, so a
SIGTERM (:mod:`sononet.stopping`) ends them within one batch."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from sononet.features.normalize import Normalizer, model_inputs
from sononet.features.reader import ShardStream
from sononet.stopping import TerminatedError


def amp_context(device: torch.device, enabled: bool) -> torch.autocast:
    """bf16 autocast on CUDA (fp16 where bf16 is missing); a no-op context on the CPU."""
    on = enabled and device.type == "cuda"
    dtype = torch.bfloat16 if on and torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=on)


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    stream: ShardStream,
    kind: str,
    norm: Normalizer | None,
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
            with amp_context(device, amp):
                x = model_inputs(batch.x, batch.lengths, kind, norm, device, batch.offsets)
                model(x, batch.lengths.to(device))
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum


@torch.no_grad()
def evaluate_loss(
    model: nn.Module,
    stream: ShardStream,
    kind: str,
    norm: Normalizer | None,
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
        with amp_context(device, amp):
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
