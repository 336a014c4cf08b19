"""run.json: what ran, where, with which libraries and threads, how long each stage took, how it ended.

A run directory is copied between machines and compared months later; this file answers
"which code, which torch, which machine" without the shell history. Its ``status`` is
``running`` until the end, then ``complete``, ``failed`` or ``interrupted`` (Ctrl-C, SIGTERM),
so a half-finished run never looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from sononet import stopping
from sononet.errors import Interrupted
from sononet.io import atomic_write_json

LIBRARIES = ("sononet", "torch", "torchaudio", "nnAudio", "transformers", "numba", "numpy", "pyarrow", "scikit-learn")


def _git_commit(where: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _load_avg() -> float | None:
    """The 1-minute load average, where the platform has one."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def environment() -> dict[str, Any]:
    """Library versions, the source's git commit, the machine and the thread settings."""
    import torch

    from sononet.device import usable_cpus

    versions = {}
    for name in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    cuda = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    return {
        "versions": versions,
        "git_commit": _git_commit(Path(__file__).resolve().parent),
        "machine": {
            "host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpus_host": os.cpu_count(), "cpus_usable": usable_cpus(), "cuda": cuda,
        },
        "threads": {
            "torch": torch.get_num_threads(),
            **{k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "SONONET_THREADS")},
        },
    }  # fmt: skip


class RunRecord:
    """Keeps ``run.json`` current: ``with record.stage("prepare"): ...`` adds that stage's seconds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.t0 = time.perf_counter()
        self.doc: dict[str, Any] = {
            "status": "running",
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            **environment(),
            "stages_s": {},
            "load_avg_start": _load_avg(),  # others sharing the cores stretch every stage's seconds
        }
        self._write()

    def _write(self) -> None:
        atomic_write_json(self.path, self.doc)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        self.add_stage(name, time.perf_counter() - t)

    def add_stage(self, name: str, seconds: float) -> None:
        """A stage timed elsewhere (a worker process)."""
        self.doc["stages_s"][name] = round(seconds, 2)
        self._write()

    def finish(self, status: str, **extra: Any) -> None:
        self.doc.update(status=status, seconds=round(time.perf_counter() - self.t0, 1), **extra)
        self.doc["load_avg_end"] = _load_avg()
        self.doc["ended"] = datetime.now(UTC).isoformat(timespec="seconds")
        self._write()

    @contextlib.contextmanager
    def running(self) -> Iterator[RunRecord]:
        """Mark the record ``interrupted`` on Ctrl-C or SIGTERM and ``failed`` on an error, then re-raise.

        Installs :mod:`sononet.stopping`'s SIGTERM handler unless the command already has one
        (sononet-batch installs it for its whole run)."""
        with stopping.handling_unless_installed():
            try:
                yield self
            except (KeyboardInterrupt, Interrupted) as e:
                self.finish("interrupted", error=type(e).__name__)
                raise
            except BaseException as e:
                self.finish("failed", error=f"{type(e).__name__}: {e}".splitlines()[0])
                raise


def training_run_evidence(folder: Path) -> str | None:
    """The file showing that ``folder`` holds a training run or a saved model, else None.

    What an evaluation must not write over: ``train-all``'s run.json and spec.toml, a model's
    config.json, splits and histories, or model folders below it. An earlier evaluation's run.json
    (``"command": "evaluate"``, or a cross-corpus protocol before that field) is no training run.
    """
    folder = Path(folder)
    run = folder / "run.json"
    if run.is_file():
        try:
            doc = json.loads(run.read_text())
        except (OSError, ValueError):
            return str(run)  # unreadable: not ours to overwrite
        protocol = doc.get("protocol") if isinstance(doc, dict) else None
        if doc.get("command") != "evaluate" and not (isinstance(protocol, dict) and protocol.get("cross_corpus")):
            return str(run)
    for name in ("spec.toml", "config.json", "splits.json", "history.json", "done.json"):
        if (folder / name).exists():
            return str(folder / name)
    below = next(folder.glob("*/model/config.json"), None) or next(folder.glob("fold-*/*/model/config.json"), None)
    return str(below) if below is not None else None
