"""Passive OpenMP waiting is in force in every entry point, read from what the runtime reports.

libgomp prints its settings when it loads (``OMP_DISPLAY_ENV=verbose``), which is at ``import
torch``; each case runs in a fresh interpreter without ``OMP_WAIT_POLICY`` in its environment.
Its ``OMP_WAIT_POLICY`` line says PASSIVE when the variable is unset too, so the test reads the
spin count: 0 when waiting is passive, 300,000 iterations by default, more when ACTIVE.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

SPINS = re.compile(r"GOMP_SPINCOUNT = '(\d+)'")


def _policies(code: str, **env: str) -> list[str]:
    """How every OpenMP runtime started by ``code`` waits, in order: PASSIVE (spin count 0) or spins."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "SONONET_REEXEC")}
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**clean, "OMP_DISPLAY_ENV": "verbose", **env},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return ["PASSIVE" if n == "0" else "spins" for n in SPINS.findall(proc.stdout + proc.stderr)]


def test_plain_torch_spins_which_is_what_sononet_avoids() -> None:
    assert _policies("import torch") == ["spins"]  # the runtime's default


def test_importing_sononet_first_makes_torch_wait_passively() -> None:
    assert _policies("import sononet, torch") == ["PASSIVE"]


def test_the_api_warns_when_torch_came_first() -> None:
    code = (
        "import warnings, torch, sononet\n"
        "from sononet.openmp import too_late, warn_if_too_late\n"
        "assert too_late()\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always'); warn_if_too_late(); warn_if_too_late()\n"
        "assert len(w) == 1 and 'OMP_WAIT_POLICY' in str(w[0].message), w\n"
    )
    _policies(code)


@pytest.mark.parametrize("entry", ["sononet.cli:main", "sononet.cli.batch:main"])
def test_a_command_started_after_torch_starts_again_with_passive_waits(entry: str) -> None:
    module, func = entry.split(":")
    args = "['--help']"
    code = f"import sys, torch; sys.argv = ['x', *{args}]; from {module} import {func}; {func}()"
    # torch's runtime spins as it loads; the command then starts itself again, and the new
    # process's runtime reports PASSIVE
    assert _policies(code) == ["spins", "PASSIVE"]


def test_spawned_workers_inherit_passive_waits() -> None:
    code = (
        "import sononet\n"
        "from sononet.device import worker_pool\n"
        "if __name__ == '__main__':\n"
        "    pool, _ = worker_pool(1)\n"
        "    import os\n"
        "    print(pool.submit(os.getenv, 'OMP_WAIT_POLICY').result()); pool.shutdown()\n"
    )
    assert _policies(code) == ["PASSIVE"]


def test_an_explicit_setting_wins() -> None:
    assert _policies("import sononet, torch", OMP_WAIT_POLICY="ACTIVE") == ["spins"]
