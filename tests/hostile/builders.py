"""Builders of hostile inputs for the standing adversarial suite (``pytest tests/hostile``).

Every case builds what an adversarial user could hand SonoNet (a poisoned data file, a tampered
model folder, a hostile array, a busy output folder) and asserts one of three outcomes: an
errors-table row with its reason, a one-line refusal (``error: ...``, exit code 2), or a bounded
finish. Each case runs in seconds; no case reaches the network or needs a GPU.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

from sononet.features.mel import FeatureConfig
from sononet.models.registry import build_model
from sononet.models.saving import save_model

torch.set_num_threads(1)
LABELS = ["ANG", "HAP", "SAD"]
FEATURES = FeatureConfig(n_fft=512, hop_length=256, n_mels=32)  # small: the suite must stay fast


def tone(seconds: float, sr: int = 16_000, f0: float = 150.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 5)) * 0.1
    return (x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def save_cnn(directory: Path, seed: int = 0, poison: float | None = None, meta: dict | None = None) -> Path:
    """A tiny saved CNN on 32 mels; ``poison`` fills every weight with that value (NaN: a broken model)."""
    torch.manual_seed(seed)
    model = build_model("cnn", n_classes=3, n_mels=FEATURES.n_mels, channels=(4, 8), dropouts=(0.1, 0.1))
    if poison is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(poison)
    doc = {
        "labels": LABELS, "feature_config": FEATURES.to_dict(), "input_kind": "mel",
        "norm": {"mean": [-30.0] * FEATURES.n_mels, "std": [15.0] * FEATURES.n_mels},
        **(meta or {}),
    }  # fmt: skip
    return save_model(directory, model.eval(), "cnn", doc)


def cli(*args: str) -> tuple[int, str]:
    """``sononet ARGS`` in-process: (exit code, combined output)."""
    import logging

    from sononet.cli import main

    root = logging.getLogger()  # the last invocation's handler writes to its closed captured stream
    for handler in [h for h in root.handlers if type(h) is logging.StreamHandler]:
        root.removeHandler(handler)
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def assert_refused(code: int, output: str, *needles: str) -> None:
    """The one-line refusal: exit code 2, a single ``error:`` line, no traceback, naming what matters."""
    lines = [ln for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in output, output
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def edit_json(path: Path, key: str, value: object) -> None:
    doc = json.loads(path.read_text())
    node = doc
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    path.write_text(json.dumps(doc))


def as_nobody(fn, *args: object) -> str:
    """``fn(*args)`` in a forked child running as user ``nobody``: root ignores file modes, and a
    read-only folder must be read-only to the code under test. Returns the child's string result."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.setgid(65534)
            os.setuid(65534)
            result = str(fn(*args))
        except BaseException as e:
            result = f"raised {type(e).__name__}: {e}"
        os.write(write, result.encode()[:60000])
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def lhotse_cut(cut_id: str, source_type: str, source: object, seconds: float, speaker: str, emotion: str):
    """A MonoCut over one recording whose single audio source is ``(source_type, source)``."""
    from lhotse import AudioSource, MonoCut, Recording, SupervisionSegment

    n = int(seconds * 16_000)
    rec = Recording(id=cut_id, sources=[AudioSource(type=source_type, channels=[0], source=source)],
                    sampling_rate=16_000, num_samples=n, duration=n / 16_000)  # fmt: skip
    sup = SupervisionSegment(id=f"{cut_id}-s", recording_id=cut_id, start=0.0, duration=n / 16_000, channel=0,
                             speaker=speaker, custom={"emotion": emotion})  # fmt: skip
    return MonoCut(id=cut_id, start=0.0, duration=n / 16_000, channel=0, recording=rec, supervisions=[sup])


def poisoned_cuts(folder: Path, marker: Path, wav: Path) -> list:
    """Cuts whose audio would run ``touch marker`` or reach the network if anything loaded them as lhotse would."""
    from lhotse.cut import MixedCut

    command = lhotse_cut("cmd", "command", f"touch {marker}; cat {wav}", 1.2, "9001", "ANG")
    url = lhotse_cut("url", "url", "http://127.0.0.1:9/x.wav", 1.2, "9001", "HAP")
    shar = lhotse_cut("shar", "shar", "x", 1.2, "9001", "SAD")
    inner = lhotse_cut("inner", "command", f"touch {marker}; cat {wav}", 1.2, "9001", "SAD")
    plain = lhotse_cut("plain", "file", str(wav), 1.2, "9001", "SAD")
    mixed = plain.mix(inner)  # the command hides in the second track
    assert isinstance(mixed, MixedCut)
    mixed = mixed.with_id("mixed")
    # A real file whose name is a shell command: lhotse's default backend reads `.sph` with
    # `sph2pipe ... <name>` in a shell. Cut to a segment, so lhotse (not SonoNet) decodes it.
    evil = folder / "a;touch pwned;b.sph"
    evil.write_bytes(wav.read_bytes())
    sph = lhotse_cut("sph", "file", str(evil), 1.2, "9001", "SAD").truncate(offset=0.1, duration=0.9).with_id("sph")
    return [command, url, shar, mixed, sph]


class HungError(Exception):
    """A hostile input kept SonoNet waiting past the bound a case allows."""


@contextlib.contextmanager
def bounded(seconds: int):
    """Fail the case (not the whole suite) when the body runs longer than ``seconds``: a hang is a bug."""

    def expire(signum: int, frame: object) -> None:
        raise HungError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
