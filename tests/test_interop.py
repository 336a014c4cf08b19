"""Benchmark interop: EmoBox folds, Hugging Face saved datasets and lhotse CutSets as corpora.

Every fixture is built here with the libraries themselves (``datasets``, ``lhotse``) or, for
EmoBox, in its documented JSONL layout; nothing comes from a hub.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import tone, write_cremad_like

from sononet.audio import load_audio
from sononet.corpus import detect_kind, load_corpus
from sononet.corpus.splits import SplitConfig, assign_splits, split_protocol

datasets = pytest.importorskip("datasets")
lhotse = pytest.importorskip("lhotse")

ACTORS = [str(2001 + i) for i in range(8)]


def wav_bytes(x: np.ndarray, sr: int = 16_000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# --- EmoBox ---------------------------------------------------------------------------------


def write_emobox(meta: Path, folds: list[tuple[list[str], list[str]]], extra_test: list[str] = ()) -> Path:
    """An EmoBox data/cremad folder: fold_N/cremad_{train,test}_fold_N.jsonl with key/wav/emo rows."""
    for n, (train, test) in enumerate(folds, 1):
        d = meta / f"fold_{n}"
        d.mkdir(parents=True)
        for part, stems in (("train", train), ("test", [*test, *extra_test])):
            rows = [
                {"key": "cremad-" + s.replace("_", "-"), "dataset": "cremad",
                 "wav": f"downloads/cremad/AudioWAV/{s}.wav", "type": "raw", "sample_rate": 16000,
                 "length": 1.2, "task": "category", "emo": s.split("_")[2], "channel": 1}
                for s in stems
            ]  # fmt: skip
            (d / f"cremad_{part}_fold_{n}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return meta


@pytest.fixture
def cremad8(tmp_path: Path) -> list[str]:
    paths = write_cremad_like(tmp_path / "cremad", ACTORS, ["DFA"], seconds=0.6)
    return [p.stem for p in paths]


def by_actor(stems: list[str], actors: set[str]) -> list[str]:
    return [s for s in stems if s.split("_")[0] in actors]


def test_emobox_folds_keep_lists_and_carve_validation_speakers(tmp_path: Path, cremad8: list[str]) -> None:
    folds = [(by_actor(cremad8, set(ACTORS[2:])), by_actor(cremad8, set(ACTORS[:2]))),
             (by_actor(cremad8, set(ACTORS[:6])), by_actor(cremad8, set(ACTORS[6:])))]  # fmt: skip
    meta = write_emobox(tmp_path / "emobox" / "cremad", folds, extra_test=["9999_DFA_ANG_XX"])
    cfg = SplitConfig(mode="emobox", emobox=str(meta), seed=3)
    assert cfg.folds == 2  # from the meta dir
    corpus = load_corpus(tmp_path / "cremad")
    ids = [c.clip_id for c in corpus.clips]
    speakers = [c.speaker for c in corpus.clips]
    for fold, (train, test) in enumerate(folds):
        split = assign_splits(ids, speakers, {}, cfg, fold)
        assert sorted(c for c, s in split.items() if s == "test") == sorted(test)
        assert sorted(c for c, s in split.items() if s in ("train", "val")) == sorted(train)
        spk = {s: {c.split("_")[0] for c, p in split.items() if p == s} for s in ("train", "val")}
        assert len(spk["val"]) == 1 and not spk["val"] & spk["train"]  # 1/8 of 6 speakers, rounded, at least one
        assert split == assign_splits(ids, speakers, {}, cfg, fold)  # seeded
    protocol, disjoint = split_protocol(cfg, ids, speakers)
    assert disjoint and protocol.startswith("emobox cremad folds (val: 1/8 of train speakers")
    assert "speaker-dependent" not in protocol and "2 listed clips not in the data" in protocol


def test_emobox_speaker_dependent_fold_says_so(tmp_path: Path, cremad8: list[str]) -> None:
    """EmoBox's CREMA-D fold is a stratified random 25 %: test speakers are train speakers too."""
    test = cremad8[::4]
    meta = write_emobox(tmp_path / "cremad", [([s for s in cremad8 if s not in test], test)])
    cfg = SplitConfig(mode="emobox", emobox=str(meta))
    corpus = load_corpus(tmp_path / "cremad")
    ids, speakers = [c.clip_id for c in corpus.clips], [c.speaker for c in corpus.clips]
    text, disjoint = split_protocol(cfg, ids, speakers)
    assert "speaker-dependent: test speakers also in train" in text and not disjoint  # the report warns


