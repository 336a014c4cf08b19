"""Small files: every module of the package and the kernels stays under 500 lines (STYLE.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 500


@pytest.mark.checkout  # reads the repository, not the installed package
def test_no_module_over_500_lines() -> None:
    paths = sorted([*(REPO / "sononet").rglob("*.py"), *(REPO / "kernels").rglob("*.py")])
    assert paths, f"no modules found under {REPO}"
    long = {str(p.relative_to(REPO)): n for p in paths if (n := len(p.read_text().splitlines())) >= MAX_LINES}
    assert not long, f"split these modules (each must stay under {MAX_LINES} lines): {long}"
