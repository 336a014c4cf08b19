"""Benchmark 2: pad/trim a ragged batch, numba kernel vs the plain NumPy loop it replaces.

Both sides get the same ragged batch (one flat float32 buffer plus offsets, clip lengths
drawn from CREMA-D's durations) and produce the same (B, 48000) float32 array with the
feature stage's modes (zeros on the right, long clips keep their centre). The kernel is
compiled before timing. The list wrapper ``pad_trim(clips)``, which is what ``prepare``
calls, is timed too, since it adds the concatenation into one buffer.
"""

from __future__ import annotations

import numpy as np

from sononet.bench.timing import time_call


def numpy_pad_trim(flat: np.ndarray, offsets: np.ndarray, length: int) -> np.ndarray:
    """Reference: ``np.zeros`` plus one slice copy per clip (right pad, centre trim)."""
    out = np.zeros((offsets.size - 1, length), np.float32)
    for i in range(offsets.size - 1):
        clip = flat[offsets[i] : offsets[i + 1]]
        n = clip.shape[0]
        if n >= length:
            skip = (n - length) // 2
            out[i] = clip[skip : skip + length]
        else:
            out[i, :n] = clip
    return out


def python_pad_trim(flat: np.ndarray, offsets: np.ndarray, length: int) -> np.ndarray:
    """Context only: the per-sample Python loop a kernel is usually said to beat."""
    out = np.zeros((offsets.size - 1, length), np.float32)
    for i in range(offsets.size - 1):
        start, n = int(offsets[i]), int(offsets[i + 1] - offsets[i])
        skip = (n - length) // 2 if n > length else 0
        for j in range(min(n, length)):
            out[i, j] = flat[start + skip + j]
    return out


def ragged_batch(n_clips: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(flat, offsets) of ``n_clips`` noise clips with CREMA-D's 16 kHz lengths (1.3-5 s)."""
    from sononet.bench.corpus import cremad_like

    rng = np.random.default_rng(seed)
    seconds = np.array([s.seconds for s in cremad_like(7442)])
    lengths = np.round(rng.choice(seconds, size=n_clips) * 16_000).astype(np.int64)
    offsets = np.zeros(n_clips + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = (0.1 * rng.standard_normal(int(offsets[-1]))).astype(np.float32)
    return flat, offsets


def run_pad_trim(n_clips: int, repeats: int, length: int = 48_000, python_clips: int = 16) -> dict:
    from sononet.kernels import pad_trim, pad_trim_ragged

    flat, offsets = ragged_batch(n_clips)
    clips = [flat[offsets[i] : offsets[i + 1]] for i in range(n_clips)]
    kernel = pad_trim_ragged(flat, offsets, length, pad="right", trim="center")  # compiles (or loads cache)
    if not np.array_equal(kernel, numpy_pad_trim(flat, offsets, length)):
        raise RuntimeError("numba pad/trim and the NumPy reference disagree; benchmark is meaningless")
    del kernel
    t_numba = time_call(lambda: pad_trim_ragged(flat, offsets, length, "right", "center"), repeats)
    t_numpy = time_call(lambda: numpy_pad_trim(flat, offsets, length), repeats)
    t_list = time_call(lambda: pad_trim(clips, length, "right", "center"), repeats)
    n_py = min(python_clips, n_clips)  # a per-sample Python loop is too slow for the whole batch
    t_py = time_call(lambda: python_pad_trim(flat[: offsets[n_py]], offsets[: n_py + 1], length), 1, warmup=0)
    py_rate = n_py / t_py.median_s
    lengths = np.diff(offsets)
    # Bytes each side must move per clip: the whole output row written, the kept input read.
    gib_per_clip = (length + np.minimum(lengths, length).mean()) * 4 / 2**30
    rows = [
        ("numba pad_trim_ragged (flat+offsets)", n_clips / t_numba.median_s, t_numba),
        ("numba pad_trim (list, incl. concatenate)", n_clips / t_list.median_s, t_list),
        ("NumPy loop (np.zeros + slice copy)", n_clips / t_numpy.median_s, t_numpy),
        (f"pure Python per-sample loop ({n_py}-clip subset)", py_rate, t_py),
    ]
    numpy_rate = n_clips / t_numpy.median_s
    return {
        "clips": n_clips,
        "length": length,
        "input_mb": flat.nbytes / 2**20,
        "output_mb": n_clips * length * 4 / 2**20,
        "fraction_trimmed": float(np.mean(lengths > length)),
        "rows": [
            {
                "impl": impl,
                "clips_per_s": rate,
                "speedup_vs_numpy": rate / numpy_rate,
                "gib_per_s": rate * gib_per_clip,  # near memory bandwidth = nothing left to win
                **t.to_dict(),
            }
            for impl, rate, t in rows
        ],
    }
