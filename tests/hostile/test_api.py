"""The Python API's entry points under hostile paths and models: an AudioError with the row's reason,
or a ValueError naming what to fix; never a hang, never NaN."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hostile.builders import bounded, edit_json, save_cnn, tone
from sononet import AudioError, EmotionClassifier


@pytest.fixture(scope="module")
def clf(model_dir: Path) -> EmotionClassifier:
    return EmotionClassifier.load(model_dir, device="cpu", mel_backend="torchaudio")


@pytest.mark.parametrize(
    ("source", "reason"),
    [("https://example.invalid/a.wav", "not_local"), ("cat a.wav |", "not_local"), ("/dev/zero", "not_a_file"),
     ("fifo", "not_a_file"), ("missing.wav", "missing"), ("folder", "not_a_file")],
)  # fmt: skip
def test_hostile_paths_raise_the_row_reason(clf: EmotionClassifier, tmp_path: Path, source: str, reason: str) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    path = source if "/" in source and not source.startswith("fifo") else str(tmp_path / source)
    for call in (clf.predict, clf.embed, clf.predict_windows):
        with bounded(30), pytest.raises(AudioError) as e:
            call(path)
        assert e.value.reason == reason, (call, e.value)


def test_speaker_mean_refuses_hostile_arrays_like_predict(tmp_path: Path) -> None:
    norm = {"mean": [-30.0] * 32, "std": [15.0] * 32, "speaker": 1.0, "speaker_default": [0.0] * 32}
    clf = EmotionClassifier.load(
        save_cnn(tmp_path / "spk", meta={"norm": norm}), device="cpu", mel_backend="torchaudio"
    )
    with pytest.raises(AudioError) as e:
        clf.speaker_mean(np.full(16_000, np.nan), sample_rate=16_000)
    assert e.value.reason == "non_finite"
    with pytest.raises(ValueError, match="sample_rate must be"):
        clf.speaker_mean(tone(1.0), sample_rate=True)
    assert np.isfinite(clf.speaker_mean(tone(1.0), sample_rate=16_000)).all()


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [("meta.feature_config.n_fft", 1 << 30, "n_fft must be from 16"), ("meta.norm.std", [0.0] * 32, "std"),
     ("model_config.channels", [4, 100_000], "does not fit the model")],
)  # fmt: skip
def test_a_tampered_model_is_refused_by_load(key: str, value: object, match: str, tmp_path: Path) -> None:
    model = save_cnn(tmp_path / "m")
    edit_json(model / "config.json", key, value)
    with pytest.raises(ValueError, match=match):
        EmotionClassifier.load(model, device="cpu")


@pytest.mark.parametrize("kw", [{"batch_size": 0}, {"workers": 0}, {"device": "tpu"}, {"mel_backend": "librosa"}])
def test_bad_load_arguments(kw: dict, model_dir: Path) -> None:
    with pytest.raises(ValueError):
        EmotionClassifier.load(model_dir, **{"device": "cpu", **kw})
