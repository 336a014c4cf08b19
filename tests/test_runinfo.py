"""run.json says what ran where, how long each stage took, and how the run ended."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from sononet.runinfo import Interrupted, RunRecord


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_complete_run_records_environment_and_stages(tmp_path: Path) -> None:
    record = RunRecord(tmp_path / "run.json")
    assert read(tmp_path / "run.json")["status"] == "running"
    with record.running(), record.stage("prepare"):
        pass
    record.finish("complete")
    doc = read(tmp_path / "run.json")
    assert doc["status"] == "complete" and "prepare" in doc["stages_s"]
    assert {"sononet", "torch", "numpy"} <= set(doc["versions"])
    assert doc["machine"]["cpus_usable"] >= 1 and doc["threads"]["torch"] >= 1


@pytest.mark.parametrize(
    ("raise_it", "status"),
    [
        (lambda: (_ for _ in ()).throw(KeyboardInterrupt()), "interrupted"),
        (lambda: os.kill(os.getpid(), signal.SIGTERM), "interrupted"),
        (lambda: (_ for _ in ()).throw(__import__("sononet.stopping").stopping.TerminatedError()), "interrupted"),
        (lambda: (_ for _ in ()).throw(ValueError("bad input")), "failed"),
    ],
)
def test_interrupted_or_failed_runs_say_so(tmp_path: Path, raise_it, status: str) -> None:
    record = RunRecord(tmp_path / "run.json")
    with pytest.raises((KeyboardInterrupt, Interrupted, ValueError)), record.running():
        raise_it()
    assert read(tmp_path / "run.json")["status"] == status
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)  # the handler is put back
