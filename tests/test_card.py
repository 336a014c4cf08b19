"""Model cards: every saved model folder explains itself, with metrics once train-all has them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_label import save_tiny

from sononet.models.card import render_card, write_card

ROOT = Path(__file__).resolve().parents[1]


def test_saved_model_has_a_card(tmp_path: Path) -> None:
    card = (save_tiny(tmp_path / "cnn" / "model") / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: sononet\npipeline_tag: audio-classification")
    for needle in ("Labels (3): ANG, HAP, SAD", "trained from scratch", "| n_mels | 32 |", "Not evaluated yet",
                   "## Intended use and limits", "check the licence of your training corpus"):  # fmt: skip
        assert needle in card, needle


@pytest.mark.checkout  # reads the repository, not the installed package
def test_card_with_metrics_protocol_and_licence(tmp_path: Path) -> None:
    model_dir = save_tiny(tmp_path / "cnn" / "model")
    doc = json.loads((model_dir / "config.json").read_text())
    doc["meta"]["protocol"] = {"corpus": "cremad", "split": "speaker-disjoint", "folds": 1, "seed": 0}
    (model_dir / "config.json").write_text(json.dumps(doc))
    metrics = json.loads((ROOT / "results" / "demo" / "metrics.json").read_text())
    card = write_card(model_dir, metrics).read_text()
    assert "| test | 164 | 65.9 [57.9, 72.6] | 66.0 [59.3, 72.3] |" in card  # docs/recipe.md's demo CNN row
    assert "corpus: **cremad** (English, acted" in card and "ODbL" in card
    assert "split protocol: speaker-disjoint" in card
    doc["describe"] = "random-init tiny, not pretrained"
    doc["meta"]["protocol"]["corpus"] = "demo (synthetic)"
    demo = render_card(doc)
    assert "NOT pretrained" in demo and "synthetic demo corpus: its labels on real speech mean nothing" in demo


def test_card_says_how_the_model_was_augmented(tmp_path: Path) -> None:
    from dataclasses import asdict

    from sononet.train.config import TrainConfig
    from sononet.train.profiles import resolve_train

    doc = json.loads((save_tiny(tmp_path / "cnn" / "model") / "config.json").read_text())
    train = resolve_train(TrainConfig(), "real")  # the real profile: VTLP for the BiGRU alone
    doc["meta"]["train_config"] = asdict(train)
    masks = "SpecAugment (2 masks of up to 16 mels and 12 frames)"
    assert f"- augmentation: {masks}, noise 0.05\n" in render_card(doc)
    doc["model"] = "bigru"
    assert f"- augmentation: {masks}, VTLP 0.1, noise 0.05\n" in render_card(doc)
