"""Numba-compiled kernels, importable as ``sononet.kernels``.

Pure functions over NumPy buffers (pad/trim, silence trimming), no Python-level loops over samples: the feature
stage calls them on ragged batches (one flat buffer plus offsets) before log-mel.
"""

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
