"""Does refitting on train + val help, and for how many epochs? Measured without touching a test
actor (sixth and seventh rounds).

    python results/ravdess/nested_refit.py runs/nested cnn,bigru 0,1,2,3,4,5 1 > nested-refit.jsonl
    python results/ravdess/nested_refit.py runs/nested cnn,bigru 0,1,2,3,4,5 5 > nested-refit-w5.jsonl
    python results/ravdess/nested_refit.py runs/nested-int cnn 0,1,2,3,4,5 5 train.intensity_aux=true  # eighth round
    python results/ravdess/nested_refit.py runs/nested-bs16 cnn 0,1,2,3,4,5 5 train.batch_size=16  # ninth round
    python results/ravdess/nested_refit.py runs/nested-lr cnn 0,1,2,3,4,5 5 train.model_overrides.cnn.lr=0.0005
    python results/ravdess/nested_refit.py runs/nested-trim40 cnn 0,1,2,3,4,5 5 prepare.features.trim_silence_db=40
    python results/ravdess/nested_refit.py runs/mix cnn 0,1,2,3,4,5 5 train.model_overrides.cnn.augment.mixup_alpha=0.2
    python results/ravdess/nested_refit.py runs/aux8 cnn 0,1,2,3,4,5 5 \
        'prepare.labels=["ANG","DIS","FEA","HAP","NEU","SAD","CAL","SUR"]'  # twelfth round

For each outer fold of the 6-fold RAVDESS split (6 classes): R = its 16 training actors, V = its 4
validation actors; its test actors are never read. Inside R, another fold's validation group G
(4 actors) chooses the epoch for model A, trained on the other 12; B is A's refit on all of R
(``refit_model`` at A's learning rates, for ``refit_epochs`` of A's history with the last argument
as the window: 1 is A's best epoch, the sixth round; 5 is the default since the seventh). A, B and
the mean of the models' probabilities (ensemble) are scored on V, which none of them has seen.
Arguments after the window change the experiment's spec for a variant, as sononet-batch's
``--set`` does (``train.batch_size=16``, ``prepare.features.trim_silence_db=40``; checked, TOML
values); give it its own OUT (its shards can be a link to another OUT's unless it changes
``prepare``). Classes that ``prepare.labels`` adds to the six (CAL, SUR: twelfth round) train as
classes of their own and are never scored: validation and V keep the six classes, and V is
scored on the six classes' columns (the speakers' means still take in all their clips). A rerun
into the same OUT reuses finished A and B models (``resume``), so the window can be changed and
only B retrains. Prepares the shards in OUT/shards with the real profile's features on first
use; one line of JSON per fold.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score

from sononet.corpus.cremad import EMOTIONS
from sononet.corpus.splits import speaker_folds
from sononet.evaluate.predictions import META_COLUMNS
from sononet.experiment import ExperimentConfig, resolve_experiment
from sononet.features.reader import load_metadata, read_manifest
from sononet.jobs import apply_overrides, from_dict
from sononet.models.saving import load_model
from sononet.prepare import prepare
from sononet.train.loop import train_model
from sononet.train.predict import predict
from sononet.train.refit import refit_epochs, refit_model
from sononet.train.shard_info import shard_labels

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "ravdess"
CPU = torch.device("cpu")


def main(out: Path, models: list[str], folds: list[int], window: int, overrides: list[str]) -> None:
    six = list(EMOTIONS)  # CREMA-D's classes; RAVDESS's CAL and SUR are excluded
    spec = {"out": str(out), "device": "cpu", "prepare": {"data": str(DATA), "labels": six}, "split": {"folds": 6}}
    cfg = resolve_experiment(from_dict(ExperimentConfig, apply_overrides(spec, overrides)))
    train = cfg.train
    shards = cfg.prepare.out
    prepare(cfg.prepare, progress=False)
    manifest, meta = read_manifest(shards), load_metadata(shards, [*META_COLUMNS, "label"]).to_pandas()
    labels, fm = shard_labels(manifest, meta), {"feature_config": manifest["feature_config"]}
    groups = speaker_folds(meta.groupby("speaker").sex.first().to_dict(), cfg.split)
    for f in folds:
        own = groups[f]
        r = {s for s, x in own.items() if x == "train"}
        v = {s for s, x in own.items() if x == "val"}
        g = next(grp for grp in ({s for s, x in k.items() if x == "val"} for k in groups) if grp <= r)
        inner = {c: ("val" if s in g else "train") for c, s, y in zip(meta.clip_id, meta.speaker, meta.label)
                 if s in r and (y in six or s not in g)}  # fmt: skip
        v_ids = [c for c, s in zip(meta.clip_id, meta.speaker) if s in v]
        probs: dict[str, np.ndarray] = {}
        row: dict = {"fold": f, "inner_val": sorted(g), "scored_on": sorted(v)}
        for name in models:
            a = train_model(name, shards, inner, labels, train, out / f"fold-{f}" / name / "A", CPU, resume=True,
                            meta=fm, progress=False)  # fmt: skip
            n = refit_epochs(a.history, train.select_on, window)
            b = refit_model(name, shards, list(inner), labels, train, out / f"fold-{f}" / name / f"B-w{window}", CPU,
                            a.history[:n], resume=True, meta=fm, progress=False)  # fmt: skip
            row[f"{name}_best_epoch"], row[f"{name}_epochs"] = a.best_epoch, n
            for key, run in (("A", a), ("B", b)):
                model, saved = load_model(run.model_dir)
                p = predict(model, saved["meta"], shards, v_ids, CPU).set_index("clip_id").loc[v_ids]
                p = p[p["true"].isin(six)]  # clips of classes beyond the six trained, never scored
                probs[f"{name}_{key}"] = p[[f"prob_{c}" for c in six]].to_numpy()
                truth = p["true"].to_numpy()
        for key in ("A", "B"):
            probs[f"ensemble_{key}"] = np.mean([probs[f"{m}_{key}"] for m in models], axis=0)
        for key, prob in probs.items():
            row[f"{key}_ua"] = round(100 * balanced_accuracy_score(truth, np.array(six)[prob.argmax(1)]), 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    folds = [int(x) for x in sys.argv[3].split(",")]
    main(Path(sys.argv[1]), sys.argv[2].split(","), folds, int(sys.argv[4]), sys.argv[5:])
