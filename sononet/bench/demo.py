"""Benchmark 7: the demo ``sononet train-all`` end to end, and a cross-validated run's wall time.

The demo is what a new user runs first: generate the synthetic corpus, prepare it, train the
three models, score the robustness suite, evaluate and plot, in a child process from a cold
start. Its stage times come from the run's own ``run.json``. The real-speech cross-validation
takes most of an hour on 2 cores, too long to run inside a benchmark: its row reads a finished
run's ``run.json`` (wall, stages and the load average the run saw), given with ``--cv-run``.
"""

from __future__ import annotations

import json
from pathlib import Path

from sononet.bench.timing import run_sononet


def run_demo(device: str, tmp: Path, tiny: bool) -> dict:
    """Time ``sononet train-all`` on the demo corpus; ``tiny``: one CNN epoch, no robustness suite."""
    out = tmp / "demo-run"
    command = ["train-all", "--out", str(out), "--device", device]
    if tiny:
        command += ["--models", "cnn", "--epochs", "1", "--no-perturb"]
    child = run_sononet(command, tmp / "demo.log")
    run = json.loads((out / "run.json").read_text())
    row = {"wall_s": child.wall_s, "run_s": run.get("seconds"), "peak_rss_mb": child.peak_rss_mb,
           "stages": _stage_text(run.get("stages_s", {}))}  # fmt: skip
    return {"command": " ".join(command), **row, "stages_s": run.get("stages_s", {}), "tiny": tiny, "rows": [row]}


def _stage_text(stages: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in stages.items())


def read_cv_run(run: str | Path) -> dict:
    """A finished cross-validated run's wall time, stages and load, from its ``run.json``."""
    path = Path(run) / "run.json"
    doc = json.loads(path.read_text())
    if doc.get("status") != "complete":
        raise ValueError(f"{path}: the run is not complete (status {doc.get('status')!r})")
    protocol = doc.get("protocol") or {}
    result = {
        "run": str(run), "seconds": doc["seconds"], "stages_s": doc.get("stages_s", {}),
        "folds": protocol.get("folds"), "corpus": protocol.get("corpus"),
        "load_avg_start": doc.get("load_avg_start"), "load_avg_end": doc.get("load_avg_end"),
        "git_commit": doc.get("git_commit"),
    }  # fmt: skip
    load = f"{result['load_avg_start']} / {result['load_avg_end']}" if result["load_avg_start"] is not None else "-"
    row = {k: result[k] for k in ("seconds", "folds", "corpus", "run")}
    return {**result, "rows": [{**row, "load": load, "stages": _stage_text(result["stages_s"])}]}
