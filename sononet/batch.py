"""``sononet-batch``: run a declarative job spec; the container's entrypoint.

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
finished shards and parts. Exit status: 0 done, 1 the job failed, 2 a bad spec or option,
130 interrupted, 143 terminated (SIGTERM, which also writes the ``failed`` event); the last
stderr line says why in one line.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import click

from sononet.errors import Interrupted

log = logging.getLogger("sononet.batch")
OUTPUT_FIELDS = ("out",)  # always placed under the workdir
INPUT_FIELDS = ("data", "input", "model")  # placed under the workdir when they exist there
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
        elif (
            isinstance(value, str)
            and value
            and not Path(value).is_absolute()
            and (f.name in OUTPUT_FIELDS or (f.name in INPUT_FIELDS and (root / value).exists()))
        ):
            changes[f.name] = str(root / value)
    return dataclasses.replace(cfg, **changes)


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


def _rank() -> int:
    return next((int(os.environ[k]) for k in RANK_VARS if os.environ.get(k, "").isdigit()), 0)


def _setup_logging(log_format: str, verbose: bool) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(fmt))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def _summary(result: Any) -> Any:
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


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("job")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec field.")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    default=None,
    help="Workdir [default: $SONONET_WORKDIR or .].",
)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", help="stderr log lines.")
@click.option("--print-spec", is_flag=True, help="Print the resolved spec and exit without running.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(
    job: str, overrides: tuple[str, ...], out: str | None, log_format: str, print_spec: bool, verbose: bool
) -> None:
    """Run job spec JOB (a name from jobs/ or a .toml path); outputs go under the workdir.

    \b
    sononet-batch train-all
    sononet-batch train-all --set prepare.data=/data/cremad --set out=runs/cremad
    sononet-batch label-folder --set input=/data/incoming --set model=runs/cremad/cnn/model
    """
    from sononet.jobs import SpecError, spec_text, write_spec

    _setup_logging(log_format, verbose)
    root = workdir(out)
    try:
        name, cfg = resolve_job(job, list(overrides), root)
    except (SpecError, ValueError, FileNotFoundError) as e:
        click.echo(f"sononet-batch: bad spec: {e}", err=True)
        sys.exit(2)
    if print_spec:
        if name == "train-all":  # what would run: the profile and the device filled in
            from sononet.experiment import resolve_experiment

            cfg = resolve_experiment(cfg)
        click.echo(spec_text(cfg, name), nl=False)
        return
    rdir = run_dir(name, cfg)
    rdir.mkdir(parents=True, exist_ok=True)
    rank = _rank()
    events = logging.FileHandler(rdir / ("events.jsonl" if rank == 0 else f"events-{rank:05d}.jsonl"))
    events.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(events)
    t0 = time.perf_counter()
    previous_term = signal.signal(signal.SIGTERM, _terminated)
    try:
        if rank == 0:  # shards share the run dir; one writer keeps the spec file whole
            write_spec(rdir / "spec.toml", cfg, name)
        start = {
            "job": name,
            "spec": job,
            "overrides": list(overrides),
            "workdir": str(root),
            "run_dir": str(rdir),
        }
        log.info("start %s in %s", name, rdir, extra={"event": "start", "data": start})
        progress = log_format == "text" and sys.stderr.isatty()
        result = execute(name, cfg, progress)
        seconds = round(time.perf_counter() - t0, 1)
        done = {"seconds": seconds, "result": _summary(result)}
        log.info("done %s in %.1f s", name, seconds, extra={"event": "done", "data": done})
    except KeyboardInterrupt:
        log.error("interrupted; rerun the same command to resume", extra={"event": "failed"})
        click.echo("sononet-batch: interrupted; rerun the same command to resume", err=True)
        sys.exit(130)
    except TerminatedError:  # a preempted node or `kubectl delete`: say so before going
        data = {"error": "terminated (SIGTERM)", "type": "SIGTERM", "seconds": round(time.perf_counter() - t0, 1)}
        log.error("terminated by SIGTERM; rerun the same command to resume", extra={"event": "failed", "data": data})
        click.echo("sononet-batch: terminated (SIGTERM); rerun the same command to resume", err=True)
        sys.exit(128 + signal.SIGTERM)
    except Exception as exc:  # the one place a job's failure becomes an exit status
        from sononet.errors import DiskFullError, is_disk_full

        e = DiskFullError(getattr(exc, "filename", None) or rdir) if is_disk_full(exc) else exc  # says: rerun
        data = {"error": str(e), "type": type(e).__name__, "seconds": round(time.perf_counter() - t0, 1)}
        data["traceback"] = traceback.format_exc()  # in the JSON lines; stderr text stays one line
        log.error("%s failed: %s", name, e, extra={"event": "failed", "data": data})
        click.echo(f"sononet-batch: {name} failed: {type(e).__name__}: {e}".splitlines()[0], err=True)
        sys.exit(1)
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        logging.getLogger().removeHandler(events)
        events.close()
    click.echo(f"{name} done in {seconds:.1f} s: {rdir}")


class TerminatedError(Interrupted):
    """SIGTERM arrived; a BaseException (via Interrupted) so no ``except Exception`` in a stage swallows
    it, and ``run.json`` records the run as interrupted."""


def _terminated(signum: int, frame: object) -> None:
    raise TerminatedError


def main() -> None:
    """Console script ``sononet-batch``."""
    cli()


if __name__ == "__main__":
    main()
