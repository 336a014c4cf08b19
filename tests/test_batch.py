"""sononet-batch and the job specs, checked against the real code (the image and the Kubernetes examples:
test_container.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from sononet.batch import resolve_job
from sononet.cli.batch import cli
from sononet.jobs import JOBS, JOBS_DIR, SpecError, load_spec

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent
EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")


def write_corpus(root: Path) -> Path:
    """2 actors x 2 sentences x 6 emotions of CREMA-D-named tones, plus one bad file."""
    root.mkdir(parents=True)
    t = np.arange(int(1.2 * 16_000)) / 16_000
    for a in ("1001", "1002"):
        for s in ("DFA", "IEO"):
            for i, e in enumerate(EMOTIONS):
                x = 0.1 * np.sin(2 * np.pi * (110 + 20 * i + 5 * int(a[-1])) * t)
                sf.write(root / f"{a}_{s}_{e}_XX.wav", x.astype(np.float32), 16_000, subtype="PCM_16")
    (root / "1002_IEO_SAD_HI.wav").write_bytes(b"")
    return root


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


# --- specs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(JOBS_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_spec_loads(path: Path) -> None:
    job = tomllib.loads(path.read_text())["job"]
    assert job == path.stem and job in JOBS
    name, cfg = load_spec(path.stem)  # imports the job's module: an import error fails here
    assert name == job and type(cfg).__name__ == JOBS[job][0].split(":")[1]


def test_spec_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="unknown key 'train.epoch'"):
        load_spec("train-all", ["train.epoch=3"])
    with pytest.raises(SpecError, match="train.epochs must be int. Found: 'three'"):
        load_spec("train-all", ["train.epochs=three"])
    with pytest.raises(SpecError, match="no job spec 'nope'.*train-all"):
        load_spec("nope")
    (tmp_path / "x.toml").write_text('job = "fly"\n')
    with pytest.raises(SpecError, match="'job' must be one of .*Found: 'fly'"):
        load_spec(str(tmp_path / "x.toml"))
    for args, message in (
        (["train-all", "--set", "train.epoch=3"], "unknown key 'train.epoch'"),
        (["label-folder", "--set", "batch_size=0"], "batch_size must be positive. Found: 0"),
        (["nope"], "no job spec 'nope'"),
        (["prepare", "--set", "workers"], "--set takes key=value"),
    ):
        result = invoke(*args, "--out", str(tmp_path))
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_paths_go_under_the_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "runs" / "m").mkdir(parents=True)
    _, cfg = resolve_job("train-all", ["out=runs/x"], tmp_path)
    assert cfg.out == str(tmp_path / "runs/x") and cfg.prepare.out == str(tmp_path / "runs/x/shards")
    _, cfg = resolve_job("train-all", ["prepare.out=/scratch/shards"], tmp_path)
    assert cfg.prepare.out == "/scratch/shards"  # an explicit shard folder is kept
    _, cfg = resolve_job("label-folder", ["model=runs/m", "input=elsewhere"], tmp_path)
    assert cfg.model == str(tmp_path / "runs/m") and cfg.input == "elsewhere"  # only existing inputs move
    monkeypatch.setenv("SONONET_WORKDIR", str(tmp_path / "env"))
    result = invoke("prepare", "--print-spec")
    assert result.exit_code == 0 and f'out = "{tmp_path}/env/runs/demo/shards"' in result.output
    printed = tmp_path / "printed.toml"
    printed.write_text(result.output)
    assert load_spec(str(printed)) == load_spec("prepare", [f"out={tmp_path}/env/runs/demo/shards"])


# --- running jobs ----------------------------------------------------------------------------


def test_prepare_runs_end_to_end_and_resumes(tmp_path: Path) -> None:
    write_corpus(tmp_path / "work" / "corpus")
    sets = ["data=corpus", "out=shards", "device=cpu", "mel_backend=torchaudio", "shard_size=10"]
    args = ["prepare", *(a for s in sets for a in ("--set", s)), "--out", str(tmp_path / "work")]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "work" / "shards"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows"] == 24 and len(manifest["shards"]) == 3
    assert load_spec(str(run_dir / "spec.toml"))[1].data == str(tmp_path / "work" / "corpus")
    log = events(run_dir)
    assert [e.get("event") for e in log if "event" in e] == ["start", "done"]
    assert log[-1]["data"]["result"]["errors"] == 1
    again = invoke(*args, "--log-format", "json")
    assert again.exit_code == 0
    done = [e for e in events(run_dir) if e.get("event") == "done"]
    assert done[-1]["data"]["result"]["shards_skipped_as_done"] == 3  # the rerun resumed, redid nothing


def test_failure_is_one_line_and_an_event(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = invoke("prepare", "--set", "data=empty", "--set", "out=shards", "--out", str(tmp_path))
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("sononet-batch: prepare failed: ValueError:") and "empty" in last
    failed = [e for e in events(tmp_path / "shards") if e.get("event") == "failed"]
    assert failed and failed[0]["data"]["type"] == "ValueError" and "Traceback" in failed[0]["data"]["traceback"]


def test_label_folder_job_with_a_model_in_the_workdir(tmp_path: Path) -> None:
    from sononet.features.mel import FeatureConfig
    from sononet.models.registry import build_model
    from sononet.models.saving import save_model

    fc = FeatureConfig(n_fft=512, hop_length=256, n_mels=32)
    model = build_model("cnn", n_classes=2, n_mels=32, channels=(4, 8), dropouts=(0.1, 0.1))
    meta = {"labels": ["A", "B"], "feature_config": fc.to_dict(), "norm": {}, "input_kind": "mel"}
    meta["norm"] = {"mean": [0.0] * 32, "std": [1.0] * 32}
    save_model(tmp_path / "runs" / "r" / "cnn" / "model", model, "cnn", meta)
    audio = write_corpus(tmp_path / "incoming")
    base = ["label-folder", "--set", "model=runs/r/cnn/model", "--set", f"input={audio}",
            "--set", "mel_backend=torchaudio", "--set", "device=cpu", "--out", str(tmp_path)]  # fmt: skip
    result = invoke(*base)
    assert result.exit_code == 0, result.output
    out = tmp_path / "labels" / "incoming.parquet"  # the spec's relative out, under the workdir
    import pandas as pd

    df = pd.read_parquet(out)
    assert len(df) == 25 and df.status.value_counts().to_dict() == {"ok": 24, "error": 1}
    assert (tmp_path / "labels" / "incoming.parts" / "spec.toml").exists()
    assert invoke(*base, "--set", "merge=true").exit_code == 0  # merge-only rerun


def test_a_workdir_it_cannot_write_is_one_line_that_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker creates a missing bind-mount folder owned by root, and a host folder belongs to the
    host's uid, not the image's 1000: the run folder, the job's first write, fails in one line."""
    import errno
    import os

    mkdir = Path.mkdir

    def refused(self: Path, *args, **kwargs) -> None:  # the workdir only: as root, chmod refuses nothing
        if self.is_relative_to(tmp_path / "work"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        mkdir(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(Path, "mkdir", refused)
        result = invoke("train-all", "--out", str(tmp_path / "work"))
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"sononet-batch: cannot write the run folder {tmp_path}/work/runs/demo (Permission denied)")
    assert f"writable by uid {os.getuid()}" in line and "--user $(id -u)" in line and "chown" in line
    (tmp_path / "file").write_text("not a folder")
    result = invoke("prepare", "--out", str(tmp_path), "--set", "out=file/shards")
    assert result.exit_code == 2 and result.output.strip() == (
        f"sononet-batch: cannot create the run folder {tmp_path}/file/shards: Not a directory; "
        "choose another out or workdir"
    )


def test_console_script_is_installed_and_fails_cleanly(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("sononet-batch")
    if not exe.exists():
        pytest.skip(f"no console script beside {sys.executable}; install with pip install -e '.[dev]'")
    proc = subprocess.run([str(exe), "nope", "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("sononet-batch: bad spec: no job spec 'nope'")


# --- packaging ----------------------------------------------------------------------------


@pytest.mark.checkout
def test_job_specs_ship_as_package_data() -> None:
    """A non-editable install finds the specs too (jobs/ is the package sononet.jobspecs; the wheel's
    contents are checked in test_packaging)."""
    from importlib import resources

    shipped = resources.files("sononet.jobspecs")
    assert {p.name for p in (REPO / "jobs").glob("*.toml")} <= {p.name for p in shipped.iterdir()}
    assert {"train-all.toml", "prepare.toml", "label-folder.toml", "bench.toml"} <= {p.name for p in shipped.iterdir()}
    assert (shipped / "k8s" / "train-all-cronjob.yaml").is_file()
