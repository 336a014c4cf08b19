"""Where work runs: the device names every config accepts, and how many CPU threads to use."""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import TYPE_CHECKING

from sononet import stopping
from sononet.errors import UserError
from sononet.openmp import set_defaults

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when torch sees one, else cpu; a CUDA device asked for but absent is an error."""
    import torch

    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but torch sees no CUDA device; use --device cpu")
    return torch.device(device)


# Device nodes a GPU runtime needs (NVIDIA, WSL2's GPU bridge, AMD ROCm): with none of them, CUDA cannot work.
GPU_NODES = ("/dev/nvidia[0-9]*", "/dev/dxg", "/dev/kfd")


def device_type(device: str) -> str:
    """``resolve_device(device).type``, without importing torch (about a second) where the answer is
    sure: ``cpu``, or ``auto`` on a machine without GPU device nodes."""
    import glob

    check_device(device)
    if device == "cpu" or (device == "auto" and not any(glob.glob(pattern) for pattern in GPU_NODES)):
        return "cpu"
    return resolve_device(device).type


def seed_everything(seed: int) -> None:
    """One seed for torch (CPU and CUDA) and NumPy's global generator."""
    import numpy as np
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def check_device(device: object, name: str = "device") -> None:
    """Refuse a device torch would only reject at run time (``tpu``), or one of the wrong type."""
    if not isinstance(device, str) or not DEVICE_RE.fullmatch(device):
        raise ValueError(f"{name} must be {DEVICES}. Found: {device!r}")


# --- CPU threads -------------------------------------------------------------------------
# Torch sizes its pool from the host's cores, not from what a container or a shared node
# lets this process use; OpenMP workers then spin-wait for cores they do not get. Measured
# on 2 cores beside CPU-bound neighbours: passive waiting alone took train-all
# from 46.8 to 8.8 minutes with bit-identical predictions.

THREADS_ENV = "SONONET_THREADS"


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by a cgroup quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup CPU quota (rounded down, >= 1)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = _cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        n = min(n, max(1, math.floor(limit)))
    return max(1, n)


def _env_threads() -> int | None:
    env = os.environ.get(THREADS_ENV, "").strip()
    if not env:
        return None
    if not env.isdigit() or int(env) < 1:
        raise ValueError(f"${THREADS_ENV} must be a positive integer. Found: {env!r}")
    return int(env)


def thread_budget() -> int:
    """The CPU threads this run may use: what :func:`configure_threads` chose, else
    ``$SONONET_THREADS``, else :func:`usable_cpus`."""
    return _configured or _env_threads() or usable_cpus()


def configure_threads(threads: int | None = None, defer: bool = False) -> int:
    """Size torch's and numba's thread pools once, before heavy work; returns the count chosen.

    ``threads`` (``--threads``) wins, then ``$SONONET_THREADS``, then :func:`usable_cpus`.
    OpenMP waits passively and numba uses its own ``workqueue`` layer rather than torch's
    libgomp, unless the environment already says otherwise (:mod:`sononet.openmp`, which
    ``import sononet`` applies before torch loads). ``defer``: only choose the count
    (``thread_budget`` returns it) and set the environment; a process that may never load torch
    (``label``'s parent of worker processes) applies it later with
    ``configure_threads(thread_budget())``.
    """
    global _configured
    if threads is None:
        threads = _env_threads()
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1. Found: {threads}")
    n = threads or usable_cpus()
    set_defaults()  # done at `import sononet` already; here for a caller that cleared them since
    if not defer:
        import numba
        import torch

        torch.set_num_threads(n)
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if _configured != n:  # once per count
        why = "asked for" if threads else f"usable of {os.cpu_count()} on the host"
        # INFO only for a count the user did not choose that differs from the host's cores (a
        # container quota, an affinity mask): the surprise worth a line. Asked-for counts are DEBUG.
        level = logging.INFO if threads is None and n != os.cpu_count() else logging.DEBUG
        log.log(level, "using %d CPU thread(s) (%s); OMP_WAIT_POLICY=%s", n, why, os.environ["OMP_WAIT_POLICY"])
        _configured = n
    return n


_configured: int | None = None


# --- Memory reuse ------------------------------------------------------------------------
# glibc serves an allocation of more than its mmap threshold (at most 32 MiB) with a fresh
# mmap and hands it back to the kernel on free; smaller freed blocks at the heap's top are
# trimmed away too. An inference batch allocates the same tens of MiB of activations (a
# 64-window STFT alone is 47 MiB) and frees them again, so every batch faulted its pages in
# anew: `label` of 10,000 clips took 3.0 M minor page faults and 9.1 s of system time.

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h> mallopt parameters


def reuse_freed_memory() -> bool:
    """Keep this process's freed memory in glibc's heap for the next batch (no mmap, no trim);
    returns whether it applied (glibc only).

    Measured on `label` of 10,000 clips, 2 cores: 0.3 M page faults instead of 3.0 M, 2.4-2.6 s
    of system time instead of 9.1, 20.5-22.2 s wall instead of 24.9. The cost: the process keeps
    its peak, which a batch loop reaches with its first batch anyway (peak RSS 1.05 -> 1.10 GB).
    For batch commands only; a library leaves its host's allocator alone.
    """
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def worker_pool(jobs: int, stderr_level: int = logging.NOTSET) -> tuple[ProcessPoolExecutor, int]:
    """``jobs`` spawned worker processes, each sized to ``thread_budget() // jobs`` threads
    (returned too) before it unpickles its first task, so before torch loads there.

    Spawned, not forked: a fork of a process whose OpenMP pool is running can hang. A script
    that starts one must guard its top level with ``if __name__ == "__main__":``. The workers
    share this process's stop request (:mod:`sononet.stopping`): their tasks poll it. They log
    to stderr as this process does (level and format), so a container's log shows their lines;
    ``stderr_level`` raises that handler's threshold where the caller echoes their INFO lines itself.
    """
    threads = max(1, thread_budget() // jobs)
    context = multiprocessing.get_context("spawn")
    stop = stopping.shared(context)  # the container's PID 1 alone gets SIGTERM; its workers must stop too
    root = logging.getLogger()
    stderr = [h for h in root.handlers if type(h) is logging.StreamHandler and h.stream is sys.stderr]
    log_format = stderr[0].formatter if stderr else None
    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=context,
        initializer=_init_worker,
        initargs=(threads, stop, root.level, log_format, stderr_level),
    )
    return pool, threads


def _init_worker(
    threads: int, stop: Event, log_level: int, log_format: logging.Formatter | None, stderr_level: int
) -> None:
    if log_format is not None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(log_format)
        handler.setLevel(stderr_level)
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(log_level)
    configure_threads(threads)
    stopping.init_worker(stop)


def decode_workers(requested: int | None = None) -> int:
    """Decode threads: ``requested``, else the thread count :func:`configure_threads` chose, else
    the usable CPUs. Decoding (libsndfile, soxr, hashing) releases the GIL, so one per CPU."""
    if requested is not None:
        return requested
    return _configured or usable_cpus()