def test_emobox_errors_say_what_to_pass(tmp_path: Path, cremad8: list[str]) -> None:
    root = tmp_path / "data"
    write_emobox(root / "cremad", [(cremad8[:20], cremad8[20:])])
    with pytest.raises(ValueError, match="pass one of: .*cremad"):
        SplitConfig(mode="emobox", emobox=str(root))
    with pytest.raises(ValueError, match="has 1 fold"):
        SplitConfig(mode="emobox", emobox=str(root / "cremad"), folds=5)
    with pytest.raises(ValueError, match="needs the EmoBox meta dir"):
        SplitConfig(mode="emobox")
    cfg = SplitConfig(mode="emobox", emobox=str(root / "cremad"))
    with pytest.raises(ValueError, match="no clip of the data is listed"):
        assign_splits(["a/x", "a/y"], ["s1", "s2"], {}, cfg)


def test_cli_split_accepts_emobox_and_refuses_others(tmp_path: Path, cremad8: list[str]) -> None:
    from sononet.cli import main
    from sononet.jobs import load_spec

    meta = write_emobox(tmp_path / "cremad-meta", [(cremad8[:30], cremad8[30:])])
    common = ["train-all", "--data", str(tmp_path / "cremad"), "--out", str(tmp_path / "run"), "--print-spec"]
    bad = CliRunner().invoke(main, [*common, "--split", "kfold"])
    assert bad.exit_code == 2 and "expected speaker, random or emobox:" in bad.output
    missing = CliRunner().invoke(main, [*common, "--split", f"emobox:{tmp_path / 'nope'}"])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    ok = CliRunner().invoke(main, [*common, "--split", f"emobox:{meta}"])
    assert ok.exit_code == 0, ok.output
    spec = tmp_path / "spec.toml"
    spec.write_text(ok.output)
    _, cfg = load_spec(str(spec))
    assert cfg.split.mode == "emobox" and cfg.split.emobox == str(meta) and cfg.split.folds == 1


def test_train_all_on_emobox_folds(tmp_path: Path, cremad8: list[str]) -> None:
    from sononet.experiment import ExperimentConfig, run_experiment
    from sononet.prepare import PrepareConfig
    from sononet.train.config import TrainConfig

    test = by_actor(cremad8, set(ACTORS[:2]))
    meta = write_emobox(tmp_path / "cremad-meta", [([s for s in cremad8 if s not in test][:-6], test)])
    cfg = ExperimentConfig(
        out=str(tmp_path / "run"), models=("cnn",), device="cpu",
        prepare=PrepareConfig(data=str(tmp_path / "cremad"), shard_size=64, mel_backend="torchaudio", device="cpu"),
        split=SplitConfig(mode="emobox", emobox=str(meta)), train=TrainConfig(epochs=1, batch_size=16),
    )  # fmt: skip
    result = run_experiment(cfg, progress=False)
    preds = pd.read_parquet(Path(result["out"]) / "predictions.parquet")
    assert sorted(preds[preds.split == "test"].clip_id) == sorted(test)
    assert result["protocol"]["split"].startswith("emobox cremad-meta folds")
    assert "not in the data" not in result["protocol"]["split"]  # the 6 clips left out are unlisted, not missing
    splits = json.loads((Path(result["out"]) / "splits.json").read_text())
    assert len(splits) == len(cremad8) - 6


# --- Hugging Face datasets ------------------------------------------------------------------


def test_hf_dataset_with_embedded_audio(tmp_path: Path) -> None:
    from datasets import Audio, ClassLabel, Dataset

    clips = [tone(0.5, f0=120 + 20 * i, seed=i) for i in range(4)]
    ds = Dataset.from_dict(
        {
            "audio": [{"bytes": wav_bytes(x), "path": f"utt{i}.wav"} for i, x in enumerate(clips)],
            "label": [0, 1, 1, -1],  # -1: unlabelled
            "speaker_id": ["a", "a", "b", "b"],
            "gender": ["F", "F", "M", "M"],
            "utterance": ["x", "y", "z", "w"],
        }
    )
    ds = ds.cast_column("audio", Audio()).cast_column("label", ClassLabel(names=["ANG", "HAP"]))
    ds.save_to_disk(str(tmp_path / "hf"))
    assert detect_kind(tmp_path / "hf") == "hf"
    corpus = load_corpus(tmp_path / "hf")
    assert corpus.kind == "hf" and corpus.labels == ["ANG", "HAP"]
    assert [c.clip_id for c in corpus.clips] == ["utt0", "utt1", "utt2"]
    meta = [(c.label, c.speaker, c.sex) for c in corpus.clips]
    assert meta == [("ANG", "a", "F"), ("HAP", "a", "F"), ("HAP", "b", "M")]
    assert corpus.clips[0].extra == {"utterance": "x"}
    assert [e.reason for e in corpus.errors] == ["unknown_label"]
    cached = [Path(c.path) for c in corpus.clips]
    assert all(p.parent == tmp_path / "hf" / ".sononet-audio" and p.suffix == ".wav" for p in cached)
    np.testing.assert_allclose(load_audio(cached[1]).samples, clips[1], atol=1e-4)  # PCM_16 round trip
    mtimes = [p.stat().st_mtime_ns for p in cached]
    again = load_corpus(tmp_path / "hf")
    assert [c.path for c in again.clips] == [str(p) for p in cached]
    assert [p.stat().st_mtime_ns for p in cached] == mtimes  # written once


