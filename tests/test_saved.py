"""One reader of a saved model folder: the Normalizer's round trip, SavedModel.load's checks, audio_config."""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_cremad_like
from test_label import FEATURES, LABELS, save_tiny

from sononet.audio import AudioConfig
from sononet.features.normalize import Normalizer, model_inputs
from sononet.features.shards import ConfigMismatchError, read_manifest
from sononet.models.registry import build_model
from sononet.models.saved import SavedModel
from sononet.models.saving import save_model
from sononet.prepare import PrepareConfig, prepare

ROOT = Path(__file__).resolve().parents[1]
N = FEATURES.n_mels


def norm_dict(level: bool, per_clip: bool, speaker: bool) -> dict:
    """A ``norm`` as training writes it, flags in its key order."""
    norm: dict = {"mean": np.linspace(-30, -10, N).astype(np.float32).tolist(), "std": [15.0] * N}
    if level:
        norm["level"] = 1.0
    if per_clip:
        norm["per_clip"] = 1.0
    if speaker:
        norm["speaker"] = 1.0
        norm["speaker_default"] = np.linspace(-40, -20, N).astype(np.float32).tolist()
    return norm


def save_cnn(directory: Path, **meta: object) -> Path:
    torch.manual_seed(0)
    model = build_model("cnn", n_classes=3, n_mels=N, channels=(4, 8), dropouts=(0.1, 0.1))
    doc = {"labels": LABELS, "feature_config": FEATURES.to_dict(), "norm": norm_dict(True, False, True)}
    return save_model(directory, model.eval(), "cnn", {**doc, "input_kind": "mel", **meta})


@pytest.mark.parametrize(("level", "per_clip", "speaker"), list(itertools.product([False, True], repeat=3)))
def test_normalizer_round_trips_every_flag_combination(level: bool, per_clip: bool, speaker: bool) -> None:
    norm = norm_dict(level, per_clip, speaker)
    normalizer = Normalizer.from_meta(norm)
    assert (normalizer.level, normalizer.per_clip, normalizer.speaker) == (level, per_clip, speaker)
    assert json.dumps(normalizer.to_meta()) == json.dumps(norm)  # same keys, order and numbers


@pytest.mark.checkout
def test_committed_models_load_and_write_back_the_same_norm() -> None:
    configs = sorted((ROOT / "results").rglob("model/config.json"))  # every saved model folder in the checkout
    assert len(configs) >= 2
    for config in configs:
        saved = SavedModel.load(config.parent)
        norm = json.loads(config.read_text())["meta"]["norm"]
        assert saved.normalizer is not None and json.dumps(saved.normalizer.to_meta()) == json.dumps(norm)
        assert saved.normalizer.level and saved.normalizer.speaker and not saved.normalizer.per_clip
        assert saved.audio == AudioConfig(sample_rate=saved.features.sample_rate)  # saved before audio_config
        assert saved.labels == ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"] and saved.kind == "mel"


def test_model_inputs_follow_the_flags() -> None:
    """Each flag's step, in model_inputs' order: level, then the speaker mean, then the clip mean, then the bands."""
    x, n, cpu = torch.randn(2, N, 10) * 10 - 30, torch.tensor([10, 6]), torch.device("cpu")
    plain = Normalizer(torch.zeros(N), torch.full((N,), 2.0))
    torch.testing.assert_close(model_inputs(x, n, "mel", plain, cpu), x / 2)
    default = torch.linspace(-40, -20, N)
    speaker = Normalizer(torch.zeros(N), torch.ones(N), speaker_default=default)
    torch.testing.assert_close(model_inputs(x, n, "mel", speaker, cpu), x - default[None, :, None])
    own = torch.ones(2, N)
    torch.testing.assert_close(model_inputs(x, n, "mel", speaker, cpu, own), x - 1)
    per_clip = Normalizer(torch.zeros(N), torch.ones(N), per_clip=True)
    assert model_inputs(x, n, "mel", per_clip, cpu)[1, :, :6].mean(-1).abs().max() < 1e-4
    with pytest.raises(ValueError, match="needs its Normalizer"):
        model_inputs(x, n, "mel", None, cpu)
    with pytest.raises(ValueError, match="no speaker_default"):
        Normalizer.from_meta({"mean": [0.0] * N, "std": [1.0] * N, "speaker": 1.0})


def test_saved_model_reads_every_field(tmp_path: Path) -> None:
    audio = AudioConfig(sample_rate=FEATURES.sample_rate, resample_quality="VHQ", min_duration_s=0.5)
    protocol = {"corpus": "cremad", "split": "speaker-disjoint"}
    d = save_cnn(tmp_path / "m", protocol=protocol, audio_config=audio.to_dict())
    saved = SavedModel.load(d)
    assert (saved.labels, saved.kind, saved.features, saved.audio) == (LABELS, "mel", FEATURES, audio)
    assert saved.provenance["corpus"] == "cremad" and saved.protocol == saved.meta["protocol"]
    assert not saved.model.training and saved.folder == d
    wave = SavedModel.load(save_tiny(tmp_path / "w", "wav2vec2"))
    assert wave.kind == "wave" and wave.normalizer is None
    assert wave.audio == AudioConfig(sample_rate=FEATURES.sample_rate)  # saved before audio_config: the defaults


