"""Numba-compiled kernels, importable as ``sononet.kernels``.

Pure functions over NumPy buffers (pad/trim, silence trimming), no Python-level loops over samples: the feature
stage calls them on ragged batches (one flat buffer plus offsets) before log-mel.
"""

import os

import numba

# numba's default "omp" layer shares torch's libgomp: its first parallel kernel sets the process's
# OpenMP thread count, which is torch's too (measured: prepare in-process moved torch from 1
# thread to 2, and later training to other numerics), and its idle workers spin. Its own
# workqueue layer touches neither. An explicit NUMBA_THREADING_LAYER still wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

from .pad_trim import PAD_MODES, TRIM_MODES, pad_trim, pad_trim_ragged, ragged
from .silence import silence_bounds_ragged, trim_silence

__all__ = [
    "PAD_MODES",
    "TRIM_MODES",
    "pad_trim",
    "pad_trim_ragged",
    "ragged",
    "silence_bounds_ragged",
    "trim_silence",
]
