"""CPU threads follow what the process may use: affinity and the cgroup quota, or --threads / $SONONET_THREADS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from sononet.device import configure_threads, decode_workers, usable_cpus


def test_cgroup_v2_quota_caps_the_affinity(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs -> 1 thread
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("5000 100000\n")  # a twentieth of a CPU still gets one thread
    assert usable_cpus(tmp_path) == 1


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == len(os.sched_getaffinity(0))
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == 1


def test_threads_flag_env_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("SONONET_THREADS", "1")
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        assert configure_threads() == 1 and torch.get_num_threads() == 1
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"  # set for OpenMP runtimes started after this
        monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
        configure_threads(1)
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"  # the user's own setting wins
        monkeypatch.setenv("SONONET_THREADS", "zero")
        with pytest.raises(ValueError, match=r"\$SONONET_THREADS must be a positive integer"):
            configure_threads()
        with pytest.raises(ValueError, match="threads must be at least 1. Found: 0"):
            configure_threads(0)
    finally:
        torch.set_num_threads(before)


def test_decode_workers_follow_the_thread_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """--threads 1 means one decode thread too, unless workers are asked for."""
    monkeypatch.delenv("SONONET_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        configure_threads(1)
        assert decode_workers() == 1 and decode_workers(3) == 3
    finally:
        configure_threads(before)


def test_freed_memory_stays_in_the_heap_for_the_next_batch() -> None:
    """After ``reuse_freed_memory`` a batch-sized buffer comes from glibc's heap, not its own mmap,
    and stays there once freed, so the next batch reuses its pages instead of faulting new ones
    in. Read from ``mallinfo2``; a child process, as the setting is process-wide."""
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc" or tuple(map(int, platform.libc_ver()[1].split("."))) < (2, 33):
        pytest.skip("mallopt is glibc's, mallinfo2 glibc >= 2.33's")
    child = """
import ctypes
import numpy as np
from sononet.device import reuse_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(k, ctypes.c_size_t) for k in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
def batch():  # (MiB mmapped while the buffer lives, MiB free in the heap after it is gone)
    buf = np.ones(48 * 2**20 // 8)  # 48 MiB: above glibc's largest mmap threshold (32 MiB)
    mapped = libc.mallinfo2().hblkhd >> 20
    del buf
    return mapped, libc.mallinfo2().fordblks >> 20
print(*batch(), reuse_freed_memory(), *batch())
"""
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True).stdout
    mapped, kept, applied, mapped_after, kept_after = out.split()
    assert (int(mapped), applied) == (48, "True") and int(kept) < 48  # its own mmap, unmapped on free
    assert int(mapped_after) == 0 and int(kept_after) >= 48  # from the heap, and kept there
