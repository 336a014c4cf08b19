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
feature config (sample rate, n_fft, hop, mels, dB floor, pad/trim), the audio config (resampler
quality, shortest clip) and the model id, so the inputs can be reproduced exactly. We use torch's
TorchScript-based exporter: it handles the BiGRU's packed sequences and the models' data-dependent
length checks, which the dynamo exporter refuses.

Both files are written whole or not at all (a temporary sibling renamed over the target), under the
output folder's lock: ``kill -9`` during a re-export leaves the previous ``model.onnx``, a full disk
is one line naming the path with the temporary file removed, and two exports into one folder do
not interleave. The model folder is read through ``load_model``'s checks, so a tampered
``config.json`` is refused before anything is exported.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sononet.errors import DiskFullError, UserError, is_disk_full
from sononet.evaluate.predictions import ENSEMBLE
from sononet.io import atomic_write, atomic_write_bytes, output_dir, remove_stale_temps
from sononet.locking import folder_lock

if TYPE_CHECKING:
    import torch
    from torch import nn

    from sononet.features.normalize import Normalizer
    from sononet.models.saved import SavedModel

log = logging.getLogger(__name__)
OPSET = 17  # LayerNorm as one op; onnxruntime >= 1.11 runs it
OPSETS = range(7, 21)  # what torch's TorchScript-based exporter writes (torch.onnx._constants, 2.9)


@dataclass
class ExportConfig:
    model: str  # saved model directory (config.json + weights), or an ensemble folder (ensemble.json)
    out: str  # folder for model.onnx and export.json
    format: str = "onnx"  # the only one so far
    opset: int = OPSET

    def __post_init__(self) -> None:
        if self.format != "onnx":
            raise ValueError(f"format must be 'onnx'. Found: {self.format!r}")
        if isinstance(self.opset, bool) or not isinstance(self.opset, int) or self.opset not in OPSETS:
            raise ValueError(
                f"opset must be an integer from {OPSETS.start} to {OPSETS.stop - 1}. Found: {self.opset!r}"
            )


