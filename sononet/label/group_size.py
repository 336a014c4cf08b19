"""How many files must a speaker group hold before its own mean beats the training speakers' default?

``sononet speaker-groups RUN`` measures the rule behind ``label --speaker-min-files`` on a
cross-validated train-all run: each fold's selected model (``<fold>/<model>/model``, trained on the
fold's training speakers only) scores the fold's validation and test speakers, none of whom it
trained on. For every held-out speaker and group size k, ``reps`` random sets of k of the
speaker's clips form a group: its mean log-mel over the set's valid frames is removed from each
clip of the set (what ``label --speaker-from`` does with a folder of k files), and the clips are
scored. UA is pooled over speakers and draws; the same clips scored with the training default
(``unknown``) and with the speaker's mean over all its clips (``all``, as cross-validation does)
are the references. ``shift_db`` repeats it with every clip that many dB louder or quieter,
applied to the stored log-mel (exact but for bins within that much of the log-mel floor).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sononet.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class GroupSizeConfig:
    run: str  # a cross-validated train-all run: shards/ and fold-<f>/splits.json, <model>/model
    models: tuple[str, ...] = ("cnn", "bigru")
    folds: tuple[int, ...] = (0,)
    sizes: tuple[int, ...] = (
        1,
        2,
        3,
        4,
        5,
        6,
        8,
        10,
        12,
        16,
        24,
    )  # group sizes k; larger than a speaker's clips: skipped
    reps: int = 30  # random groups per speaker and size
    shift_db: tuple[float, ...] = (-20.0,)  # level changes measured besides the clean pass
    seed: int = 0
    batch_size: int = 64
    out: str | None = None  # JSON file; None: RUN/speaker-groups.json

    def __post_init__(self) -> None:
        if not self.models or not self.folds or not self.sizes:
            raise ValueError("models, folds and sizes must each name at least one value")
        if any(isinstance(k, bool) or k < 1 for k in self.sizes):
            raise ValueError(f"sizes must be positive group sizes. Found: {self.sizes}")
        if isinstance(self.reps, bool) or not 1 <= self.reps <= 10_000:
            raise ValueError(f"reps must be from 1 to 10000. Found: {self.reps}")
        if not all(np.isfinite(s) and abs(s) <= 60 for s in self.shift_db):
            raise ValueError(f"shift_db must be finite level changes within ±60 dB. Found: {self.shift_db}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1. Found: {self.batch_size}")


def _check_run(cfg: GroupSizeConfig) -> Path:
    run = Path(cfg.run)
    if not (run / "shards").is_dir():
        raise UserError(f"{run} is not a train-all run: it has no shards/ folder")
    for fold in cfg.folds:
        if isinstance(fold, bool) or not (run / f"fold-{fold}" / "splits.json").is_file():
            raise UserError(f"{run} has no fold-{fold}/splits.json: pass folds of a cross-validated run (--folds k)")
        for name in cfg.models:
            if not (run / f"fold-{fold}" / name / "model").is_dir():
                raise UserError(f"{run}/fold-{fold} has no {name}/model; the run trained {_trained(run, fold)}")
    return run


def _trained(run: Path, fold: int) -> str:
    found = sorted(p.parent.name for p in (run / f"fold-{fold}").glob("*/model"))
    return ", ".join(found) or "no models"


def shard_features(shards: Path) -> tuple[dict[str, tuple[int, str, str]], Any, Any]:
    """clip_id -> (row, label, speaker); (N, n_mels, T) stored log-mel; (N,) valid frames."""
    import pyarrow.parquet as pq
    import torch

    from sononet.features.shards import shard_paths, shard_tensor

    rows: dict[str, tuple[int, str, str]] = {}
    mels, frames = [], []
    for path in shard_paths(shards):
        t = pq.read_table(path, columns=["clip_id", "label", "speaker", "n_frames", "mel"])
        for cid, lab, spk in zip(t["clip_id"].to_pylist(), t["label"].to_pylist(), t["speaker"].to_pylist()):
            rows[cid] = (len(rows), lab, spk)
        mels.append(shard_tensor(t, "mel").astype(np.float32))
        frames.append(t["n_frames"].to_numpy().astype(np.int64))
    return rows, torch.from_numpy(np.concatenate(mels)), torch.from_numpy(np.concatenate(frames))


def measure_group_sizes(cfg: GroupSizeConfig, progress: bool = True) -> dict:
    """UA by group size for each model, clean and per level shift; written to ``cfg.out`` as JSON."""
    from sononet.io import atomic_write_bytes

    run = _check_run(cfg)
    rows, clean, lengths = shard_features(run / "shards")
    result: dict[str, Any] = {"run": str(run), "reps": cfg.reps, "folds": list(cfg.folds), "models": {}}
    for shift in (0.0, *cfg.shift_db):
        key = "ua" if shift == 0 else f"ua_gain{shift:+g}"
        for name, (actors, scores) in _measure(cfg, run, rows, clean + shift, lengths, progress).items():
            result["models"].setdefault(name, {"held_out_speakers": actors})[key] = scores
    out = Path(cfg.out) if cfg.out else run / "speaker-groups.json"
    atomic_write_bytes(out, (json.dumps(result, indent=1) + "\n").encode())
    result["out"] = str(out)
    return result


def _measure(cfg: GroupSizeConfig, run: Path, rows: dict, x: Any, lengths: Any, progress: bool) -> dict:
    from sklearn.metrics import balanced_accuracy_score
    from tqdm import tqdm

    from sononet.features.normalize import valid_frame_sums
    from sononet.label.labeller import Labeller

    truth = {i: label for i, label, _ in rows.values()}
    rng = np.random.default_rng(cfg.seed)
    out = {}
    for name in cfg.models:
        pooled: dict[str, tuple[list, list]] = {}
        speakers = 0
        for fold in tqdm(cfg.folds, desc=f"speaker-groups {name}", disable=not progress):
            splits = json.loads((run / f"fold-{fold}" / "splits.json").read_text())
            lab = Labeller(run / f"fold-{fold}" / name / "model", "cpu", "torchaudio")
            if not lab.takes_speaker:
                raise UserError(f"{name} of {run} is not speaker-normalised: it has no speaker mean to measure")
            # A speaker's mean is taken as label takes it: after the clip's level, if the model removes it.
            sums, counts = valid_frame_sums(x.numpy(), lengths.numpy(), level=lab.level)  # (N, n_mels), (N,)
            held: dict[str, list[int]] = {}
            for cid, split in splits.items():
                if split in ("val", "test") and cid in rows:
                    held.setdefault(rows[cid][2], []).append(rows[cid][0])
            speakers += len(held)
            for clips in held.values():
                clips = sorted(clips)
                whole = (sums[clips].sum(0) / counts[clips].sum()).astype(np.float32)
                draws: dict[str, list[list[int]]] = {"unknown": [clips], "all": [clips]}
                for k in (k for k in cfg.sizes if k <= len(clips)):
                    draws[str(k)] = [sorted(rng.choice(clips, k, replace=False).tolist()) for _ in range(cfg.reps)]
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
                    p += _score(lab, x, lengths, idx, offsets, cfg.batch_size)
        out[name] = (speakers, {k: round(100 * balanced_accuracy_score(t, p), 1) for k, (t, p) in pooled.items()})
    return out


def _score(lab: Any, x: Any, lengths: Any, idx: list[int], offsets: np.ndarray | None, batch: int) -> list[str]:
    preds = []
    for i in range(0, len(idx), batch):
        sel = idx[i : i + batch]
        off = None if offsets is None else offsets[i : i + batch]
        p, _ = lab.forward(x[sel], lengths[sel], off)
        preds += [lab.labels[j] for j in p.argmax(axis=1)]
    return preds
