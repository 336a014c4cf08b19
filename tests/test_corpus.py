"""Corpus readers (CREMA-D naming, manifest, audiofolder), detection and splits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import soundfile as sf
from conftest import shared_corpus, tone, write_cremad_like

from sononet.corpus import detect_kind, load_corpus
from sononet.corpus.cremad import (
    N_CLIPS,
    parse_name,
    read_audio_manifest,
    read_demographics,
    read_voice_votes,
)
from sononet.corpus.splits import SplitConfig, assign_splits, speaker_folds, speaker_split


def test_parse_name() -> None:
    assert parse_name("1001_DFA_ANG_XX") == {
        "actor": "1001",
        "sentence": "DFA",
        "emotion": "ANG",
        "intensity": "XX",
    }
    assert parse_name("1001_DFA_ANG") is None
    assert parse_name("1001_DFA_ANG_ZZ") is None


def test_shipped_tables_are_whole() -> None:
    rows = read_audio_manifest()
    assert len(rows) == N_CLIPS and all(len(r["sha256"]) == 64 for r in rows)
    assert all(parse_name(Path(r["file"]).stem) for r in rows)
    demo = read_demographics()
    assert len(demo) == 91 and {d["sex"] for d in demo.values()} == {"Male", "Female"}
    assert len(read_voice_votes()) == N_CLIPS


def test_cremad_folder_refuses_misnamed_and_unknown(cremad_dir: Path) -> None:
    sf.write(cremad_dir / "notes_about_take.wav", tone(1.0), 16_000)
    sf.write(cremad_dir / "2001_DFA_XYZ_XX.wav", tone(1.0), 16_000)
    (cremad_dir / "readme.txt").write_text("hi")
    (cremad_dir / "2001_DFA_ANG_XX.wav.part").write_bytes(b"partial")
    corpus = load_corpus(cremad_dir)
    assert corpus.kind == "cremad" and len(corpus.clips) == 4 * 2 * 6
    reasons = {Path(e.path).name: e.reason for e in corpus.errors}
    assert reasons == {
        "notes_about_take.wav": "misnamed",
        "2001_DFA_XYZ_XX.wav": "unknown_label",
        "readme.txt": "unsupported_format",
    }
    clip = corpus.clips[0]
    assert clip.speaker == "2001" and clip.sex == "Female" and clip.label in corpus.labels


def test_manifest_corpus(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(4):
        sf.write(audio / f"c{i}.flac", tone(1.0, seed=i), 16_000)
    (tmp_path / "m.csv").write_text(
        "path,label,speaker,room\naudio/c0.flac,calm,s1,a\naudio/c1.flac,angry,s2,b\n"
        "audio/c2.flac,,s3,c\naudio/missing.wav,calm,s4,d\naudio/c3.flac,calm,7,e\n"
    )
    corpus = load_corpus(tmp_path / "m.csv")
    assert corpus.kind == "manifest" and corpus.labels == ["angry", "calm"]
    assert [c.speaker for c in corpus.clips] == ["s1", "s2", "7"]
    assert corpus.clips[0].extra == {"room": "a"}
    assert sorted(e.reason for e in corpus.errors) == ["missing", "unknown_label"]


def test_manifest_without_label_column(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,speaker\na.wav,s1\n")
    with pytest.raises(ValueError, match="lacks column"):
        load_corpus(tmp_path / "m.csv")


def nested_corpus(root: Path) -> list[str]:
    """audio/<speaker>/<file>, nEMO's layout: as an audiofolder it would be one class, 'audio'."""
    rows = []
    for s, speaker in enumerate(("IC0", "KS0")):
        for i, label in enumerate(("ANG", "SAD", "HAP")):
            path = root / "audio" / speaker / f"{speaker}_{i}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, tone(1.0, seed=10 * s + i), 16_000)
            rows.append(f"audio/{speaker}/{path.name},{label},{speaker}")
    return rows


