"""SonoNet: speech emotion recognition as a batch job.

Data flows one way: corpus -> audio -> kernels -> features -> shards -> train ->
evaluate -> results. Each stage is one module or package named for what it holds.

From Python: ``from sononet import EmotionClassifier`` (see :mod:`sononet.api`). The names
below are imported on first use, so ``import sononet`` and ``sononet --help`` stay instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sononet import openmp as _openmp

_openmp.set_defaults()  # before anything can load torch: its OpenMP runtime reads them once, at load

from sononet.version import __version__ as __version__  # noqa: E402 (after the OpenMP defaults)

_LAZY = {
    "EmotionClassifier": "sononet.api",
    "SyntheticModelWarning": "sononet.api",
    "AudioError": "sononet.errors",
}

if TYPE_CHECKING:
    from sononet.api import EmotionClassifier as EmotionClassifier
    from sononet.api import SyntheticModelWarning as SyntheticModelWarning
    from sononet.errors import AudioError as AudioError


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sononet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
