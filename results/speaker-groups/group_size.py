"""How many files must a speaker group hold before its own mean beats the training speakers' default?

    python results/speaker-groups/group_size.py RUN cnn,bigru 0 > results/speaker-groups/group_size.json

RUN is a cross-validated train-all run on RAVDESS (its shards and ``fold-<f>/splits.json``); the
third argument lists the folds to use. Each fold's selected model (``<model>/model``, trained on
the training actors only) scores the fold's validation and test actors, none of whom it trained
on. For every held-out actor and group size k, ``REPS`` random sets of k of the actor's clips
form a group: its mean log-mel over the set's valid frames is removed from each clip of the set
(what ``label --speaker-from`` does with a folder of k files), and the clips are scored. UA is
pooled over actors and draws; the same clips scored with the training default (``unknown``) and
with the actor's mean over all its clips (``all``, as cross-validation does) are the references.
A second pass repeats it with every clip 20 dB quieter, approximated on the stored log-mel as
-20 dB in every bin (exact but for bins within 20 dB of the -100 dB floor).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from sklearn.metrics import balanced_accuracy_score

from sononet.features.normalize import valid_frame_sums
from sononet.features.shards import shard_paths, shard_tensor
from sononet.label.labeller import Labeller

SIZES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24)
REPS = 30
SHIFT_DB = -20.0  # the level change of the second pass
BATCH = 64


def shard_features(shards: Path) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """clip_id -> (row, label, speaker); (N, n_mels, T) stored log-mel; (N,) valid frames."""
    rows, mels, frames = {}, [], []
    for path in shard_paths(shards):
        t = pq.read_table(path, columns=["clip_id", "label", "speaker", "n_frames", "mel"])
        for cid, lab, spk in zip(t["clip_id"].to_pylist(), t["label"].to_pylist(), t["speaker"].to_pylist()):
            rows[cid] = (len(rows), lab, spk)
        mels.append(shard_tensor(t, "mel").astype(np.float32))
        frames.append(t["n_frames"].to_numpy().astype(np.int64))
    return rows, torch.from_numpy(np.concatenate(mels)), torch.from_numpy(np.concatenate(frames))


def score(lab: Labeller, x: torch.Tensor, lengths: torch.Tensor, idx: list[int], offsets: np.ndarray | None) -> list:
    preds = []
    for i in range(0, len(idx), BATCH):
        sel = idx[i : i + BATCH]
        off = None if offsets is None else offsets[i : i + BATCH]
        p, _ = lab.forward(x[sel], lengths[sel], off)
        preds += [lab.labels[j] for j in p.argmax(axis=1)]
    return preds


def main(run: Path, models: list[str], folds: list[int]) -> dict:
    rows, clean, lengths = shard_features(run / "shards")
    out: dict = {"reps": REPS, "folds": folds, "models": {}}
    for shift, key in ((0.0, "ua"), (SHIFT_DB, "ua_gain-20")):
        x = clean + shift
        for name, result in measure(run, models, folds, rows, x, lengths).items():
            out["models"].setdefault(name, {"held_out_actors": result[0]})[key] = result[1]
    return out


def measure(run: Path, models: list[str], folds: list[int], rows: dict, x: torch.Tensor, lengths: torch.Tensor) -> dict:
    sums, counts = valid_frame_sums(x.numpy(), lengths.numpy())  # (N, n_mels), (N,)
    truth = {i: label for i, label, _ in rows.values()}
    rng = np.random.default_rng(0)
    out = {}
    for name in models:
        pooled: dict[str, tuple[list, list]] = {}
        actors = 0
        for fold in folds:
            splits = json.loads((run / f"fold-{fold}" / "splits.json").read_text())
            lab = Labeller(run / f"fold-{fold}" / name / "model", "cpu", "torchaudio")
            held = {}
            for cid, split in splits.items():
                if split in ("val", "test"):
                    held.setdefault(rows[cid][2], []).append(rows[cid][0])
            actors += len(held)
            for clips in held.values():
                clips = sorted(clips)
                whole = (sums[clips].sum(0) / counts[clips].sum()).astype(np.float32)
                draws: dict[str, list[list[int]]] = {"unknown": [clips], "all": [clips]}
                for k in SIZES:
                    draws[str(k)] = [sorted(rng.choice(clips, k, replace=False).tolist()) for _ in range(REPS)]
                for key, sets in draws.items():
                    idx = [i for s in sets for i in s]
                    if key == "unknown":
                        offsets = None
                    elif key == "all":
                        offsets = np.repeat(whole[None], len(idx), axis=0)
                    else:
                        means = [(sums[s].sum(0) / counts[s].sum()).astype(np.float32) for s in sets]
                        offsets = np.concatenate([np.repeat(m[None], len(s), axis=0) for m, s in zip(means, sets)])
                    t, p = pooled.setdefault(key, ([], []))
                    t += [truth[i] for i in idx]
                    p += score(lab, x, lengths, idx, offsets)
        out[name] = (actors, {k: round(100 * balanced_accuracy_score(t, p), 1) for k, (t, p) in pooled.items()})
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    result = main(Path(sys.argv[1]), sys.argv[2].split(","), [int(f) for f in sys.argv[3].split(",")])
    print(json.dumps(result, indent=1))
