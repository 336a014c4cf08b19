"""Running a declarative job spec: what ``sononet-batch`` (:mod:`sononet.cli.batch`), the container's entrypoint, does.

::

    sononet-batch train-all                                      # jobs/train-all.toml: demo corpus
    sononet-batch train-all --set prepare.data=/data/cremad --set out=runs/cremad
    sononet-batch prepare --set data=/data/cremad --set out=shards/cremad
    sononet-batch label-folder --set input=/data/incoming --set model=runs/cremad/cnn/model
    sononet-batch runs/cremad/spec.toml                          # rerun exactly a past run
    sononet-batch train-all --set train.epochs=2 --print-spec    # show the resolved spec, run nothing

A job is a spec name from ``jobs/`` (``$SONONET_JOBS_DIR`` in the container) or a path;
``--set key.sub=value`` overrides fields (unknown keys and wrong types fail, naming the key).

Working directory: a spec's relative ``out`` fields (at any depth) go under the workdir, and
so do relative ``data``/``input``/``model`` paths that exist there: the workdir is ``--out DIR``,
else ``$SONONET_WORKDIR``, else the current directory. The image sets ``SONONET_WORKDIR=/work``,
a volume, so every output outlives the container; outside a container ``.`` keeps
``sononet-batch train-all`` and ``sononet train-all`` writing to the same ``runs/demo``.
Absolute paths (``/data/cremad``) are kept.

The run directory (the job's ``out``; ``<out>.parts`` for labelling, whose ``out`` is a file)
gets the resolved ``spec.toml`` and ``events.jsonl``: one JSON object per log record, with
``event`` = start / done / failed for the job itself. ``--log-format json`` writes the same
lines to stderr for log collectors. Every stage resumes, so after a crash or a preempted node
the same command continues: train-all from its checkpoints, prepare and label from their
finished shards and parts. Exit status: 0 done, 1 the job failed, 2 a bad spec or option or a
run folder it cannot write, 130 interrupted, 143 terminated (SIGTERM, which also writes the
``failed`` event; training finishes its current step and checkpoints it first); the last stderr
line says why in one line.
"""

from __future__ import annotations

import dataclasses
import errno
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any

from sononet.errors import UserError

log = logging.getLogger("sononet.batch")
OUTPUT_FIELDS = ("out",)  # always placed under the workdir
INPUT_FIELDS = ("data", "input", "model", "shards")  # placed under the workdir when they exist there
RANK_VARS = ("JOB_COMPLETION_INDEX", "RANK")  # a sharded process's index (Indexed Job, torchrun)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, plus ``event``/``data`` when given."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("event", "data"):
            if hasattr(record, key):
                doc[key] = getattr(record, key)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def workdir(option: str | None) -> Path:
    return Path(option or os.environ.get("SONONET_WORKDIR") or ".")


def rebase_paths(cfg: Any, root: Path) -> Any:
    """Copy of ``cfg`` with relative path fields (at any depth) placed under ``root``.

    Outputs always move; inputs only when they exist under ``root`` (a model trained into the
    workdir), so a relative input that exists only beside the caller still resolves from there.
    """
    changes = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            changes[f.name] = rebase_paths(value, root)
        elif isinstance(value, str):
            changes[f.name] = _rebase(f.name, value, root)
        elif isinstance(value, tuple) and f.name in INPUT_FIELDS:  # several inputs: an ensemble's model folders
            changes[f.name] = tuple(_rebase(f.name, v, root) for v in value)
    return dataclasses.replace(cfg, **changes)


def _rebase(field: str, value: str, root: Path) -> str:
    """``value`` under ``root`` where the rule above says so, else unchanged."""
    relative = bool(value) and not Path(value).is_absolute()
    if relative and (field in OUTPUT_FIELDS or (field in INPUT_FIELDS and (root / value).exists())):
        return str(root / value)
    return value


def resolve_job(spec: str, overrides: list[str], root: Path) -> tuple[str, Any]:
    """(job, config) from the spec and overrides, with paths under ``root``."""
    from sononet.jobs import load_spec

    job, cfg = load_spec(spec, overrides)
    return job, rebase_paths(cfg, root)


def run_dir(job: str, cfg: Any) -> Path:
    if job == "label-folder":
        from sononet.label import parts_dir

        return parts_dir(cfg.out)
    return Path(cfg.out)


def open_run_dir(rdir: Path, root: Path, events_name: str) -> logging.FileHandler:
    """Create the run directory and open its events file: the job's first write.

    Raises :class:`UserError` naming the folder and the fix. In a container this is where a
    workdir the user cannot write shows: Docker creates a missing bind-mount folder owned by
    root, and a host folder belongs to the host user's uid, not the image's 1000.
    """
    try:
        rdir.mkdir(parents=True, exist_ok=True)
        return logging.FileHandler(rdir / events_name)
    except OSError as e:
        why = e.strerror or type(e).__name__
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise UserError(f"cannot create the run folder {rdir}: {why}; choose another out or workdir") from e
        uid = os.getuid() if hasattr(os, "getuid") else "this user"
        raise UserError(
            f"cannot write the run folder {rdir} ({why}): the workdir {root} must be writable by uid {uid}. "
            "Run the container as the folder's owner (docker run --user $(id -u):$(id -g) -v $PWD/work:/work ...) "
            "or give the folder to that uid (mkdir -p work && sudo chown -R "
            f"{uid} work)"
        ) from e


def rank() -> int:
    return next((int(os.environ[k]) for k in RANK_VARS if os.environ.get(k, "").isdigit()), 0)


def result_summary(result: Any) -> Any:
    """A JSON-safe digest of a runner's return value for the done event."""
    if isinstance(result, dict):
        return {k: v for k, v in result.items() if isinstance(v, (str, int, float, bool, type(None)))}
    return str(result)


def execute(job: str, cfg: Any, progress: bool) -> Any:
    """Run ``cfg`` with its job's runner (the same function the ``sononet`` command calls)."""
    from sononet.jobs import JOBS, resolve

    runner = resolve(JOBS[job][1])
    if "progress" in inspect.signature(runner).parameters:
        return runner(cfg, progress=progress)
    return runner(cfg)
