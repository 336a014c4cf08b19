"""Package discovery: every folder under sononet/, plus the folders pyproject.toml maps into it.

pyproject.toml alone cannot discover a package whose folder is not named after it (kernels/ ships
as sononet.kernels, jobs/ as sononet.jobspecs), so this file finds them all. Namespace discovery
also lists the data folders (sononet/corpus/data, jobs/k8s), as setuptools asks of package data.
"""

import tomllib
from pathlib import Path

from setuptools import find_namespace_packages, setup

package_dir = tomllib.loads(Path(__file__).with_name("pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
packages = set()
for name, folder in package_dir.items():
    packages |= {name, *(f"{name}.{sub}" for sub in find_namespace_packages(folder, exclude=["*__pycache__*"]))}
setup(packages=sorted(packages))
