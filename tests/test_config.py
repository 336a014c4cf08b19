"""One config, one feature path: each default lives once and every consumer builds from what was saved."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import write_cremad_like

from sononet.cli import main
from sononet.corpus.splits import SplitConfig
from sononet.experiment import ExperimentConfig, resolve_experiment
from sononet.features.mel import FeatureConfig
from sononet.features.reader import load_metadata
from sononet.features.shards import read_manifest
from sononet.jobs import spec_text
from sononet.models.saving import load_model
from sononet.prepare import PrepareConfig, prepare
from sononet.train.config import TrainConfig
from sononet.train.loop import train_model
from sononet.train.profiles import PROFILES, resolve_train
from sononet.train.shard_info import shard_splits

CPU = torch.device("cpu")
LABELS = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]


@pytest.fixture(scope="module")
def shards64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards made with 64 mel bands, not the registry's 128."""
    root = tmp_path_factory.mktemp("cfg")
    write_cremad_like(root / "data", [str(2001 + i) for i in range(6)], ["DFA"])
    out = root / "shards"
    features = FeatureConfig(n_mels=64)
    prepare(PrepareConfig(data=str(root / "data"), out=str(out), features=features, mel_backend="torchaudio",
                          device="cpu"), progress=False)  # fmt: skip
    return out


def test_models_take_n_mels_from_the_shards(shards64: Path, tmp_path: Path) -> None:
    meta = load_metadata(shards64, ["clip_id", "speaker", "sex"]).to_pandas()
    splits = shard_splits(meta, SplitConfig(seed=0))
    fc = read_manifest(shards64)["feature_config"]
    for name in ("cnn", "bigru"):
        result = train_model(name, shards64, splits, LABELS, TrainConfig(epochs=1), tmp_path / name, CPU,
                             meta={"feature_config": fc}, progress=False)  # fmt: skip
        model, _ = load_model(result.model_dir)
        assert model.config.n_mels == 64


def test_train_lr_is_used(shards64: Path, tmp_path: Path) -> None:
    meta = load_metadata(shards64, ["clip_id", "speaker", "sex"]).to_pandas()
    splits = shard_splits(meta, SplitConfig(seed=0))
    fc = read_manifest(shards64)["feature_config"]
    cfg = TrainConfig(epochs=1, lr=3e-4, warmup_epochs=0)
    result = train_model("cnn", shards64, splits, LABELS, cfg, tmp_path / "lr", CPU, meta={"feature_config": fc},
                         progress=False)  # fmt: skip
    assert result.history[0]["lr"] == pytest.approx(3e-4)
    assert load_model(result.model_dir)[0].config.lr == pytest.approx(3e-4)


@pytest.mark.parametrize("option", [{"mixup_alpha": 0.4}, {"vtlp": 0.1}])
def test_batch_augmentations_run_through_the_trainer(shards64: Path, tmp_path: Path, option: dict) -> None:
    """Mixup and VTLP reach the trainer: same seed, same data, a different training loss."""
    from sononet.train.augment import AugmentConfig

    meta = load_metadata(shards64, ["clip_id", "speaker", "sex"]).to_pandas()
    splits = shard_splits(meta, SplitConfig(seed=0))
    fc = read_manifest(shards64)["feature_config"]
    losses = []
    for i, augment in enumerate((AugmentConfig(), AugmentConfig(**option))):
        cfg = TrainConfig(epochs=1, augment=augment, tensorboard=False)
        result = train_model("cnn", shards64, splits, LABELS, cfg, tmp_path / f"m{i}", CPU,
                             meta={"feature_config": fc}, progress=False)  # fmt: skip
        losses.append(result.history[0]["train_loss"])
    assert all(np.isfinite(losses)) and losses[0] != losses[1]


def test_a_models_own_augment_override_applies_to_it_alone(shards64: Path, tmp_path: Path) -> None:
    meta = load_metadata(shards64, ["clip_id", "speaker", "sex"]).to_pandas()
    splits = shard_splits(meta, SplitConfig(seed=0))
    fc = read_manifest(shards64)["feature_config"]

    def first_loss(overrides: dict, out: str) -> float:
        cfg = TrainConfig(epochs=1, tensorboard=False, model_overrides=overrides)
        result = train_model("cnn", shards64, splits, LABELS, cfg, tmp_path / out, CPU,
                             meta={"feature_config": fc}, progress=False)  # fmt: skip
        return result.history[0]["train_loss"]

    plain = first_loss({}, "plain")
    assert first_loss({"bigru": {"augment": {"vtlp": 0.1}}}, "other") == plain  # another model's: no effect
    assert first_loss({"cnn": {"augment": {"vtlp": 0.1}}}, "own") != plain
    with pytest.raises(ValueError, match=r"model_overrides.cnn.augment takes .*vtlp.*Found: \['vtpl'\]"):
        first_loss({"cnn": {"augment": {"vtpl": 0.1}}}, "typo")


