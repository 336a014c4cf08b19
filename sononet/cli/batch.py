"""``sononet-batch JOB``: the container's entrypoint; the job logic is :mod:`sononet.batch`.

Exit status: 0 done, 1 the job failed, 2 a bad spec or option (or a workdir it cannot write), 130
interrupted, 143 terminated (SIGTERM: training finishes its step and checkpoints first, see
:mod:`sononet.stopping`); the last stderr line says why in one line, the JSON events hold the traceback.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback

import click

from sononet import stopping
from sononet.batch import (
    JsonFormatter,
    execute,
    open_run_dir,
    rank,
    resolve_job,
    result_summary,
    run_dir,
    workdir,
)  # fmt: skip
from sononet.errors import UserError
from sononet.stopping import TerminatedError

log = logging.getLogger("sononet.batch")


def _setup_logging(log_format: str, verbose: bool) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(fmt))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


@click.command("sononet-batch", context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
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
        from sononet.jobs import RESOLVERS, resolve

        if name in RESOLVERS:  # what would run: the profile and the device filled in
            cfg = resolve(RESOLVERS[name])(cfg)
        click.echo(spec_text(cfg, name), nl=False)
        return
    rdir = run_dir(name, cfg)
    rank_ = rank()
    try:  # the first write: a workdir the container's user cannot write fails here, in one line
        events = open_run_dir(rdir, root, "events.jsonl" if rank_ == 0 else f"events-{rank_:05d}.jsonl")
    except UserError as e:
        click.echo(f"sononet-batch: {e}", err=True)
        sys.exit(2)
    events.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(events)
    t0 = time.perf_counter()
    with stopping.handling():  # kept through the except clauses: a second SIGTERM is only recorded
        try:
            if rank_ == 0:  # shards share the run dir; one writer keeps the spec file whole
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
            done = {"seconds": seconds, "result": result_summary(result)}
            log.info("done %s in %.1f s", name, seconds, extra={"event": "done", "data": done})
        except KeyboardInterrupt:
            log.error("interrupted; rerun the same command to resume", extra={"event": "failed"})
            click.echo("sononet-batch: interrupted; rerun the same command to resume", err=True)
            sys.exit(130)
        except TerminatedError:  # a preempted node or `kubectl delete`: say so before going
            data = {"error": "terminated (SIGTERM)", "type": "SIGTERM", "seconds": round(time.perf_counter() - t0, 1)}
            message = stopping.STOPPED_MESSAGE
            log.error(message, extra={"event": "failed", "data": data})
            click.echo(f"sononet-batch: {message}", err=True)
            sys.exit(stopping.STOPPED_EXIT)
        except Exception as exc:  # the one place a job's failure becomes an exit status
            from sononet.errors import DiskFullError, is_disk_full

            e = DiskFullError(getattr(exc, "filename", None) or rdir) if is_disk_full(exc) else exc  # says: rerun
            data = {"error": str(e), "type": type(e).__name__, "seconds": round(time.perf_counter() - t0, 1)}
            data["traceback"] = traceback.format_exc()  # in the JSON lines; stderr text stays one line
            log.error("%s failed: %s", name, e, extra={"event": "failed", "data": data})
            click.echo(f"sononet-batch: {name} failed: {type(e).__name__}: {e}".splitlines()[0], err=True)
            sys.exit(1)
        finally:
            logging.getLogger().removeHandler(events)
            events.close()
    click.echo(f"{name} done in {seconds:.1f} s: {rdir}")


def main() -> None:
    """Console script ``sononet-batch``."""
    from sononet.openmp import reexec_if_too_late

    reexec_if_too_late()  # torch loaded before SonoNet: start again with passive waits
    cli()


if __name__ == "__main__":
    main()
