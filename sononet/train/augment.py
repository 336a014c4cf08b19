"""Training-time augmentation: SpecAugment and noise on log-mel, speed perturbation on waves.

All of it draws from torch's global RNG, so a resumed run that restores the RNG state
replays the same masks and noise as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio
from torch import nn


@dataclass
class AugmentConfig:
    spec_augment: bool = True  # SpecAugment masks: the cheapest regulariser for small SER corpora
    freq_mask: int = 16  # widest frequency mask, in mel bins (of 128)
    time_mask: int = 12  # widest time mask, in frames (of 94, ~0.4 s)
    n_masks: int = 2  # masks of each kind per clip
    noise_std: float = 0.05  # Gaussian noise on normalised inputs (features or waveform)
    speed_perturb: bool = False  # wave models: resample by 0.9/1.0/1.1 (tempo and pitch together)


class MelAugment(nn.Module):
    """(B, n_mels, T) normalised log-mel -> masked, noisy log-mel; identity in eval mode."""

    def __init__(self, cfg: AugmentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.freq = torchaudio.transforms.FrequencyMasking(cfg.freq_mask, iid_masks=True)
        self.time = torchaudio.transforms.TimeMasking(cfg.time_mask, iid_masks=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        if self.cfg.spec_augment:
            x = x.unsqueeze(1)  # (B, 1, n_mels, T): iid_masks wants a channel dim
            for _ in range(self.cfg.n_masks):
                x = self.time(self.freq(x))
            x = x.squeeze(1)
        if self.cfg.noise_std > 0:
            x = x + self.cfg.noise_std * torch.randn_like(x)
        return x


class WaveAugment(nn.Module):
    """(B, S) standardised waveform -> speed-perturbed, noisy waveform of the same length."""

    def __init__(self, cfg: AugmentConfig, sample_rate: int = 16_000) -> None:
        super().__init__()
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.factors = (0.9, 1.0, 1.1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return x, lengths
        if self.cfg.speed_perturb:
            factor = self.factors[int(torch.randint(len(self.factors), (1,)))]
            if factor != 1.0:
                # Resampling from sr*factor to sr plays the clip `factor` times faster.
                y = torchaudio.functional.resample(x, int(self.sample_rate * factor), self.sample_rate)
                out = torch.zeros_like(x)
                n = min(x.shape[1], y.shape[1])
                out[:, :n] = y[:, :n]
                x = out
                lengths = torch.clamp((lengths.float() / factor).long(), max=x.shape[1])
        if self.cfg.noise_std > 0:
            x = x + self.cfg.noise_std * torch.randn_like(x)
        return x, lengths
