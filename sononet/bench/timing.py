"""How every benchmark measures: median of repeated timings, a child process's own peak RSS, a CPU hog.

A median over a few repetitions shrugs off the odd slow run that a shared machine causes;
min and max are kept so a reader can see the spread. Peak RSS comes from ``wait4`` on the
one command, not ``getrusage(RUSAGE_CHILDREN)``, which is the maximum over *every* child the
benchmark ever waited for and so could not show a smaller second run. ``cpu_hog`` makes the
contended condition a benchmark can be measured under: busy children it always ends itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

# Read by torch at start; set in this process's environment so children inherit them. numba's
# NUMBA_NUM_THREADS is NOT set here: numba re-reads its config when it compiles and refuses a
# changed thread count once its pool runs, so children get it through `run_child`'s env instead.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class Timing:
    median_s: float
    min_s: float
    max_s: float
    repeats: int

    def to_dict(self) -> dict:
        return asdict(self)


def time_call(
    fn: Callable[[], object], repeats: int, warmup: int = 1, sync: Callable[[], None] | None = None
) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` timed; ``sync`` waits for a device."""
    if repeats < 1:
        raise ValueError(f"repeats must be positive. Found: {repeats}")
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return Timing(statistics.median(times), min(times), max(times), repeats)


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, sync: Callable[[], None] | None = None
) -> dict[str, Timing]:
    """Like :func:`time_call` for several functions, taking turns: repetition r times each of them
    before r + 1 starts. Their ratios are then measured under the same load; timed one after the
    other, a neighbour that comes or goes between them lands on one side of the ratio only."""
    if repeats < 1:
        raise ValueError(f"repeats must be positive. Found: {repeats}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if sync:
                sync()
            t0 = time.perf_counter()
            fn()
            if sync:
                sync()
            times[name].append(time.perf_counter() - t0)
    return {name: Timing(statistics.median(t), min(t), max(t), repeats) for name, t in times.items()}


@contextlib.contextmanager
def pinned_threads(threads: int | None) -> Iterator[None]:
    """Pin torch, numba and (through the environment) every child to ``threads``, then restore."""
    if threads is None:
        yield
        return
    import numba
    import torch

    saved_env = {v: os.environ.get(v) for v in THREAD_VARS}
    saved = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    os.environ.update({v: str(threads) for v in THREAD_VARS})
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        numba.set_num_threads(saved[1])
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


# A fork (or vfork) child's peak RSS starts at its parent's: the kernel keeps the pre-exec
# high-water mark. So a tiny launcher process starts the real command and reports its wait4
# rusage: the command's floor is then the launcher's ~10 MB, not this process's gigabyte.
_LAUNCHER = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
code = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as f:
    f.write(f"{usage.ru_maxrss} {code}")
sys.exit(code if code >= 0 else 1)
"""


@dataclass
class ChildRun:
    command: list[str]
    returncode: int
    wall_s: float
    peak_rss_mb: float  # the command's own maximum resident set size
    log: str  # path of its combined stdout/stderr

    def tail(self, lines: int = 20) -> str:
        return "\n".join(Path(self.log).read_text(errors="replace").splitlines()[-lines:])


def run_child(command: list[str], log_path: str | Path, timeout_s: float = 3600.0) -> ChildRun:
    """Run ``command``, output to ``log_path``; returns wall time and its own peak RSS (Linux)."""
    log_path = Path(log_path)
    usage_path = log_path.with_suffix(".rusage")
    usage_path.unlink(missing_ok=True)
    launcher = [sys.executable, "-c", _LAUNCHER, str(usage_path), *command]
    import numba

    env = {**os.environ, "NUMBA_NUM_THREADS": str(numba.get_num_threads())}  # pinned_threads' count, if any
    with log_path.open("wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(launcher, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the command with it
            proc.wait()
            raise RuntimeError(f"{command[:4]} ran past {timeout_s:.0f} s and was killed; see {log_path}") from None
        wall = time.perf_counter() - t0
    if not usage_path.exists():
        raise RuntimeError(f"the launcher for {command[:4]} failed before running it; see {log_path}")
    maxrss_kb, code = (int(v) for v in usage_path.read_text().split())
    return ChildRun(command, code, wall, maxrss_kb / 1024.0, str(log_path))


def run_sononet(args: list[str], log_path: str | Path) -> ChildRun:
    """``python -m sononet ARGS`` as a measured child; a failure raises with the log's tail."""
    child = run_child([sys.executable, "-m", "sononet", *args], log_path)
    if child.returncode != 0:
        raise RuntimeError(f"sononet {args[0]} exited with {child.returncode}:\n{child.tail()}")
    return child


# One busy process of the hog. It says when it spins (so timing starts under load, and a failed
# start is seen), and stops by itself after its time limit or once its parent is gone: a killed
# benchmark can never leave it running.
HOG_MARKER = "sononet-bench-cpu-hog"
_HOG = f"""
import os, sys, time  # {HOG_MARKER}
parent, end = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
print("spinning", flush=True)
while time.monotonic() < end and os.getppid() == parent:
    for _ in range(100_000):
        pass
"""


@contextlib.contextmanager
def cpu_hog(width: int, limit_s: float) -> Iterator[list[subprocess.Popen]]:
    """``width`` busy child processes (one core's worth of demand each) for the duration of the block.

    They are terminated (then killed if need be) and reaped on the way out, whatever happens in
    the block or while starting them; ``limit_s`` bounds them even if this process dies first.
    Yields the processes so a caller can check they were still spinning when it finished.
    """
    if width < 1 or limit_s <= 0:
        raise ValueError(f"width and limit_s must be positive. Found: {width}, {limit_s}")
    procs: list[subprocess.Popen] = []
    try:
        for i in range(width):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-S", "-c", _HOG, str(os.getpid()), str(limit_s), str(i)],  # i: which one
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                )
            )
        for p in procs:
            if p.stdout is None or p.stdout.readline() != b"spinning\n":
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)
                raise RuntimeError(f"CPU hog process {p.pid} did not start (exit code {p.returncode})")
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
