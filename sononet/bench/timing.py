"""How every benchmark measures: median of repeated timings, and a child process's own peak RSS.

A median over a few repetitions shrugs off the odd slow run that a shared machine causes;
min and max are kept so a reader can see the spread. Peak RSS comes from ``wait4`` on the
one child, not ``getrusage(RUSAGE_CHILDREN)``, which is the maximum over *every* child the
benchmark ever waited for and so could not show a smaller second run.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path


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


@dataclass
class ChildRun:
    command: list[str]
    returncode: int
    wall_s: float
    peak_rss_mb: float  # the child's own maximum resident set size
    log: str  # path of its combined stdout/stderr

    def tail(self, lines: int = 20) -> str:
        return "\n".join(Path(self.log).read_text(errors="replace").splitlines()[-lines:])


def run_child(command: list[str], log_path: str | Path, timeout_s: float = 3600.0) -> ChildRun:
    """Run ``command``, output to ``log_path``; returns wall time and its peak RSS (Linux ``wait4``)."""
    log_path = Path(log_path)
    with log_path.open("wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = t0 + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it was reaped
    return ChildRun(command, proc.returncode, wall, usage.ru_maxrss / 1024.0, str(log_path))
