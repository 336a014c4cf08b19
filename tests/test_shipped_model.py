"""The ready model in results/models/ravdess-6: it loads as one model and labels real speech.

It was trained on every RAVDESS actor (``sononet train-final``), so these clips are training clips:
the test checks that the shipped folder is complete and scores as trained (a broken member, a lost
normalisation or a wrong label order would fail it), not how well it generalises; its card has the
cross-validated scores of its recipe.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import shared_corpus

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "results" / "models" / "ravdess-6"
RAVDESS = shared_corpus("ravdess")
CODES = {"01": "NEU", "04": "SAD", "05": "ANG", "06": "FEA", "07": "DIS", "03": "HAP"}
pytestmark = [pytest.mark.real_speech("ravdess"), pytest.mark.checkout]


def clips(actors: range) -> list[tuple[Path, str]]:
    """Every six-class clip of ``actors`` with its label from the RAVDESS name."""
    found = []
    for actor in actors:
        for path in sorted((RAVDESS / "audio" / f"Actor_{actor:02d}").glob("*.flac")):
            code = path.stem.split("-")[2]
            if code in CODES:
                found.append((path, CODES[code]))
    return found


def test_the_shipped_folder_is_an_ensemble_with_its_licence_and_card() -> None:
    doc = json.loads((SHIPPED / "ensemble.json").read_text())
    assert doc["members"] == ["cnn/model", "bigru/model"]
    assert "Attribution-NonCommercial-ShareAlike" in (SHIPPED / "LICENSE").read_text()
    card = (SHIPPED / "README.md").read_text()
    assert "mean ± std over 6" in card and "CC BY-NC-SA 4.0" in card
    assert not list(SHIPPED.rglob("checkpoint"))  # weights only: no optimiser state shipped


def test_api_labels_real_clips_as_trained() -> None:
    from sononet import EmotionClassifier

    clf = EmotionClassifier.load(SHIPPED, device="cpu")
    assert clf.labels == ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
    chosen = clips(range(1, 25, 6))  # 4 actors, 176 clips
    preds = [p[0]["label"] for p in clf.predict([str(path) for path, _ in chosen])]
    agree = sum(p == want for p, (_, want) in zip(preds, chosen, strict=True)) / len(chosen)
    assert len(chosen) == 176 and agree >= 0.8, f"{agree:.0%} of training clips labelled as annotated"


def test_label_command_on_a_real_folder(tmp_path: Path) -> None:
    from sononet.cli import main

    folder = RAVDESS / "audio" / "Actor_02"
    out = tmp_path / "labels.parquet"
    args = ["label", str(folder), "--model", str(SHIPPED), "--out", str(out), "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = pd.read_parquet(out)
    files = rows[rows.scope == "file"]
    assert len(files) == 60 and (files.status == "ok").all()
    assert files.model_id.str.startswith("ensemble@").all()
