"""sononet nested: the procedure that chose the recipe, as a command that never reads a test speaker."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import write_cremad_like

from sononet.cli import main
from sononet.corpus.splits import SplitConfig, speaker_folds
from sononet.evaluate.robustness import RobustnessConfig
from sononet.nested import NestedConfig, plan_fold, run_nested
from sononet.prepare import PrepareConfig
from sononet.train.config import TrainConfig

ACTORS = [str(2001 + i) for i in range(8)]


def _config(root: Path, **kw) -> NestedConfig:
    defaults = dict(
        out=str(root / "nested"), models=("cnn", "bigru"), device="cpu", jobs=1,
        prepare=PrepareConfig(data=str(root / "data"), shard_size=40, mel_backend="torchaudio", device="cpu"),
        train=TrainConfig(epochs=2, batch_size=16, refit_window=1, tensorboard=False), split=SplitConfig(folds=4),
    )  # fmt: skip
    return NestedConfig(**{**defaults, **kw})


@pytest.fixture(scope="module")
def nested_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("nested")
    write_cremad_like(root / "data", ACTORS, ["DFA", "IEO"])
    return root, run_nested(_config(root, outer_folds=(0, 2), score_labels=("ANG", "HAP", "NEU", "SAD")), False)


def test_plan_fold_never_reads_test_speakers() -> None:
    speakers = {a: ("Male" if i % 2 else "Female") for i, a in enumerate(ACTORS)}
    groups = speaker_folds(speakers, SplitConfig(folds=4))
    for fold in range(4):
        r, v, g = plan_fold(groups, fold)
        test = {s for s, part in groups[fold].items() if part == "test"}
        assert g < r and not (r & v) and not ((r | v) & test) and r - g  # A trains on R - G, chosen on G


def test_scores_validation_speakers_with_models_that_never_saw_them(nested_run: tuple[Path, dict]) -> None:
    root, result = nested_run
    out = root / "nested"
    rows = [json.loads(line) for line in (out / "nested.jsonl").read_text().splitlines()]
    assert [r["fold"] for r in rows] == [0, 2] and rows == result["rows"]
    splits = json.loads((out / "fold-0" / "nested.json").read_text())
    assert splits == rows[0]
    for row in rows:
        assert not set(row["inner_val"]) & set(row["scored_on"])
        for key in ("cnn_A", "cnn_B", "bigru_A", "bigru_B", "ensemble_A", "ensemble_B"):
            assert 0 <= row[f"{key}_ua"] <= 100
        assert 1 <= row["cnn_epochs"] <= 2 and row["cnn_epochs"] == row["cnn_best_epoch"]  # window 1: the best
    table = pd.read_csv(out / "nested.csv")
    assert list(table.model) == ["cnn_A", "cnn_B", "bigru_A", "bigru_B", "ensemble_A", "ensemble_B"]
    assert table.loc[0, "mean"] == pytest.approx((rows[0]["cnn_A_ua"] + rows[1]["cnn_A_ua"]) / 2, abs=0.01)
    assert "| ensemble_B |" in (out / "nested.md").read_text()
    spec = (out / "spec.toml").read_text()
    assert spec.startswith('job = "nested"') and "score_labels" in spec
    # Both models of a fold trained inside R only: the A model's own split never lists a scored speaker.
    meta = json.loads((out / "fold-0" / "cnn" / "A" / "model" / "config.json").read_text())["meta"]
    trained_on = set(meta["speakers"]["train"]) | set(meta["speakers"]["val"])
    assert not trained_on & set(rows[0]["scored_on"])


def test_a_rerun_reuses_every_finished_model(nested_run: tuple[Path, dict]) -> None:
    root, first = nested_run
    weights = root / "nested" / "fold-0" / "bigru" / "B-w1" / "model" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = run_nested(_config(root, outer_folds=(0, 2), score_labels=("ANG", "HAP", "NEU", "SAD")), False)
    assert weights.stat().st_mtime_ns == before and again["rows"] == first["rows"]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"split": SplitConfig(folds=3)}, "split.folds >= 4"),
        ({"split": SplitConfig(folds=4, mode="random")}, "speaker-grouped"),
        ({"outer_folds": (4,)}, "outer_folds"),
        ({"outer_folds": (0, 0)}, "outer_folds"),
        ({"outer_folds": (True,)}, "outer_folds"),
        ({"outer_folds": (-1,)}, "outer_folds"),
    ],
)
def test_bad_config_refused_before_any_work(tmp_path: Path, kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config(tmp_path, **kw)
    assert not (tmp_path / "nested").exists()


def test_unknown_score_label_is_one_line(nested_run: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = nested_run
    r = CliRunner().invoke(main, [
        "nested", "--data", str(root / "data"), "--out", str(tmp_path / "n"), "--folds", "4", "--models", "cnn",
        "--epochs", "1", "--score-labels", "ANG,XYZ", "--device", "cpu",
    ])  # fmt: skip
    assert r.exit_code == 2 and "score_labels ['XYZ']" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize(
    "args",
    [
        ["--folds", "3"],
        ["--outer-folds", "x"],
        ["--outer-folds", "9"],
        ["--folds", "nan"],
        ["--epochs", "-1"],
        ["--perturb", "bogus"],
        ["--perturb", "noise;rm -rf /"],
        ["--perturb", "gain-20,nan"],
    ],
)
def test_bad_options_exit_2_in_one_line(tmp_path: Path, args: list[str]) -> None:
    r = CliRunner().invoke(main, ["nested", "--out", str(tmp_path / "n"), "--models", "cnn", *args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and r.output.strip().splitlines()[-1].startswith(("Error", "error"))
    assert not (tmp_path / "n" / "nested.jsonl").exists()


def test_perturb_scores_the_refit_models_on_validation_speakers(nested_run: tuple[Path, dict]) -> None:
    root, first = nested_run
    cfg = _config(root, outer_folds=(0, 2), score_labels=("ANG", "HAP", "NEU", "SAD"),
                  robustness=RobustnessConfig(perturb=("gain-20", "noise20")))  # fmt: skip
    weights = root / "nested" / "fold-2" / "cnn" / "B-w1" / "model" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    result = run_nested(cfg, False)
    assert weights.stat().st_mtime_ns == before  # the suite scores the finished models, trains nothing
    for row, old in zip(result["rows"], first["rows"], strict=True):
        assert {k: v for k, v in row.items() if k != "robustness"} == old
        table = pd.DataFrame(row["robustness"])
        assert set(table.perturbation) == {"clean", "gain-20", "noise20"}
        assert set(table.model) == {"cnn", "bigru", "ensemble"} and set(table.speakers) == {"known", "unknown"}
        assert (table.n == table.n.iloc[0]).all() and table.ua.between(0, 100).all()
        # V's clips of the scored classes only (2 sentences x 4 classes per actor), never a test speaker's.
        assert table.n.iloc[0] == 2 * 4 * len(row["scored_on"])
    md = (root / "nested" / "robustness.md").read_text()
    assert "noise20" in md and "ensemble UA %" in md
    csv = pd.read_csv(root / "nested" / "robustness.csv")
    assert set(csv.n_folds) == {2}


def test_print_spec_resolves_and_runs_nothing(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["nested", "--out", str(tmp_path / "n"), "--outer-folds", "1", "--print-spec"])
    assert r.exit_code == 0 and 'job = "nested"' in r.output and "outer_folds = [\n    1,\n]" in r.output
    assert not (tmp_path / "n").exists()
