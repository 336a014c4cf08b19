"""Each of the front end's numbers lives in one config dataclass; everywhere else refers to it.

Scans every module of the package and the kernels for the literals of the sample rate, mel bands,
FFT size, hop and 3 s clip. A literal outside its home is a second copy of the default (a bug: the
copies drift), unless it is listed below as another quantity that happens to share the number.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# value -> (module, config class): the one place the default is written.
HOMES = {
    16_000: ("sononet/audio.py", "AudioConfig"),  # sample rate; FeatureConfig's refers to it
    48_000: ("sononet/features/mel.py", "FeatureConfig"),  # the 3 s clip, in samples
    2048: ("sononet/features/mel.py", "FeatureConfig"),  # n_fft
    512: ("sononet/features/mel.py", "FeatureConfig"),  # hop_length
    128: ("sononet/features/mel.py", "FeatureConfig"),  # n_mels
}
# (module, value, text on the line) -> the other quantity the number is there.
OTHER_QUANTITIES = {
    ("sononet/corpus/cremad.py", 16_000, "SAMPLE_RATE"): "CREMA-D's recording rate, a fact about the corpus",
    ("sononet/perturb.py", 48_000, "libopus"): "Opus encodes at 48 kHz whatever the input",
    ("sononet/perturb.py", 16_000, "libopus"): "the Opus round trip's bitrate, 16 kbit/s",
    ("sononet/stopping.py", 128, "SIGTERM"): "the shell's exit status for a signal, 128 + signo",
    ("sononet/models/cnn.py", 128, "channels"): "the CNN's last block's width",
    ("sononet/train/augment.py", 512, "def _stretch"): "the tempo perturbation's phase-vocoder STFT",
    ("sononet/train/augment.py", 128, "def _stretch"): "the tempo perturbation's phase-vocoder hop",
}


def scan(path: Path) -> list[tuple[str, int, str, str | None]]:
    """(module, value, line text, enclosing class) of every numeric literal among HOMES' values."""
    source = path.read_text()
    lines, tree = source.splitlines(), ast.parse(source)
    owner: dict[ast.AST, str | None] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            owner[child] = node.name if isinstance(node, ast.ClassDef) else owner.get(node)
    rel = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name
    return [
        (rel, int(node.value), lines[node.lineno - 1].strip(), owner.get(node))
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value in HOMES
    ]


def literals() -> list[tuple[str, int, str, str | None]]:
    paths = sorted([*(REPO / "sononet").rglob("*.py"), *(REPO / "kernels").rglob("*.py")])
    return [hit for path in paths for hit in scan(path)]


@pytest.mark.checkout  # reads the repository, not the installed package
def test_front_end_numbers_live_in_their_config_dataclass_only() -> None:
    homes, strays, used = {v: 0 for v in HOMES}, [], set()
    for module, value, line, cls in literals():
        if (module, cls) == HOMES[value]:
            homes[value] += 1
            continue
        listed = [key for key in OTHER_QUANTITIES if key[:2] == (module, value) and key[2] in line]
        used.update(listed)
        if not listed:
            strays.append(f"{module}: {line}")
    assert not strays, "a second copy of a default; refer to the config dataclass instead:\n" + "\n".join(strays)
    assert all(n == 1 for n in homes.values()), f"each default is written once in its dataclass: {homes}"
    stale = set(OTHER_QUANTITIES) - used
    assert not stale, f"listed but no longer in the code (remove from OTHER_QUANTITIES): {sorted(stale)}"


def test_the_scan_finds_a_copy_and_its_class(tmp_path: Path) -> None:
    module = tmp_path / "stray.py"
    module.write_text("class AudioConfig:\n    rate: int = 16_000\n\n\nclass Other:\n    def f(self, n=2_048.0): ...\n")
    assert scan(module) == [
        ("stray.py", 16_000, "rate: int = 16_000", "AudioConfig"),
        ("stray.py", 2048, "def f(self, n=2_048.0): ...", "Other"),
    ]
