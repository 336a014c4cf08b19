"""The robustness suite's perturbations: each does what its name says, exactly and reproducibly."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tone

from sononet.perturb import CATALOGUE, GROUPS, parse, select

SR = 16_000


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return tone(2.5, SR, f0=180.0, seed=3)


def band_energy(x: np.ndarray, lo: float, hi: float, sr: int = SR) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(x.size, 1 / sr)
    return float(spec[(f >= lo) & (f < hi)].sum())


@pytest.mark.parametrize(("name", "db"), [("gain-30", -30.0), ("gain-20", -20.0), ("gain+10", 10.0)])
def test_gain_is_exact_and_never_clips(clip: np.ndarray, name: str, db: float) -> None:
    y = CATALOGUE[name](clip, SR)
    np.testing.assert_allclose(y, clip * 10 ** (db / 20), rtol=1e-6, atol=0)
    assert y.dtype == np.float32 and y.shape == clip.shape
    if db > 0:
        loud = clip / np.abs(clip).max() * 0.9  # near full scale: +10 dB must pass 1.0 unclipped
        assert CATALOGUE[name](loud, SR).max() > 2.5


def test_peak_normalisation_is_per_clip(clip: np.ndarray) -> None:
    for scale in (0.01, 0.5, 3.0):
        y = CATALOGUE["peak"](clip * scale, SR)
        assert np.abs(y).max() == pytest.approx(1.0, abs=1e-7)
        np.testing.assert_allclose(y, clip / np.abs(clip).max(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(("name", "snr"), [("noise20", 20.0), ("noise10", 10.0)])
def test_noise_hits_the_target_snr(clip: np.ndarray, name: str, snr: float) -> None:
    for key in ("a", "b", "clip-3"):
        y = CATALOGUE[name](clip, SR, key=key).astype(np.float64)
        x = clip.astype(np.float64)
        measured = 10 * np.log10((x**2).sum() / ((y - x) ** 2).sum())
        assert abs(measured - snr) < 0.1, (key, measured)


def test_noise_is_seeded_per_clip_and_pink(clip: np.ndarray) -> None:
    p = CATALOGUE["noise10"]
    a, again = p(clip, SR, key="clip-1"), p(clip, SR, key="clip-1")
    np.testing.assert_array_equal(a, again)
    assert not np.array_equal(a, p(clip, SR, key="clip-2"))
    assert not np.array_equal(a, p(clip, SR, key="clip-1", seed=1))
    n = (a - clip).astype(np.float64)  # 1/f: each octave holds about the same power, so 0.25-0.5 kHz ~ 4-8 kHz
    low, high = band_energy(n, 250, 500), band_energy(n, 4000, 8000)
    assert 0.5 < low / high < 2.0, low / high
    assert band_energy(n, 250, 500) / 250 > 8 * band_energy(n, 4000, 8000) / 4000  # far from white


def test_telephone_band_has_nothing_above_4_khz(clip: np.ndarray) -> None:
    wide = (clip + 0.05 * np.random.default_rng(0).standard_normal(clip.size)).astype(np.float32)  # energy everywhere
    y = CATALOGUE["telephone"](wide, SR)
    assert y.shape == wide.shape and y.dtype == np.float32
    total = band_energy(y, 0, SR / 2)
    assert band_energy(y, 4000, SR / 2) / total < 1e-6  # below -60 dB
    assert band_energy(y, 0, 150) / band_energy(wide, 0, 150) < 0.05  # the high-pass side of the band
    assert band_energy(y, 500, 3000) / band_energy(wide, 500, 3000) > 0.5  # the voice band passes


@pytest.mark.parametrize("name", ["mp3", "opus"])
def test_codec_round_trip_keeps_length_rate_and_signal(clip: np.ndarray, name: str) -> None:
    for n in (clip.size, 12_345):
        y = CATALOGUE[name](clip[:n], SR)
        assert y.shape == (n,) and y.dtype == np.float32
    y = CATALOGUE[name](clip, SR)
    assert np.corrcoef(y, clip)[0, 1] > 0.9  # aligned (no encoder delay left) and still the same tone
    assert not np.array_equal(y, clip)


def test_silent_and_bad_clips(clip: np.ndarray) -> None:
    silent = np.zeros(SR, np.float32)
    for p in CATALOGUE.values():
        assert np.isfinite(p(silent, SR)).all(), p.name
    for bad in (np.zeros(0, np.float32), np.zeros((2, 100), np.float32)):
        with pytest.raises(ValueError, match="one non-empty mono clip"):
            CATALOGUE["peak"](bad, SR)


def test_selection_by_group_and_name() -> None:
    assert [p.name for p in select(GROUPS)] == [p.name for p in CATALOGUE.values() if p.default]
    assert [p.name for p in select(["noise", "gain-20"])] == ["gain-20", "noise20", "noise10"]
    assert [p.name for p in select(["codec"])] == ["mp3"] and [p.name for p in select(["opus"])] == ["opus"]
    assert select([]) == [] and parse(" gain , peak ") == ("gain", "peak")
    with pytest.raises(ValueError, match="unknown perturbation 'reverb'; choose from gain, peak"):
        parse("gain,reverb")
