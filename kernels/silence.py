"""Find the speech inside leading and trailing silence, the way ``librosa.effects.trim`` does.

Acted corpora pad every utterance with silence (RAVDESS: about 1 s at each end), and a fixed
3 s window cut from the middle of such a clip spends a third of its frames on room noise.
Trimming first keeps the window on the voice.

The rule is librosa's: frame RMS over ``frame_length`` samples every ``hop_length`` samples
(centred frames, zero padding at the edges), in dB below the loudest frame; a frame is
non-silent when it lies less than ``top_db`` below that peak. The kept span runs from the first
non-silent frame's start to the end of the last one's hop (``frames_to_samples``), clipped to
the clip. A clip with no non-silent frame (digital silence) keeps nothing, as in librosa; the
caller decides what that means (``sononet.audio`` reports it as ``silent`` before this runs).

Frame energies come from a running sum of squares, so a clip costs O(samples) whatever the
frame length; clips run in parallel over a ragged batch (see ``kernels.pad_trim``).
"""

from __future__ import annotations

import numba
import numpy as np

from .jit import njit
from .pad_trim import ragged

AMIN = 1e-5  # librosa.amplitude_to_db's floor: RMS below this counts as this


@njit(nogil=True)
def _clip_bounds(x: np.ndarray, frame_length: int, hop_length: int, top_db: float) -> tuple[int, int]:
    n = x.shape[0]
    half = frame_length // 2
    n_frames = 1 + n // hop_length
    # csum[k] = sum of x[:k]**2; frame t covers x[t*hop - half : t*hop + half] with zeros outside.
    csum = np.zeros(n + 1, dtype=np.float64)
    for k in range(n):
        csum[k + 1] = csum[k] + np.float64(x[k]) * np.float64(x[k])
    ms = np.empty(n_frames, dtype=np.float64)
    peak = 0.0
    for t in range(n_frames):
        lo = min(max(t * hop_length - half, 0), n)
        hi = min(max(t * hop_length + half, 0), n)
        ms[t] = (csum[hi] - csum[lo]) / frame_length
        peak = max(peak, ms[t])
    # librosa: 10 log10(max(amin^2, ms)) - 10 log10(max(amin^2, peak)) > -top_db
    floor = AMIN * AMIN
    ref_db = 10.0 * np.log10(max(floor, peak))
    first = -1
    last = -1
    for t in range(n_frames):
        if 10.0 * np.log10(max(floor, ms[t])) - ref_db > -top_db:
            if first < 0:
                first = t
            last = t
    if first < 0:
        return 0, 0
    return first * hop_length, min(n, (last + 1) * hop_length)


@njit(parallel=True, nogil=True)
def _bounds_kernel(
    flat: np.ndarray, offsets: np.ndarray, out: np.ndarray, frame_length: int, hop_length: int, top_db: float
) -> None:
    for i in numba.prange(offsets.shape[0] - 1):
        start, end = _clip_bounds(flat[offsets[i] : offsets[i + 1]], frame_length, hop_length, top_db)
        out[i, 0] = start
        out[i, 1] = end


def silence_bounds_ragged(
    flat: np.ndarray, offsets: np.ndarray, top_db: float, frame_length: int, hop_length: int
) -> np.ndarray:
    """Non-silent ``[start, end)`` of every clip in a ragged batch, relative to each clip.

    Args:
        flat: (N,) float32, all clips back to back.
        offsets: (B + 1,) int64, clip ``i`` spans ``flat[offsets[i]:offsets[i + 1]]``.
        top_db: frames more than this many dB below the clip's loudest frame are silence.
        frame_length, hop_length: RMS frame and hop, in samples (the front end passes its n_fft and hop).

    Returns:
        (B, 2) int64: start and end sample of the kept span; ``(0, 0)`` for an all-silent clip.
    """
    if not top_db > 0:
        raise ValueError(f"top_db must be positive. Found: {top_db}")
    if frame_length <= 0 or hop_length <= 0:
        raise ValueError(f"frame_length and hop_length must be positive. Found: {frame_length}, {hop_length}")
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.size == 0 or offsets[0] != 0 or offsets[-1] != flat.shape[0]:
        raise ValueError("offsets must be a 1-D array of B + 1 positions from 0 to len(flat)")
    flat = np.ascontiguousarray(flat, dtype=np.float32)
    out = np.empty((offsets.size - 1, 2), dtype=np.int64)
    _bounds_kernel(flat, offsets, out, frame_length, hop_length, float(top_db))
    return out


def trim_silence(clips: list[np.ndarray], top_db: float, frame_length: int, hop_length: int) -> list[np.ndarray]:
    """Each 1-D clip without its leading and trailing silence (views, no copies).

    A clip that is silent throughout is returned whole rather than emptied: dropping it is the
    decoder's call (it reports ``silent``), not the trimmer's.
    """
    if not clips:
        return []
    flat, offsets = ragged(clips)
    bounds = silence_bounds_ragged(flat, offsets, top_db, frame_length, hop_length)
    return [c[s:e] if e > s else c for c, (s, e) in zip(clips, bounds)]
