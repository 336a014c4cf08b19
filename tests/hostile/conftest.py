"""Shared fixtures of the adversarial suite; the builders live in ``builders.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
from hypothesis import settings

from hostile.builders import save_cnn, tone

# The same generated cases on every run and machine (a CI failure reproduces), and no example
# database written into the checkout.
settings.register_profile("sononet", derandomize=True, database=None)
settings.load_profile("sononet")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_cnn(tmp_path_factory.mktemp("hostile-model") / "cnn" / "model")


@pytest.fixture(scope="session")
def nan_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_cnn(tmp_path_factory.mktemp("hostile-nan") / "cnn" / "model", poison=float("nan"))


@pytest.fixture(scope="session")
def wavs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile-wavs")
    for i, name in enumerate(("a.wav", "b.wav", "c.wav")):
        sf.write(root / name, tone(1.2, f0=130 + 40 * i, seed=i), 16_000, subtype="PCM_16")
    return root
