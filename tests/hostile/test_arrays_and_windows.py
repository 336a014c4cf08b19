"""Hostile arrays, rates, windows and hops: one check each, shared by the CLI, the API and the labeller.

Rates follow the file-header rule (an integer from 4 kHz to 768 kHz; bools, NaN, fractions refused);
windows and hops are checked in seconds and again in samples, so no loop can step by 0.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hostile.builders import assert_refused, cli, tone
from sononet import AudioError, EmotionClassifier
from sononet.audio import MIN_SAMPLE_RATE, check_sample_rate, decode_array, pcm_to_float
from sononet.label.engine import check_window, window_samples

BAD_RATES = [True, False, 0, -16_000, 1, 3_999, 768_001, 1e12, float("nan"), float("inf"), 44_100.5, "16000", None]


@pytest.fixture(scope="module")
def clf(model_dir) -> EmotionClassifier:
    return EmotionClassifier.load(model_dir, device="cpu", mel_backend="torchaudio")


@pytest.mark.parametrize("rate", BAD_RATES, ids=repr)
def test_bad_sample_rates_are_refused_before_any_work(rate: object, clf: EmotionClassifier) -> None:
    with pytest.raises(ValueError, match="sample_rate must be"):
        check_sample_rate(rate)
    if rate is not None:  # None for an array is "pass sample_rate=", said by the API
        with pytest.raises(ValueError, match="sample_rate must be"):
            clf.predict(tone(1.0), sample_rate=rate)


def test_whole_rates_of_any_numeric_type_are_accepted() -> None:
    assert [check_sample_rate(r) for r in (16_000, 44_100.0, np.int64(8_000), np.float32(48_000))] == [
        16_000, 44_100, 8_000, 48_000,
    ]  # fmt: skip
    assert check_sample_rate(MIN_SAMPLE_RATE) == 4_000


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "int8", "int16", "int32"])
def test_pcm_integers_of_every_width_decode_like_soundfile(dtype: str) -> None:
    x = tone(1.0)
    info = np.iinfo(dtype)
    half = 2.0 ** (info.bits - 1)
    pcm = np.round(x * (half - 1) + (half if info.min == 0 else 0)).astype(dtype)  # offset-binary when unsigned
    got = decode_array(pcm, 16_000).samples
    assert np.isfinite(got).all() and np.abs(got - x).max() < 2e-2, dtype
    assert np.abs(pcm_to_float(np.array([info.min, info.max], dtype))).max() <= 1.0


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.full(16_000, 128, np.uint8), "silent"),  # unsigned silence is 128, not 0
        (tone(1.0).astype(np.complex64), "unsupported_format"),
        (tone(1.0) > 0, "unsupported_format"),
        (np.array(list(tone(1.0)), dtype=object), "unsupported_format"),
        (np.full(16_000, 1e39), "non_finite"),  # beyond float32
        (np.zeros((2, 0)), "empty_audio"),
        (np.zeros((3, 2, 16_000)), "unsupported_format"),
    ],
    ids=["uint8-silence", "complex", "bool", "object", "huge", "empty", "3d"],
)
def test_hostile_arrays_are_audio_errors(array: np.ndarray, reason: str, clf: EmotionClassifier) -> None:
    with pytest.raises(AudioError) as e:
        decode_array(array, 16_000)
    assert e.value.reason == reason
    with pytest.raises(AudioError):
        clf.predict(array, sample_rate=16_000)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from(["u1", "u2", "i1", "i2", "i4", "f2", "f4", "f8", "c8", "?"]),
        shape=hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=6000),
    )
)
def test_any_array_decodes_to_finite_samples_or_an_audio_error(array: np.ndarray) -> None:
    try:
        dec = decode_array(array, 16_000)
    except AudioError as e:
        assert e.reason in ("unsupported_format", "empty_audio", "too_short", "silent", "non_finite"), e
        return
    assert dec.samples.dtype == np.float32 and np.isfinite(dec.samples).all()


BAD_WINDOWS = [
    ({"window_s": True}, "window_s must be a finite number"),
    ({"window_s": float("nan")}, "window_s must be a finite number"),
    ({"window_s": float("inf")}, "window_s must be a finite number"),
    ({"window_s": 0.0}, "need window_s >= 1.0"),
    ({"window_s": 1e12}, "need window_s <= 60.0"),
    ({"hop_s": 0.00003}, "hop_s >= 0.01"),
    ({"hop_s": 1e-9}, "hop_s >= 0.01"),
    ({"hop_s": 0.0}, "need 0 < hop_s <= window_s"),
    ({"hop_s": float("nan")}, "hop_s must be a finite number"),
    ({"window_s": 2.0, "hop_s": 3.0}, "need 0 < hop_s <= window_s"),
]


@pytest.mark.parametrize(("kw", "match"), BAD_WINDOWS, ids=lambda v: repr(v)[:30])
def test_bad_windows_are_refused_by_the_api_the_config_and_the_cli(
    kw: dict, match: str, clf, model_dir, wavs, tmp_path
):
    from sononet.label import LabelConfig

    with pytest.raises(ValueError, match=match):
        clf.predict_windows(tone(5.0), sample_rate=16_000, **kw)
    with pytest.raises(ValueError, match=match):
        LabelConfig(**kw)
    if not any(isinstance(v, bool) for v in kw.values()):  # click parses floats only
        args = [a for k, v in kw.items() for a in ("--window" if k == "window_s" else "--hop", str(v))]
        code, out = cli("label", str(wavs), "--model", str(model_dir), "--out", str(tmp_path / "l.parquet"), *args)
        assert_refused(code, out, match.split(" ")[0])


def test_a_bad_hop_in_a_job_spec_is_refused_by_print_spec(tmp_path) -> None:
    from click.testing import CliRunner

    from sononet.cli.batch import cli as batch

    result = CliRunner().invoke(batch, ["label-folder", "--print-spec", "--out", str(tmp_path), "--set", "hop_s=1e-9"])
    assert result.exit_code == 2 and "hop_s >= 0.01" in result.output, result.output


@settings(max_examples=200, deadline=None)
@given(
    window=st.floats(allow_nan=True, allow_infinity=True) | st.none(),
    hop=st.floats(allow_nan=True, allow_infinity=True) | st.none(),
    rate=st.integers(4_000, 768_000),
)
def test_any_window_and_hop_either_step_by_a_sample_or_are_refused(window, hop, rate) -> None:
    try:
        check_window(window, hop)
        if window is None or hop is None:
            return
        length, step = window_samples(window, hop, rate)
    except ValueError:
        return
    assert 1 <= step <= length and length <= 60 * rate + 1


def test_speaker_vectors_are_checked(clf: EmotionClassifier, model_dir, tmp_path) -> None:
    from hostile.builders import save_cnn

    with pytest.raises(ValueError, match="is not speaker-normalised"):
        clf.predict(tone(1.0), sample_rate=16_000, speaker=np.zeros(32))
    norm = {"mean": [-30.0] * 32, "std": [15.0] * 32, "speaker": 1.0, "speaker_default": [0.0] * 32}
    spk = EmotionClassifier.load(
        save_cnn(tmp_path / "spk", meta={"norm": norm}), device="cpu", mel_backend="torchaudio"
    )
    for bad in (np.full(32, np.nan), np.zeros(31), np.zeros((2, 32)), np.array(["a"] * 32), np.full(32, np.inf)):
        with pytest.raises(ValueError, match="speaker= must be 32 finite numbers"):
            spk.predict(tone(1.0), sample_rate=16_000, speaker=bad)
    assert len(spk.predict(tone(1.0), sample_rate=16_000, speaker=np.zeros(32))) == 3
