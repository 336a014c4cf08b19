"""The predictions table that training hands to evaluation, and its checks.

One row per (model, split, fold, clip): ``clip_id, split, model, fold, true, pred``, one
``prob_<LABEL>`` column per label in label order, and optional metadata ``speaker, sex,
intensity, sentence``. Checks run before any number is computed, so a frame with a label the
evaluator does not know, or a missing probability column, fails loudly instead of being
silently dropped from a metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

REQUIRED = ("clip_id", "split", "model", "true", "pred")
METADATA = ("speaker", "sex", "intensity", "sentence")
META_COLUMNS = ("clip_id", *METADATA)  # what a predictions table takes from the shards, by clip_id
PROB_PREFIX = "prob_"
ENSEMBLE = "ensemble"  # the rows averaging every model of a run; train-all saves it as <fold>/ensemble too


def ensemble_members(models: Sequence[str]) -> dict[str, list[str]]:
    """Ensembles a run reports, each the mean of its members' probabilities: all models, and CNN + wav2vec2."""
    combos = {}
    if len(models) > 1:
        combos[ENSEMBLE] = list(models)
    if {"cnn", "wav2vec2"} <= set(models) and len(models) > 2:
        combos["cnn+wav2vec2"] = ["cnn", "wav2vec2"]
    return combos


def prob_columns(labels: Sequence[str]) -> list[str]:
    return [f"{PROB_PREFIX}{label}" for label in labels]


def check_predictions(predictions: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Validate the predictions frame against ``labels`` and return a normalised copy.

    The copy has a ``fold`` column (0 when absent), string ``model``/``split``/labels and
    every metadata column (None where the corpus does not know it).
    """
    if not isinstance(predictions, pd.DataFrame):
        raise ValueError(f"predictions must be a pandas DataFrame. Found: {type(predictions).__name__}")
    if len(predictions) == 0:
        raise ValueError("predictions is empty: no (model, clip) rows to evaluate")
    labels = [str(x) for x in labels]
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ValueError(f"labels must hold at least 2 unique classes. Found: {labels}")
    missing = [c for c in (*REQUIRED, *prob_columns(labels)) if c not in predictions.columns]
    if missing:
        raise ValueError(
            f"predictions lacks required columns {missing}; expected {list(REQUIRED)} plus "
            f"{prob_columns(labels)}. Found columns: {list(predictions.columns)}"
        )
    extra_probs = sorted(c for c in predictions.columns if c.startswith(PROB_PREFIX) and c not in prob_columns(labels))
    if extra_probs:
        raise ValueError(
            f"labels mismatch: predictions has probability columns {extra_probs} for labels not in {labels}"
        )
    frame = predictions.copy()
    for col in ("true", "pred"):
        if frame[col].isna().any():
            raise ValueError(f"column {col!r} must not hold missing labels. Found {int(frame[col].isna().sum())}")
        frame[col] = frame[col].astype(str)
        unknown = sorted(set(frame[col]) - set(labels))
        if unknown:
            raise ValueError(f"labels mismatch: column {col!r} holds labels {unknown} not in {labels}")
    for col in ("clip_id", "split", "model"):
        frame[col] = frame[col].astype(str)
    frame["fold"] = frame["fold"].fillna(0).astype(int) if "fold" in frame.columns else 0
    for col in METADATA:
        if col not in frame.columns:
            frame[col] = None
        else:
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    dup = frame.duplicated(subset=["model", "split", "fold", "clip_id"])
    if dup.any():
        first = frame.loc[dup, ["model", "split", "fold", "clip_id"]].iloc[0].tolist()
        raise ValueError(
            f"predictions must hold one row per (model, split, fold, clip_id); "
            f"{int(dup.sum())} duplicates, first {first}"
        )
    probs = frame[prob_columns(labels)].to_numpy(dtype=np.float64)
    if not np.isfinite(probs).all():
        raise ValueError(f"probability columns must be finite. Found {int((~np.isfinite(probs)).sum())} NaN/Inf")
    return frame


def prob_matrix(frame: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """Class probabilities in label order.  # (n_rows, n_labels)"""
    return frame[prob_columns(labels)].to_numpy(dtype=np.float64)


def speakers_shared_between_splits(frame: pd.DataFrame) -> dict[int, list[str]]:
    """Per fold, speakers that occur in more than one split (a speaker-disjoint run has none).

    Computed per fold because under k-fold CV a speaker is legitimately in different splits
    of different folds.
    """
    out: dict[int, list[str]] = {}
    known = frame[frame["speaker"].notna()]
    for fold, group in known.groupby("fold"):
        per_split = group.groupby("split")["speaker"].agg(lambda s: set(map(str, s)))
        if len(per_split) < 2:
            continue
        seen: dict[str, int] = {}
        for speakers in per_split:
            for s in speakers:
                seen[s] = seen.get(s, 0) + 1
        shared = sorted(s for s, c in seen.items() if c > 1)
        if shared:
            out[int(fold)] = shared
    return out
