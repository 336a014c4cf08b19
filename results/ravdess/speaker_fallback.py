"""Test UA of a cross-validated run's models with speakers known (as train-all scores) and unknown
(as `sononet label` and `EmotionClassifier` without `speaker=` score).

    python results/ravdess/speaker_fallback.py runs/ravdess-6class cnn,bigru > speaker-fallback.json

Reads each fold's splits.json and the saved model that train-all tested (its refit, where the run
refit its models); the shards are the run's own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score

from sononet.models.saving import load_model
from sononet.train.predict import predict


def main(run: Path, models: list[str]) -> dict:
    out = {}
    for name in models:
        scores = {"known": [], "unknown": []}
        for fold_dir in sorted(run.glob("fold-*")):
            splits = json.loads((fold_dir / "splits.json").read_text())
            test = [c for c, s in splits.items() if s == "test"]
            refit = fold_dir / name / "refit" / "model"  # what train-all tests, when the run refit its models
            model, saved = load_model(refit if refit.is_dir() else fold_dir / name / "model")
            for key, known in (("known", True), ("unknown", False)):
                p = predict(model, saved["meta"], run / "shards", test, torch.device("cpu"), known_speakers=known)
                scores[key].append(100 * balanced_accuracy_score(p.true, p.pred))
        out[name] = {k: [float(np.mean(v)), float(np.std(v, ddof=1))] for k, v in scores.items()}
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2].split(",")), indent=1))