def test_hf_dataset_dict_with_text_labels_and_missing_audio(tmp_path: Path) -> None:
    from datasets import Audio, Dataset, DatasetDict

    audio = tmp_path / "audio"
    audio.mkdir()
    for name in ("a", "b"):
        sf.write(audio / f"{name}.wav", tone(0.5), 16_000)

    def part(names: list[str], emotions: list[str]) -> Dataset:
        paths = [str(audio / f"{n}.wav") if n else None for n in names]
        rows = {"audio": paths, "emotion": emotions, "speaker": ["s1"] * len(names)}
        return Dataset.from_dict(rows).cast_column("audio", Audio())

    DatasetDict({"train": part(["a", None], ["NEU", "SAD"]), "test": part(["b"], ["SAD"])}).save_to_disk(
        str(tmp_path / "hfdict")
    )
    corpus = load_corpus(tmp_path / "hfdict")
    assert corpus.kind == "hf" and corpus.labels == ["NEU", "SAD"]
    assert [(c.clip_id, c.extra["hf_split"]) for c in corpus.clips] == [("a", "train"), ("b", "test")]
    assert [e.reason for e in corpus.errors] == ["missing"]  # a row without audio


def test_hf_dataset_without_label_names_columns(tmp_path: Path) -> None:
    from datasets import Audio, Dataset

    Dataset.from_dict({"audio": [{"bytes": wav_bytes(tone(0.3)), "path": None}], "mood": ["x"]}).cast_column(
        "audio", Audio()
    ).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(ValueError, match="no label column.*Columns: \\['audio', 'mood'\\]"):
        load_corpus(tmp_path / "hf")


# --- lhotse ---------------------------------------------------------------------------------


def write_cuts(tmp_path: Path) -> tuple[Path, list[Path]]:
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    files = []
    for i in range(3):
        p = tmp_path / "wav" / f"r{i}.wav"
        p.parent.mkdir(exist_ok=True)
        sf.write(p, tone(1.0, f0=130 + 30 * i, seed=i), 16_000)
        files.append(p)
    recs = RecordingSet.from_recordings(Recording.from_file(p) for p in files)
    sups = SupervisionSet.from_segments(
        SupervisionSegment(
            id=f"s{i}", recording_id=f"r{i}", start=0.0, duration=1.0, speaker=f"spk{i % 2}", gender="F",
            custom={"emotion": emo} if emo else None,
        )
        for i, emo in enumerate(["ANG", "SAD", None])
    )  # fmt: skip
    cuts = CutSet.from_manifests(recordings=recs, supervisions=sups)
    cuts = CutSet.from_cuts(c.with_id(c.recording_id) for c in cuts)
    segment = cuts[0].truncate(offset=0.25, duration=0.5)  # part of a recording: decoded by lhotse
    segment = segment.with_id("r0-part")
    manifest = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts([*cuts, segment]).to_file(manifest)
    recs.to_file(tmp_path / "recordings.jsonl.gz")
    return manifest, files


def test_lhotse_cutset(tmp_path: Path) -> None:
    manifest, files = write_cuts(tmp_path)
    assert detect_kind(manifest) == "lhotse"
    corpus = load_corpus(manifest)
    assert corpus.kind == "lhotse" and corpus.labels == ["ANG", "SAD"]
    got = {c.clip_id: c for c in corpus.clips}
    assert sorted(got) == ["r0", "r0-part", "r1"]
    assert got["r0"].path == str(files[0].resolve()) and got["r1"].speaker == "spk1" and got["r1"].sex == "F"
    part = Path(got["r0-part"].path)
    assert part.parent == tmp_path / ".sononet-audio"
    decoded = load_audio(part).samples
    assert decoded.shape == (8000,)
    np.testing.assert_allclose(decoded, sf.read(files[0], dtype="float32")[0][4000:12000], atol=1e-6)
    assert [e.reason for e in corpus.errors] == ["unknown_label"]  # r2 has no emotion
    assert load_corpus(manifest).clips == corpus.clips  # the segment is not rewritten


def test_lhotse_refuses_other_manifests_and_flags_missing_audio(tmp_path: Path) -> None:
    manifest, files = write_cuts(tmp_path)
    with pytest.raises(ValueError, match="recordings manifest; SonoNet reads cuts"):
        load_corpus(tmp_path / "recordings.jsonl.gz", kind="lhotse")
    files[1].unlink()
    corpus = load_corpus(manifest)
    assert sorted(e.reason for e in corpus.errors) == ["missing", "unknown_label"]