def test_a_folder_with_a_manifest_is_read_as_that_manifest(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    rows = nested_corpus(root)
    (root / "manifest.csv").write_text("path,label,speaker\n" + "\n".join(rows) + "\n")
    corpus = load_corpus(root)
    assert corpus.kind == "manifest" and corpus.root == str((root / "manifest.csv").resolve())
    assert corpus.labels == ["ANG", "HAP", "SAD"] and len(corpus.clips) == 6 and not corpus.errors
    assert {c.speaker for c in corpus.clips} == {"IC0", "KS0"}
    # Hugging Face audiofolder: metadata.csv names the path file_name
    (root / "manifest.csv").unlink()
    (root / "metadata.csv").write_text("file_name,label,speaker\n" + "\n".join(rows) + "\n")
    corpus = load_corpus(root)
    assert corpus.kind == "manifest" and corpus.labels == ["ANG", "HAP", "SAD"] and len(corpus.clips) == 6
    # a metadata.csv without labels (captions, say): the label folders decide, as Hugging Face does
    (root / "metadata.csv").write_text("file_name,caption\naudio/IC0/IC0_0.flac,hello\n")
    assert detect_kind(root) == "audiofolder"


def test_a_folder_manifest_that_is_not_a_table(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    nested_corpus(root)
    (root / "manifest.csv").write_bytes(b"")
    with pytest.raises(ValueError, match=r"manifest .*manifest.csv cannot be read as CSV"):
        load_corpus(root)
    (root / "manifest.csv").unlink()
    (root / "manifest.csv").mkdir()  # a folder by that name is not a manifest: the sub-folders decide
    assert detect_kind(root) == "audiofolder"
    (root / "manifest.csv").rmdir()
    os.mkfifo(root / "metadata.csv")  # never opened: a FIFO would block the reader
    assert detect_kind(root) == "audiofolder"
    (root / "metadata.csv").unlink()
    (root / "metadata.csv").write_bytes(b"\x00\xff" * 4096 + b"\n\x00,\n")
    assert detect_kind(root) == "audiofolder"


@pytest.mark.real_speech("nemo")
def test_nemo_folder_reads_its_manifest() -> None:
    corpus = load_corpus(shared_corpus("nemo"))
    assert corpus.kind == "manifest" and corpus.labels == ["ANG", "FEA", "HAP", "NEU", "SAD", "SUR"]
    assert len(corpus.clips) > 2000 and len({c.speaker for c in corpus.clips}) >= 4 and not corpus.errors


def test_audiofolder_corpus(tmp_path: Path) -> None:
    for label in ("happy", "sad"):
        (tmp_path / label / "nested").mkdir(parents=True)
        sf.write(tmp_path / label / "a.wav", tone(1.0), 16_000)
        sf.write(tmp_path / label / "nested" / "b.wav", tone(1.0), 16_000)
    sf.write(tmp_path / "stray.wav", tone(1.0), 16_000)
    corpus = load_corpus(tmp_path)
    assert corpus.kind == "audiofolder" and corpus.labels == ["happy", "sad"] and len(corpus.clips) == 4
    assert corpus.clips[0].speaker is None and [e.reason for e in corpus.errors] == ["unknown_label"]


def test_detect_kind_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        detect_kind(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no CREMA-D- or RAVDESS-named files"):
        detect_kind(tmp_path / "empty")


def speakers(n: int) -> dict[str, str | None]:
    return {str(1000 + i): ("Male" if i % 2 else "Female") for i in range(n)}


def test_speaker_split_is_disjoint_stratified_and_reproducible() -> None:
    spk = speakers(91)
    a = speaker_split(spk, SplitConfig(seed=3))
    assert a == speaker_split(spk, SplitConfig(seed=3))
    assert a != speaker_split(spk, SplitConfig(seed=4))
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 63, "val": 14, "test": 14}
    for split in ("val", "test"):
        sexes = [spk[k] for k, v in a.items() if v == split]
        assert abs(sexes.count("Male") - sexes.count("Female")) <= 1


def test_no_speaker_in_two_splits_clip_level() -> None:
    clips = [f"{1000 + i % 20}_{j}" for i in range(20) for j in range(10)]
    clip_spk = [c.split("_")[0] for c in clips]
    splits = assign_splits(clips, clip_spk, speakers(20), SplitConfig())
    seen: dict[str, set[str]] = {}
    for cid, spk in zip(clips, clip_spk):
        seen.setdefault(spk, set()).add(splits[cid])
    assert all(len(s) == 1 for s in seen.values())


def test_kfold_covers_each_speaker_once_as_test() -> None:
    folds = speaker_folds(speakers(20), SplitConfig(folds=5))
    tested = [spk for f in folds for spk, s in f.items() if s == "test"]
    assert sorted(tested) == sorted(speakers(20)) and len(folds) == 5


def test_split_errors() -> None:
    with pytest.raises(ValueError, match="at least 3 speakers"):
        speaker_split(speakers(2), SplitConfig())
    with pytest.raises(ValueError, match="folds must be 1 .*leave --folds unset"):
        SplitConfig(folds=2)
    with pytest.raises(ValueError, match="no speaker"):
        assign_splits(["a", "b", "c"], [None, None, None], {}, SplitConfig())
    with pytest.raises(ValueError, match="sum to 1"):
        SplitConfig(train=0.5, val=0.1, test=0.1)


def test_random_split_is_explicit_and_labelled() -> None:
    cfg = SplitConfig(mode="random")
    assert "leaky" in cfg.protocol
    out = assign_splits([str(i) for i in range(100)], [None] * 100, {}, cfg)
    assert sorted(set(out.values())) == ["test", "train", "val"]


def test_cremad_like_folder_helper(tmp_path: Path) -> None:
    paths = write_cremad_like(tmp_path / "c", ["2001"], ["DFA"])
    assert len(paths) == 6 and detect_kind(tmp_path / "c") == "cremad"


def test_label_selection_and_mapping(tmp_path: Path) -> None:
    from sononet.corpus import Clip, Corpus, parse_label_map, select_labels

    clips = [Clip(f"c{i}", f"/x/{i}.wav", lab, "s1") for i, lab in enumerate(["ANG", "CAL", "SUR", "NEU", "CAL"])]
    corpus = Corpus("manifest", "/x", clips, [], ["ANG", "CAL", "NEU", "SUR"])
    mapped = select_labels(corpus, ["ANG", "NEU"], parse_label_map("CAL=NEU"))
    assert [c.label for c in mapped.clips] == ["ANG", "NEU", "NEU", "NEU"] and mapped.excluded == {"SUR": 1}
    assert mapped.n_files == 5 and mapped.labels == ["ANG", "NEU"]
    (tmp_path / "map.toml").write_text('CAL = "NEU"\nSUR = "HAP"\n')
    (tmp_path / "map.txt").write_text("# calm is neutral\nCAL=NEU\n")
    assert parse_label_map(str(tmp_path / "map.toml")) == {"CAL": "NEU", "SUR": "HAP"}
    assert parse_label_map(str(tmp_path / "map.txt")) == {"CAL": "NEU"}
    with pytest.raises(ValueError, match="FROM=TO"):
        parse_label_map("CAL:NEU")
    with pytest.raises(ValueError, match="must not chain"):
        parse_label_map("CAL=NEU,NEU=SAD")
    with pytest.raises(ValueError, match=r"asks for \['FEA'\], which the data lacks"):
        select_labels(corpus, ["ANG", "FEA"])
    with pytest.raises(ValueError, match="names labels the data lacks"):
        select_labels(corpus, None, {"XXX": "ANG"})
