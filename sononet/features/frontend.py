"""Decoded clips -> fixed-length waveforms and valid lengths: the one path prepare and label share.

Order matters and is the same everywhere: silence trimming (when the feature config asks for
it) finds the voice, then the pad/trim kernel fits it to the window, and the valid sample
and frame counts say where the padding starts, so models can ignore it.
"""

from __future__ import annotations

import numpy as np

from sononet.features.mel import FeatureConfig
from sononet.kernels import pad_trim, trim_silence

# With silence trimming on, decode up to this many windows of audio so the trimmer sees a
# clip's real ends (RAVDESS: ~1 s of silence each side of a 1.5-2 s utterance); longer files
# keep their central part, as without trimming.
TRIM_DECODE_WINDOWS = 4


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
