"""Pad or trim a ragged batch of waveforms to one fixed length.

A ragged batch is one flat float32 buffer holding every clip back to back plus an
``offsets`` array of ``B + 1`` int64 positions (clip ``i`` is
``flat[offsets[i]:offsets[i + 1]]``), the layout Arrow and torch's nested tensors use.
Keeping clips in one buffer avoids B small allocations and lets numba run one clip per
thread with ``prange``.

Padding modes: ``center`` (zeros split evenly on both sides, the extra one on the right)
or ``right`` (zeros after the clip). Trimming modes: ``center`` (keep the middle) or
``start`` (keep the beginning).
"""

from __future__ import annotations

import numba
import numpy as np

from .jit import njit

PAD_MODES = ("center", "right")
TRIM_MODES = ("center", "start")


@njit(parallel=True, nogil=True)
def _pad_trim_kernel(
    flat: np.ndarray, offsets: np.ndarray, out: np.ndarray, pad_center: bool, trim_center: bool
) -> None:
    n_clips, length = out.shape
    for i in numba.prange(n_clips):
        start = offsets[i]
        n = offsets[i + 1] - start
        if n >= length:
            skip = (n - length) // 2 if trim_center else 0
            out[i, :] = flat[start + skip : start + skip + length]
        else:
            # Each output sample is written once: zeros, clip, zeros (no zero-fill then copy).
            lead = (length - n) // 2 if pad_center else 0
            out[i, :lead] = 0.0
            out[i, lead : lead + n] = flat[start : start + n]
            out[i, lead + n :] = 0.0


def _check_modes(pad: str, trim: str) -> None:
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}. Found: {pad!r}")
    if trim not in TRIM_MODES:
        raise ValueError(f"trim must be one of {TRIM_MODES}. Found: {trim!r}")


def pad_trim_ragged(
    flat: np.ndarray,
    offsets: np.ndarray,
    length: int,
    pad: str = "center",
    trim: str = "center",
) -> np.ndarray:
    """Fix every clip of a ragged batch to ``length`` samples.

    Args:
        flat: (N,) float32, all clips back to back.
        offsets: (B + 1,) int64, clip ``i`` spans ``flat[offsets[i]:offsets[i + 1]]``.
        length: samples per output clip.
        pad: where short clips get their zeros, one of ``PAD_MODES``.
        trim: which part of a long clip is kept, one of ``TRIM_MODES``.

    Returns:
        (B, length) float32.
    """
    _check_modes(pad, trim)
    if length <= 0:
        raise ValueError(f"length must be positive. Found: {length}")
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.size == 0:
        raise ValueError(f"offsets must be a 1-D array of B + 1 positions. Found shape: {offsets.shape}")
    if offsets[0] != 0 or offsets[-1] != flat.shape[0] or np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must start at 0, never decrease and end at len(flat)")
    flat = np.ascontiguousarray(flat, dtype=np.float32)
    out = np.empty((offsets.size - 1, length), dtype=np.float32)
    _pad_trim_kernel(flat, offsets, out, pad == "center", trim == "center")
    return out


def ragged(clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pack a list of 1-D clips into (flat, offsets) for ``pad_trim_ragged``."""
    offsets = np.zeros(len(clips) + 1, dtype=np.int64)
    np.cumsum([c.shape[0] for c in clips], out=offsets[1:])
    flat = np.concatenate(clips).astype(np.float32, copy=False) if clips else np.zeros(0, np.float32)
    return flat, offsets


def pad_trim(clips: list[np.ndarray], length: int, pad: str = "center", trim: str = "center") -> np.ndarray:
    """Convenience wrapper: list of 1-D clips -> (B, length) float32."""
    flat, offsets = ragged(clips)
    return pad_trim_ragged(flat, offsets, length, pad, trim)
