"""Log-mel spectrograms on the torch device, with two interchangeable backends.

nnAudio computes the STFT as a 1-D convolution with Fourier kernels, which is what makes
it fast on a GPU; on a CPU torchaudio's FFT-based ``MelSpectrogram`` is several times
faster (measured in ``sononet bench``). Both use librosa's conventions (Slaney mel scale
and area normalisation, reflect-padded centred frames, periodic Hann window) so they agree
with librosa and with each other within the tolerance ``tests/test_parity.py`` holds.

The dB step is ours, not ``torchaudio.transforms.AmplitudeToDB``: that one applies
``top_db`` against the maximum of the whole *batch* for 3-D input, so a clip's features
would depend on its batch mates. Here ``top_db`` is per clip, like librosa's
``power_to_db`` on one clip.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from sononet.audio import MAX_CLIP_S, AudioConfig, check_sample_rate
from sononet.kernels.pad_trim import PAD_MODES, TRIM_MODES

log = logging.getLogger(__name__)

BACKENDS = ("nnaudio", "torchaudio")
# Clips per CPU call: a 16-clip STFT stays in cache; 64 at once ran at half the rate (1 thread, 2 cores).
CPU_BLOCK = 16
# Bounds a feature config must keep, so a tampered config.json is refused before it allocates:
MAX_N_FFT = 1 << 16  # a 4 s analysis window at 16 kHz, far past any speech analysis
MAX_FRAMES = 1 << 16  # frames per clip (a minute at a 1 ms hop): one clip's (n_mels, frames) stays small


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = AudioConfig.sample_rate  # the decoder's rate: the filterbank is built for it
    clip_samples: int = 48_000  # 3 s covers 93 % of CREMA-D clips (mean 2.54 s) whole
    n_fft: int = 2048  # 128 ms window: fine frequency resolution for F0 harmonics at 128 mels
    hop_length: int = 512  # 32 ms hop -> 94 frames per clip, enough for prosody
    n_mels: int = 128  # the seed's setting
    fmin: float = 0.0
    fmax: float | None = None  # None = Nyquist
    power: float = 2.0  # power spectrogram, so dB = 10 log10
    top_db: float | None = 80.0  # librosa's default floor relative to each clip's peak
    amin: float = 1e-10  # librosa's default; avoids log(0) in digital silence
    pad: str = "right"  # pad/trim kernel: zeros after the clip, so `lengths` marks a valid prefix
    trim: str = "center"  # pad/trim kernel: which part of long clips is kept
    trim_silence_db: float | None = None  # drop leading/trailing audio this many dB below the peak; None or 0 = off
    mel_dtype: str = "float16"  # storage in shards: halves size; dB values need ~0.03 dB precision

    def __post_init__(self) -> None:
        """Every field's type and range: a config read back from a model folder is checked as a typed one."""
        for name in ("sample_rate", "clip_samples", "n_fft", "hop_length", "n_mels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer. Found: {value!r}")
        check_sample_rate(self.sample_rate)
        nyquist = self.sample_rate / 2
        if self.clip_samples > MAX_CLIP_S * self.sample_rate:
            raise ValueError(f"clip_samples must be at most {MAX_CLIP_S:g} s of audio. Found: {self.clip_samples}")
        if not 16 <= self.n_fft <= min(MAX_N_FFT, 2 * self.clip_samples - 1):  # centred frames reflect n_fft // 2
            raise ValueError(f"n_fft must be from 16 to {MAX_N_FFT} and under twice clip_samples. Found: {self.n_fft}")
        if self.n_frames > MAX_FRAMES:
            raise ValueError(
                f"hop_length gives {self.n_frames} frames per clip, over {MAX_FRAMES}. Found: {self.hop_length}"
            )
        if self.n_mels > self.n_fft // 2 + 1:
            raise ValueError(f"n_mels must be at most n_fft // 2 + 1 = {self.n_fft // 2 + 1}. Found: {self.n_mels}")
        fmax = nyquist if self.fmax is None else self.fmax
        if not (_real(self.fmin) and _real(fmax) and 0 <= self.fmin < fmax <= nyquist):
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2 = {nyquist:g}. Found: {self.fmin}, {self.fmax}")
        for name in ("power", "amin", "top_db"):
            value = getattr(self, name)
            if not (value is None and name == "top_db") and not (_real(value) and value > 0):
                raise ValueError(
                    f"{name} must be a positive finite number{' or None' * (name == 'top_db')}. Found: {value!r}"
                )
        if self.trim_silence_db is not None and not (_real(self.trim_silence_db) and self.trim_silence_db >= 0):
            raise ValueError(f"trim_silence_db must be >= 0 (0 or None: no trimming). Found: {self.trim_silence_db}")
        if self.pad not in PAD_MODES or self.trim not in TRIM_MODES:
            raise ValueError(
                f"pad must be one of {PAD_MODES}, trim one of {TRIM_MODES}. Found: {self.pad!r}, {self.trim!r}"
            )
        if self.mel_dtype not in ("float16", "float32"):
            raise ValueError(f"mel_dtype must be float16 or float32. Found: {self.mel_dtype!r}")

    @property
    def n_frames(self) -> int:
        return 1 + self.clip_samples // self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)

    def hash(self) -> str:
        """Short stable id of everything that changes the shard bytes."""
        values = self.to_dict()
        if values["trim_silence_db"] is None:  # added later: unset, it keeps older shards' hashes valid
            del values["trim_silence_db"]
        blob = json.dumps(values, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _real(value: object) -> bool:
    """A finite int or float (not a bool, not a string): what JSON may hold in a numeric field."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def power_to_db(spec: torch.Tensor, amin: float = 1e-10, top_db: float | None = 80.0) -> torch.Tensor:
    """Power spectrogram (..., n_mels, T) -> dB, ``top_db`` below each clip's own peak."""
    db = 10.0 * torch.log10(torch.clamp(spec, min=amin))
    if top_db is not None:
        peak = db.amax(dim=(-2, -1), keepdim=True)
        db = torch.maximum(db, peak - top_db)
    return db


def _nnaudio(cfg: FeatureConfig) -> nn.Module:
    from nnAudio.features import MelSpectrogram

    return MelSpectrogram(
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        n_mels=cfg.n_mels,
        window="hann",
        center=True,
        pad_mode="reflect",
        power=cfg.power,
        htk=False,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
        norm=1,
        trainable_mel=False,
        trainable_STFT=False,
        verbose=False,
    )


class BandedMelScale(nn.Module):
    """torchaudio's Slaney filterbank applied band by band: the same sums, a 15th of the multiplies.

    A triangular mel filter is zero outside its two neighbours' centres, so the dense
    (n_freqs, n_mels) filterbank holds about 2 nonzeros per FFT bin (2,020 of 131,200 at
    n_fft 2048, 128 mels). Each group of ``group`` adjacent filters is multiplied with only the
    bins it covers. Measured at 16 clips on 1 thread: 0.86 ms against 8.2 ms for
    ``MelScale``'s dense matmul, which cost more than the FFT; outputs agree to 4e-8.
    """

    def __init__(self, fb: torch.Tensor, group: int = 8) -> None:
        super().__init__()
        self.n_mels = fb.shape[1]
        self.bounds: list[tuple[int, int]] = []
        for i, start in enumerate(range(0, self.n_mels, group)):
            cols = fb[:, start : start + group]  # (n_freqs, g)
            used = cols.ne(0).any(dim=1).nonzero().flatten()
            lo, hi = (int(used.min()), int(used.max()) + 1) if used.numel() else (0, 1)  # an all-zero filter
            self.bounds.append((lo, hi))
            self.register_buffer(f"w{i}", cols[lo:hi].t().contiguous(), persistent=False)  # (g, hi - lo)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        """(B, n_freqs, frames) power -> (B, n_mels, frames)."""
        bands = [getattr(self, f"w{i}") @ power[:, lo:hi] for i, (lo, hi) in enumerate(self.bounds)]
        return torch.cat(bands, dim=1)


class _TorchaudioMel(nn.Module):
    """torchaudio's Spectrogram and Slaney mel filterbank, with the power taken as re^2 + im^2.

    ``MelSpectrogram(power=2)`` computes ``|X|.pow(2)``: a complex abs (a square root per bin)
    that cost as much as the FFT itself on the CPU (10.4 ms against 2.7 ms for 16 clips).
    """

    def __init__(self, cfg: FeatureConfig) -> None:
        super().__init__()
        import torchaudio

        self.power = cfg.power
        self.spec = torchaudio.transforms.Spectrogram(
            n_fft=cfg.n_fft, hop_length=cfg.hop_length, center=True, pad_mode="reflect", power=None
        )
        fmax = cfg.fmax if cfg.fmax is not None else float(cfg.sample_rate // 2)
        if cfg.fmin > fmax:
            raise ValueError(f"need fmin <= fmax. Found: {cfg.fmin}, {fmax}")
        fb = torchaudio.functional.melscale_fbanks(
            cfg.n_fft // 2 + 1, cfg.fmin, fmax, cfg.n_mels, cfg.sample_rate, norm="slaney", mel_scale="slaney"
        )  # (n_freqs, n_mels): what torchaudio.transforms.MelScale builds and applies densely
        self.mel = BandedMelScale(fb)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, time) -> (B, n_mels, frames) mel power (or magnitude for power 1)."""
        x = self.spec(wave)  # (B, n_fft // 2 + 1, frames) complex
        power = x.real * x.real + x.imag * x.imag
        return self.mel(power if self.power == 2.0 else power.pow(self.power / 2.0))


def _torchaudio(cfg: FeatureConfig) -> nn.Module:
    return _TorchaudioMel(cfg)


class LogMel(nn.Module):
    """Waveform (..., time) -> log-mel (..., n_mels, frames) in dB, on whatever device it sits."""

    def __init__(self, cfg: FeatureConfig = FeatureConfig(), backend: str = "torchaudio") -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"mel backend must be one of {BACKENDS}. Found: {backend!r}")
        self.cfg = cfg
        self.backend = backend
        self.mel = _nnaudio(cfg) if backend == "nnaudio" else _torchaudio(cfg)

    @torch.no_grad()
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        shape = wave.shape
        flat = wave.reshape(-1, shape[-1]).float()  # (B, time)
        if flat.is_cuda or flat.shape[0] <= CPU_BLOCK:
            spec = self.mel(flat)  # (B, n_mels, frames)
        else:
            spec = torch.cat([self.mel(block) for block in flat.split(CPU_BLOCK)])
        db = power_to_db(spec, self.cfg.amin, self.cfg.top_db)
        return db.reshape(*shape[:-1], *db.shape[-2:])


def _clips_per_second(module: LogMel, batch: torch.Tensor, reps: int) -> float:
    module(batch)  # warm-up: kernel caches, lazy init
    if batch.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        module(batch)
    if batch.is_cuda:
        torch.cuda.synchronize()
    return reps * batch.shape[0] / (time.perf_counter() - t0)


def pick_backend(
    requested: str, device: torch.device, cfg: FeatureConfig = FeatureConfig()
) -> tuple[str, dict[str, float]]:
    """Resolve ``auto``: torchaudio on the CPU, else the faster of both, timed on a small batch on ``device``.

    On the CPU nnAudio's convolution STFT ran 7x slower than torchaudio's FFT in every bench
    (190 against 1,397 clips/s at batch 16), so timing it there only cost each start its import
    and half a second. Returns the backend name and the measured clips/s (empty when nothing was
    timed), so callers can say what they picked and why.
    """
    if requested != "auto":
        if requested not in BACKENDS:
            raise ValueError(f"mel backend must be auto or one of {BACKENDS}. Found: {requested!r}")
        return requested, {}
    if device.type == "cpu":
        return "torchaudio", {}
    gen = torch.Generator().manual_seed(0)
    batch = (0.1 * torch.randn(16, cfg.clip_samples, generator=gen)).to(device)
    rates = {name: _clips_per_second(LogMel(cfg, name).to(device), batch, reps=3) for name in BACKENDS}
    best = max(rates, key=rates.__getitem__)
    log.info(
        "mel backend auto -> %s on %s (%s)",
        best,
        device,
        ", ".join(f"{k} {v:.0f} clips/s" for k, v in rates.items()),
    )
    return best, rates
