"""The numba pad/trim kernel against a NumPy reference."""

from __future__ import annotations

import os

import numpy as np
import pytest
from sononet.kernels import pad_trim, pad_trim_ragged, ragged


def reference(clip: np.ndarray, length: int, pad: str, trim: str) -> np.ndarray:
    n = clip.shape[0]
    if n >= length:
        skip = (n - length) // 2 if trim == "center" else 0
        return clip[skip : skip + length]
    out = np.zeros(length, np.float32)
    lead = (length - n) // 2 if pad == "center" else 0
    out[lead : lead + n] = clip
    return out


@pytest.mark.parametrize("pad", ["center", "right"])
@pytest.mark.parametrize("trim", ["center", "start"])
def test_matches_numpy_reference(pad: str, trim: str) -> None:
    rng = np.random.default_rng(0)
    lengths = [0, 1, 7, 99, 100, 101, 250, 1000]
    clips = [rng.standard_normal(n).astype(np.float32) for n in lengths]
    out = pad_trim(clips, 100, pad, trim)
    assert out.shape == (len(clips), 100)
    for row, clip in zip(out, clips):
        np.testing.assert_array_equal(row, reference(clip, 100, pad, trim))


def test_batch_equals_item_by_item() -> None:
    rng = np.random.default_rng(1)
    clips = [rng.standard_normal(n).astype(np.float32) for n in rng.integers(1, 500, 64)]
    batch = pad_trim(clips, 256)
    for row, clip in zip(batch, clips):
        np.testing.assert_array_equal(row, pad_trim([clip], 256)[0])


def test_ragged_layout() -> None:
    flat, offsets = ragged([np.ones(3, np.float32), np.zeros(2, np.float32)])
    assert flat.shape == (5,) and offsets.tolist() == [0, 3, 5]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pad": "left"}, "pad must be one of"),
        ({"trim": "end"}, "trim must be one of"),
        ({"length": 0}, "length must be positive"),
    ],
)
def test_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    flat, offsets = ragged([np.ones(3, np.float32)])
    args = {"length": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        pad_trim_ragged(flat, offsets, **args)


def test_rejects_inconsistent_offsets() -> None:
    with pytest.raises(ValueError, match="offsets"):
        pad_trim_ragged(np.ones(5, np.float32), np.array([0, 3, 9]), 4)


def test_kernels_leave_torchs_thread_count_alone() -> None:
    """numba's omp layer would share torch's libgomp and reset its thread count on the first
    parallel kernel; the kernels pick numba's own workqueue layer instead."""
    import subprocess
    import sys

    code = (
        "import torch; torch.set_num_threads(1); import numpy as np; from sononet.kernels import pad_trim; "
        "pad_trim([np.ones(100, np.float32)] * 4, 50, 'right', 'center'); import numba; "
        "print(torch.get_num_threads(), numba.threading_layer())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_THREADING_LAYER", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["1", "workqueue"], out.stdout + out.stderr
