"""Decoding and validation: every bad-input kind gets its reason, recoverable ones a flag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import tone

from sononet.audio import AudioConfig, load_audio
from sononet.errors import REASONS, AudioError, ErrorRow


def write_bad_inputs(root: Path) -> dict[str, str | None]:
    """One file per bad-input kind; value = expected error reason, or None when it should decode."""
    root.mkdir(parents=True, exist_ok=True)
    good = tone(1.0)
    expected: dict[str, str | None] = {}

    (root / "zero.wav").write_bytes(b"")
    expected["zero.wav"] = "zero_byte"
    sf.write(root / "ok.wav", good, 16_000, subtype="PCM_16")
    raw = (root / "ok.wav").read_bytes()
    (root / "corrupt.wav").write_bytes(raw[:12] + b"fmt \xff\xff\xff\xff" + raw[20:64])
    expected["corrupt.wav"] = "corrupt"
    (root / "truncated.wav").write_bytes(raw[: len(raw) // 2])
    expected["truncated.wav"] = "truncated"
    (root / "text.wav").write_text("this is not audio at all, just some text " * 20)
    expected["text.wav"] = "unsupported_format"
    sf.write(root / "empty.wav", np.zeros(0, np.float32), 16_000)
    expected["empty.wav"] = "empty_audio"
    sf.write(root / "silent.wav", np.zeros(16_000, np.float32), 16_000)
    expected["silent.wav"] = "silent"
    nan = good.copy()
    nan[100] = np.nan
    sf.write(root / "nan.wav", nan, 16_000, subtype="FLOAT")
    expected["nan.wav"] = "non_finite"
    sf.write(root / "short.wav", tone(0.1), 16_000)
    expected["short.wav"] = "too_short"
    expected["ok.wav"] = None
    sf.write(root / "clipped.wav", np.clip(good * 20, -1, 1), 16_000, subtype="PCM_16")
    expected["clipped.wav"] = None
    sf.write(root / "stereo.wav", tone(1.0, channels=2), 16_000)
    expected["stereo.wav"] = None
    sf.write(root / "rate44k.flac", tone(1.0, sr=44_100), 44_100)
    expected["rate44k.flac"] = None
    sf.write(root / "long.ogg", tone(65.0, sr=8_000), 8_000)
    expected["long.ogg"] = None
    return expected


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str | None]]:
    root = tmp_path_factory.mktemp("bad")
    return root, write_bad_inputs(root)


def test_every_bad_kind_gets_its_reason(bad_dir: tuple[Path, dict[str, str | None]]) -> None:
    root, expected = bad_dir
    for name, reason in expected.items():
        if reason is None:
            continue
        with pytest.raises(AudioError) as info:
            load_audio(root / name)
        assert info.value.reason == reason, f"{name}: {info.value}"
        assert info.value.reason in REASONS


def test_recoverable_inputs_are_converted_and_flagged(bad_dir: tuple[Path, dict[str, str | None]]) -> None:
    root, _ = bad_dir
    ok = load_audio(root / "ok.wav")
    assert ok.flags == () and ok.samples.dtype == np.float32 and ok.samples.shape == (16_000,)
    assert "clipped" in load_audio(root / "clipped.wav").flags
    stereo = load_audio(root / "stereo.wav")
    assert stereo.flags == ("downmixed",) and stereo.orig_channels == 2 and stereo.samples.ndim == 1
    resampled = load_audio(root / "rate44k.flac")
    assert resampled.flags == ("resampled",) and resampled.orig_sr == 44_100
    assert abs(resampled.samples.shape[0] - 16_000) <= 1


def test_long_file_decodes_only_the_window(bad_dir: tuple[Path, dict[str, str | None]]) -> None:
    root, _ = bad_dir
    full = load_audio(root / "long.ogg")
    part = load_audio(root / "long.ogg", max_samples=48_000)
    assert "long" in part.flags and abs(part.duration_s - 65.0) < 0.01
    assert full.samples.shape[0] > 1_000_000 and 48_000 <= part.samples.shape[0] < 49_000
    # The centre window of the partial read is the centre of the whole file.
    mid = full.samples.shape[0] // 2
    np.testing.assert_allclose(
        part.samples[part.samples.shape[0] // 2 - 100 : part.samples.shape[0] // 2 + 100],
        full.samples[mid - 100 : mid + 100],
        atol=0.02,
    )


def test_min_duration_is_configurable(bad_dir: tuple[Path, dict[str, str | None]]) -> None:
    root, _ = bad_dir
    assert load_audio(root / "short.wav", AudioConfig(min_duration_s=0.05)).samples.size > 0


def test_missing_file_and_unknown_reason() -> None:
    with pytest.raises(AudioError) as info:
        load_audio("/nonexistent/file.wav")
    assert info.value.reason == "missing"
    with pytest.raises(ValueError, match="unknown error reason"):
        ErrorRow("x", "gremlins")


def test_parallel_probes_keep_their_own_reasons(tmp_path: Path) -> None:
    """libsndfile has one process-wide error slot for failed opens: without serialised opens, two
    threads swapped "unsupported_format" and "corrupt" on ~17 % of 4,000 probes (prepare's decode pool)."""
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    from sononet.audio import probe

    (tmp_path / "text.wav").write_bytes(b"this is not audio at all " * 40)
    sf.write(tmp_path / "ok.wav", np.full(1600, 0.1, np.float32), 16_000)
    head = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "bad.wav").write_bytes(head[:20] + b"\xff" * 30 + head[50:])

    def reason(path: Path) -> str:
        try:
            probe(path)
        except AudioError as e:
            return e.reason
        return "ok"

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(reason, [tmp_path / "text.wav", tmp_path / "bad.wav"] * 500))
    assert Counter(got[0::2]) == {"unsupported_format": 500} and Counter(got[1::2]) == {"corrupt": 500}
