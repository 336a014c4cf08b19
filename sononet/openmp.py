"""OpenMP settings that only work when they are in the environment before torch loads.

Torch's OpenMP runtime (libgomp in the PyPI wheels) reads ``OMP_WAIT_POLICY`` once, when the
library loads, which is at ``import torch``. Its default lets idle workers spin for a while; on
a shared or CPU-limited machine they spin for cores they do not get, and beside other CPU-bound
work a training step took up to 5.5x its quiet CPU time. Waiting passively costs nothing
measurable when the machine is quiet (``sononet bench``: the contention rows).

``import sononet`` therefore sets the defaults first thing (:func:`set_defaults`, unless the
environment already says otherwise), so every entry point that imports SonoNet before torch
(the console scripts, ``python -m sononet``, torchrun's workers, spawned workers, the API)
gets them. A process that loaded torch first is too late: the command line starts itself
again (:func:`reexec_if_too_late`); a library user is told once (:func:`warn_if_too_late`).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

log = logging.getLogger(__name__)

# What SonoNet wants unless the environment says otherwise. NUMBA_THREADING_LAYER keeps numba's
# kernels off torch's libgomp: its first parallel kernel used to reset torch's thread count.
DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "NUMBA_THREADING_LAYER": "workqueue"}
REEXEC_MARK = "SONONET_REEXEC"  # set in a re-executed process, so it never re-executes again

_torch_was_first: bool | None = None


def set_defaults() -> None:
    """Put :data:`DEFAULTS` into the environment where unset, noting whether torch had already loaded."""
    global _torch_was_first
    if _torch_was_first is None:
        _torch_was_first = "torch" in sys.modules and "OMP_WAIT_POLICY" not in os.environ
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


def too_late() -> bool:
    """Torch loaded before :func:`set_defaults` could set the wait policy, so its workers spin."""
    return bool(_torch_was_first)


def reexec_if_too_late() -> None:
    """Start this command again with the defaults in place, when torch loaded before they were set.

    Only for command lines, whose arguments say how to start them again (``sys.orig_argv``);
    never twice.
    """
    if not too_late() or os.environ.get(REEXEC_MARK):
        return
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in DEFAULTS.items()}, REEXEC_MARK: "1"}
    log.debug("torch loaded before SonoNet set OMP_WAIT_POLICY; starting again with it set")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def warn_if_too_late() -> None:
    """Tell a library user once that torch's OpenMP workers will spin, and how to avoid it."""
    global _torch_was_first
    if too_late():
        warnings.warn(
            "torch was imported before sononet, so its OpenMP workers spin while waiting, which slows "
            "everything on a shared or CPU-limited machine; import sononet first or export "
            "OMP_WAIT_POLICY=PASSIVE before starting Python",
            RuntimeWarning,
            stacklevel=3,
        )
        _torch_was_first = False  # once