def test_sononet_train_model_can_label(shards64: Path, tmp_path: Path) -> None:
    """The torchrun entry saves the feature config, so `sononet label` accepts its model; done.json marks it."""
    out = tmp_path / "one"
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--shards", str(shards64), "--model", "cnn", "--out", str(out),
                                  "--epochs", "1", "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "done.json").read_text())["epochs"] == 1
    assert not (out / "ddp_check.json").exists()
    audio = next((shards64.parent / "data").glob("*.wav"))
    args = ["label", str(audio), "--model", str(out / "model"), "--out", str(tmp_path / "l.parquet")]
    labelled = runner.invoke(main, [*args, "--device", "cpu", "--mel-backend", "torchaudio"])
    assert labelled.exit_code == 0, labelled.output


def test_two_sample_rates_that_disagree_are_refused() -> None:
    with pytest.raises(ValueError, match=r"prepare.audio.sample_rate \(8000\) and prepare.features.sample_rate"):
        PrepareConfig(out="x", audio=replace(PrepareConfig().audio, sample_rate=8000))


def test_epochs_come_from_one_place() -> None:
    demo = resolve_experiment(ExperimentConfig(device="cpu"))
    real = resolve_experiment(ExperimentConfig(device="cpu", prepare=PrepareConfig(data="x", out="y")))
    assert (demo.profile, demo.train.epochs) == ("demo", PROFILES["demo"].epochs)
    assert (real.profile, real.train.epochs) == ("real", PROFILES["real"].epochs)
    assert resolve_experiment(ExperimentConfig(train=TrainConfig(epochs=3))).train.epochs == 3
    assert demo.prepare.features.trim_silence_db is None and real.prepare.features.trim_silence_db == 30.0
    off = PrepareConfig(data="x", out="y", features=FeatureConfig(trim_silence_db=0.0))
    assert resolve_experiment(ExperimentConfig(prepare=off)).prepare.features.trim_silence_db == 0.0
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        TrainConfig(epochs=0)


def test_vtlp_comes_from_the_profile_per_model_unless_set() -> None:
    from sononet.train.augment import AugmentConfig

    real = PrepareConfig(data="x", out="y")
    got = resolve_experiment(ExperimentConfig(device="cpu", prepare=real))
    assert got.train.augment.vtlp == 0.0 and got.train.model_overrides["bigru"]["augment"] == {"vtlp": 0.1}
    assert PROFILES["real"].vtlp == {"bigru": 0.1}
    assert "augment" not in got.train.model_overrides.get("cnn", {})  # the CNN trains without it
    assert "bigru" not in resolve_experiment(ExperimentConfig(device="cpu")).train.model_overrides  # demo: off
    for explicit in (0.0, 0.05):  # a value set for every model wins, 0 included
        train = TrainConfig(augment=AugmentConfig(vtlp=explicit))
        cfg = resolve_experiment(ExperimentConfig(device="cpu", prepare=real, train=train))
        assert cfg.train.augment.vtlp == explicit and "bigru" not in cfg.train.model_overrides
    own = TrainConfig(model_overrides={"bigru": {"augment": {"vtlp": 0.2}, "hidden": 32}})
    cfg = resolve_experiment(ExperimentConfig(device="cpu", prepare=real, train=own))
    assert cfg.train.model_overrides["bigru"] == {"augment": {"vtlp": 0.2}, "hidden": 32}  # the model's own stays
    single = resolve_train(TrainConfig(), "real")  # `sononet train` resolves the same recipe for its one model
    assert single.augment.vtlp == 0.0 and single.model_overrides == {"bigru": {"augment": {"vtlp": 0.1}}}


@pytest.mark.parametrize("extra", [[], ["--set", "prepare.data=tests", "--set", "out=runs/x"]])
def test_train_all_and_sononet_batch_resolve_the_same_spec(extra: list[str], tmp_path: Path) -> None:
    from sononet.cli.batch import cli as batch_cli

    runner = CliRunner()
    direct = ["train-all", "--device", "cpu", "--print-spec"]
    if extra:
        direct += ["--data", "tests", "--out", str(tmp_path / "runs/x")]
    a = runner.invoke(main, direct)
    b = runner.invoke(batch_cli, ["train-all", "--set", "device=cpu", "--out", str(tmp_path), *extra, "--print-spec"])
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
    norm = lambda text: text.replace(str(tmp_path) + "/", "").replace(str(Path("tests").resolve()), "tests")  # noqa: E731
    assert norm(a.output) == norm(b.output)
    assert ('profile = "real"' if extra else 'profile = "demo"') in a.output
    assert ("refit = true" if extra else "refit = false") in a.output  # the profile decides an unset --refit
    flipped = runner.invoke(main, [*direct, "--no-refit" if extra else "--refit"])
    assert ("refit = false" if extra else "refit = true") in flipped.output


def test_spec_round_trips_through_toml() -> None:
    cfg = resolve_experiment(ExperimentConfig(device="cpu"))
    assert spec_text(cfg, "train-all") == spec_text(resolve_experiment(cfg), "train-all")
