"""Benchmark 2: pad/trim a ragged batch, the numba kernel against this machine's memcpy.

The kernel is judged by the fraction of memcpy bandwidth it reaches: ``np.copyto`` of the same
number of output bytes, what merely moving them costs on this machine (a per-sample Python loop
would flatter any kernel). Like is compared with like: the kernel call that allocates its output
(``pad_trim_ragged``, what prepare runs) against a copy into a fresh ``np.empty`` (both pay the
first-touch page faults), and the bare kernel into a preallocated, already written ``out``
against a copy into that same ``out``. Bandwidth counts
the bytes each side must move: a copy reads and writes the output size; the kernel writes the
output and reads only the kept input (padding is written, not read). ``np.copyto`` is one
thread; the kernel runs on numba's threads (``numba_threads``).

The clips (one flat float32 buffer plus offsets, lengths drawn from CREMA-D's durations) get
the feature stage's modes (zeros on the right, long clips keep their centre). The NumPy loop
the kernel replaced, the list wrapper ``pad_trim(clips)`` (adds the concatenation into one
buffer) and a per-sample Python loop are timed too, as context. The kernel is compiled first.
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
    from sononet.bench.corpus import SAMPLE_RATE, cremad_like

    rng = np.random.default_rng(seed)
    seconds = np.array([s.seconds for s in cremad_like(7442)])
    lengths = np.round(rng.choice(seconds, size=n_clips) * SAMPLE_RATE).astype(np.int64)
    offsets = np.zeros(n_clips + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = (0.1 * rng.standard_normal(int(offsets[-1]))).astype(np.float32)
    return flat, offsets


def run_pad_trim(n_clips: int, repeats: int, length: int | None = None, python_clips: int = 16) -> dict:
    """``length``: samples per output clip [default: the features' clip]."""
    import numba

    from sononet.features.mel import FeatureConfig
    from sononet.kernels import pad_trim, pad_trim_ragged
    from sononet.kernels.pad_trim import _pad_trim_kernel

    length = length or FeatureConfig.clip_samples

    flat, offsets = ragged_batch(n_clips)
    clips = [flat[offsets[i] : offsets[i + 1]] for i in range(n_clips)]
    kernel = pad_trim_ragged(flat, offsets, length, pad="right", trim="center")  # compiles (or loads cache)
    if not np.array_equal(kernel, numpy_pad_trim(flat, offsets, length)):
        raise RuntimeError("numba pad/trim and the NumPy reference disagree; benchmark is meaningless")
    out = np.empty_like(kernel)  # the preallocated destination: every timing's warm-up call writes it first
    _pad_trim_kernel(flat, offsets, out, False, True)
    if not np.array_equal(out, kernel):
        raise RuntimeError("the bare kernel and pad_trim_ragged disagree; benchmark is meaningless")
    src = kernel  # the memcpy source: output-sized, resident
    t_numba = time_call(lambda: pad_trim_ragged(flat, offsets, length, "right", "center"), repeats)
    t_copy = time_call(lambda: np.copyto(np.empty_like(src), src), repeats)
    t_numba_pre = time_call(lambda: _pad_trim_kernel(flat, offsets, out, False, True), repeats)
    t_copy_pre = time_call(lambda: np.copyto(out, src), repeats)
    t_numpy = time_call(lambda: numpy_pad_trim(flat, offsets, length), repeats)
    t_list = time_call(lambda: pad_trim(clips, length, "right", "center"), repeats)
    n_py = min(python_clips, n_clips)  # a per-sample Python loop is too slow for the whole batch
    t_py = time_call(lambda: python_pad_trim(flat[: offsets[n_py]], offsets[: n_py + 1], length), 1, warmup=0)
    lengths = np.diff(offsets)
    # Bytes moved per clip: pad/trim writes the output row and reads the kept input; a copy reads and writes a row.
    gib_pad_trim = float(length + np.minimum(lengths, length).mean()) * 4 / 2**30
    gib_copy = 2 * length * 4 / 2**30
    measured = [  # key, implementation, destination, clips, timing, GiB moved per clip
        ("numba", "numba pad_trim_ragged (allocates its output)", "fresh", n_clips, t_numba, gib_pad_trim),
        ("memcpy", "memcpy: np.copyto into a fresh np.empty", "fresh", n_clips, t_copy, gib_copy),
        ("numba_pretouched", "numba _pad_trim_kernel into a preallocated out", "pre-touched", n_clips, t_numba_pre,
         gib_pad_trim),
        ("memcpy_pretouched", "memcpy: np.copyto into a preallocated out", "pre-touched", n_clips, t_copy_pre,
         gib_copy),
        ("numba_list", "numba pad_trim (list, incl. concatenate)", "fresh", n_clips, t_list, gib_pad_trim),
        ("numpy_loop", "NumPy loop (np.zeros + slice copy)", "fresh", n_clips, t_numpy, gib_pad_trim),
        ("python_loop", f"pure Python per-sample loop ({n_py}-clip subset)", "fresh", n_py, t_py, gib_pad_trim),
    ]  # fmt: skip
    numpy_rate = n_clips / t_numpy.median_s
    memcpy_gib = {dest: n / t.median_s * gib for key, _, dest, n, t, gib in measured if key.startswith("memcpy")}
    rows = []
    for key, impl, dest, n, t, gib in measured:
        rate = n / t.median_s
        gib_per_s = rate * gib  # the same expression as memcpy_gib's: the copies' own rows read exactly 100
        rows.append(
            {
                "key": key,
                "impl": impl,
                "dest": dest,
                "clips_per_s": rate,
                "gib_per_s": gib_per_s,
                "pct_of_memcpy": 100 * gib_per_s / memcpy_gib[dest],  # against the copy with the same destination
                "speedup_vs_numpy": rate / numpy_rate,
                **t.to_dict(),
            }
        )
    return {
        "clips": n_clips,
        "length": length,
        "input_mb": flat.nbytes / 2**20,
        "output_mb": n_clips * length * 4 / 2**20,
        "fraction_trimmed": float(np.mean(lengths > length)),
        "numba_threads": numba.get_num_threads(),
        "memcpy_threads": 1,
        "rows": rows,
    }
