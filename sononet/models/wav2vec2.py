"""A pretrained speech encoder (wav2vec2 by default) fine-tuned for emotion, with freezing strategies.

Any encoder :mod:`sononet.models.backbone` loads works: wav2vec2, HuBERT, WavLM on the raw
waveform, Whisper through its own log-mel front end. Frames are mean-pooled over the valid part
of each clip, then a small linear-ReLU-linear head classifies.

Freezing, from most to least trainable:

* ``freeze_feature_encoder`` (default): the conv front end is fixed, the transformer is tuned.
* ``freeze_layers=k``: additionally the first k transformer layers and the embeddings under them.
* ``freeze_backbone``: the whole encoder is fixed and kept in eval mode; a learned softmax-weighted
  sum of all hidden layers feeds the head (the EmoBox / SUPERB probing protocol).

``tiny=True`` builds a random-init encoder for tests and the offline demo. It is not pretrained
and :meth:`EmotionWav2Vec2.describe` says so, so no table can pass it off as wav2vec2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from sononet.models.backbone import SpeechEncoder
from sononet.models.pooling import ClipHead, HeadConfig, check_lengths, masked_mean


@dataclass
class Wav2Vec2Config(HeadConfig):
    backbone: str = "facebook/wav2vec2-base"  # hub id or local directory of a transformers speech encoder
    tiny: bool = False  # random-init tiny encoder instead of pretrained weights: tests and offline demo only
    freeze_feature_encoder: bool = True  # the conv front end holds generic acoustics; the standard recipe
    freeze_layers: int = 0  # freeze the first k transformer layers (and all below); 0 tunes every layer
    freeze_backbone: bool = False  # frozen encoder + learned weighted sum of all layers (EmoBox-style)
    layerdrop: float = 0.0  # LayerDrop skips layers at random, which DDP reports as unused parameters
    head_hidden: int = 256  # width of the linear-ReLU-linear head (transformers' classifier_proj_size)
    dropout: float = 0.1  # in the head; the encoder keeps its own dropout settings
    lr: float = 3e-5  # fine-tuning rate for a pretrained encoder; 1e-3 would wreck its weights

    def check(self) -> None:
        self.check_head()
        if self.freeze_layers < 0:
            raise ValueError(f"freeze_layers must be >= 0. Found: {self.freeze_layers}")
        if not 0.0 <= self.layerdrop < 1.0:
            raise ValueError(f"layerdrop must be in [0, 1). Found: {self.layerdrop}")
        if self.head_hidden < 0:
            raise ValueError(f"head_hidden must be >= 0 (0: one linear layer). Found: {self.head_hidden}")


class EmotionWav2Vec2(nn.Module):
    def __init__(self, cfg: Wav2Vec2Config, weights_from: str | Path | None = None) -> None:
        """``weights_from`` overrides where the encoder is read from (a saved model's ``backbone/``)
        while ``cfg.backbone`` keeps naming the original checkpoint for :meth:`describe`."""
        super().__init__()
        cfg.check()
        self.config = cfg
        source = weights_from if weights_from is not None else (None if cfg.tiny else cfg.backbone)
        self.backbone = SpeechEncoder.load(source, layerdrop=cfg.layerdrop)
        n_layers = len(self.backbone.layers)
        if cfg.freeze_layers > n_layers:
            raise ValueError(f"freeze_layers must be <= {n_layers}, the encoder's depth. Found: {cfg.freeze_layers}")
        if cfg.freeze_backbone:
            self.backbone.freeze_feature_encoder()
            self.backbone.requires_grad_(False)
        elif cfg.freeze_layers > 0:
            self.backbone.freeze_below(cfg.freeze_layers)
        elif cfg.freeze_feature_encoder:
            self.backbone.freeze_feature_encoder()
        # Zeros -> uniform softmax: every layer starts with an equal say.
        self.layer_weights = nn.Parameter(torch.zeros(n_layers + 1)) if cfg.freeze_backbone else None
        self.head = ClipHead(self.backbone.hidden_size, cfg, hidden=cfg.head_hidden, dropout=cfg.dropout)
        if cfg.freeze_backbone:
            self.backbone.eval()

    def describe(self) -> str:
        if self.config.tiny:
            return "random-init tiny, not pretrained"
        return f"pretrained: {self.config.backbone}"

    def train(self, mode: bool = True) -> EmotionWav2Vec2:
        """A frozen encoder stays in eval mode: no dropout or SpecAugment noise in fixed features."""
        super().train(mode)
        if self.config.freeze_backbone:
            self.backbone.eval()
        return self

    def forward(
        self,
        x: Tensor,
        lengths: Tensor | None = None,
        labels: Tensor | None = None,
        intensity: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Waveform (B, S) at 16 kHz with valid samples (B,) -> (logits (B, n_classes), loss or None)."""
        if x.dim() != 2 or not x.dtype.is_floating_point:
            raise ValueError(f"expected a float waveform batch (B, S). Found: {tuple(x.shape)} {x.dtype}")
        lengths = check_lengths(lengths, x.shape[0], x.shape[1], x.device)
        if self.layer_weights is None:
            hidden, mask = self.backbone(x, lengths)
            h = hidden[-1]  # (B, F, H)
        else:
            with torch.no_grad():
                hidden, mask = self.backbone(x, lengths, all_layers=True)
            w = torch.softmax(self.layer_weights, dim=0)  # (L + 1,)
            h = (torch.stack(hidden) * w[:, None, None, None]).sum(dim=0)  # (L + 1, B, F, H) -> (B, F, H)
        z = masked_mean(h, mask)  # (B, H)
        return self.head(z, labels, intensity)
