"""Training-time augmentation: SpecAugment, VTLP and noise on log-mel; speed, tempo and pitch on waves.

Speed perturbation resamples (tempo and pitch move together, as in Kaldi recipes); tempo
alone is a phase-vocoder time stretch; pitch alone is a stretch followed by a resample that
restores the duration. Factors 0.9/1.1 keep the resampling ratios small (9:10, 11:10), which
is what makes them cheap: ``torchaudio.functional.pitch_shift`` by semitones took 23 s per
batch of 32 clips on the CPU, this takes about 0.4 s.

All of it draws from torch's global RNG, so a resumed run that restores the RNG state
replays the same masks and noise as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio
from torch import nn

from sononet.features.mel import FeatureConfig, LogMel


@dataclass
class AugmentConfig:
    spec_augment: bool = True  # SpecAugment masks: the cheapest regulariser for small SER corpora
    freq_mask: int = 16  # widest frequency mask, in mel bins (of 128)
    time_mask: int = 12  # widest time mask, in frames (of 94, ~0.4 s)
    n_masks: int = 2  # masks of each kind per clip
    noise_std: float = 0.05  # Gaussian noise on normalised inputs (features or waveform)
    speed_perturb: bool = False  # wave models: resample by 0.9/1.0/1.1 (tempo and pitch together)
    tempo_perturb: bool = False  # wave models: time-stretch by 0.9/1.0/1.1, pitch kept
    pitch_perturb: bool = False  # wave models: pitch x0.9/1.0/1.1, duration kept
    mixup_alpha: float = 0.0  # >0: mix each batch with a shuffled copy, weight ~ Beta(a, a) (Zhang et al. 2018)
    # log-mel: warp each clip's frequency axis by a factor in [1 - vtlp, 1 + vtlp]; 0 = off.
    # None: the profile's recipe (experiment.REAL_VTLP: the BiGRU's on real speech), else off.
    vtlp: float | None = None
    # log-mel: the share of training clips heard in noise (multi-condition training): noise of a random
    # colour (power spectrum ~ 1/f^a, a uniform in [0, 2], white to brown) at an SNR uniform in
    # noise_snr dB is added to the stored waveform, and the clip's log-mel is computed again.
    noise_p: float = 0.0
    noise_snr: tuple[float, float] = (0.0, 30.0)

    def __post_init__(self) -> None:
        for name in ("freq_mask", "time_mask", "n_masks", "noise_std", "mixup_alpha"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0. Found: {getattr(self, name)}")
        if self.vtlp is not None and not 0 <= self.vtlp < 0.5:
            raise ValueError(f"vtlp must be in [0, 0.5) (0.1 warps by up to 10 %). Found: {self.vtlp}")
        if not 0 <= self.noise_p <= 1:  # also refuses NaN
            raise ValueError(f"noise_p must be in [0, 1]. Found: {self.noise_p}")
        lo, hi = self.noise_snr
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"noise_snr must be two finite dB values, low <= high. Found: {self.noise_snr}")


# Slaney's mel scale (librosa's default, and the filterbank's): linear below 1 kHz, log above.
_F_SP, _MIN_LOG_HZ, _MIN_LOG_MEL, _LOGSTEP = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0


def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return torch.where(
        f >= _MIN_LOG_HZ, _MIN_LOG_MEL + torch.log(f.clamp(min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP, f / _F_SP
    )


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return torch.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * torch.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), _F_SP * m)


def vtlp_warp(x: torch.Tensor, alpha: torch.Tensor, fmin: float, fmax: float) -> torch.Tensor:
    """(B, n_mels, T) log-mel, (B,) factors -> each clip as a vocal tract ``1 / alpha`` times as long.

    Vocal tract length perturbation (Jaitly & Hinton 2013) on the mel axis: band m takes the
    value the clip had at its centre frequency divided by alpha (alpha > 1 moves formants up),
    interpolated between the two nearest bands; beyond the edges the edge band repeats. The
    warp is linear per frame, so on speaker-normalised, standardised input it equals warping
    the raw log-mel and its speaker's mean alike (up to the per-band std, smooth over bands).
    """
    n_mels = x.shape[1]
    f64 = torch.float64  # positions in float64: at alpha = 1 the mel -> Hz -> mel round trip lands on the band
    lo, hi = hz_to_mel(torch.tensor(fmin, dtype=f64)), hz_to_mel(torch.tensor(fmax, dtype=f64))
    step = (hi - lo) / (n_mels + 1)  # filter centres: lo + (m + 1) step, as librosa.mel_frequencies(n + 2)
    centres = mel_to_hz(lo + step * torch.arange(1, n_mels + 1, dtype=f64))  # (n_mels,) Hz
    source = hz_to_mel(centres[None] / alpha[:, None].to("cpu", f64))  # (B, n_mels) mel of the band to read
    pos = ((source - lo) / step - 1).clamp(0, n_mels - 1).to(x.device)
    i0 = pos.floor().long()
    i1 = (i0 + 1).clamp(max=n_mels - 1)
    w = (pos - i0).unsqueeze(-1).to(x.dtype)  # (B, n_mels, 1)
    frames = x.shape[-1]
    below = x.gather(1, i0.unsqueeze(-1).expand(-1, -1, frames))  # (B, n_mels, T)
    above = x.gather(1, i1.unsqueeze(-1).expand(-1, -1, frames))
    return below * (1 - w) + above * w


class MelAugment(nn.Module):
    """(B, n_mels, T) normalised log-mel -> warped, masked, noisy log-mel; identity in eval mode.

    ``fmin``/``fmax`` are the features' mel range (fmax None: Nyquist), which VTLP needs.
    """

    def __init__(self, cfg: AugmentConfig, sample_rate: int, fmin: float = 0.0, fmax: float | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.fmin, self.fmax = fmin, fmax if fmax is not None else sample_rate / 2
        self.freq = torchaudio.transforms.FrequencyMasking(cfg.freq_mask, iid_masks=True)
        self.time = torchaudio.transforms.TimeMasking(cfg.time_mask, iid_masks=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        if self.cfg.vtlp:  # None (unresolved) or 0: off
            alpha = 1.0 + self.cfg.vtlp * (2 * torch.rand(x.shape[0]) - 1)  # (B,) uniform in [1 - v, 1 + v]
            x = vtlp_warp(x, alpha, self.fmin, self.fmax)
        if self.cfg.spec_augment:
            x = x.unsqueeze(1)  # (B, 1, n_mels, T): iid_masks wants a channel dim
            for _ in range(self.cfg.n_masks):
                x = self.time(self.freq(x))
            x = x.squeeze(1)
        if self.cfg.noise_std > 0:
            x = x + self.cfg.noise_std * torch.randn_like(x)
        return x


class NoisyMel(nn.Module):
    """Multi-condition training for log-mel models: some clips' log-mel replaced by that of the
    same stored waveform with noise added (``AugmentConfig.noise_p``, ``noise_snr``).

    The noise goes on the waveform, not on the features, so the log-mel is what a clip recorded
    in that noise would give (the same front end as ``prepare``, float16 storage rounding too);
    it covers the clip's valid samples only. Draws from torch's global RNG (the noise itself from
    a seed drawn there), so a resumed run replays it. Identity in eval mode.
    """

    def __init__(self, cfg: AugmentConfig, features: FeatureConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.logmel = LogMel(features, "torchaudio")
        self.mel_dtype = getattr(torch, features.mel_dtype)

    def forward(self, x: torch.Tensor, wave: torch.Tensor | None, wave_lengths: torch.Tensor | None) -> torch.Tensor:
        """(B, n_mels, T) stored log-mel, (B, S) stored waveform, (B,) valid samples -> (B, n_mels, T)."""
        if not self.training or self.cfg.noise_p <= 0:
            return x
        if wave is None or wave_lengths is None:
            raise ValueError("noise augmentation needs the stored waveforms: stream the shards with_wave=True")
        audible = wave.abs().amax(1) > 0  # (B,): a silent clip has no level to set the noise against
        pick = torch.nonzero((torch.rand(x.shape[0]) < self.cfg.noise_p) & audible).flatten()  # (k,)
        if not len(pick):
            return x
        lo, hi = self.cfg.noise_snr
        snr = lo + (hi - lo) * torch.rand(len(pick))  # (k,) dB
        colour = 2 * torch.rand(len(pick))  # (k,) spectral slope a: 0 white, 1 pink, 2 brown
        seed = int(torch.randint(2**31 - 1, (1,)))
        clean, n = wave[pick], wave_lengths[pick]  # (k, S), (k,)
        noise = torch.from_numpy(coloured_noise(colour.tolist(), clean.shape[1], seed))  # (k, S)
        noise = noise * (torch.arange(clean.shape[1])[None, :] < n[:, None])  # only where the clip is
        noisy = torchaudio.functional.add_noise(clean, noise, snr, lengths=n)
        x = x.clone()
        x[pick] = self.logmel(noisy).to(self.mel_dtype).float()
        return x


def coloured_noise(exponents: list[float], n: int, seed: int) -> np.ndarray:
    """(len(exponents), n) float32 unit-variance Gaussian noise, row i with a power spectrum ~ 1/f^exponents[i]."""
    import colorednoise

    rng = np.random.default_rng(seed)
    rows = [colorednoise.powerlaw_psd_gaussian(a, n, random_state=rng) for a in exponents]
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, n), np.float32)


def _speed(x: torch.Tensor, factor: float, sample_rate: int) -> torch.Tensor:
    """(B, S) -> (B, ~S / factor): played ``factor`` times faster, pitch up by ``factor``."""
    return torchaudio.functional.resample(x, int(round(sample_rate * factor)), sample_rate)


def _stretch(x: torch.Tensor, rate: float, n_fft: int = 512, hop: int = 128) -> torch.Tensor:
    """(B, S) -> (B, ~S / rate): phase-vocoder time stretch, pitch unchanged."""
    window = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x, n_fft, hop, window=window, return_complex=True)  # (B, n_fft // 2 + 1, frames)
    advance = torch.linspace(0, math.pi * hop, spec.shape[-2], device=x.device)[..., None]
    return torch.istft(torchaudio.functional.phase_vocoder(spec, rate, advance), n_fft, hop, window=window)


def _fit(y: torch.Tensor, n: int) -> torch.Tensor:
    """Crop or zero-pad the time axis of (B, S') to n samples."""
    if y.shape[1] >= n:
        return y[:, :n]
    return torch.nn.functional.pad(y, (0, n - y.shape[1]))


class WaveAugment(nn.Module):
    """(B, S) standardised waveform -> perturbed, noisy waveform of the same length.

    One factor per batch and per enabled perturbation, drawn from torch's RNG.
    """

    def __init__(self, cfg: AugmentConfig, sample_rate: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.factors = (0.9, 1.0, 1.1)

    def _draw(self) -> float:
        return self.factors[int(torch.randint(len(self.factors), (1,)))]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return x, lengths
        n = x.shape[1]
        if self.cfg.speed_perturb and (factor := self._draw()) != 1.0:
            x = _fit(_speed(x, factor, self.sample_rate), n)
            lengths = torch.clamp((lengths.float() / factor).long(), max=n)
        if self.cfg.tempo_perturb and (rate := self._draw()) != 1.0:
            x = _fit(_stretch(x, rate), n)
            lengths = torch.clamp((lengths.float() / rate).long(), max=n)
        if self.cfg.pitch_perturb and (factor := self._draw()) != 1.0:
            # Stretch to `factor` times the duration, then play `factor` times faster.
            x = _fit(_speed(_stretch(x, 1.0 / factor), factor, self.sample_rate), n)
        if self.cfg.noise_std > 0:
            x = x + self.cfg.noise_std * torch.randn_like(x)
        return x, lengths


def mixup(
    x: torch.Tensor, lengths: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Convex mix of a batch with a shuffled copy of itself.

    Returns the mixed inputs, their lengths (the longer of each pair: the mix holds both clips'
    frames), the partner index of each clip and the weight ``lam`` of the original clip; the loss
    is ``lam * CE(y) + (1 - lam) * CE(y[perm])``. Draws from torch's RNG, so resumes replay it.
    """
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], device=x.device)
    return lam * x + (1.0 - lam) * x[perm], torch.maximum(lengths, lengths[perm]), perm, lam
