"""One profile rule: the corpus that is opened picks demo or real, and every command resolves the same recipe."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import write_cremad_like

from sononet.cli import main
from sononet.corpus.demo import DemoConfig
from sononet.corpus.demo_synth import generate_demo
from sononet.corpus.splits import SplitConfig
from sononet.experiment import ExperimentConfig, resolve_experiment
from sononet.features.reader import load_metadata
from sononet.prepare import PrepareConfig, prepare
from sononet.train.config import TrainConfig
from sononet.train.loop import train_model
from sononet.train.profiles import PROFILES, corpus_profile, resolve_w2v2, w2v2_overrides
from sononet.train.shard_info import shard_splits

LABELS = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]


@pytest.fixture(scope="module")
def real_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("profiles")
    write_cremad_like(root / "data", [str(1001 + i) for i in range(6)], ["DFA"])
    out = root / "shards"
    prepare(
        PrepareConfig(data=str(root / "data"), out=str(out), mel_backend="torchaudio", device="cpu"), progress=False
    )
    return out


def spec(args: list[str]) -> dict:
    result = CliRunner().invoke(main, [*args, "--device", "cpu", "--print-spec"])
    assert result.exit_code == 0, result.output
    return tomllib.loads(result.output)


def test_the_generated_demo_corpus_is_demo_wherever_it_comes_from(tmp_path: Path) -> None:
    """Passing the demo corpus as --data is still the demo, and a real folder is real: the corpus decides."""
    demo = generate_demo(tmp_path / "demo-corpus", DemoConfig(n_actors=1))
    real = tmp_path / "real"
    write_cremad_like(real, ["1001", "1002"], ["DFA"])
    assert (corpus_profile(None), corpus_profile(demo), corpus_profile(real)) == ("demo", "demo", "real")
    assert spec(["train-all", "--out", str(tmp_path / "a"), "--data", str(demo)])["profile"] == "demo"
    given = spec(["train-all", "--out", str(tmp_path / "b"), "--data", str(real)])
    assert given["profile"] == "real" and given["prepare"]["features"]["trim_silence_db"] == 30.0
    forced = spec(["train-all", "--out", str(tmp_path / "c"), "--data", str(real), "--profile", "demo"])
    assert (
        forced["train"]["epochs"] == PROFILES["demo"].epochs and "trim_silence_db" not in forced["prepare"]["features"]
    )


@pytest.mark.parametrize("model", ["bigru", "wav2vec2"])
def test_train_and_train_all_resolve_the_same_recipe(real_shards: Path, tmp_path: Path, model: str) -> None:
    """`sononet train` on a corpus's shards trains what `train-all` on that corpus trains: same epochs,
    refit, per-model VTLP and wav2vec2 choice."""
    one = spec(["train", "--shards", str(real_shards), "--model", model, "--out", str(tmp_path / "one")])
    data = str(real_shards.parent / "data")
    every = spec(["train-all", "--data", data, "--models", model, "--out", str(tmp_path / "all")])
    assert one["profile"] == every["profile"] == "real"
    assert one["train"] == every["train"]
    assert one["train"]["refit"] is True and one["train"]["epochs"] == PROFILES["real"].epochs
    assert one["w2v2"] == (every["w2v2"] if model == "wav2vec2" else "auto")


def test_w2v2_auto_resolves_by_device_in_every_command() -> None:
    assert resolve_w2v2("auto", "cpu") == "tiny" and resolve_w2v2("auto", "cuda") == "facebook/wav2vec2-base"
    assert resolve_w2v2("my/model", "cuda") == "my/model"
    with pytest.raises(ValueError, match="resolve w2v2 'auto'"):
        w2v2_overrides("auto")
    cfg = resolve_experiment(ExperimentConfig(device="cpu", prepare=PrepareConfig(data="x", out="y")))
    assert cfg.w2v2 == "tiny" and cfg.train.model_overrides["wav2vec2"]["tiny"] is True


def test_train_model_refuses_what_it_used_to_guess(real_shards: Path, tmp_path: Path) -> None:
    """No silent epoch budget, and no feature config other than the shards' own."""
    meta = load_metadata(real_shards, ["clip_id", "speaker", "sex"]).to_pandas()
    splits = shard_splits(meta, SplitConfig(seed=0))
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="needs train.epochs"):
        train_model("cnn", real_shards, splits, LABELS, TrainConfig(), tmp_path / "a", cpu, progress=False)
    other = {"feature_config": {"n_mels": 64}}
    with pytest.raises(ValueError, match="differs from the shards' own"):
        train_model("cnn", real_shards, splits, LABELS, TrainConfig(epochs=1), tmp_path / "b", cpu, meta=other)
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        train_model("cnn", tmp_path, splits, LABELS, TrainConfig(epochs=1), tmp_path / "c", cpu, progress=False)


def test_sononet_train_writes_the_spec_it_ran(real_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "cnn"
    args = ["train", "--shards", str(real_shards), "--model", "cnn", "--out", str(out), "--epochs", "1"]
    result = CliRunner().invoke(main, [*args, "--no-refit", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    written = tomllib.loads((out / "spec.toml").read_text())
    assert written["train"]["epochs"] == 1 and written["train"]["refit"] is False and written["profile"] == "real"
    bad = CliRunner().invoke(main, [*args, "--profile", "fancy"])
    assert bad.exit_code == 2 and "'fancy' is not one of" in bad.output


def test_demo_caps_the_tiny_wav2vec2_at_its_own_epochs_unless_epochs_are_given() -> None:
    demo = resolve_experiment(ExperimentConfig(device="cpu"))
    assert demo.train.epochs == PROFILES["demo"].epochs
    assert demo.train.epochs_for("wav2vec2") == PROFILES["demo"].model_epochs["wav2vec2"] < demo.train.epochs
    assert demo.train.epochs_for("cnn") == demo.train.epochs
    given = resolve_experiment(ExperimentConfig(device="cpu", train=TrainConfig(epochs=3)))
    assert given.train.epochs_for("wav2vec2") == 3  # an explicit count holds for every model
    own = TrainConfig(model_overrides={"wav2vec2": {"epochs": 5}})
    assert resolve_experiment(ExperimentConfig(device="cpu", train=own)).train.epochs_for("wav2vec2") == 5


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_a_model_epoch_cap_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="model_overrides.cnn.epochs must be a positive integer"):
        TrainConfig(model_overrides={"cnn": {"epochs": bad}})


def test_a_model_epoch_cap_stops_that_model_only(real_shards: Path, tmp_path: Path) -> None:
    meta = load_metadata(real_shards, ["clip_id", "speaker", "sex"]).to_pandas()
    splits = shard_splits(meta, SplitConfig())
    cfg = TrainConfig(epochs=3, min_epochs=3, tensorboard=False, model_overrides={"cnn": {"epochs": 1}})
    result = train_model("cnn", real_shards, splits, LABELS, cfg, tmp_path / "cnn", torch.device("cpu"), progress=False)
    assert len(result.history) == 1
