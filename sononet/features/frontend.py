"""Decoded clips -> fixed-length waveforms and valid lengths -> stored features: the path prepare,
label, the API and the ONNX input helpers share.

Order matters and is the same everywhere: silence trimming (when the feature config asks for
it) finds the voice, then the pad/trim kernel fits it to the window, and the valid sample
and frame counts say where the padding starts, so models can ignore it. Long inputs are cut
into windows (:func:`slice_windows`) first.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from sononet.audio import MAX_CLIP_S

if TYPE_CHECKING:  # the labelling parent imports the window rules here without torch or numba
    import torch

    from sononet.features.mel import FeatureConfig, LogMel

# With silence trimming on, decode up to this many windows of audio so the trimmer sees a
# clip's real ends (RAVDESS: ~1 s of silence each side of a 1.5-2 s utterance); longer files
# keep their central part, as without trimming.
TRIM_DECODE_WINDOWS = 4
MIN_WINDOW_S = 1.0  # under 1 s a window holds too little prosody (and too few frames for the CNN)
# A window is one emotional state, and every input shorter than the window is padded to it in
# memory (batch x window samples): a minute bounds both; the models learned on 3 s.
MAX_WINDOW_S = MAX_CLIP_S
# A finer hop than 10 ms only repeats windows (the log-mel frame step is 32 ms) at a cost of one
# forward pass per hop; it also keeps every hop >= 40 samples at the lowest accepted rate (4 kHz).
MIN_HOP_S = 0.01


def check_window(window_s: object, hop_s: object) -> None:
    """The one check of window and hop, in seconds, for ``label``, its config, the API and the ONNX helpers.

    None leaves a value to its default (checked by :func:`window_samples` once it is known). Bools,
    NaN and inf are no durations; a hop finer than ``MIN_HOP_S`` or a window outside
    ``MIN_WINDOW_S``-``MAX_WINDOW_S`` is refused.
    """
    seconds = {}
    for name, value in (("window_s", window_s), ("hop_s", hop_s)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number of seconds. Found: {value!r}")
        seconds[name] = float(value)
    window, hop = seconds.get("window_s"), seconds.get("hop_s")
    if window is not None and not window >= MIN_WINDOW_S:
        raise ValueError(f"need window_s >= {MIN_WINDOW_S} (seconds). Found: {window_s}")
    if window is not None and not window <= MAX_WINDOW_S:
        raise ValueError(f"need window_s <= {MAX_WINDOW_S} (seconds), one emotional state. Found: {window_s}")
    if hop is not None and not MIN_HOP_S <= hop <= (MAX_WINDOW_S if window is None else window):
        raise ValueError(f"need 0 < hop_s <= window_s (seconds), hop_s >= {MIN_HOP_S}. Found: {hop_s}, {window_s}")


def window_samples(window_s: float, hop_s: float, sample_rate: int) -> tuple[int, int]:
    """(window, hop) in samples at ``sample_rate``, each at least one: the windowing loops step in
    samples, so a hop that rounds to 0 would never end, whatever the seconds said."""
    check_window(window_s, hop_s)
    length, step = round(window_s * sample_rate), round(hop_s * sample_rate)
    if length < 1 or not 1 <= step <= length:
        raise ValueError(f"window and hop must be at least one sample at {sample_rate} Hz. Found: {length}, {step}")
    return length, step


def decode_samples(cfg: FeatureConfig) -> int:
    """How many samples the decoder needs to keep per file for this feature config."""
    return cfg.clip_samples * (TRIM_DECODE_WINDOWS if cfg.trim_silence_db else 1)


def fixed_length(
    clips: list[np.ndarray], cfg: FeatureConfig, length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Trim silence (if configured), then pad/trim every clip to ``length`` samples.

    Returns:
        waves (B, length) float32 and n_valid (B,) int32: samples of real audio in each row.
    """
    from sononet.kernels import pad_trim, trim_silence

    length = length or cfg.clip_samples
    if cfg.trim_silence_db:
        clips = trim_silence(clips, cfg.trim_silence_db, cfg.n_fft, cfg.hop_length)
    waves = pad_trim(clips, length, cfg.pad, cfg.trim)
    n_valid = np.array([min(c.shape[0], length) for c in clips], dtype=np.int32)
    return waves, n_valid


def frame_lengths(n_valid: np.ndarray, cfg: FeatureConfig, n_frames: int | None = None) -> np.ndarray:
    """Valid samples -> valid log-mel frames: every frame whose hop starts inside the audio."""
    n_frames = n_frames or cfg.n_frames
    return np.minimum(n_frames, -(-np.asarray(n_valid, dtype=np.int64) // cfg.hop_length))


def stored_features(
    clips: list[np.ndarray], cfg: FeatureConfig, kind: str, logmel: LogMel | None, length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips (1-D float32 at ``cfg.sample_rate``, each at most a window) -> (features, valid lengths)
    as the shards hold them and the models take them before normalisation.

    Returns:
        mel models: (B, n_mels, T) log-mel dB rounded to ``cfg.mel_dtype`` (as float32) and (B,) valid
        frames; waveform models: (B, length) samples and (B,) valid samples. Both int64 lengths.
    """
    import torch

    waves_np, n_valid = fixed_length(clips, cfg, length)
    waves = torch.from_numpy(waves_np)  # (B, length)
    if kind != "mel":
        return waves, torch.from_numpy(n_valid.astype(np.int64))
    with torch.no_grad():
        device = next(itertools.chain(logmel.buffers(), logmel.parameters()), waves).device
        mel = logmel(waves.to(device))  # (B, n_mels, T)
        x = mel.to(getattr(torch, cfg.mel_dtype)).float()  # the shards' storage rounding
    return x, torch.from_numpy(frame_lengths(n_valid, cfg, x.shape[-1]))


def clip_span_s(cfg: FeatureConfig, window_s: float) -> float:
    """Longest input scored as one clip, as training saw it.

    That is the window, except for a model trained with silence trimming and scored with its own
    window: training trimmed clips of up to :func:`decode_samples` before cutting the window, so
    such inputs are trimmed whole too rather than cut into raw windows.
    """
    if cfg.trim_silence_db and round(window_s * cfg.sample_rate) == cfg.clip_samples:
        return decode_samples(cfg) / cfg.sample_rate
    return window_s


def slice_windows(samples: np.ndarray, length: int, hop: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, clip) windows of an in-memory signal, placed exactly as ``sononet label`` streams files.

    Starts 0, hop, 2 hop... while a whole window fits; then one window aligned to the end when
    audio is left over, so every window is real audio. A signal shorter than ``length`` is one clip.
    """
    total, start, end = samples.shape[0], 0, 0
    while start + length <= total:
        yield start, samples[start : start + length]
        end, start = start + length, start + hop
    if end == 0:
        yield 0, samples
    elif end < total:
        yield total - length, samples[total - length :]
