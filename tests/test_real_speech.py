"""Real speech: the training recipe must learn emotion from real voices, not just from the demo.

Reads RAVDESS from ``../shared/data/ravdess`` (CC BY-NC-SA 4.0, never copied into the repo);
skipped where it is absent. The regression case is the failure first seen on a small real
corpus: few speakers, clips shorter than the 3 s window (a third of the frames padding), a
dozen steps per epoch. There, BatchNorm's running statistics still held their initial
values when validation ran, the eval-mode model answered one class, validation loss rose,
and early stopping kept the epoch-1 model: near-chance test accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from sklearn.metrics import balanced_accuracy_score

from sononet.corpus import load_corpus, select_labels
from sononet.corpus.demo import DemoConfig, generate_demo
from sononet.corpus.splits import SplitConfig
from sononet.evaluate.cross_corpus import CrossCorpusConfig, evaluate_cross_corpus
from sononet.experiment import shard_splits
from sononet.features.reader import load_metadata
from sononet.features.shards import read_manifest
from sononet.models.saving import load_model
from sononet.prepare import PrepareConfig, prepare
from sononet.train.loop import TrainConfig, predict, train_model

RAVDESS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ravdess"
SIX = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
EIGHT = ["ANG", "CAL", "DIS", "FEA", "HAP", "NEU", "SAD", "SUR"]
pytestmark = pytest.mark.skipif(not RAVDESS.is_dir(), reason="../shared/data/ravdess not beside the repository")


def cut_copy(out: Path, actors: range, seconds: float) -> Path:
    """The centre ``seconds`` of every clip of ``actors``, keeping RAVDESS names (test-local copies)."""
    out.mkdir(parents=True, exist_ok=True)
    for actor in actors:
        for src in sorted((RAVDESS / "audio" / f"Actor_{actor:02d}").glob("*.flac")):
            x, sr = sf.read(src, dtype="float32")
            n = int(seconds * sr)
            start = (x.shape[0] - n) // 2
            sf.write(out / src.name, x[start : start + n], sr, subtype="PCM_16")
    return out


@pytest.fixture(scope="module")
def short_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ravdess")
    data = cut_copy(root / "audio", range(1, 7), 2.0)
    out = root / "shards"
    cfg = PrepareConfig(data=str(data), out=str(out), mel_backend="torchaudio", device="cpu")
    summary = prepare(cfg, progress=False)
    assert summary["clips_written"] == 6 * 60 and summary["labels"] == EIGHT
    return out


@pytest.fixture(scope="module")
def ravdess_cnn(short_clips: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], list]:
    """The default recipe's CNN, 12 epochs at most, 8 classes, on 4 actors (1 more for val, 1 for test)."""
    meta = load_metadata(short_clips, ["clip_id", "speaker", "sex", "label"]).to_pandas()
    splits = shard_splits(meta, SplitConfig(seed=0))
    fc = read_manifest(short_clips)["feature_config"]
    protocol = {"corpus": "ravdess", "split": "speaker-disjoint"}
    out = tmp_path_factory.mktemp("ravdess-cnn")
    torch.set_num_threads(2)
    cfg = TrainConfig(epochs=12, min_epochs=6, patience=4)
    result = train_model("cnn", short_clips, splits, EIGHT, cfg, out, torch.device("cpu"),
                         meta={"feature_config": fc, "protocol": protocol}, progress=False)  # fmt: skip
    return result.model_dir, splits, result.history


def test_cnn_learns_emotion_from_short_real_clips(short_clips: Path, ravdess_cnn: tuple) -> None:
    """6 actors, 8 classes, 2.0 s clips, 12 epochs: test UA far above chance (1/8).

    Before the fix: best epoch 2, stopped at 7 with validation loss rising 1.81 -> 2.25, three
    classes answered, test UA 0.30.
    """
    model_dir, splits, history = ravdess_cnn
    model, saved = load_model(model_dir)
    test_ids = [c for c, s in splits.items() if s == "test"]
    preds = predict(model, saved["meta"], short_clips, test_ids, torch.device("cpu"))
    ua = balanced_accuracy_score(preds.true, preds.pred)
    assert preds.pred.nunique() >= 6, f"the model answers few classes: {preds.pred.value_counts().to_dict()}"
    assert ua > 0.40, f"test UA {ua:.3f}; history {history}"


