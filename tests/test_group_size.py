"""sononet speaker-groups: the measurement behind label's --speaker-min-files, on a tiny CV run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_cremad_like

from sononet.cli import main
from sononet.corpus.splits import SplitConfig
from sononet.evaluate.robustness import RobustnessConfig
from sononet.experiment import ExperimentConfig, run_experiment
from sononet.label.group_size import GroupSizeConfig, measure_group_sizes
from sononet.prepare import PrepareConfig
from sononet.train.config import TrainConfig


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("groups")
    write_cremad_like(root / "data", [str(2001 + i) for i in range(9)], ["DFA", "IEO"])
    cfg = ExperimentConfig(
        out=str(root / "run"), models=("cnn",), device="cpu", jobs=1,
        prepare=PrepareConfig(data=str(root / "data"), shard_size=40, mel_backend="torchaudio", device="cpu"),
        train=TrainConfig(epochs=1, batch_size=16, refit=False, tensorboard=False),
        split=SplitConfig(folds=3), robustness=RobustnessConfig(perturb=()),
    )  # fmt: skip
    return Path(run_experiment(cfg, progress=False)["out"])


def test_scores_every_group_size_against_both_references(cv_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "g.json"
    cfg = GroupSizeConfig(run=str(cv_run), models=("cnn",), folds=(0, 1), sizes=(1, 2, 4, 99), reps=3, out=str(out))
    result = measure_group_sizes(cfg, progress=False)
    saved = json.loads(out.read_text())
    assert saved["models"] == result["models"] and saved["folds"] == [0, 1]
    cnn = saved["models"]["cnn"]
    assert cnn["held_out_speakers"] == 12  # 2 folds x (3 validation + 3 test speakers)
    for key in ("ua", "ua_gain-20"):
        assert set(cnn[key]) == {"unknown", "all", "1", "2", "4"}  # 99 > a speaker's 12 clips: skipped
        assert all(0 <= v <= 100 for v in cnn[key].values())
    # Removing a group's own mean makes a gain vanish: the same draws score the same at -20 dB.
    assert cnn["ua"]["all"] == cnn["ua_gain-20"]["all"] and cnn["ua"]["2"] == cnn["ua_gain-20"]["2"]


def test_cli_prints_and_writes_next_to_the_run(cv_run: Path) -> None:
    r = CliRunner().invoke(main, ["speaker-groups", str(cv_run), "--models", "cnn", "--sizes", "1,3", "--reps", "2"])
    assert r.exit_code == 0, r.output
    assert "cnn: unknown " in r.output and "k=3" in r.output
    assert json.loads((cv_run / "speaker-groups.json").read_text())["reps"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "bigru"], "has no bigru/model"),
        (["--folds", "7"], "no fold-7/splits.json"),
        (["--folds", "x"], "comma-separated integers"),
        (["--reps", "0"], "reps must be"),
        (["--reps", "99999999"], "reps must be"),
        (["--sizes", "0"], "sizes must be"),
        (["--sizes", ""], "at least one value"),
    ],
)
def test_bad_input_exits_2_in_one_line(cv_run: Path, args: list[str], message: str) -> None:
    r = CliRunner().invoke(main, ["speaker-groups", str(cv_run), *args])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output


def test_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["speaker-groups", str(tmp_path)])
    assert r.exit_code == 2 and "is not a train-all run" in r.output
    (tmp_path / "file").write_text("x")
    r = CliRunner().invoke(main, ["speaker-groups", str(tmp_path / "file")])
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_shift_must_be_a_finite_level() -> None:
    with pytest.raises(ValueError, match="shift_db"):
        GroupSizeConfig(run="x", shift_db=(float("nan"),))
