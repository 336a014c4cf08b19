"""The ``sononet`` command line: thin click shims over the library stages, one module per stage.

Examples::

    sononet train-all                                   # demo corpus, CPU, ~5 min
    sononet download --to data/cremad                   # real CREMA-D (605 MB, sha256-verified)
    sononet train-all --data data/cremad --out runs/cremad
    sononet prepare --data data/cremad --out runs/cremad/shards
    torchrun --nproc-per-node 2 -m sononet train --shards runs/demo/shards --model cnn --out runs/ddp
    sononet label recordings/ --model runs/demo/cnn/model --out labels.parquet
    sononet bench --out results/bench

Errors are handled once, here on the root group: a :class:`~sononet.errors.UserError` or a
``ValueError`` (a config value out of range) is one ``error:`` line and exit code 2 (``-v`` adds
the traceback), and so is the file system refusing a path the user named (permission denied, a
read-only mount); a full disk is one line and exit 1; SIGTERM (training stops at a clean point
with its checkpoints, :mod:`sononet.stopping`) is one line and exit 143; anything else is a bug and keeps its
traceback. ``tests/hostile/test_cli_errors.py`` enumerates every exception class the package
defines and holds each to this. Commands therefore raise, never catch. Heavy imports (torch, transformers) happen
inside the commands so ``--help`` is instant. ``sononet-batch`` is :mod:`sononet.cli.batch`.
"""

from __future__ import annotations

import errno
import logging
import sys
import traceback
from typing import NoReturn

import click

from sononet.cli.bench import bench_command
from sononet.cli.evaluate import evaluate_command
from sononet.cli.export import export_command
from sononet.cli.final import final_command
from sononet.cli.label import label_command
from sononet.cli.nested import nested_command
from sononet.cli.options import with_threads
from sononet.cli.prepare import download_command, prepare_command
from sononet.cli.speaker_groups import speaker_groups_command
from sononet.cli.train import train_all_command, train_command
from sononet.errors import UserError

log = logging.getLogger("sononet")


class _Main(click.Group):
    """The root group and the one place where an exception becomes an exit status."""

    def main(self, *args, **kwargs):  # type: ignore[override]
        from sononet.openmp import reexec_if_too_late

        reexec_if_too_late()  # torch loaded before SonoNet (sitecustomize, a wrapper): start again, waiting passively
        return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> object:
        from sononet.errors import DiskFullError, is_disk_full
        from sononet.stopping import STOPPED_EXIT, STOPPED_MESSAGE, TerminatedError

        try:
            return super().invoke(ctx)
        except TerminatedError:  # `docker stop`, a preempted node: training has written its checkpoints
            _fail(ctx, STOPPED_MESSAGE, STOPPED_EXIT)
        except (UserError, ValueError) as e:
            _fail(ctx, str(e), 2)
        except OSError as e:
            if is_disk_full(e):
                _fail(ctx, str(e if isinstance(e, DiskFullError) else DiskFullError(e.filename or "?")), 1)
            if e.errno not in REFUSED:
                raise
            _fail(ctx, f"{e.strerror}: {e.filename or e}; choose a path this user may write, or fix its permissions", 2)


REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)  # the file system refused a path the user named


def _fail(ctx: click.Context, message: str, code: int) -> NoReturn:
    """One ``error:`` line (the first line of ``message``) and exit ``code``; ``-v`` adds the traceback."""
    if ctx.params.get("verbose"):
        click.echo(traceback.format_exc().rstrip(), err=True)
    click.echo(f"error: {message.splitlines()[0] if message.strip() else message}", err=True)
    sys.exit(code)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging, and the traceback of an error.")
@click.version_option(package_name="sononet")
def main(verbose: bool) -> None:
    """SonoNet: speech emotion recognition as a batch job (CREMA-D -> log-mel shards -> CNN, BiGRU, wav2vec2)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if type(h) is logging.StreamHandler and h.stream.closed]:
        root.removeHandler(handler)  # an earlier in-process run's stderr (a test runner, a notebook)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for _command in (
    prepare_command,
    train_all_command,
    train_command,
    final_command,
    evaluate_command,
    nested_command,
    speaker_groups_command,
):
    main.add_command(with_threads(_command))
main.add_command(with_threads(label_command, defer=True))  # its parent of --jobs workers never loads torch
main.add_command(download_command)
main.add_command(bench_command)  # has its own --threads: it measures thread counts
main.add_command(export_command)

if __name__ == "__main__":
    main()
