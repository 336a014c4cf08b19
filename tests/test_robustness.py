"""The robustness suite: in every train-all and evaluate report, scored as cross-validation and label score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import write_cremad_like

from sononet.corpus.splits import SplitConfig
from sononet.evaluate.robustness import RobustnessConfig, suite_clips
from sononet.experiment import ExperimentConfig, run_experiment
from sononet.features.reader import load_metadata
from sononet.models.saved import SavedModel
from sononet.perturb import CATALOGUE
from sononet.prepare import PrepareConfig
from sononet.robustness import suite_probabilities
from sononet.train.config import TrainConfig
from sononet.train.predict import predict

DEFAULT_ROWS = ["clean", *(n for n, p in CATALOGUE.items() if p.default)]


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-fold train-all of CNN and BiGRU on a tiny corpus, the suite at its defaults."""
    root = tmp_path_factory.mktemp("robust")
    write_cremad_like(root / "data", [str(2001 + i) for i in range(9)], ["DFA", "IEO"])
    cfg = ExperimentConfig(
        out=str(root / "run"), models=("cnn", "bigru"), device="cpu", jobs=1,
        prepare=PrepareConfig(data=str(root / "data"), shard_size=40, mel_backend="torchaudio", device="cpu"),
        train=TrainConfig(epochs=1, batch_size=16, refit=False, tensorboard=False),
        split=SplitConfig(folds=3),
    )  # fmt: skip
    return Path(run_experiment(cfg, progress=False)["out"])


def test_train_all_report_has_the_robustness_table_per_fold_and_over_folds(cv_run: Path) -> None:
    report = (cv_run / "report.md").read_text()
    section = report.split("## Robustness", 1)[1].split("\n## ", 1)[0]
    assert "mean ± std over 3 folds" in section and "float, no clipping" in section
    table = pd.read_csv(cv_run / "tables" / "robustness.csv")
    assert list(table.perturbation) == [p for p in DEFAULT_ROWS for _ in (0, 1)]
    assert list(table.speakers[:2]) == ["known", "unknown"] and set(table.n_folds) == {3}
    assert table.n_clips.iloc[0] == 108  # every clip is a test clip once over the 3 folds
    for model in ("cnn", "bigru", "ensemble"):
        assert table[f"{model}_ua"].between(0, 1).all() and table[f"{model}_ua_std"].notna().all()
        clean = table[table.perturbation == "clean"]
        assert (clean[f"{model}_drop"] == 0).all()
    folds = pd.read_csv(cv_run / "tables" / "robustness_folds.csv")
    assert sorted(folds.fold.unique()) == [0, 1, 2] and len(folds) == 3 * len(DEFAULT_ROWS) * 2 * 3
    mean = folds[(folds.perturbation == "peak") & (folds.speakers == "unknown") & (folds.model == "cnn")].ua.mean()
    assert table[(table.perturbation == "peak") & (table.speakers == "unknown")].cnn_ua.item() == pytest.approx(mean)
    metrics = json.loads((cv_run / "metrics.json").read_text())
    assert metrics["robustness"]["perturbations"]["mp3"].startswith("MP3 32 kbit/s")
    assert len(metrics["robustness"]["rows"]) == len(table) and metrics["files"]["robustness"]["csv"]
    stages = json.loads((cv_run / "run.json").read_text())["stages_s"]
    assert any(s.startswith("robustness/") for s in stages)  # what the suite cost, per model and fold


def fold0(cv_run: Path) -> tuple[dict[str, Path], pd.DataFrame]:
    splits = json.loads((cv_run / "fold-0" / "splits.json").read_text())
    meta = load_metadata(cv_run / "shards", ["clip_id", "source_path", "speaker", "label"]).to_pandas()
    test = meta[meta.clip_id.map(splits) == "test"].sort_values("clip_id").reset_index(drop=True)
    return {m: cv_run / "fold-0" / m / "model" for m in ("cnn", "bigru")}, test