def normalised(model: nn.Module, kind: str, normalizer: Normalizer | None) -> nn.Module:
    """``model`` behind the normalisation training used: (features, lengths) -> (probs, logits)."""
    import torch
    from torch import nn

    from sononet.features.normalize import normalize_mel, normalize_wave, remove_level

    if kind == "mel" and normalizer is None:
        raise ValueError("a log-mel model needs its Normalizer (the training split's statistics)")

    class WithNormalisation(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            if normalizer is not None and kind == "mel":
                mean = normalizer.mean.clone()
                if normalizer.speaker_default is not None:  # speakers are unknown here: the training average voice
                    mean = mean + normalizer.speaker_default
                self.register_buffer("mean", mean)
                self.register_buffer("std", normalizer.std.clone())

        def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if normalizer is not None and kind == "mel":  # (B, n_mels, T) per-band statistics
                features = remove_level(features, lengths) if normalizer.level else features
                x = normalize_mel(features, self.mean, self.std, lengths if normalizer.per_clip else None)
            else:  # (B, S) per-clip standardisation
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


def averaged(members: list[nn.Module]) -> nn.Module:
    """:func:`normalised` members as one graph: (features, lengths) -> (mean of their probs, its log).

    The log of the mean probabilities stands in for ``logits``: its softmax gives the probs back.
    """
    import torch
    from torch import nn

    class Averaged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = nn.ModuleList(members)

        def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            probs = torch.stack([m(features, lengths)[0] for m in self.members]).mean(dim=0)  # (B, n_classes)
            return probs, torch.log(probs)

    return Averaged().eval()


def export_model(cfg: ExportConfig) -> dict[str, Any]:
    """Write ``model.onnx`` and ``export.json`` to ``cfg.out``; returns export.json's content.

    ``cfg.model`` may be an ensemble folder: its members become one graph averaging their
    probabilities, which needs one input for all of them (same input kind, feature and audio config).
    """
    from sononet.models.ensemble import member_folders
    from sononet.models.saved import SavedModel

    folders, ensemble = member_folders(cfg.model)
    loaded = [SavedModel.load(f, "cpu") for f in folders]
    lead = loaded[0]
    for other, folder in zip(loaded[1:], folders[1:], strict=True):
        if (other.kind, other.features, other.audio) != (lead.kind, lead.features, lead.audio):
            raise UserError(
                f"ensemble members {folders[0]} ({lead.kind}) and {folder} ({other.kind}) take different inputs "
                "(input kind, feature config or audio config): one ONNX graph cannot feed both; export each "
                "member with its own --model"
            )
    kind, features = lead.kind, lead.features
    wrapped = [normalised(m.model.eval(), kind, m.normalizer) for m in loaded]
    graph = averaged(wrapped) if ensemble else wrapped[0]
    name = ENSEMBLE if ensemble else lead.doc["model"]
    out = output_dir(cfg.out, "--out")
    with folder_lock(out, "export"):
        remove_stale_temps(out)  # a killed export's partial model.onnx; the lock rules out a live writer
        _write_onnx(graph, kind, features, out / "model.onnx", cfg.opset, name)
        return _write_info(cfg, loaded, name, out)


def _write_onnx(wrapped: nn.Module, kind: str, features: Any, path: Path, opset: int, name: str) -> None:
    """``torch.onnx.export`` into a temporary sibling renamed over ``path``: complete or absent."""
    import torch

    time_axis = "frames" if kind == "mel" else "samples"

    def export(tmp: Path) -> None:
        with warnings.catch_warnings():
            # The tracer notes every shape check it freezes; they guard user input, not the graph.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                wrapped, example_inputs(kind, features), tmp, dynamo=False, opset_version=opset,
                input_names=["features", "lengths"], output_names=["probs", "logits"],
                dynamic_axes={"features": {0: "batch", 2 if kind == "mel" else 1: time_axis}, "lengths": {0: "batch"},
                              "probs": {0: "batch"}, "logits": {0: "batch"}},
            )  # fmt: skip

    try:
        atomic_write(path, export)
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(path) from e
        raise
    except Exception as e:  # the exporter raises many types; say which model and why
        if is_disk_full(e.__cause__ or e.__context__ or e):  # torch wraps the OSError of a full disk
            raise DiskFullError(path) from e
        why = f"torch could not export {name!r} to ONNX at opset {opset}: {type(e).__name__}: {e}".splitlines()[0]
        if opset != OPSET:  # the user's choice: say which one works
            raise UserError(f"{why}; the default --opset {OPSET} exports every SonoNet model") from e
        raise RuntimeError(why) from e


def _write_info(cfg: ExportConfig, loaded: list[SavedModel], name: str, out: Path) -> dict[str, Any]:
    """export.json beside model.onnx: what the inputs are and where the model (or each member) came from."""
    from sononet.label.ensemble import ensemble_id
    from sononet.label.labeller import model_id

    lead = loaded[0]
    kind, features = lead.kind, lead.features
    ids = [model_id(m.folder, m.doc) for m in loaded]
    single = name != ENSEMBLE
    time_axis = "frames" if kind == "mel" else "samples"
    info = {
        "format": "onnx", "opset": cfg.opset, "model": name, "model_id": ids[0] if single else ensemble_id(ids),
        "describe": lead.doc.get("describe") if single else f"mean of {len(ids)} members' probabilities",
        **({} if single else {"members": ids}), "labels": lead.labels, "input_kind": kind,
        "inputs": {
            "features": f"(batch, {features.n_mels}, {time_axis}) log-mel dB, before normalisation"
            if kind == "mel" else f"(batch, {time_axis}) waveform at {features.sample_rate} Hz",
            "lengths": f"(batch,) int64 valid {time_axis}",
        },
        "outputs": {
            "probs": "(batch, n_classes) softmax, in `labels` order" + ("" if single else ", the members' mean"),
            "logits": "(batch, n_classes)" + ("" if single else " log of probs (an ensemble has no logits)"),
        },
        "feature_config": features.to_dict(), "audio_config": lead.audio.to_dict(), "protocol": lead.protocol,
    }  # fmt: skip
    atomic_write_bytes(out / "export.json", (json.dumps(info, indent=2) + "\n").encode())
    return info
