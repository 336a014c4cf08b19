"""No row is written ``ok`` unless the model's output is a finite probability distribution.

A model with NaN weights, or a float WAV at 1e20 (its power overflows float32), makes NaN
probabilities; ``argmax`` of NaN is the first class. ``label`` writes such rows with the status
``nonfinite`` (counted, failing ``--strict``); the API and evaluation raise instead of returning NaN.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hostile.builders import LABELS, cli, tone
from sononet import EmotionClassifier
from sononet.models.outputs import NonFiniteOutputError, is_distribution


@pytest.fixture(scope="module")
def loud(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A float WAV whose samples are 1e20: valid floats, decodable, but its power overflows float32."""
    root = tmp_path_factory.mktemp("loud")
    sf.write(root / "loud.wav", tone(1.2) * 1e21, 16_000, subtype="FLOAT")
    sf.write(root / "fine.wav", tone(1.2, f0=200), 16_000, subtype="PCM_16")
    return root


def _label(model: Path, inputs: Path, out: Path, *extra: str) -> tuple[int, str]:
    return cli("label", str(inputs), "--model", str(model), "--out", str(out), "--device", "cpu",
               "--mel-backend", "torchaudio", *extra)  # fmt: skip


def test_nan_weights_give_nonfinite_rows_and_fail_strict(nan_model: Path, wavs: Path, tmp_path: Path) -> None:
    out = tmp_path / "l.parquet"
    code, text = _label(nan_model, wavs, out, "--strict")
    assert code == 1 and "3 file(s) could not be labelled (--strict)" in text, text
    rows = pd.read_parquet(out)
    assert set(rows.status) == {"nonfinite"} and rows.pred.isna().all()
    assert rows[[f"prob_{c}" for c in LABELS]].isna().all().all()  # never NaN written as a probability
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert (summary["nonfinite_files"], summary["ok_files"], summary["error_files"]) == (3, 0, 0)
    assert "3 with non-finite model output" in text


def test_a_1e20_wav_is_a_nonfinite_row_beside_good_ones(model_dir: Path, loud: Path, tmp_path: Path) -> None:
    out = tmp_path / "l.parquet"
    code, text = _label(model_dir, loud, out)
    assert code == 0, text
    rows = pd.read_parquet(out).query("scope == 'file'").set_index("path")
    assert rows.status.to_dict() == {str(loud / "fine.wav"): "ok", str(loud / "loud.wav"): "nonfinite"}
    code, _ = _label(model_dir, loud, tmp_path / "s.parquet", "--strict")
    assert code == 1


def test_the_api_raises_instead_of_returning_nan(nan_model: Path, model_dir: Path, loud: Path) -> None:
    bad = EmotionClassifier.load(nan_model, device="cpu", mel_backend="torchaudio")
    for call in (
        lambda: bad.predict(tone(1.0), sample_rate=16_000),
        lambda: bad.predict_proba([tone(1.0)], sample_rate=16_000),
        lambda: bad.predict_windows(tone(7.0), sample_rate=16_000),
        lambda: bad.embed(tone(1.0), sample_rate=16_000),
    ):
        with pytest.raises(NonFiniteOutputError, match="not a finite probability distribution"):
            call()
    good = EmotionClassifier.load(model_dir, device="cpu", mel_backend="torchaudio")
    with pytest.raises(NonFiniteOutputError, match="loud.wav"):
        good.predict(loud / "loud.wav")
    assert np.isfinite(good.predict_proba(loud / "fine.wav")).all()


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(2, 5)), elements=st.floats(allow_nan=True)))
def test_only_finite_distributions_pass(probs: np.ndarray) -> None:
    ok = is_distribution(probs)
    for row, passed in zip(probs, ok):
        with np.errstate(over="ignore"):
            expected = bool(np.isfinite(row).all() and (row >= 0).all() and abs(row.sum() - 1) <= 1e-3)
        expected = expected and bool((row <= 1 + 1e-3).all())
        assert passed == expected, row
