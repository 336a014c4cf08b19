"""The numba pad/trim kernel against a NumPy reference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


# A child process imports the kernels and runs each once; numba caches at import (decoration).
KERNELS_RUN = """
import logging, sys, tempfile
import numpy as np
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
if len(sys.argv) > 1:
    tempfile.tempdir = sys.argv[1]  # the temporary directory too is out of reach
from sononet.kernels import pad_trim, trim_silence
assert pad_trim([np.ones(3, np.float32)], 5).tolist() == [[0.0, 1.0, 1.0, 1.0, 0.0]]
trim_silence([np.ones(1600, np.float32)], 30.0, 400, 160)
"""


def _import_kernels(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "file").write_text("a file: no folder can be made under it, not even by root")
    env = {
        **os.environ,
        "NUMBA_CACHE_DIR": str(tmp_path / "file" / "numba"),  # unwritable for any uid
        # The package's __pycache__ and the home folder are out of reach too, as in a --read-only container:
        "NUMBA_CACHE_LOCATOR_CLASSES": "UserProvidedCacheLocator",
        "TMPDIR": str(tmp_path / "tmp"),
    }
    (tmp_path / "tmp").mkdir()
    return subprocess.run([sys.executable, "-c", KERNELS_RUN, *args], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def test_kernels_cache_under_the_temporary_directory_where_numba_can_write_nothing_else(tmp_path: Path) -> None:
    proc = _import_kernels(tmp_path)
    assert proc.returncode == 0, proc.stderr
    fallback = tmp_path / "tmp" / f"sononet-numba-{os.getuid()}"
    assert "numba cannot write its cache" in proc.stderr and str(fallback) in proc.stderr
    assert sorted({p.suffix for p in fallback.rglob("*.nb*")}) == [".nbc", ".nbi"]  # index and compiled code


def test_kernels_compile_uncached_where_nothing_at_all_is_writable(tmp_path: Path) -> None:
    proc = _import_kernels(tmp_path, str(tmp_path / "file"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("kernels compile at every start") == 1, proc.stderr
    assert not list(tmp_path.rglob("*.nbi"))