@pytest.mark.parametrize("missing", ["labels", "feature_config", "input_kind"])
def test_saved_model_needs_what_rebuilds_the_inputs(tmp_path: Path, missing: str) -> None:
    d = save_cnn(tmp_path / "m")
    doc = json.loads((d / "config.json").read_text())
    del doc["meta"][missing]
    if missing == "input_kind":  # without it the statistics are optional: keep the check to the one error
        del doc["meta"]["norm"]
    (d / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=rf"saved meta lacks \['{missing}'\]; cannot rebuild the training features"):
        SavedModel.load(d)


@pytest.mark.parametrize(
    ("audio", "match"),
    [
        ("HQ", r"meta.audio_config must be a JSON object"),
        ({"resample_quality": "XQ"}, r"meta.audio_config is not a valid audio config .*resample_quality"),
        ({"sample_rate": 8000}, r"meta.audio_config.sample_rate must equal meta.feature_config.sample_rate = 16000"),
        ({"min_duration_s": "0.3"}, r"meta.audio_config is not a valid audio config .*min_duration_s must be float"),
        ({"min_duration_s": 2.0, "long_duration_s": 1.0}, r"meta.audio_config is not a valid audio config"),
        ({"long_duration_s": float("inf")}, r"meta.audio_config.long_duration_s must be a finite number"),
        ({"bitrate": 1}, r"meta.audio_config is not a valid audio config .*unknown key"),
    ],
)
def test_a_bad_audio_config_is_one_line_naming_the_field(tmp_path: Path, audio: object, match: str) -> None:
    d = save_cnn(tmp_path / "m", audio_config=audio)
    with pytest.raises(ValueError, match=r"config\.json: " + match) as e:
        SavedModel.load(d)
    assert "\n" not in str(e.value)


def test_inference_decodes_with_the_saved_audio_config(tmp_path: Path) -> None:
    from sononet import EmotionClassifier
    from sononet.export import ExportConfig, export_model
    from sononet.features import export_inputs

    audio = AudioConfig(sample_rate=FEATURES.sample_rate, resample_quality="QQ", min_duration_s=1.0)
    d = save_cnn(tmp_path / "m", audio_config=audio.to_dict())
    clf = EmotionClassifier.load(d, device="cpu", mel_backend="torchaudio")
    assert clf._audio == audio
    x = np.sin(np.arange(44_100 * 2) / 20).astype(np.float32) * 0.3
    with pytest.raises(Exception, match="too_short|minimum 1.0 s"):  # 0.5 s: kept by the defaults, not by this model
        clf.predict_proba(x[:22_050], sample_rate=44_100)
    default = EmotionClassifier.load(save_cnn(tmp_path / "d"), device="cpu", mel_backend="torchaudio")
    assert not np.array_equal(clf.predict_proba(x, sample_rate=44_100), default.predict_proba(x, sample_rate=44_100))
    info = export_model(ExportConfig(model=str(d), out=str(tmp_path / "onnx")))
    assert info["audio_config"] == audio.to_dict()
    older = {k: v for k, v in info.items() if k != "audio_config"}  # export.json from before: the defaults
    got, want = export_inputs([x], 44_100, info)["features"], export_inputs([x], 44_100, older)["features"]
    assert got.shape == want.shape and not np.array_equal(got, want)


def test_prepare_records_the_audio_config_and_refuses_another(tmp_path: Path) -> None:
    """Shards made at one resampler quality are not reused for another; a folder from before the
    audio config was recorded is taken as made with the defaults, and resumes."""
    write_cremad_like(tmp_path / "data", ["2001", "2002"], ["DFA"])
    cfg = PrepareConfig(data=str(tmp_path / "data"), out=str(tmp_path / "shards"), shard_size=8,
                        mel_backend="torchaudio", device="cpu", workers=2)  # fmt: skip
    prepare(cfg, progress=False)
    assert read_manifest(cfg.out)["audio_config"] == AudioConfig().to_dict()
    vhq = replace(cfg, audio=AudioConfig(resample_quality="VHQ"))
    with pytest.raises(ConfigMismatchError, match="different audio_config"):
        prepare(vhq, progress=False)
    # A manifest written before the audio config was recorded: the defaults, so the same run resumes.
    old = tmp_path / "old"
    shutil.copytree(cfg.out, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["audio_config"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    again = prepare(replace(cfg, out=str(old)), progress=False)
    assert again["shards_skipped_as_done"] == again["shards"]
    assert read_manifest(old)["audio_config"] == AudioConfig().to_dict()
    with pytest.raises(ConfigMismatchError, match="different audio_config"):
        prepare(replace(vhq, out=str(old)), progress=False)
