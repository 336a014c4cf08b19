"""TensorBoard: per-epoch scalars and the confusion image land in event files that TensorBoard itself reads back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_cremad_like

from sononet.corpus.splits import SplitConfig
from sononet.features.reader import load_metadata
from sononet.prepare import PrepareConfig, prepare
from sononet.train.config import TrainConfig
from sononet.train.loop import train_model
from sononet.train.shard_info import shard_splits

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
LABELS = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("tb")
    write_cremad_like(root / "data", [str(2001 + i) for i in range(6)], ["DFA"])
    out = root / "shards"
    cfg = PrepareConfig(data=str(root / "data"), out=str(out), mel_backend="torchaudio", device="cpu")
    prepare(cfg, progress=False)
    meta = load_metadata(out, ["clip_id", "speaker", "sex"]).to_pandas()
    return out, shard_splits(meta, SplitConfig(seed=0))


def test_curves_and_confusion_are_read_back(shards, tmp_path: Path) -> None:
    out, splits = shards
    cfg = TrainConfig(epochs=2, batch_size=8)
    result = train_model("cnn", out, splits, LABELS, cfg, tmp_path / "cnn", torch.device("cpu"), progress=False)
    acc = event_accumulator.EventAccumulator(str(tmp_path / "cnn" / "tb"), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("loss/train", "loss/val", "accuracy/train", "accuracy/val", "ua/val", "lr"):
        assert [e.step for e in acc.Scalars(tag)] == [1, 2], tag
    history = result.history
    got = [e.value for e in acc.Scalars("loss/val")]
    np.testing.assert_allclose(got, [h["val_loss"] for h in history], rtol=1e-6)
    np.testing.assert_allclose([e.value for e in acc.Scalars("ua/val")], [h["val_ua"] for h in history], rtol=1e-6)
    assert tags["images"] == ["confusion/val"]
    image = acc.Images("confusion/val")[0]
    assert image.step == result.best_epoch and image.encoded_image_string[:4] == b"\x89PNG"


def test_off_writes_nothing(shards, tmp_path: Path) -> None:
    out, splits = shards
    cfg = TrainConfig(epochs=1, batch_size=8, tensorboard=False)
    train_model("cnn", out, splits, LABELS, cfg, tmp_path / "cnn", torch.device("cpu"), progress=False)
    assert not (tmp_path / "cnn" / "tb").exists()
