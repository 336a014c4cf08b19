"""Level normalisation: the same speech at another gain gives the model the same input.

A gain of g dB on the waveform adds g dB to every cell of the clip's log-mel (``top_db`` and
silence trimming are relative to the clip's own peak), so removing one number per clip, its
level, removes the gain; the spectral shape and the clip's dynamics stay.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_label import FEATURES, LABELS, tone

from sononet import EmotionClassifier
from sononet.features.normalize import Normalizer, clip_level, model_inputs, remove_level
from sononet.models.registry import build_model
from sononet.models.saving import save_model


@settings(max_examples=40, deadline=None)
@given(
    gain=st.floats(-60, 40, allow_nan=False),
    lengths=st.lists(st.integers(1, 94), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_a_gain_moves_the_level_by_the_gain_and_nothing_else(gain: float, lengths: list[int], seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), 16, 94, generator=g, dtype=torch.float64) * 15 - 40  # (B, n_mels, T) dB
    n = torch.tensor(lengths)
    torch.testing.assert_close(clip_level(x + gain, n), clip_level(x, n) + gain)
    torch.testing.assert_close(remove_level(x + gain, n), remove_level(x, n))


def test_the_level_ignores_padding_and_is_dominated_by_loud_frames() -> None:
    x = torch.full((1, 4, 10), -80.0)
    x[..., :2] = -20.0  # two loud frames, six quiet ones, two of padding
    x[..., 8:] = 50.0
    level = clip_level(x, torch.tensor([8])).item()
    assert -27.0 < level < -25.9  # 10 log10(2/8 * 10^-2) = -26.0: the pauses barely move it
    assert clip_level(x, torch.tensor([0])).item() == 0.0  # no valid frame: no offset


def test_model_inputs_remove_the_level_before_the_speaker_mean() -> None:
    norm = Normalizer(torch.zeros(4), torch.ones(4), level=True, speaker_default=torch.tensor([1.0, 2.0, 3.0, 4.0]))
    x = torch.randn(2, 4, 10) * 10 - 30
    n = torch.tensor([10, 6])
    quiet = model_inputs(x - 20, n, "mel", norm, torch.device("cpu"))
    torch.testing.assert_close(quiet, model_inputs(x, n, "mel", norm, torch.device("cpu")))
    want = remove_level(x, n) - norm.speaker_default[None, :, None]
    torch.testing.assert_close(model_inputs(x, n, "mel", norm, torch.device("cpu")), want)


@pytest.fixture(scope="module")
def level_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("cnn", n_classes=3, n_mels=FEATURES.n_mels, channels=(4, 8), dropouts=(0.1, 0.1))
    default = np.linspace(-10.0, 5.0, FEATURES.n_mels).tolist()
    norm = {"mean": [0.5] * FEATURES.n_mels, "std": [15.0] * FEATURES.n_mels, "level": 1.0, "speaker": 1.0,
            "speaker_default": default}  # fmt: skip
    meta = {"labels": LABELS, "feature_config": FEATURES.to_dict(), "norm": norm, "input_kind": "mel"}
    return save_model(tmp_path_factory.mktemp("level") / "cnn" / "model", model.eval(), "cnn", meta)


def test_label_gives_the_same_answer_at_any_gain(level_model: Path) -> None:
    clf = EmotionClassifier.load(level_model, device="cpu", mel_backend="torchaudio")
    clips = [tone(2.0, f0=f0, seed=i) for i, f0 in enumerate((120.0, 180.0, 240.0))]
    base = clf.predict_proba(clips, sample_rate=16_000)
    for scale in (10 ** (-30 / 20), 0.1, 10 ** (10 / 20)):
        scaled = clf.predict_proba([c * scale for c in clips], sample_rate=16_000)
        np.testing.assert_allclose(scaled, base, atol=2e-3)  # float16 storage rounding of the dB values
    peak = clf.predict_proba([c / np.abs(c).max() for c in clips], sample_rate=16_000)
    np.testing.assert_allclose(peak, base, atol=2e-3)
    assert (base.argmax(1) == peak.argmax(1)).all()
