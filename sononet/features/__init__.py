"""Features: log-mel on the torch device, and the Parquet shards that hold them.

``mel`` builds the log-mel front-end (nnAudio on the GPU, torchaudio on the CPU, same
numbers); ``frontend`` fits decoded clips to the window and composes the stored features;
``shards`` writes and verifies Parquet tensor shards; ``reader`` streams them back as torch
batches; ``onnx_inputs`` computes an exported (ONNX) model's inputs from waveforms.

The names below load their module on first use, so importing a light submodule (``frontend``'s
window rules, in the labelling parent) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names, for type checkers and editors
    from sononet.features.mel import FeatureConfig as FeatureConfig
    from sononet.features.mel import LogMel as LogMel
    from sononet.features.mel import pick_backend as pick_backend
    from sononet.features.mel import power_to_db as power_to_db
    from sononet.features.onnx_inputs import export_inputs as export_inputs
    from sononet.features.onnx_inputs import export_windows as export_windows

_HOMES = {
    "FeatureConfig": "mel", "LogMel": "mel", "pick_backend": "mel", "power_to_db": "mel",
    "export_inputs": "onnx_inputs", "export_windows": "onnx_inputs",
}  # fmt: skip
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'sononet.features' has no attribute {name!r}")
    return getattr(importlib.import_module(f"sononet.features.{_HOMES[name]}"), name)
