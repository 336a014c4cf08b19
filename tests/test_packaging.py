"""The wheel a user installs: every package, the job specs and the corpus tables, the licence and the
declared dependency ranges (which the exact versions in constraints.txt must satisfy)."""

from __future__ import annotations

import email
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.checkout  # builds the wheel from the source tree
REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# What the build reads (test_container.py checks that the image's wheel stage has it all).
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "sononet", "kernels", "jobs")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel `pip wheel .` builds, from a copy of the build inputs (the checkout stays clean)."""
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(REPO / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)]
    build = Requirement(PYPROJECT["build-system"]["requires"][0])
    if build.specifier.contains(version("setuptools")):  # the dev extra's; else pip fetches it
        cmd.insert(5, "--no-build-isolation")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = dist.glob("sononet-*.whl")
    return zipfile.ZipFile(path)


def shipped_as(path: Path) -> str:
    """Where a source file lies inside the wheel (kernels/ and jobs/ ship inside sononet/)."""
    package_dir = PYPROJECT["tool"]["setuptools"]["package-dir"]
    mapping = {folder: name.replace(".", "/") for name, folder in package_dir.items()}
    rel = path.relative_to(REPO)
    return str(Path(mapping[rel.parts[0]], *rel.parts[1:]))


def test_every_package_and_module_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    packages = [p.parent for root in ("sononet", "kernels", "jobs") for p in (REPO / root).rglob("__init__.py")]
    assert {"sononet/cli", "sononet/kernels", "sononet/jobspecs"} <= {shipped_as(p) for p in packages}
    for package in packages:
        for module in package.glob("*.py"):
            assert shipped_as(module) in names, f"{module.relative_to(REPO)} is not in the wheel"


def test_job_specs_and_corpus_tables_are_package_data(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    data = [*(REPO / "jobs").glob("*.toml"), *(REPO / "jobs" / "k8s").glob("*.yaml")]
    data += [p for p in (REPO / "sononet" / "corpus" / "data").iterdir() if p.is_file()]
    assert len(data) >= 10
    for path in data:
        assert shipped_as(path) in names, f"{path.relative_to(REPO)} is not in the wheel"


def test_wheel_metadata_licence_and_commands(wheel: zipfile.ZipFile) -> None:
    info = next(n.split("/")[0] for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    meta = email.message_from_bytes(wheel.read(f"{info}/METADATA"))
    assert meta["License-Expression"] == "Apache-2.0" and meta["License-File"] == "LICENSE"
    assert wheel.read(f"{info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
    assert b"Apache License" in wheel.read(f"{info}/licenses/LICENSE")[:200]
    entry_points, names = wheel.read(f"{info}/entry_points.txt").decode(), set(wheel.namelist())
    for script, target in PYPROJECT["project"]["scripts"].items():
        module = target.split(":")[0].replace(".", "/")
        assert f"{script} = {target}" in entry_points and ({f"{module}.py", f"{module}/__init__.py"} & names)


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def declared() -> list[Requirement]:
    project = PYPROJECT["project"]
    reqs = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return [Requirement(r) for r in reqs if not r.startswith("sononet")]


def test_dependencies_are_ranges_and_constraints_satisfy_them() -> None:
    pins = constraints()
    for req in declared():
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        exact = [s for s in req.specifier if s.operator in ("==", "===")]
        assert not exact or name == "ruff", f"{req} pins one version; declare a range, pin in constraints.txt"
        assert name in pins, f"constraints.txt has no exact version for {req.name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"constraints.txt's {pins[name]} is outside {req}"
    build = Requirement(next(r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")))
    assert build.specifier.contains(pins["setuptools"]), "pip applies constraints.txt to the isolated build too"
