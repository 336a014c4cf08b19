"""train-final: a cross-validated recipe trained once more on every speaker, with the folds' own schedule."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_cremad_like

from sononet import EmotionClassifier
from sononet.cli import main
from sononet.corpus.splits import SplitConfig
from sononet.evaluate.robustness import RobustnessConfig
from sononet.experiment import ExperimentConfig, run_experiment
from sononet.final_model import FinalConfig, fold_schedule, train_final
from sononet.models.saving import load_model
from sononet.prepare import PrepareConfig
from sononet.train.config import TrainConfig


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 folds of a CNN with its refit, on a tiny CREMA-D-named corpus (9 speakers)."""
    root = tmp_path_factory.mktemp("final")
    write_cremad_like(root / "data", [str(2001 + i) for i in range(9)], ["DFA", "IEO"])
    cfg = ExperimentConfig(
        out=str(root / "run"), models=("cnn",), device="cpu", jobs=1,
        prepare=PrepareConfig(data=str(root / "data"), shard_size=40, mel_backend="torchaudio", device="cpu"),
        train=TrainConfig(epochs=3, batch_size=16, refit=True, refit_window=1, tensorboard=False),
        split=SplitConfig(folds=3), robustness=RobustnessConfig(perturb=()),
    )  # fmt: skip
    return Path(run_experiment(cfg, progress=False)["out"])


def test_final_model_trains_on_every_clip_for_the_median_fold_schedule(cv_run: Path, tmp_path: Path) -> None:
    counts = {f: json.loads((cv_run / f"fold-{f}" / "cnn" / "done.json").read_text())["refit_epochs"] for f in range(3)}
    fold, lrs = fold_schedule(cv_run, "cnn")
    assert counts[fold] == sorted(counts.values())[1] and len(lrs) == counts[fold]
    out = tmp_path / "final"
    record = train_final(FinalConfig(run=str(cv_run), out=str(out), device="cpu"), progress=False)
    assert record["clips"] == 108 and record["speakers"] == 9
    assert record["models"]["cnn"] == {"epochs": len(lrs), "schedule_from_fold": fold, "model": "cnn/model"}
    _, saved = load_model(out / "cnn" / "model")
    meta = saved["meta"]
    assert meta["refit"] == {"epochs": len(lrs), "clips": 108} and "final model" in meta["protocol"]["split"]
    history = json.loads((out / "cnn" / "history.json").read_text())
    assert [row["lr"] for row in history] == lrs  # the fold's learning rate per epoch, drops included
    card = (out / "README.md").read_text()
    assert "| cnn |" in card and "mean ± std over 3" in card and "Licence" in card
    assert "cross-validated scores" in (out / "cnn" / "model" / "README.md").read_text()
    assert (out / "cross-validation" / "metrics.json").is_file()
    clf = EmotionClassifier.load(out, device="cpu")  # the folder is an ensemble of its members
    member = EmotionClassifier.load(out / "cnn" / "model", device="cpu")
    clip = np.random.default_rng(0).normal(0, 0.1, 32_000).astype(np.float32)
    np.testing.assert_allclose(
        clf.predict_proba([clip], sample_rate=16_000), member.predict_proba([clip], sample_rate=16_000), atol=1e-6
    )


def test_refused_in_one_line(cv_run: Path, tmp_path: Path) -> None:
    """Not a run, the run itself as --out, a run without refits, a model the run did not train: rc 2."""
    no_refit = tmp_path / "no-refit"
    (no_refit / "fold-0" / "cnn").mkdir(parents=True)
    (no_refit / "spec.toml").write_text((cv_run / "spec.toml").read_text())
    for f in range(2):
        (no_refit / f"fold-{f}" / "cnn").mkdir(parents=True, exist_ok=True)
        (no_refit / f"fold-{f}" / "cnn" / "done.json").write_text('{"best_epoch": 2, "epochs": 3}')
    fifo = tmp_path / "fifo-run"
    (fifo / "fold-0" / "cnn").mkdir(parents=True)
    (fifo / "spec.toml").write_text((cv_run / "spec.toml").read_text())
    os.mkfifo(fifo / "fold-0" / "cnn" / "done.json")
    cases = [
        (["--run", str(tmp_path), "--out", str(tmp_path / "o1")], "not a train-all run"),
        (["--run", str(cv_run), "--out", str(cv_run)], "must be a new folder"),
        (["--run", str(no_refit), "--out", str(tmp_path / "o2")], "no refit epoch count"),
        (["--run", str(fifo), "--out", str(tmp_path / "o3")], "not a regular file"),
        (["--run", str(cv_run), "--out", str(tmp_path / "o4"), "--models", "bigru"], "did not train"),
        (["--run", str(cv_run), "--out", str(tmp_path / "o5"), "--models", "nope"], "nope"),
    ]
    for args, says in cases:
        result = CliRunner().invoke(main, ["train-final", *args])
        assert result.exit_code == 2 and says in result.output, (args, result.output)
        assert "Traceback" not in result.output
