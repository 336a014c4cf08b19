"""From frames to a clip decision: length masks, pooling over valid frames, and the shared head.

Every model ends the same way: a (B, T, D) sequence with per-clip valid lengths becomes one
(B, D) vector, and :class:`ClipHead` turns that vector into emotion logits and, when labels are
given, the loss. Keeping the loss here means the three models cannot drift apart on class
weights, label smoothing or the auxiliary intensity task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = -100  # label value that contributes nothing to the loss (PyTorch's convention)


@dataclass
class HeadConfig:
    """Fields every model config shares: what the head predicts and how it is scored."""

    n_classes: int = 6  # CREMA-D's six emotions; the registry sets it from the data
    n_intensity: int = 0  # >0 adds an auxiliary intensity head (CREMA-D: LO/MD/HI = 3); 0 turns it off
    aux_weight: float = 0.3  # intensity loss weight; small, so emotion stays the main task
    class_weights: list[float] | None = None  # per-class CE weights (e.g. inverse frequency); None = equal
    label_smoothing: float = 0.0  # CE label smoothing; crowd labels are noisy, 0.1 is a common choice
    lr: float = 1e-3  # learning rate the trainer uses for this model unless told otherwise

    def check_head(self) -> None:
        """Raise ValueError for settings the loss cannot use, echoing the value."""
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be at least 2. Found: {self.n_classes}")
        if self.n_intensity < 0:
            raise ValueError(f"n_intensity must be >= 0 (0 disables the head). Found: {self.n_intensity}")
        if self.aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0. Found: {self.aux_weight}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1). Found: {self.label_smoothing}")
        if self.class_weights is not None:
            if len(self.class_weights) != self.n_classes:
                raise ValueError(
                    f"class_weights needs one weight per class ({self.n_classes}). "
                    f"Found {len(self.class_weights)}: {self.class_weights}"
                )
            if any(not w >= 0 for w in self.class_weights) or sum(self.class_weights) <= 0:
                raise ValueError(f"class_weights must be non-negative and not all zero. Found: {self.class_weights}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive. Found: {self.lr}")


def check_mel(x: Tensor, n_mels: int) -> None:
    """Mel models take (B, n_mels, T); say so with the shape found."""
    if x.dim() != 3 or x.shape[1] != n_mels:
        raise ValueError(f"expected log-mel of shape (B, {n_mels}, T). Found: {tuple(x.shape)}")


def check_lengths(lengths: Tensor | None, batch: int, max_len: int, device: torch.device) -> Tensor:
    """Validate per-clip valid lengths; None means every clip fills the whole axis.

    Returns:
        LongTensor (B,) on ``device``, each value in [1, max_len].
    """
    if lengths is None:
        return torch.full((batch,), max_len, dtype=torch.long, device=device)
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(f"lengths must have shape ({batch},), one per clip. Found: {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point:
        raise ValueError(f"lengths must be an integer tensor. Found dtype: {lengths.dtype}")
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 1 or hi > max_len:
        raise ValueError(f"lengths must lie in [1, {max_len}] (the padded length). Found min {lo}, max {hi}")
    return lengths.to(device=device, dtype=torch.long)


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """True where a frame is real, False where it is padding.

    Returns:
        BoolTensor (B, max_len).
    """
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over valid frames only, so padding does not dilute short clips.

    Args:
        x: (B, T, D) frame features.
        mask: (B, T) bool, True for valid frames; every row needs at least one.

    Returns:
        (B, D).
    """
    w = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)


def masked_mean_std(x: Tensor, mask: Tensor) -> Tensor:
    """Mean and standard deviation over valid frames (x-vector statistics pooling).

    The spread over time carries what a mean hides: how much pitch and energy move, which is
    much of what separates anger and happiness from sadness and calm.

    Args:
        x: (B, T, D) frame features.
        mask: (B, T) bool, True for valid frames.

    Returns:
        (B, 2 * D).
    """
    w = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    n = w.sum(dim=1).clamp(min=1.0)  # (B, 1)
    mean = (x * w).sum(dim=1) / n  # (B, D)
    var = (((x - mean.unsqueeze(1)) ** 2) * w).sum(dim=1) / n
    return torch.cat([mean, torch.sqrt(var + 1e-5)], dim=-1)


class AttentionPooling(nn.Module):
    """Learned scoring over time: softmax over valid frames of ``v . tanh(W h)`` weights the frames.

    Emotion is carried unevenly in an utterance (a stressed word, a final fall), so a learned
    weighting beats a plain mean for recurrent encoders.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, T, D) and a (B, T) valid mask -> (B, D)."""
        scores = self.score(torch.tanh(self.proj(x))).squeeze(-1)  # (B, T)
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)  # (B, T), zero on padding
        return torch.bmm(weights.unsqueeze(1), x).squeeze(1)  # (B, D)


class ClipHead(nn.Module):
    """Emotion logits from a pooled clip vector, the optional intensity head, and the loss.

    The loss is ``CE(emotion) + aux_weight * CE(intensity)``; intensity labels of -100 (unknown,
    e.g. CREMA-D's XX) are skipped, and a batch with none known adds exactly 0.
    """

    def __init__(self, in_dim: int, cfg: HeadConfig, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        cfg.check_head()
        self.cfg = cfg
        if hidden > 0:  # linear-ReLU-linear, for backbones whose features are not linearly separable yet
            self.emotion = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(in_dim, hidden),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, cfg.n_classes),
            )
        else:
            self.emotion = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, cfg.n_classes))
        self.intensity = nn.Linear(in_dim, cfg.n_intensity) if cfg.n_intensity > 0 else None
        weights = None if cfg.class_weights is None else torch.tensor(cfg.class_weights, dtype=torch.float32)
        # Not persistent: the config is the source of truth, so checkpoints do not depend on it.
        self.register_buffer("class_weights", weights, persistent=False)

    def emotion_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy of (B, n_classes) logits with the configured class weights and smoothing.

        Public so that mixup can score one forward pass against two label sets.
        """
        return F.cross_entropy(
            logits.float(),
            labels,
            weight=self.class_weights,
            label_smoothing=self.cfg.label_smoothing,
            ignore_index=IGNORE_INDEX,
        )

    def forward(
        self, z: Tensor, labels: Tensor | None = None, intensity: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """(B, D) -> (logits (B, n_classes), loss or None when labels is None)."""
        logits = self.emotion(z)  # (B, n_classes)
        if labels is None:
            return logits, None
        loss = self.emotion_loss(logits, labels)
        if self.intensity is not None and intensity is not None:
            int_logits = self.intensity(z).float()  # (B, n_intensity)
            # Sum / count instead of mean: a batch with no known intensity gives 0, not 0/0 = NaN.
            known = (intensity != IGNORE_INDEX).sum().clamp(min=1)
            aux = F.cross_entropy(int_logits, intensity, ignore_index=IGNORE_INDEX, reduction="sum") / known
            loss = loss + self.cfg.aux_weight * aux
        return logits, loss
