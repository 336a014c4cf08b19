"""The synthetic demo corpus: CREMA-D layout, determinism, idempotence and emotion in prosody."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sononet.corpus import load_corpus
from sononet.corpus.cremad import EMOTIONS, SENTENCES, load_cremad, parse_name, read_audio_manifest
from sononet.corpus.demo import (
    CLIPS_PER_ACTOR,
    DEMO_ACTOR_BASE,
    MARKER_FILE,
    DemoConfig,
    demo_clip_stems,
)
from sononet.corpus.demo_synth import generate_demo

SMALL = DemoConfig(n_actors=4)  # 328 clips, two male and two female actors: a few seconds


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo(tmp_path_factory.mktemp("demo"), SMALL)


def _wavs(root: Path) -> list[Path]:
    return sorted(root.glob("*.wav"))


def _digest(root: Path, pattern: str = "*") -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob(pattern)) if p.is_file()}


def _read(root: Path, stem: str) -> np.ndarray:
    x, _ = sf.read(root / f"{stem}.wav", dtype="float64")
    return x


def _active_rms_db(x: np.ndarray) -> float:
    """RMS of the 25 ms frames within 30 dB of the loudest: speech level, silence excluded."""
    frames = x[: len(x) // 400 * 400].reshape(-1, 400)
    e = (frames**2).mean(axis=1)
    return float(10 * np.log10(e[e > e.max() * 1e-3].mean()))


def _f0_hz(x: np.ndarray, sr: int = 16000) -> float:
    """Autocorrelation pitch of the loudest 64 ms, searched over 70-500 Hz."""
    n = 1024
    frames = x[: len(x) // n * n].reshape(-1, n)
    f = frames[np.argmax((frames**2).sum(axis=1))]
    f = f - f.mean()
    ac = np.fft.irfft(np.abs(np.fft.rfft(f, 2 * n)) ** 2)[:n]
    lo, hi = sr // 500, sr // 70
    return sr / (lo + int(np.argmax(ac[lo:hi])))


def test_layout_matches_cremad(demo_dir: Path) -> None:
    fields = [parse_name(p.stem) for p in _wavs(demo_dir)]
    assert all(f is not None for f in fields)
    per_actor = Counter(f["actor"] for f in fields)
    assert per_actor == {str(DEMO_ACTOR_BASE + i): CLIPS_PER_ACTOR for i in range(4)}
    assert CLIPS_PER_ACTOR == 82
    combos = {(f["sentence"], f["emotion"], f["intensity"]) for f in fields}
    real = {(r["sentence"], r["emotion"], r["intensity"]) for r in read_audio_manifest()}
    assert combos == real  # the same sentence x emotion x intensity grid as real CREMA-D
    real_actors = {r["actor"] for r in read_audio_manifest()}
    assert not real_actors & set(per_actor)
    assert {p.stem for p in _wavs(demo_dir)} == set(demo_clip_stems(SMALL))


def test_load_cremad_reads_demo_with_sexes(demo_dir: Path) -> None:
    corpus = load_cremad(demo_dir)
    assert corpus.errors == []  # neither the marker nor the demographics is refused
    assert len(corpus.clips) == 4 * 82
    assert corpus.labels == list(EMOTIONS)
    sex_of = {c.speaker: c.sex for c in corpus.clips}
    assert sorted(sex_of.values()) == ["Female", "Female", "Male", "Male"]
    assert all(c.extra["age"].isdigit() for c in corpus.clips)
    assert load_corpus(demo_dir).kind == "cremad"  # auto-detection treats it as CREMA-D


def test_audio_format_and_durations(demo_dir: Path) -> None:
    durations = []
    for p in _wavs(demo_dir):
        info = sf.info(p)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
        durations.append(info.duration)
    assert SMALL.min_duration <= min(durations) and max(durations) <= SMALL.max_duration
    assert 2.0 < np.mean(durations) < 3.0  # CREMA-D's mean is 2.5 s
    x = _read(demo_dir, "2001_TSI_NEU_XX")
    lead_db = 10 * np.log10((x[: int(0.1 * 16000)] ** 2).mean())
    assert lead_db < _active_rms_db(x) - 15  # near-silence (room noise only) before speech


def test_emotion_is_encoded_in_prosody(demo_dir: Path) -> None:
    stems = [p.stem for p in _wavs(demo_dir) if p.stem.endswith("_XX")]
    by_emotion: dict[str, list[tuple[float, float, float]]] = {e: [] for e in EMOTIONS}
    for stem in stems:
        x = _read(demo_dir, stem)
        by_emotion[parse_name(stem)["emotion"]].append((_active_rms_db(x), _f0_hz(x), len(x)))
    mean = {e: np.mean(v, axis=0) for e, v in by_emotion.items()}  # (level dB, F0 Hz, samples)
    assert mean["ANG"][0] > mean["NEU"][0] > mean["SAD"][0]  # energy
    assert mean["ANG"][1] > mean["NEU"][1] > mean["SAD"][1]  # F0 level
    assert mean["FEA"][1] > mean["NEU"][1] and mean["HAP"][1] > mean["NEU"][1]
    assert mean["SAD"][2] > mean["ANG"][2]  # speaking rate: sad is slow, angry fast


def test_intensity_scales_the_emotion(demo_dir: Path) -> None:
    def level(intensity: str) -> float:
        return float(np.mean([_active_rms_db(_read(demo_dir, f"{2001 + a}_IEO_ANG_{intensity}")) for a in range(4)]))

    assert level("HI") > level("MD") > level("LO")


def test_sentences_and_actors_differ(demo_dir: Path) -> None:
    durations = {s: np.mean([sf.info(demo_dir / f"2001_{s}_NEU_XX.wav").duration]) for s in SENTENCES}
    assert durations["ITH"] > durations["TSI"]  # ten syllables against five
    f0 = {a: np.median([_f0_hz(_read(demo_dir, f"{a}_{s}_NEU_XX")) for s in SENTENCES]) for a in range(2001, 2005)}
    assert max(f0[2001], f0[2003]) < 150 < min(f0[2002], f0[2004])  # male, female, male, female


def test_same_seed_is_byte_identical_and_order_free(tmp_path: Path, demo_dir: Path) -> None:
    a = _digest(generate_demo(tmp_path / "a", DemoConfig(n_actors=2)))
    b = _digest(generate_demo(tmp_path / "b", DemoConfig(n_actors=2)))
    assert a == b and len(a) == 2 * 82 + 2  # clips, demographics, marker
    # Each clip has its own seed stream, so a smaller corpus is a prefix of a larger one.
    bigger = _digest(demo_dir, "200[12]_*.wav")
    assert bigger == {k: v for k, v in a.items() if k.endswith(".wav")}


def test_different_seed_changes_every_clip(tmp_path: Path, demo_dir: Path) -> None:
    other = _digest(generate_demo(tmp_path / "s1", DemoConfig(seed=1, n_actors=1)), "*.wav")
    base = _digest(demo_dir, "2001_*.wav")
    assert other.keys() == base.keys()
    assert all(other[k] != base[k] for k in base)


def test_rerun_is_a_no_op(demo_dir: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in demo_dir.iterdir()}
    assert generate_demo(demo_dir, SMALL) == demo_dir
    assert {p.name: p.stat().st_mtime_ns for p in demo_dir.iterdir()} == before


def test_changed_or_incomplete_demo_is_regenerated(tmp_path: Path) -> None:
    root = generate_demo(tmp_path / "d", DemoConfig(n_actors=2))
    generate_demo(root, DemoConfig(n_actors=1))  # new config: stale actor 2002 must go
    assert len(_wavs(root)) == 82 and not list(root.glob("2002_*"))
    (root / "2001_DFA_ANG_XX.wav").unlink()  # an interrupted or damaged folder is repaired
    generate_demo(root, DemoConfig(n_actors=1))
    assert (root / "2001_DFA_ANG_XX.wav").is_file()
    assert '"n_files": 82' in (root / MARKER_FILE).read_text()
    assert not list(root.glob(".*.part"))


def test_refuses_folder_with_other_files(tmp_path: Path) -> None:
    (tmp_path / "1001_DFA_ANG_XX.wav").write_bytes(b"real clip")
    with pytest.raises(ValueError, match="must be empty or hold only a demo corpus"):
        generate_demo(tmp_path, DemoConfig(n_actors=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1001_DFA_ANG_XX.wav"]
    with pytest.raises(NotADirectoryError, match="must be a directory"):
        generate_demo(tmp_path / "1001_DFA_ANG_XX.wav", DemoConfig(n_actors=1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "seed must be >= 0. Found: -1"),
        ({"n_actors": 0}, "n_actors must be between 1 and 999. Found: 0"),
        ({"sample_rate": 4000}, "sample_rate must be at least 8000 Hz. Found: 4000"),
        ({"clip_spread": -1.0}, "must be >= 0. Found: -1.0"),
        ({"min_duration": 3.0, "max_duration": 2.0}, "min_duration=3.0, max_duration=2.0"),
    ],
)
def test_bad_config_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        DemoConfig(**kwargs)