def test_cross_corpus_ravdess_to_demo(ravdess_cnn: tuple, tmp_path: Path) -> None:
    demo = generate_demo(tmp_path / "demo", DemoConfig(n_actors=2))
    result = evaluate_cross_corpus(
        CrossCorpusConfig(model=str(ravdess_cnn[0]), data=str(demo), out=str(tmp_path / "xc"))
    )
    protocol = result["protocol"]
    assert protocol["corpus"] == "cross-corpus: trained on ravdess, tested on demo (synthetic)"
    assert result["n_clips"] == 2 * 82 and protocol["shared_labels"] == list(SIX)  # CAL, SUR: not in the demo
    preds = pd.read_parquet(tmp_path / "xc" / "predictions.parquet")
    assert set(preds.split) == {"test"} and np.allclose(preds[[f"prob_{c}" for c in SIX]].sum(axis=1), 1.0)
    assert "cross-corpus: trained on ravdess" in (tmp_path / "xc" / "report.md").read_text()


def test_cross_corpus_demo_to_ravdess_scores_shared_classes_only(tmp_path: Path) -> None:
    """A 6-class demo model on an 8-class RAVDESS actor: CAL and SUR are excluded, the rest scored."""
    demo = generate_demo(tmp_path / "demo", DemoConfig(n_actors=4))
    shards = tmp_path / "demo-shards"
    prepare(PrepareConfig(data=str(demo), out=str(shards), mel_backend="torchaudio", device="cpu"), progress=False)
    meta = load_metadata(shards, ["clip_id", "speaker", "sex", "label"]).to_pandas()
    splits = shard_splits(meta, SplitConfig(seed=0, train=0.5, val=0.25, test=0.25))
    fc = read_manifest(shards)["feature_config"]
    meta_in = {"feature_config": fc, "protocol": {"corpus": "demo (synthetic)", "split": "speaker-disjoint"}}
    result = train_model("cnn", shards, splits, list(SIX), TrainConfig(epochs=1), tmp_path / "cnn",
                         torch.device("cpu"), meta=meta_in, progress=False)  # fmt: skip
    cfg = CrossCorpusConfig(
        model=str(result.model_dir), data=str(RAVDESS / "audio" / "Actor_01"), out=str(tmp_path / "xc")
    )
    out = evaluate_cross_corpus(cfg)
    assert out["n_clips"] == 44  # 60 clips, CAL 8 and SUR 8 excluded
    assert out["protocol"]["corpus"] == "cross-corpus: trained on demo (synthetic), tested on ravdess"
    summary = json.loads((tmp_path / "xc" / "shards" / "summary.json").read_text())
    assert summary["excluded_by_label"] == {"CAL": 8, "SUR": 8}
    with pytest.raises(ValueError, match="share"):
        evaluate_cross_corpus(
            CrossCorpusConfig(model=str(result.model_dir), data=str(RAVDESS / "audio" / "Actor_01"),
                              out=str(tmp_path / "xc2"), label_map={"ANG": "X1", "DIS": "X2", "FEA": "X3",
                                                                    "HAP": "X4", "NEU": "X5"})
        )  # fmt: skip


def test_ravdess_is_a_native_corpus_kind() -> None:
    corpus = load_corpus(RAVDESS)
    assert corpus.kind == "ravdess" and len(corpus.clips) == 1440 and not corpus.errors
    assert len({c.speaker for c in corpus.clips}) == 24
    six = select_labels(corpus, SIX)
    assert len(six.clips) == 1056 and six.excluded == {"CAL": 192, "SUR": 192} and six.n_files == 1440
    clip = next(c for c in corpus.clips if c.clip_id == "03-01-05-02-01-01-12")
    assert (clip.label, clip.intensity, clip.speaker, clip.sex) == ("ANG", "strong", "Actor_12", "Female")
