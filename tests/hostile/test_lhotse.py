"""A poisoned lhotse CutSet runs nothing and fetches nothing, in every command that reads data.

lhotse runs a ``command`` source in a shell, fetches a ``url`` source, and its default audio
backend reads a ``.sph`` file through ``sph2pipe`` in a shell built from the file name. Each of
these is planted here behind a marker file; the marker must never appear, and each poisoned cut
must be an errors-table row (``not_local``), while the clean cuts beside them train and evaluate.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hostile.builders import FEATURES, cli, lhotse_cut, poisoned_cuts, tone

lhotse = pytest.importorskip("lhotse")

EMOTIONS = ("ANG", "HAP", "SAD")


def write_manifest(root: Path, marker: Path) -> Path:
    """Clean cuts of 4 speakers x 3 emotions x 2 takes, and every kind of poisoned cut."""
    import soundfile as sf
    from lhotse import CutSet

    root.mkdir(parents=True, exist_ok=True)
    cuts = []
    for s in range(4):
        for e, emotion in enumerate(EMOTIONS):
            for take in range(2):
                wav = root / f"{s}_{emotion}_{take}.wav"
                sf.write(wav, tone(1.2, f0=110 + 40 * e + 7 * s, seed=100 * s + 10 * e + take), 16_000)
                cuts.append(lhotse_cut(wav.stem, "file", wav.name, 1.2, f"spk{s}", emotion))  # relative path
    manifest = root / "cuts.jsonl.gz"
    CutSet.from_cuts([*cuts, *poisoned_cuts(root, marker, root / "0_ANG_0.wav")]).to_file(manifest)
    return manifest


@pytest.fixture
def poisoned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.chdir(tmp_path)  # the `.sph` name's `touch pwned` would land here
    marker = tmp_path / "marker"
    return write_manifest(tmp_path / "data", marker), marker


def _nothing_ran(tmp_path: Path, marker: Path) -> None:
    assert not marker.exists(), "a command from the data file ran"
    assert not (tmp_path / "pwned").exists(), "a file name ran as a shell command"


def test_poisoned_cuts_are_rows_and_nothing_runs(poisoned: tuple[Path, Path], tmp_path: Path) -> None:
    from sononet.corpus import load_corpus

    manifest, marker = poisoned
    corpus = load_corpus(manifest)
    _nothing_ran(tmp_path, marker)
    reasons = {e.path.rsplit(":", 1)[-1]: e.reason for e in corpus.errors}
    assert reasons == {"cmd": "not_local", "url": "not_local", "shar": "not_local", "mixed": "not_local"}
    assert "'command' audio source" in next(e.detail for e in corpus.errors if e.path.endswith(":cmd"))
    ids = {c.clip_id for c in corpus.clips}
    assert len(ids) == 24 + 1 and "sph" in ids  # the oddly named file is still audio, read by libsndfile


def test_prepare_train_all_and_evaluate_on_a_poisoned_manifest_run_nothing(
    poisoned: tuple[Path, Path], tmp_path: Path
) -> None:
    from sononet.experiment import ExperimentConfig, run_experiment
    from sononet.prepare import PrepareConfig
    from sononet.train.config import TrainConfig

    manifest, marker = poisoned
    code, text = cli("prepare", "--data", str(manifest), "--out", str(tmp_path / "shards"), "--device", "cpu",
                     "--mel-backend", "torchaudio")  # fmt: skip
    assert code == 0, text
    summary = json.loads((tmp_path / "shards" / "summary.json").read_text())
    assert summary["errors_by_reason"] == {"not_local": 4} and summary["clips_written"] == 25
    _nothing_ran(tmp_path, marker)

    run = tmp_path / "run"
    prep = PrepareConfig(data=str(manifest), features=FEATURES, mel_backend="torchaudio", device="cpu")
    cfg = ExperimentConfig(out=str(run), models=("cnn",), device="cpu", prepare=prep, jobs=1,
                           train=TrainConfig(epochs=1, batch_size=8, tensorboard=False))  # fmt: skip
    run_experiment(cfg, progress=False)
    _nothing_ran(tmp_path, marker)

    code, text = cli("evaluate", "--model", str(run / "cnn" / "model"), "--data", str(manifest), "--out",
                     str(tmp_path / "eval"), "--device", "cpu")  # fmt: skip
    assert code == 0, text
    _nothing_ran(tmp_path, marker)
    errors = json.loads((tmp_path / "eval" / "shards" / "summary.json").read_text())["errors_by_reason"]
    assert errors == {"not_local": 4}

    # The model's own corpus: the protocol line says which test speakers it trained on, from the data.
    protocol = json.loads((tmp_path / "eval" / "metrics.json").read_text())["protocol"]
    assert protocol["corpus"] == f"same corpus as training: lhotse:{manifest}", protocol
    assert re.fullmatch(r"speaker-dependent: [1-4] of 5 test speakers .*", protocol["split"]), protocol
    assert (
        not protocol["speaker_disjoint"]
        and "Split is not speaker-disjoint" in (tmp_path / "eval" / "report.md").read_text()
    )
    before = (run / "predictions.parquet").read_bytes()
    code, text = cli("evaluate", "--model", str(run / "cnn" / "model"), "--data", str(manifest), "--out", str(run))
    assert code == 2 and "holds a training run" in text and (run / "predictions.parquet").read_bytes() == before
