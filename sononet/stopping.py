"""Stopping when asked: SIGTERM ends a run within a step, with what it needs to resume.

``docker stop`` waits 10 s between SIGTERM and SIGKILL, Kubernetes ``terminationGracePeriodSeconds``
(30 s by default). Raising wherever the signal lands would lose the epoch in progress (training
checkpointed only at epoch ends); finishing the epoch takes minutes. So SIGTERM *asks*:

- inside :func:`cooperative` (training), the handler only records the request; the loop polls
  :func:`requested` after each optimizer step, writes a checkpoint there and raises
  :class:`TerminatedError`;
- anywhere else in the main process the handler raises :class:`TerminatedError` at once: every
  other stage writes its outputs atomically and resumes from the finished ones;
- worker processes (``device.worker_pool``) share the request through a multiprocessing Event,
  because the container's PID 1 alone receives the signal. A worker never raises from the
  handler (an idle worker would die mid-queue); its task polls at its own clean points.

::

    with stopping.handling():            # a command's main process: install the handler
        with stopping.cooperative():     # a loop that stops at clean points
            for batch in batches:
                step(batch)
                if stopping.requested():
                    save_checkpoint()
                    raise stopping.TerminatedError
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from multiprocessing.context import BaseContext
from multiprocessing.synchronize import Event as ProcessEvent

from sononet.errors import Interrupted


class TerminatedError(Interrupted):
    """SIGTERM arrived; a BaseException (via Interrupted) so no ``except Exception`` in a stage swallows
    it, and ``run.json`` records the run as interrupted."""


# What every command (sononet, sononet-batch) says and returns when SIGTERM stopped it.
STOPPED_MESSAGE = "terminated (SIGTERM); rerun the same command to resume"
STOPPED_EXIT = 128 + signal.SIGTERM  # the shell's status for a signal, 128 + signo


_request: threading.Event | ProcessEvent = threading.Event()
_cooperative = 0  # depth of cooperative() blocks in this process
_worker = False  # this process is a worker_pool worker: the handler never raises


def requested() -> bool:
    """Whether a stop was asked for (in this process or, for a pool's workers, in their parent)."""
    return _request.is_set()


def request() -> None:
    """Ask for a stop, as SIGTERM does."""
    _request.set()


def check() -> None:
    """Raise :class:`TerminatedError` when a stop was asked for; call it where stopping is clean."""
    if _request.is_set():
        raise TerminatedError


def _on_sigterm(signum: int, frame: object) -> None:
    first = not _request.is_set()
    _request.set()
    if first and not _cooperative and not _worker:
        raise TerminatedError


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Install the SIGTERM handler for a command's run (main thread only); the request belongs
    to the run: cleared on the way in and out, and the previous handler put back."""
    _request.clear()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _request.clear()


def handling_unless_installed() -> contextlib.AbstractContextManager[None]:
    """:func:`handling` for a command started on its own; a no-op where a caller (sononet-batch, a
    test, a worker) already handles SIGTERM, or off the main thread, where no handler can be set."""
    main = threading.current_thread() is threading.main_thread()
    return (
        handling() if main and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None) else contextlib.nullcontext()
    )


@contextlib.contextmanager
def cooperative() -> Iterator[None]:
    """Inside, SIGTERM only records the request: the block polls :func:`requested` at its clean
    points. A request that came after the block's last poll stops the caller when it leaves."""
    global _cooperative
    _cooperative += 1
    try:
        yield
    finally:
        _cooperative -= 1
    if not _cooperative:
        check()


def shared(context: BaseContext) -> ProcessEvent:
    """The request as an Event that ``context``'s processes can share; pass it to
    :func:`init_worker` through the pool's initializer. A request already made carries over."""
    global _request
    if not isinstance(_request, ProcessEvent):
        event = context.Event()
        if _request.is_set():
            event.set()
        _request = event
    return _request


def init_worker(event: ProcessEvent) -> None:
    """In a pool worker: follow the parent's request, and record a SIGTERM sent to this process
    itself (``kill`` of the process group) instead of dying mid-step."""
    global _request, _worker
    _request, _worker = event, True
    signal.signal(signal.SIGTERM, _on_sigterm)
