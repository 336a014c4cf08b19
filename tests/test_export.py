"""ONNX export: onnxruntime matches torch within 1e-4 on new batches and lengths; the folder describes its inputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import tone
from test_label import FEATURES, LABELS, save_tiny

from sononet.export import ExportConfig, example_inputs, export_model, normalised
from sononet.models.registry import build_model
from sononet.models.saved import SavedModel
from sononet.models.saving import save_model

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
    saved = SavedModel.load(model_dir)
    kind = saved.kind
    reference = normalised(saved.model, kind, saved.normalizer)
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

    saved = SavedModel.load(save_tiny(tmp_path / "cnn" / "model"))
    model, norm = saved.model, saved.normalizer
    assert norm is not None and norm.speaker and saved.meta["norm"]["speaker"] == 1.0
    x, lengths = example_inputs("mel", FEATURES, 3)
    with torch.no_grad():
        _, got = normalised(model, "mel", norm)(x, lengths)
        want, _ = model(model_inputs(x, lengths, "mel", norm, torch.device("cpu")), lengths)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


def padded_speech(seconds: float, sr: int, lead: float = 0.0, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A tone with ``lead`` seconds of near-silence at each end, (time,) or (time, channels) float32."""
    voice = tone(seconds, sr, f0=170, seed=seed, channels=channels)
    quiet = np.zeros((int(lead * sr), *voice.shape[1:]), np.float32) + 1e-4
    return np.concatenate([quiet, voice, quiet])


@pytest.mark.parametrize("trim_db", [None, 30.0])
def test_export_inputs_give_label_probabilities(trim_db: float | None, tmp_path: Path) -> None:
    """ONNX fed by sononet.features.export_inputs/export_windows answers what `sononet label` answers."""
    import soundfile as sf

    from sononet.features import export_inputs, export_windows
    from sononet.label.run import LabelConfig, label

    features = dataclasses.replace(FEATURES, trim_silence_db=trim_db)
    model_dir = save_tiny(tmp_path / "cnn" / "refit" / "model", features=features)
    info = export_model(ExportConfig(model=str(model_dir), out=str(tmp_path / "onnx")))
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    files = {  # short and long, mono and stereo, at the model's rate and not
        "short.wav": (padded_speech(2.0, 16_000, lead=0.4), 16_000),
        "stereo44k.wav": (padded_speech(1.5, 44_100, lead=0.3, seed=1, channels=2), 44_100),
        "long.wav": (padded_speech(14.0, 16_000, lead=0.5, seed=2), 16_000),
    }
    audio = tmp_path / "audio"
    audio.mkdir()
    for name, (x, sr) in files.items():
        sf.write(audio / name, x, sr, subtype="FLOAT")
    cfg = LabelConfig(input=str(audio), model=str(model_dir), out=str(tmp_path / "l.parquet"), device="cpu",
                      mel_backend="torchaudio")  # fmt: skip
    label(cfg, progress=False)
    rows = pd.read_parquet(tmp_path / "l.parquet")
    assert (rows.status == "ok").all() and rows.model_id.str.startswith("cnn@").all()
    assert info["model_id"] == rows.model_id.iloc[0]  # the kind from the saved config, not the refit folder
    prob_cols = [f"prob_{lab}" for lab in LABELS]
    for name, (x, sr) in files.items():
        mine = rows[rows.path == str(audio / name)]
        want_file = mine[mine.scope == "file"][prob_cols].to_numpy()
        starts, inputs = export_windows(x.T, sr, info)
        probs = session.run(None, inputs)[0]
        np.testing.assert_allclose(probs.mean(axis=0, keepdims=True), want_file, atol=1e-4, rtol=0)
        windows = mine[mine.scope == "window"].sort_values("window_index")
        if len(starts) > 1:  # one row per window, at the same places
            np.testing.assert_allclose(windows.start_s, starts, atol=1e-6)
            np.testing.assert_allclose(probs, windows[prob_cols].to_numpy(), atol=1e-4, rtol=0)
        if name != "long.wav":  # a clip that fits the window: export_inputs is that one window
            one = session.run(None, export_inputs([x.T], sr, info))[0]
            np.testing.assert_allclose(one, want_file, atol=1e-4, rtol=0)
    if trim_db:  # 14 s is past the 12 s a trimming model takes whole: it was windowed
        assert len(export_windows(files["long.wav"][0], 16_000, info)[0]) == 5


def test_export_inputs_refuse_what_label_refuses() -> None:
    from sononet.errors import AudioError
    from sononet.features import export_inputs, export_windows

    info = {"feature_config": FEATURES.to_dict(), "input_kind": "mel"}
    speech = tone(1.0)
    nan = speech.copy()
    nan[10] = np.nan
    for bad, reason in ((nan, "non_finite"), (np.zeros(16_000, np.float32), "silent"), (np.zeros(0), "empty_audio")):
        with pytest.raises(AudioError) as e:
            export_inputs([bad], 16_000, info)
        assert e.value.reason == reason
    with pytest.raises(TypeError, match=r"pass \[samples\]"):
        export_inputs(speech, 16_000, info)
    with pytest.raises(TypeError, match="export.json"):
        export_inputs([speech], 16_000, "export.json")
    with pytest.raises(ValueError, match="input_kind"):
        export_inputs([speech], 16_000, {**info, "input_kind": "text"})
    with pytest.raises(ValueError, match=r"feature_config must hold .* Found: \['evil'\]"):
        export_inputs([speech], 16_000, {"feature_config": {"n_mels": 32, "evil": "__import__('os')"}})
    with pytest.raises(ValueError, match="n_mels must be a positive integer"):
        export_inputs([speech], 16_000, {"feature_config": {"n_mels": -1}})
    for window, hop in ((0.0, None), (float("nan"), None), (1e9, None), (3.0, 4.0), (3.0, -1.0)):
        with pytest.raises(ValueError, match="window_s"):
            export_windows(speech, 16_000, info, window_s=window, hop_s=hop)
    with pytest.raises(ValueError, match="sample_rate must be at least"):
        export_inputs([speech], 0, info)
    got = export_inputs([speech, tone(5.0)], 16_000, info)
    assert got["features"].shape == (2, FEATURES.n_mels, FEATURES.n_frames) and got["features"].dtype == np.float32
    assert got["lengths"].tolist() == [-(-16_000 // FEATURES.hop_length), FEATURES.n_frames]
    wave = export_inputs([speech], 16_000, {**info, "input_kind": "wave"})
    assert wave["features"].shape == (1, FEATURES.clip_samples) and wave["lengths"].tolist() == [16_000]
