"""A stacked bidirectional GRU over log-mel frames with self-attention pooling.

Each mel frame is one time step. The backward direction starts at each clip's real end rather
than in the padding, and attention pooling weights only valid frames: in eval mode the logits
do not depend on padding.

The layers run one direction at a time on the padded batch, the backward direction on each clip's
valid frames reversed in place (:func:`flip_valid`), with the weights of the one ``nn.GRU`` that
owns them (same parameters, names and initialisation as a packed bidirectional GRU, the same
outputs within 1e-7). On the CPU this trains about 25 % faster than packing: the backward pass of
a packed GRU zero-fills a copy of the whole packed input for every time step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from sononet.features.mel import FeatureConfig
from sononet.models.pooling import AttentionPooling, ClipHead, HeadConfig, check_lengths, check_mel, length_mask


@dataclass
class BiGRUConfig(HeadConfig):
    n_mels: int = FeatureConfig.n_mels  # input size per time step; must match the features
    hidden: int = 64  # per direction (frames become 128 wide); the seed's 128 costs 2.5x the CPU time per step
    n_layers: int = 3  # stacked GRU layers, as in the seed
    gru_dropout: float = 0.2  # between GRU layers (PyTorch applies it to all but the last)
    attn_hidden: int = 64  # width of the attention scorer; small, it only ranks frames
    dropout: float = 0.3  # before the linear head

    def check(self) -> None:
        self.check_head()
        for name in ("n_mels", "hidden", "n_layers", "attn_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive. Found: {getattr(self, name)}")


class EmotionBiGRU(nn.Module):
    def __init__(self, cfg: BiGRUConfig) -> None:
        super().__init__()
        cfg.check()
        self.config = cfg
        self.gru = nn.GRU(
            input_size=cfg.n_mels,
            hidden_size=cfg.hidden,
            num_layers=cfg.n_layers,
            batch_first=True,
            bidirectional=True,
            dropout=cfg.gru_dropout if cfg.n_layers > 1 else 0.0,
        )
        self.pool = AttentionPooling(2 * cfg.hidden, cfg.attn_hidden)
        self.head = ClipHead(2 * cfg.hidden, cfg, dropout=cfg.dropout)

    def describe(self) -> str:
        c = self.config
        return f"BiGRU {c.n_layers}x{c.hidden} + attention pooling, trained from scratch"

    def forward(
        self,
        x: Tensor,
        lengths: Tensor | None = None,
        labels: Tensor | None = None,
        intensity: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Log-mel (B, n_mels, T) with valid frame counts (B,) -> (logits (B, n_classes), loss or None)."""
        check_mel(x, self.config.n_mels)
        batch, _, n_frames = x.shape
        lengths = check_lengths(lengths, batch, n_frames, x.device)
        h = x.transpose(1, 2)  # (B, T, n_mels)
        flip = flip_index(lengths, n_frames)
        for k in range(self.config.n_layers):
            if k > 0:  # what nn.GRU's `dropout` does between layers
                h = F.dropout(h, self.config.gru_dropout, self.training)
            forward = self._direction(k, "", h)
            backward = flip_valid(self._direction(k, "_reverse", flip_valid(h, flip)), flip)
            h = torch.cat([forward, backward], dim=-1)  # (B, T, 2 * hidden)
        z = self.pool(h, length_mask(lengths, n_frames))  # (B, 2 * hidden)
        return self.head(z, labels, intensity)

    def _direction(self, layer: int, suffix: str, x: Tensor) -> Tensor:
        """One direction of one layer of ``self.gru`` over (B, T, F) -> (B, T, hidden): the op
        ``nn.GRU`` itself calls, with one layer's weights, so exporters know it too."""
        weights = [getattr(self.gru, f"{n}_l{layer}{suffix}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h0 = x.new_zeros(1, x.shape[0], self.config.hidden)  # (1, B, hidden)
        return torch.ops.aten.gru.input(x, h0, weights, True, 1, 0.0, self.training, False, True)[0]


def flip_index(lengths: Tensor, n_frames: int) -> Tensor:
    """Row indices into a (B * T, ...) view that reverse each clip's first ``lengths`` frames
    and keep its padding in place; applying them twice is the identity. (B * T,)"""
    t = torch.arange(n_frames, device=lengths.device)[None, :]  # (1, T)
    last = lengths[:, None] - 1  # (B, 1)
    within = torch.where(t <= last, last - t, t)  # (B, T)
    return (within + torch.arange(lengths.shape[0], device=lengths.device)[:, None] * n_frames).reshape(-1)


def flip_valid(x: Tensor, index: Tensor) -> Tensor:
    """(B, T, F) -> each clip's valid frames in reverse order, padding unchanged (:func:`flip_index`)."""
    return x.reshape(-1, x.shape[-1]).index_select(0, index).view_as(x)