def test_clean_rows_score_as_cross_validation_and_label(cv_run: Path) -> None:
    dirs, test = fold0(cv_run)
    probs, labels = suite_probabilities(dirs, test, RobustnessConfig(perturb=("gain-20",)), device="cpu")
    cols = [f"prob_{lab}" for lab in labels]
    for name, model_dir in dirs.items():
        saved = SavedModel.load(model_dir)
        for mode, known in (("known", True), ("unknown", False)):
            ids = list(test.clip_id)
            cv = predict(saved, cv_run / "shards", ids, torch.device("cpu"), known_speakers=known)
            cv = cv.sort_values("clip_id")
            got = np.stack([probs[("clean", mode, name)][c] for c in cv.clip_id])
            np.testing.assert_allclose(got, cv[cols].to_numpy(), atol=1e-5, err_msg=f"{name} {mode}")
    # A constant gain is one offset per speaker: its own mean absorbs it, the training default does not.
    for name in dirs:
        clean_k, gain_k = (np.stack(list(probs[(p, "known", name)].values())) for p in ("clean", "gain-20"))
        clean_u, gain_u = (np.stack(list(probs[(p, "unknown", name)].values())) for p in ("clean", "gain-20"))
        assert np.abs(gain_k - clean_k).mean() < np.abs(gain_u - clean_u).mean(), name


def test_missing_files_are_left_out_not_fatal(cv_run: Path, tmp_path: Path) -> None:
    dirs, test = fold0(cv_run)
    moved = test.copy()
    moved.loc[0, "source_path"] = str(tmp_path / "gone.wav")
    probs, _ = suite_probabilities({"cnn": dirs["cnn"]}, moved, RobustnessConfig(perturb=()), device="cpu")
    assert len(probs[("clean", "known", "cnn")]) == len(test) - 1


def test_suite_clips_keeps_whole_speakers_within_the_bound() -> None:
    clips = pd.DataFrame({"clip_id": [f"c{i}" for i in range(30)], "source_path": "x", "label": "ANG",
                          "speaker": [f"s{i // 10}" for i in range(30)]})  # fmt: skip
    assert suite_clips(clips, 30).equals(clips)
    kept = suite_clips(clips, 25, seed=1)
    assert len(kept) == 20 and kept.groupby("speaker").size().eq(10).all()
    assert kept.equals(suite_clips(clips, 25, seed=1))
    nobody = clips.assign(speaker=None)
    assert len(suite_clips(nobody, 7)) == 7  # no speakers: clips sampled


def test_config_and_spec_refuse_bad_values() -> None:
    from sononet.jobs import load_spec

    with pytest.raises(ValueError, match="unknown perturbation 'reverb'"):
        RobustnessConfig(perturb=("gain", "reverb"))
    with pytest.raises(ValueError, match="max_clips >= 1"):
        RobustnessConfig(max_clips=0)
    assert RobustnessConfig(perturb="gain, noise10").perturb == ("gain", "noise10")
    _, cfg = load_spec("train-all", ["robustness.perturb=[]"])
    assert cfg.robustness.perturb == ()
    _, cfg = load_spec("train-all", ["robustness.perturb=['telephone', 'opus']"])
    assert cfg.robustness.perturb == ("telephone", "opus")


def test_evaluate_command_reports_robustness_and_takes_perturb(cv_run: Path, tmp_path: Path) -> None:
    from sononet.cli import main

    model = str(cv_run / "fold-0" / "cnn" / "model")
    base = ["evaluate", "--model", model, "--data", str(cv_run.parent / "data"), "--device", "cpu"]
    chosen = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "a"), "--perturb", "gain-20,peak"])
    assert chosen.exit_code == 0, chosen.output
    table = pd.read_csv(tmp_path / "a" / "tables" / "robustness.csv")
    assert list(table.perturbation) == ["clean", "clean", "gain-20", "gain-20", "peak", "peak"]
    assert table.n_clips.iloc[0] == 108 and "## Robustness" in (tmp_path / "a" / "report.md").read_text()
    skipped = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "b"), "--no-perturb"])
    assert skipped.exit_code == 0, skipped.output
    assert "## Robustness" not in (tmp_path / "b" / "report.md").read_text()
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["robustness"] is None
    for extra, message in [(["--perturb", "reverb"], "error: unknown perturbation 'reverb'"),
                           (["--perturb", "gain", "--no-perturb"], "contradict each other")]:  # fmt: skip
        bad = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "c"), *extra])
        assert bad.exit_code == 2 and message in bad.output, bad.output


def test_train_all_perturb_options_reach_the_spec() -> None:
    from sononet.cli.train import experiment_config

    assert experiment_config(perturb="noise", no_perturb=None).robustness.perturb == ("noise",)
    assert experiment_config(perturb=None, no_perturb=True).robustness.perturb == ()
    assert experiment_config().robustness.perturb == RobustnessConfig().perturb
