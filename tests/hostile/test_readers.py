"""Every corpus reader under one rule: only local regular files are read; nothing a data file names is run or fetched.

Manifests (CSV, Parquet, ``label``'s lists), Hugging Face folders, lhotse CutSets, EmoBox lists
and plain folders each get the same hostile sources; the answer is an errors-table row naming the
reason, or a one-line refusal for a data file that cannot be read at all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from hostile.builders import as_nobody, assert_refused, cli, tone
from sononet.corpus import load_corpus, parse_label_map
from sononet.corpus.clips import label_text
from sononet.errors import AudioError, UserError
from sononet.sources import local_file

HOSTILE_SOURCES = {  # a manifest's path cell -> the reason its row must carry
    "https://example.invalid/a.wav": "not_local",
    "s3://bucket/a.wav": "not_local",
    "file:///etc/hostname": "not_local",
    "cat a.wav |": "not_local",
    "| cat a.wav": "not_local",
    "pipe:cat a.wav": "not_local",
    "/dev/zero": "not_a_file",
    "pipe.wav": "not_a_file",  # a FIFO beside the manifest
    "sub": "not_a_file",  # a folder
    "gone.wav": "missing",
    "a\x00b.wav": "unreadable",
}


@pytest.fixture
def hostile_dir(tmp_path: Path, wavs: Path) -> Path:
    (tmp_path / "a.wav").write_bytes((wavs / "a.wav").read_bytes())
    os.mkfifo(tmp_path / "pipe.wav")
    (tmp_path / "sub").mkdir()
    return tmp_path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_manifest_rows_name_the_reason(hostile_dir: Path, fmt: str) -> None:
    cells = ["a.wav", *HOSTILE_SOURCES]
    table = pa.table({"path": cells, "label": ["ANG"] * len(cells)})
    path = hostile_dir / f"m.{fmt}"
    if fmt == "csv":
        table.to_pandas().to_csv(path, index=False)
    else:
        pq.write_table(table, path)
    corpus = load_corpus(path)
    assert [c.clip_id for c in corpus.clips] == ["a"]
    got = {e.detail.split(": ", 1)[0]: e.reason for e in corpus.errors}
    assert sorted(e.reason for e in corpus.errors) == sorted(HOSTILE_SOURCES.values()), corpus.errors
    assert len(got) == len(HOSTILE_SOURCES)  # one row each, every one saying which row it was


def test_label_lists_apply_the_same_rule(hostile_dir: Path, model_dir: Path) -> None:
    listed = ["a.wav", "https://example.invalid/a.wav", "cat a.wav |", "pipe.wav", "/dev/zero"]
    (hostile_dir / "files.txt").write_text("\n".join(listed) + "\n")
    out = hostile_dir / "l.parquet"
    code, text = cli("label", str(hostile_dir / "files.txt"), "--model", str(model_dir), "--out", str(out),
                     "--device", "cpu", "--mel-backend", "torchaudio")  # fmt: skip
    assert code == 0, text
    rows = pd.read_parquet(out).query("scope == 'file'")
    reasons = dict(zip(rows.path, rows.error_reason.fillna("ok")))
    assert reasons == {
        str(hostile_dir / "a.wav"): "ok", "https://example.invalid/a.wav": "not_local", "cat a.wav |": "not_local",
        str(hostile_dir / "pipe.wav"): "not_a_file", "/dev/zero": "not_a_file",
    }  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    scheme=st.from_regex(r"[a-z][a-z0-9+.-]{0,8}", fullmatch=True),
    rest=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40),
)
def test_any_url_is_not_local_and_never_opened(scheme: str, rest: str) -> None:
    with pytest.raises(AudioError) as e:
        local_file(f"{scheme}://{rest}", Path("/nonexistent-base"))
    assert e.value.reason == "not_local"


@settings(max_examples=80, deadline=None)
@given(name=st.text(max_size=60))
def test_any_path_text_is_a_row_never_a_traceback(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.getbasetemp()
    try:
        local_file(name, base)
    except AudioError as e:
        assert e.reason in ("not_local", "missing", "not_a_file", "unreadable")


def test_a_five_megabyte_cell_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("path,label\n" + "a" * 5_000_000 + ".wav,ANG\n")
    code, text = cli("prepare", "--data", str(path), "--out", str(tmp_path / "shards"), "--device", "cpu")
    assert_refused(code, text, str(path))
    (tmp_path / "garbage.parquet").write_bytes(b"PAR1 not a parquet file")
    with pytest.raises(ValueError, match="garbage.parquet cannot be read"):
        load_corpus(tmp_path / "garbage.parquet")


def test_a_data_path_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "m.csv")
    code, text = cli("prepare", "--data", str(tmp_path / "m.csv"), "--out", str(tmp_path / "shards"))
    assert_refused(code, text, "is a FIFO")
    os.mkfifo(tmp_path / "list.txt")
    with pytest.raises(UserError, match="input list .* is a FIFO"):
        from sononet.label import list_inputs

        list_inputs(tmp_path / "list.txt")


# --- labels: one rule for every reader ---------------------------------------------------------

NOT_CLASSES = ["nan", "NaN", "1.5", "2.0", "-inf", "1e3", " ", ""]


def test_label_cells_follow_one_rule_in_manifests_and_hugging_face(tmp_path: Path, wavs: Path) -> None:
    from datasets import Audio, Dataset

    names = [f"x{i}.wav" for i in range(len(NOT_CLASSES) + 1)]
    for n in names:
        (tmp_path / n).write_bytes((wavs / "a.wav").read_bytes())
    labels = [*NOT_CLASSES, "2"]  # an integer label stays a class: "2"
    pd.DataFrame({"path": names, "label": labels}).to_csv(tmp_path / "m.csv", index=False)
    Dataset.from_dict({"audio": [str(tmp_path / n) for n in names], "label": labels}).cast_column(
        "audio", Audio()
    ).save_to_disk(str(tmp_path / "hf"))
    for corpus in (load_corpus(tmp_path / "m.csv"), load_corpus(tmp_path / "hf")):
        assert corpus.labels == ["2"], corpus.kind
        assert [e.reason for e in corpus.errors] == ["unknown_label"] * len(NOT_CLASSES), corpus.errors
    Dataset.from_dict({"audio": [str(tmp_path / n) for n in names[:2]], "label": [1.0, 2.5]}).cast_column(
        "audio", Audio()
    ).save_to_disk(str(tmp_path / "hf-float"))
    corpus = load_corpus(tmp_path / "hf-float")  # a float column is a rating: no class at all
    assert not corpus.clips and [e.reason for e in corpus.errors] == ["unknown_label"] * 2


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ({"CAL": ""}, "empty label"),
        ("CAL=NEU,CAL=SAD", "maps CAL twice, to NEU and to SAD"),
        ("CAL==NEU", "'=NEU' holds '=' or ','"),
        ("CAL=nan", "'nan' is a non-integer number"),
        ("CAL=1.5", "'1.5' is a non-integer number"),
        ({"CAL": "NEU", " ": "SAD"}, "empty label"),
        ("CAL=NEU,NEU=SAD", "must not chain"),
        ("=NEU", "empty label"),
        ("CAL", "entries look like FROM=TO"),
    ],
)
def test_label_maps_are_refused_before_any_work(text: object, match: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=match):
        parse_label_map(text)
    arg = text if isinstance(text, str) else json.dumps(text)
    if not isinstance(text, str):
        (tmp_path / "map.json").write_text(arg)
        arg = str(tmp_path / "map.json")
    code, out = cli("train-all", "--label-map", arg, "--out", str(tmp_path / "run"), "--print-spec")
    assert_refused(code, out)
    assert not (tmp_path / "run").exists()


def test_a_json_label_map_with_a_repeated_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "map.json").write_text('{"CAL": "NEU", "CAL": "SAD"}')  # json.loads keeps the last, silently
    with pytest.raises(ValueError, match="maps CAL twice"):
        parse_label_map(str(tmp_path / "map.json"))


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from("AB=,. n1\t"), max_size=16))
def test_any_label_map_text_is_a_map_of_class_names_or_a_value_error(text: str) -> None:
    try:
        mapping = parse_label_map(text)
    except ValueError:
        return
    for name in (*mapping, *mapping.values()):
        assert label_text(name) == (name, "") and "=" not in name and "," not in name


# --- Hugging Face ------------------------------------------------------------------------------


def test_hugging_face_rows_with_urls_are_rows_and_fifos_refuse_the_folder(tmp_path: Path, wavs: Path) -> None:
    from datasets import Audio, Dataset

    paths = [str(wavs / "a.wav"), "https://example.invalid/x.wav"]  # save_to_disk embeds local files only
    ds = Dataset.from_dict({"audio": paths, "label": ["ANG", "HAP"]}).cast_column("audio", Audio())
    ds.save_to_disk(str(tmp_path / "hf"), num_shards=1)  # one shard: else datasets sizes the URL to plan shards
    corpus = load_corpus(tmp_path / "hf")
    assert [c.label for c in corpus.clips] == ["ANG"]
    assert [e.reason for e in corpus.errors] == ["not_local"]
    os.mkfifo(tmp_path / "hf" / "extra.arrow")
    code, text = cli("prepare", "--data", str(tmp_path / "hf"), "--out", str(tmp_path / "shards"))
    assert_refused(code, text, "extra.arrow is a FIFO")


def _load_read_only(root: str, cache: str) -> str:
    os.environ["SONONET_CACHE"] = cache
    corpus = load_corpus(root)
    return json.dumps({"clips": [c.path for c in corpus.clips], "errors": [e.reason for e in corpus.errors]})


def test_a_read_only_hugging_face_folder_is_read_without_a_write(tmp_path: Path) -> None:
    import tempfile

    from datasets import Audio, Dataset

    with tempfile.TemporaryDirectory() as tmp:  # pytest's folders are 0700: `nobody` could not even look
        base = Path(tmp)
        base.chmod(0o755)
        data = base / "hf"
        rows = {"audio": [{"bytes": _wav(tone(0.5, seed=i)), "path": f"u{i}.wav"} for i in range(2)],
                "label": ["ANG", "SAD"]}  # fmt: skip
        Dataset.from_dict(rows).cast_column("audio", Audio()).save_to_disk(str(data))
        for p in [data, *data.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        cache = base / "cache"
        cache.mkdir()
        os.chown(cache, 65534, 65534)
        before = sorted(str(p) for p in data.rglob("*"))
        got = (
            as_nobody(_load_read_only, str(data), str(cache))
            if os.geteuid() == 0
            else _load_read_only(str(data), str(cache))
        )
        result = json.loads(got) if got.startswith("{") else pytest.fail(got)
        assert sorted(str(p) for p in data.rglob("*")) == before  # not one file written into the dataset
        assert len(result["clips"]) == 2 and all(p.startswith(str(cache)) for p in result["clips"])


def _wav(x) -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, x, 16_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# --- EmoBox -----------------------------------------------------------------------------------


def _emobox(meta: Path, train: list[str], test: list[str]) -> Path:
    d = meta / "fold_1"
    d.mkdir(parents=True)
    for part, stems in (("train", train), ("test", test)):
        rows = "".join(json.dumps({"key": s, "wav": f"x/{s}.wav"}) + "\n" for s in stems)
        (d / f"c_{part}_fold_1.jsonl").write_text(rows)
    return meta


def test_an_emobox_fold_that_tests_nothing_is_an_error(tmp_path: Path) -> None:
    from sononet.corpus.emobox import emobox_split

    ids, speakers = [f"c{i}" for i in range(8)], [f"s{i % 4}" for i in range(8)]
    empty = _emobox(tmp_path / "empty", ids, [])
    with pytest.raises(UserError, match="no clip of the data is in its test list \\(0 entries listed\\)"):
        emobox_split(empty, 0, ids, speakers, seed=0)
    absent = _emobox(tmp_path / "absent", ids, ["elsewhere1", "elsewhere2"])
    with pytest.raises(UserError, match="2 entries listed, none of them in the data"):
        emobox_split(absent, 0, ids, speakers, seed=0)
    fifo = _emobox(tmp_path / "fifo", ids, ids[:2])
    (fifo / "fold_1" / "c_test_fold_1.jsonl").unlink()
    os.mkfifo(fifo / "fold_1" / "c_test_fold_1.jsonl")
    with pytest.raises(UserError, match="EmoBox list .* is a FIFO"):
        emobox_split(fifo, 0, ids, speakers, seed=0)
