"""``sononet export``: a saved model as ONNX, with dynamic batch and time axes, for runtimes without torch.

::

    sononet export --model runs/demo/cnn/model --format onnx --out exported/cnn
    python -c "import onnxruntime as ort; print(ort.InferenceSession('exported/cnn/model.onnx').get_inputs())"

The graph holds the model *and* its input normalisation (the training split's per-band
statistics for log-mel models, per-clip standardisation for waveform models), so it takes the
features as ``sononet label`` computes them before normalising:

* mel models (CNN, BiGRU): ``features`` (B, n_mels, T) log-mel in dB and ``lengths`` (B,) valid frames;
* waveform models (wav2vec2): ``features`` (B, S) 16 kHz samples and ``lengths`` (B,) valid samples;

and returns ``probs`` (B, n_classes) and ``logits``. ``export.json`` beside it holds the labels, the
feature config (sample rate, n_fft, hop, mels, dB floor, pad/trim) and the model id, so the inputs can
be reproduced exactly. We use torch's TorchScript-based exporter: it handles the BiGRU's packed
sequences and the models' data-dependent length checks, which the dynamo exporter refuses.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)
OPSET = 17  # LayerNorm as one op; onnxruntime >= 1.11 runs it


@dataclass
class ExportConfig:
    model: str  # saved model directory (config.json + weights)
    out: str  # folder for model.onnx and export.json
    format: str = "onnx"  # the only one so far
    opset: int = OPSET

    def __post_init__(self) -> None:
        if self.format != "onnx":
            raise ValueError(f"format must be 'onnx'. Found: {self.format!r}")


def normalised(model: nn.Module, kind: str, norm: dict[str, list[float]]) -> nn.Module:
    """``model`` behind the normalisation training used: (features, lengths) -> (probs, logits)."""
    import torch
    from torch import nn

    from sononet.features.normalize import normalize_mel, normalize_wave, remove_level

    per_clip = bool(norm.get("per_clip", 0.0))
    level = bool(norm.get("level", 0.0))

    class WithNormalisation(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            if kind == "mel":
                mean = torch.tensor(norm["mean"], dtype=torch.float32)
                if "speaker" in norm:  # speakers are unknown here: the training speakers' average voice
                    mean = mean + torch.tensor(norm["speaker_default"], dtype=torch.float32)
                self.register_buffer("mean", mean)
                self.register_buffer("std", torch.tensor(norm["std"], dtype=torch.float32))

        def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mel = kind == "mel"  # (B, n_mels, T) per-band statistics, else (B, S) per-clip standardisation
            if mel:
                features = remove_level(features, lengths) if level else features
                x = normalize_mel(features, self.mean, self.std, lengths if per_clip else None)
            else:
                x = normalize_wave(features, lengths)
            logits, _ = self.model(x, lengths)
            return torch.softmax(logits, dim=-1), logits

    return WithNormalisation().eval()


def example_inputs(kind: str, features: Any, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs of the exported signature: (features, lengths), the second clip half padding."""
    import torch

    g = torch.Generator().manual_seed(0)
    if kind == "mel":
        n = features.n_frames
        x = torch.randn(batch, features.n_mels, n, generator=g) * 15 - 40  # dB-like
    else:
        n = features.clip_samples
        x = torch.randn(batch, n, generator=g) * 0.1
    lengths = torch.tensor([n] + [max(n // 2, 16)] * (batch - 1), dtype=torch.int64)
    return x, lengths


def export_model(cfg: ExportConfig) -> dict[str, Any]:
    """Write ``model.onnx`` and ``export.json`` to ``cfg.out``; returns export.json's content."""
    import torch

    from sononet.features.mel import FeatureConfig
    from sononet.label.labeller import model_id
    from sononet.models.saving import load_model

    model, doc = load_model(cfg.model, map_location="cpu")
    meta = doc.get("meta") or {}
    missing = [k for k in ("labels", "feature_config", "input_kind") if k not in meta]
    if missing:
        raise ValueError(f"{cfg.model}: saved meta lacks {missing}; cannot describe the exported inputs")
    kind, features = meta["input_kind"], FeatureConfig(**meta["feature_config"])
    wrapped = normalised(model.eval(), kind, meta.get("norm") or {})
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    time_axis = "frames" if kind == "mel" else "samples"
    try:
        with warnings.catch_warnings():
            # The tracer notes every shape check it freezes; they guard user input, not the graph.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                wrapped, example_inputs(kind, features), out / "model.onnx", dynamo=False, opset_version=cfg.opset,
                input_names=["features", "lengths"], output_names=["probs", "logits"],
                dynamic_axes={"features": {0: "batch", 2 if kind == "mel" else 1: time_axis}, "lengths": {0: "batch"},
                              "probs": {0: "batch"}, "logits": {0: "batch"}},
            )  # fmt: skip
    except Exception as e:  # the exporter raises many types; say which model and why
        raise RuntimeError(f"torch could not export {doc['model']!r} to ONNX: {type(e).__name__}: {e}") from e
    info = {
        "format": "onnx", "opset": cfg.opset, "model": doc["model"], "model_id": model_id(cfg.model, doc),
        "describe": doc.get("describe"), "labels": meta["labels"], "input_kind": kind,
        "inputs": {
            "features": f"(batch, {features.n_mels}, {time_axis}) log-mel dB, before normalisation"
            if kind == "mel" else f"(batch, {time_axis}) waveform at {features.sample_rate} Hz",
            "lengths": f"(batch,) int64 valid {time_axis}",
        },
        "outputs": {"probs": "(batch, n_classes) softmax, in `labels` order", "logits": "(batch, n_classes)"},
        "feature_config": features.to_dict(), "protocol": meta.get("protocol"),
    }  # fmt: skip
    (out / "export.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
