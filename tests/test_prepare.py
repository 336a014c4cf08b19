"""The prepare stage: shards, manifest, errors table, resume and crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from conftest import write_cremad_like
from test_audio import write_bad_inputs

from sononet.corpus.cremad import EMOTIONS, SENTENCES
from sononet.features.mel import FeatureConfig
from sononet.features.reader import ShardStream, load_metadata
from sononet.features.shards import ConfigMismatchError, read_manifest, shard_paths, shard_schema, shard_tensor
from sononet.io import sha256_file
from sononet.prepare import PrepareConfig, prepare

FAST = {"mel_backend": "torchaudio", "device": "cpu", "workers": 2}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("prep")
    data = root / "cremad"
    write_cremad_like(data, [str(2001 + i) for i in range(4)], ["DFA", "IEO"])
    # Bad inputs with CREMA-D names, so they reach the decoder rather than the name check.
    bad = root / "bad"
    expected = write_bad_inputs(bad)
    decodable_oddities = ("stereo.wav", "rate44k.flac", "clipped.wav", "long.ogg")
    names = [n for n, reason in sorted(expected.items()) if reason is not None or n in decodable_oddities]
    for i, name in enumerate(names):
        stem = f"2009_{SENTENCES[i % 12]}_{EMOTIONS[i // 12]}_XX"
        os.replace(bad / name, data / f"{stem}{Path(name).suffix}")
    sf.write(data / "badly_named.wav", np.ones(16_000, np.float32) * 0.1, 16_000)
    out = root / "shards"
    summary = prepare(PrepareConfig(data=str(data), out=str(out), shard_size=16, **FAST), progress=False)
    return data, out, summary


def test_every_input_is_in_shards_or_errors(prepared: tuple[Path, Path, dict]) -> None:
    data, out, summary = prepared
    inputs = {str(p) for p in data.iterdir() if p.is_file() and p.name != "VideoDemographics.csv"}
    in_shards = set(load_metadata(out)["source_path"].to_pylist())
    errors = pq.read_table(out / "errors.parquet").to_pylist()
    in_errors = {e["path"] for e in errors}
    assert in_shards | in_errors == inputs and not in_shards & in_errors
    assert summary["files_seen"] == len(inputs) == summary["clips_written"] + summary["errors"]
    assert set(summary["errors_by_reason"]) == {
        "zero_byte", "corrupt", "truncated", "unsupported_format", "empty_audio", "silent", "non_finite",
        "too_short", "misnamed",
    }  # fmt: skip


def test_shard_contents(prepared: tuple[Path, Path, dict]) -> None:
    _, out, summary = prepared
    manifest = read_manifest(out)
    assert manifest["complete"] and manifest["config_hash"] == summary["config_hash"]
    for entry in manifest["shards"].values():
        assert sha256_file(out / entry["file"]) == entry["sha256"]
    table = pq.read_table(shard_paths(out)[0])
    mel = shard_tensor(table, "mel")
    wave = shard_tensor(table, "wave")
    assert mel.shape[1:] == (128, 94) and mel.dtype == np.float16
    assert wave.shape[1:] == (48_000,) and wave.dtype == np.int16
    meta = load_metadata(out).to_pandas()
    assert set(meta.sex.dropna()) == {"Male", "Female"}
    flags = {f for fl in meta["flags"] for f in fl}
    assert {"downmixed", "resampled", "clipped", "long", "padded"} <= flags
    short = meta[meta.n_samples < 48_000].iloc[0]
    assert short.n_frames == -(-short.n_samples // 512)
    # Every shard has the declared schema, column for column and type for type.
    features = FeatureConfig(**manifest["feature_config"])
    for path in shard_paths(out):
        assert pq.read_schema(path).remove_metadata().equals(shard_schema(features))


def test_rerun_is_a_noop_and_configs_do_not_mix(prepared: tuple[Path, Path, dict]) -> None:
    data, out, _ = prepared
    before = {p.name: sha256_file(p) for p in shard_paths(out)}
    again = prepare(PrepareConfig(data=str(data), out=str(out), shard_size=16, **FAST), progress=False)
    assert again["shards_skipped_as_done"] == again["shards"]
    assert {p.name: sha256_file(p) for p in shard_paths(out)} == before
    with pytest.raises(ConfigMismatchError, match="shard_size"):
        prepare(PrepareConfig(data=str(data), out=str(out), shard_size=8, **FAST), progress=False)


def test_stream_yields_each_selected_clip_once(prepared: tuple[Path, Path, dict]) -> None:
    _, out, _ = prepared
    meta = load_metadata(out).to_pandas()
    ids = list(meta.clip_id[::2])
    labels = sorted(set(meta.label))
    stream = ShardStream(out, ids, labels, "mel", batch_size=5, window_shards=2, seed=1)
    seen = [cid for batch in stream for cid in batch.clip_ids]
    assert sorted(seen) == sorted(ids) and len(stream) == -(-len(ids) // 5)
    stream.set_epoch(1)
    assert [c for b in stream for c in b.clip_ids] != seen  # reshuffled per epoch
    # Two DDP ranks see disjoint halves (padded to equal counts), together everything.
    ranks = [ShardStream(out, ids, labels, "wave", 4, rank=r, world_size=2) for r in range(2)]
    parts = [[c for b in s for c in b.clip_ids] for s in ranks]
    assert len(parts[0]) == len(parts[1]) and set(parts[0]) | set(parts[1]) == set(ids)


def _prepare_cmd(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "sononet", "prepare", "--data", str(data), "--out", str(out), "--shard-size", "8",
            "--mel-backend", "torchaudio", "--device", "cpu"]  # fmt: skip


def test_kill_after_first_shard_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    data = tmp_path / "cremad"
    write_cremad_like(data, [str(2001 + i) for i in range(4)], ["DFA", "IEO", "TIE", "IOM", "IWW", "TAI"])
    ref = tmp_path / "ref"
    subprocess.run(_prepare_cmd(data, ref), check=True, capture_output=True)
    crashed = tmp_path / "crashed"
    proc = subprocess.Popen(_prepare_cmd(data, crashed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        manifest = crashed / "manifest.json"
        if manifest.exists() and json.loads(manifest.read_text())["shards"]:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((crashed / "manifest.json").read_text())
    assert not state["complete"], "prepare finished before it could be killed; make the corpus larger"
    assert 1 <= len(state["shards"]) < len(json.loads((ref / "manifest.json").read_text())["shards"])
    (crashed / ".shard-00099.parquet.tmp-4194305").write_bytes(b"PAR1 half a shard")  # as a kill mid-write leaves
    subprocess.run(_prepare_cmd(data, crashed), check=True, capture_output=True)  # one process at a time
    want = {p.name: sha256_file(p) for p in shard_paths(ref)}
    assert {p.name: sha256_file(p) for p in shard_paths(crashed)} == want
    assert sorted(p.name for p in crashed.iterdir()) == sorted(p.name for p in ref.iterdir())  # temporaries removed


def test_empty_corpus_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "c"
    data.mkdir()
    (data / "2001_DFA_ANG_XX.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="no usable audio"):
        prepare(PrepareConfig(data=str(data), out=str(tmp_path / "o"), **FAST), progress=False)


def test_a_manifest_whose_files_all_fail_says_why_and_where(tmp_path: Path) -> None:
    """The commonest reasons with counts and an example, and the folder relative paths were resolved against."""
    from click.testing import CliRunner

    from sononet.cli import main

    meta = tmp_path / "meta"
    (meta / "clips").mkdir(parents=True)
    rows = [f"clips/gone{i}.wav,{'ANG' if i % 2 else 'SAD'},s{i % 3}" for i in range(5)]
    for i in range(2):  # listed and present, but not audio: they fail when decoded
        (meta / "clips" / f"empty{i}.wav").write_bytes(b"")
        rows.append(f"clips/empty{i}.wav,{'ANG' if i else 'SAD'},s{i}")
    (meta / "manifest.csv").write_text("path,label,speaker\n" + "\n".join(rows) + "\n")
    args = ["prepare", "--data", str(meta / "manifest.csv"), "--out", str(tmp_path / "o"), "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    line = result.output.strip().splitlines()[-1]  # after the progress bar
    assert line.startswith("error: no usable audio in ") and "7 of 7 files refused" in line, line
    assert "missing 5 (e.g. " in line and f"{meta}/clips/gone" in line and "zero_byte 2" in line, line
    assert line.endswith(f"relative paths were resolved against {meta}/; see {tmp_path / 'o'}/errors-*.parquet")
    (meta / "manifest.csv").write_text("path,label\n" + "\n".join(f"clips/gone{i}.wav,ANG" for i in range(3)) + "\n")
    result = CliRunner().invoke(main, [*args[:2], str(meta), *args[3:]])  # the folder: its manifest.csv
    assert result.exit_code == 2 and "3 of 3 files refused: missing 3" in result.output, result.output


def test_format_1_shards_are_still_read_and_never_extended(prepared: tuple[Path, Path, dict], tmp_path: Path) -> None:
    """Shards written before tensors were packed (Arrow fixed-shape tensors) train as before."""
    import shutil

    import pyarrow as pa

    from sononet.features.shards import ShardWriter, tensor_array

    _, out, _ = prepared
    old = tmp_path / "old"
    shutil.copytree(out, old)
    manifest = read_manifest(old)
    for entry in manifest["shards"].values():
        path = old / entry["file"]
        table = pq.read_table(path)
        for name in ("mel", "wave"):
            i = table.column_names.index(name)
            table = table.set_column(i, name, tensor_array(shard_tensor(table, name)))
        assert isinstance(table["mel"].type, pa.FixedShapeTensorType)
        pq.write_table(table, path)
        entry["sha256"] = sha256_file(path)
    manifest["format"] = "sononet-shards/1"
    (old / "manifest.json").write_text(json.dumps(manifest))
    ids = load_metadata(out)["clip_id"].to_pylist()
    new_batches = list(ShardStream(out, ids, list(EMOTIONS), "mel", 8, shuffle=False))
    old_batches = list(ShardStream(old, ids, list(EMOTIONS), "mel", 8, shuffle=False))
    assert all(a.clip_ids == b.clip_ids and a.x.equal(b.x) for a, b in zip(new_batches, old_batches))
    with pytest.raises(ConfigMismatchError, match="format 'sononet-shards/1'"):
        ShardWriter(old, {k: manifest[k] for k in ("feature_config", "config_hash")})
