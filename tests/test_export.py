"""ONNX export: onnxruntime matches torch within 1e-4 on new batches and lengths; the folder describes its inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_label import FEATURES, LABELS, save_tiny

from sononet.export import ExportConfig, example_inputs, export_model, normalised
from sononet.models.registry import build_model
from sononet.models.saving import load_model, save_model

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def save_bigru(directory: Path) -> Path:
    torch.manual_seed(0)
    model = build_model("bigru", n_classes=3, n_mels=FEATURES.n_mels, hidden=16, n_layers=2, attn_hidden=8)
    norm = {"mean": [-30.0] * FEATURES.n_mels, "std": [15.0] * FEATURES.n_mels}
    meta = {"labels": LABELS, "feature_config": FEATURES.to_dict(), "norm": norm, "input_kind": "mel"}
    return save_model(directory, model.eval(), "bigru", meta)


@pytest.mark.parametrize("name", ["cnn", "bigru", "wav2vec2"])
def test_onnxruntime_matches_torch(name: str, tmp_path: Path) -> None:
    model_dir = save_bigru(tmp_path / name / "model") if name == "bigru" else save_tiny(tmp_path / name / "model", name)
    info = export_model(ExportConfig(model=str(model_dir), out=str(tmp_path / "onnx")))
    saved = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert saved == info and saved["labels"] == LABELS and saved["feature_config"] == FEATURES.to_dict()
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    model, doc = load_model(model_dir)
    kind = doc["meta"]["input_kind"]
    reference = normalised(model, kind, doc["meta"]["norm"])
    # The export traced batch 2 at the clip length; check other batches, lengths and a longer time axis.
    for batch, repeat in ((3, 1), (1, 2), (5, 1)):
        x, lengths = example_inputs(kind, FEATURES, batch)
        x, lengths = torch.cat([x] * repeat, dim=-1), lengths * repeat
        lengths[-1] = max(int(lengths[-1]) // 3, 16)
        with torch.no_grad():
            probs, logits = reference(x, lengths)
        got_probs, got_logits = session.run(None, {"features": x.numpy(), "lengths": lengths.numpy()})
        np.testing.assert_allclose(got_probs, probs.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(got_logits, logits.numpy(), atol=1e-4, rtol=0)


def test_cli(tmp_path: Path) -> None:
    from sononet.cli import main

    model_dir = save_tiny(tmp_path / "cnn" / "model")
    result = CliRunner().invoke(main, ["export", "--model", str(model_dir), "--out", str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    assert "model.onnx" in result.output and (tmp_path / "x" / "model.onnx").stat().st_size > 1000
    result = CliRunner().invoke(main, ["export", "--model", str(model_dir), "--format", "tflite"])
    assert result.exit_code == 2 and "tflite" in result.output


def test_export_normalises_as_label_does_for_a_speaker_normalised_model(tmp_path: Path) -> None:
    """The exported graph cannot know the speaker: it bakes in the training speakers' average, as label does."""
    from sononet.features.normalize import model_inputs

    model, doc = load_model(save_tiny(tmp_path / "cnn" / "model"))
    norm = doc["meta"]["norm"]
    assert norm["speaker"] == 1.0
    x, lengths = example_inputs("mel", FEATURES, 3)
    with torch.no_grad():
        _, got = normalised(model, "mel", norm)(x, lengths)
        tensors = {k: torch.tensor(v, dtype=torch.float32) for k, v in norm.items()}
        want, _ = model(model_inputs(x, lengths, "mel", tensors, torch.device("cpu")), lengths)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)
