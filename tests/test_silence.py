"""The numba silence trimmer against ``librosa.effects.trim``, and its place in the feature path."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile as sf
from conftest import shared_corpus
from sononet.kernels import ragged, silence_bounds_ragged, trim_silence
from test_parity import speech_like

from sononet.features.frontend import fixed_length
from sononet.features.mel import FeatureConfig

RAVDESS = shared_corpus("ravdess") / "audio"
FRAMES = (FeatureConfig.n_fft, FeatureConfig.hop_length)  # what the front end passes the trimmer


def lr_trim(clip: np.ndarray, top_db: float) -> np.ndarray:
    """librosa's [start, end) with the same frames."""
    return librosa.effects.trim(clip, top_db=top_db, frame_length=FRAMES[0], hop_length=FRAMES[1])[1]


def padded_utterance(seed: int, lead: int, tail: int, floor: float) -> np.ndarray:
    """Speech-like sound with ``lead``/``tail`` samples of room noise at ``floor`` RMS around it."""
    rng = np.random.default_rng(seed)
    voice = speech_like(seed)[: 16_000 + 997 * seed]
    noise = lambda n: (floor * rng.standard_normal(n)).astype(np.float32)  # noqa: E731
    return np.concatenate([noise(lead), voice, noise(tail)])


CASES = [
    padded_utterance(0, 16_000, 15_000, 1e-3),
    padded_utterance(1, 700, 33_000, 3e-4),
    padded_utterance(2, 0, 0, 1e-3),  # nothing to trim
    padded_utterance(3, 5_000, 0, 0.0),  # digital silence before, cut at the end
    np.random.default_rng(4).standard_normal(20_000).astype(np.float32) * 0.1,  # noise throughout
    np.zeros(10_000, np.float32),  # all silent: librosa keeps nothing
    np.float32([0.5]),  # one sample
]


@pytest.mark.parametrize("top_db", [20.0, 30.0, 60.0])
def test_bounds_equal_librosa_trim(top_db: float) -> None:
    bounds = silence_bounds_ragged(*ragged(CASES), top_db, *FRAMES)
    for clip, got in zip(CASES, bounds):
        _, want = (None, lr_trim(clip, top_db))
        np.testing.assert_array_equal(got, want)


@pytest.mark.real_speech("ravdess")
def test_bounds_equal_librosa_trim_on_real_speech() -> None:
    files = sorted(RAVDESS.glob("Actor_0[1-4]/*.flac"))[::9]
    clips = [sf.read(f, dtype="float32")[0] for f in files]
    for top_db in (30.0, 60.0):
        bounds = silence_bounds_ragged(*ragged(clips), top_db, *FRAMES)
        want = np.array([lr_trim(c, top_db) for c in clips])
        np.testing.assert_array_equal(bounds, want)
    kept = (bounds[:, 1] - bounds[:, 0]).sum() / sum(c.size for c in clips)
    assert 0.5 < kept < 0.95  # RAVDESS: about 1 s of near-silence at each end of ~3.7 s


def test_batch_equals_one_by_one_and_silent_clip_is_kept_whole() -> None:
    together = trim_silence(CASES, 30.0, *FRAMES)
    alone = [trim_silence([c], 30.0, *FRAMES)[0] for c in CASES]
    for a, b in zip(together, alone):
        np.testing.assert_array_equal(a, b)
    assert together[-2].size == CASES[-2].size  # all silent: the trimmer does not empty it


@pytest.mark.parametrize("bad", [0.0, -5.0, float("nan")])
def test_refuses_non_positive_threshold(bad: float) -> None:
    with pytest.raises(ValueError, match="top_db must be positive"):
        silence_bounds_ragged(*ragged(CASES[:1]), bad, *FRAMES)
    if bad != 0.0:  # 0 is the feature config's explicit "off"
        with pytest.raises(ValueError, match="trim_silence_db must be >= 0"):
            FeatureConfig(trim_silence_db=bad)


def test_feature_path_trims_before_padding() -> None:
    clip = padded_utterance(0, 20_000, 20_000, 1e-3)  # 3.5 s: 1 s of voice, 1.25 s of noise each side
    off = FeatureConfig()
    on = FeatureConfig(trim_silence_db=30.0)
    waves_off, valid_off = fixed_length([clip], off)
    waves_on, valid_on = fixed_length([clip], on)
    start, end = lr_trim(clip, 30.0)
    assert valid_off[0] == off.clip_samples  # centre-cropped, noise and all
    assert valid_on[0] == end - start < on.clip_samples  # just the voice, then right padding
    np.testing.assert_array_equal(waves_on[0, : end - start], clip[start:end])
    assert not waves_on[0, end - start :].any()
    np.testing.assert_array_equal(fixed_length([clip], FeatureConfig(trim_silence_db=0.0))[0], waves_off)
    assert on.hash() != off.hash()
    assert off.hash() == FeatureConfig().hash()
