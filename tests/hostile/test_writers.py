"""Report folders and exports: locked, written whole or not at all, never over a training run.

``evaluate`` refuses an ``--out`` holding a training run or a saved model and a second evaluation
into a folder in use; ``export`` replaces ``model.onnx`` atomically, so ``kill -9`` mid-export
leaves the previous file and a full disk is one line with no temporary file left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hostile.builders import assert_refused, bounded, cli
from sononet.errors import UserError
from sononet.locking import folder_lock


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _evaluate(model: Path, data: Path, out: Path) -> tuple[int, str]:
    return cli("evaluate", "--model", str(model), "--data", str(data), "--out", str(out), "--device", "cpu")


def test_evaluate_refuses_a_training_run_a_model_and_the_data(
    model_dir: Path, cremad_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"status": "complete", "protocol": {"corpus": "x", "split": "y"}}))
    (run / "predictions.parquet").write_bytes(b"the training run's predictions")
    before = {p.name: _sha(p) for p in run.iterdir()}
    code, text = _evaluate(model_dir, cremad_dir, run)
    assert_refused(code, text, "holds a training run or a saved model", "run.json")
    assert {p.name: _sha(p) for p in run.iterdir()} == before
    code, text = _evaluate(model_dir, cremad_dir, model_dir)  # into the model folder itself
    assert_refused(code, text, "config.json")
    code, text = _evaluate(model_dir, cremad_dir, cremad_dir / "report")
    assert_refused(code, text, "lies inside the test corpus")
    assert not (cremad_dir / "report").exists()


def test_a_second_evaluation_into_a_busy_out_stops_at_once(model_dir: Path, cremad_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    with folder_lock(out, "evaluate"):  # the first evaluation, still running
        code, text = _evaluate(model_dir, cremad_dir, out)
    assert_refused(code, text, "is in use: evaluate (pid")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_evaluating_a_broken_model_is_one_line_not_a_nan_report(nan_model: Path, cremad_dir: Path, tmp_path: Path):
    code, text = _evaluate(nan_model, cremad_dir, tmp_path / "eval")
    assert_refused(code, text, "not a finite probability distribution")
    assert not (tmp_path / "eval" / "predictions.parquet").exists()


_KILLED_EXPORT = """
import os, sys, torch
from sononet.export import ExportConfig, export_model

def half_then_killed(model, args, f, *a, **k):
    with open(f, "wb") as out:
        out.write(b"half an onnx file")
        out.flush()
    os.kill(os.getpid(), 9)

torch.onnx.export = half_then_killed
export_model(ExportConfig(model=sys.argv[1], out=sys.argv[2]))
"""


def test_kill_9_during_a_re_export_leaves_the_previous_model(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "onnx"
    assert cli("export", "--model", str(model_dir), "--out", str(out))[0] == 0
    before = _sha(out / "model.onnx")
    proc = subprocess.run([sys.executable, "-c", _KILLED_EXPORT, str(model_dir), str(out)], timeout=300)
    assert proc.returncode == -9
    assert _sha(out / "model.onnx") == before  # whole, and the previous one
    # The killed export held the folder's lock; the kernel dropped it with the process, so the next runs.
    assert cli("export", "--model", str(model_dir), "--out", str(out))[0] == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["export.json", "model.onnx"]
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]  # the killed export's partial file: removed


def test_a_full_disk_during_export_is_one_line_and_leaves_no_temp_file(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import torch

    out = tmp_path / "onnx"
    assert cli("export", "--model", str(model_dir), "--out", str(out))[0] == 0
    before = _sha(out / "model.onnx")

    def full(model, args, f, *a, **k) -> None:
        Path(f).write_bytes(b"the first megabytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", full)
    code, text = cli("export", "--model", str(model_dir), "--out", str(out))
    lines = [ln for ln in text.splitlines() if ln.startswith("error: ")]
    assert code == 1 and len(lines) == 1 and "no space left on the device holding" in lines[0], text
    assert _sha(out / "model.onnx") == before
    assert sorted(p.name for p in out.iterdir()) == [".lock", "export.json", "model.onnx"]


def _fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def test_a_fifo_planted_in_a_run_folder_is_one_line_not_a_hang(cremad_dir: Path, model_dir: Path, wavs: Path,
                                                               tmp_path: Path) -> None:  # fmt: skip
    from sononet.train.checkpoint import load_checkpoint

    shards = tmp_path / "shards"
    prep = [
        "prepare",
        "--data",
        str(cremad_dir),
        "--out",
        str(shards),
        "--device",
        "cpu",
        "--mel-backend",
        "torchaudio",
    ]
    assert cli(*prep)[0] == 0
    out = tmp_path / "l.parquet"
    label = ["label", str(wavs), "--model", str(model_dir), "--out", str(out), "--device", "cpu"]
    assert cli(*label, "--shard", "0/2")[0] == 0
    with bounded(60):
        _fifo(shards / "manifest.json")
        assert_refused(*cli(*prep), "manifest.json is not a regular file")
        assert_refused(*cli("train", "--shards", str(shards), "--model", "cnn", "--out", str(tmp_path / "t")),
                       "manifest.json is not a regular file")  # fmt: skip
        _fifo(out.with_suffix(".parts") / "state-00000.json")
        assert_refused(*cli(*label, "--shard", "1/2"), "state-00000.json is not a regular file")
        assert_refused(*cli("label", "--merge", "--out", str(out)), "state-00000.json is not a regular file")
        with pytest.raises(UserError, match="last.pt is not a regular file"):
            load_checkpoint(_fifo(tmp_path / "last.pt"))
