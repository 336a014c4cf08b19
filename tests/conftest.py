"""Small builders shared by the stage tests: tiny corpora generated on the fly, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

# isort: off
import sononet  # noqa: F401  before torch: it sets OpenMP's passive waiting, which torch reads as it loads
import torch

# isort: on

torch.set_num_threads(1)
# CLI calls inside tests size torch's pool too (sononet.device.configure_threads): keep them at the
# same single thread, so numbers compared across tests come from the same kernels.
os.environ["SONONET_THREADS"] = "1"

EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")


def _find_shared_data() -> Path:
    """$SONONET_SHARED_DATA, else the nearest ``shared/data`` beside the repository or a folder above it."""
    if os.environ.get("SONONET_SHARED_DATA"):
        return Path(os.environ["SONONET_SHARED_DATA"])
    repo = Path(__file__).resolve().parents[1]
    found = [p / "shared" / "data" for p in repo.parents if (p / "shared" / "data").is_dir()]
    return found[0] if found else repo.parent / "shared" / "data"


# Real corpora (RAVDESS, nEMO, ...; never shipped) for the tests marked real_speech.
SHARED_DATA = _find_shared_data()


def shared_corpus(name: str) -> Path:
    return SHARED_DATA / name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.real_speech("ravdess")`` tests run where the corpus is, and skip saying so where not;
    with SONONET_REAL_SPEECH=1 (CI, where the data exists) a missing corpus stops the run instead."""
    required = os.environ.get("SONONET_REAL_SPEECH") == "1"
    for item in items:
        for mark in item.iter_markers("real_speech"):
            path = shared_corpus(mark.args[0] if mark.args else "ravdess")
            if path.is_dir():
                continue
            if required:
                raise pytest.UsageError(f"SONONET_REAL_SPEECH=1 but {path} is absent ({item.nodeid})")
            item.add_marker(pytest.mark.skip(reason=f"real_speech: {path} is absent (set SONONET_SHARED_DATA)"))
    _skip_without_checkout(items)


def tone(seconds: float, sr: int = 16_000, f0: float = 150.0, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A harmonic tone with noise: enough spectral structure for features to differ."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * 0.1
    x = (x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write_cremad_like(
    root: Path, actors: list[str], sentences: list[str], emotions=EMOTIONS, seconds=1.2
) -> list[Path]:
    """CREMA-D-named WAVs whose pitch depends on emotion, with a demographics table."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for a_i, actor in enumerate(actors):
        for s_i, sentence in enumerate(sentences):
            for e_i, emotion in enumerate(emotions):
                p = root / f"{actor}_{sentence}_{emotion}_XX.wav"
                sf.write(
                    p,
                    tone(seconds + 0.1 * s_i, f0=110 + 25 * e_i + 5 * a_i, seed=a_i * 100 + s_i * 10 + e_i),
                    16_000,
                    subtype="PCM_16",
                )
                paths.append(p)
    with open(root / "VideoDemographics.csv", "w") as f:
        f.write('"ActorID","Age","Sex","Race","Ethnicity"\n')
        for i, actor in enumerate(actors):
            f.write(f'{actor},30,"{"Male" if i % 2 else "Female"}","Unknown","Not Hispanic"\n')
    return paths


@pytest.fixture
def cremad_dir(tmp_path: Path) -> Path:
    root = tmp_path / "cremad"
    write_cremad_like(root, [str(2001 + i) for i in range(4)], ["DFA", "IEO"])
    return root


# The container's test image (Dockerfile, target `test`) holds tests/ and pyproject.toml, not the
# repository: a test that reads its other files (Dockerfile, README, results/, the package source)
# carries the `checkout` marker and skips there. tests/test_container.py checks that every such
# test has it.
REPO = Path(__file__).resolve().parent.parent
CHECKOUT = (REPO / ".git").exists()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "checkout: reads repository files besides tests/ and pyproject.toml; skipped where the tests run "
        "without the checkout (the container's test image)",
    )


def _skip_without_checkout(items: list[pytest.Item]) -> None:
    if CHECKOUT:
        return
    skip = pytest.mark.skip(reason=f"reads the repository checkout; {REPO} is none (no .git), as in the test image")
    for item in items:
        if item.get_closest_marker("checkout") is not None:
            item.add_marker(skip)
