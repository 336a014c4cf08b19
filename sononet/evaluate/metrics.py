"""Classification metrics with bootstrap confidence intervals and calibration.

Speech-emotion papers quote WA (accuracy) and UA (unweighted average recall, i.e. balanced
accuracy); on CREMA-D the classes are nearly balanced, so the two stay close, but on other
corpora they can differ a lot, hence both. Every headline number carries a percentile
bootstrap 95 % CI over clips, because a test set of ~1,500 clips moves accuracy by about
±2.5 points by chance alone, the size of most claimed improvements.

All headline metrics are computed from confusion matrices, so the point estimate and the
bootstrap replicates run through one function: a (B, K, K) stack of resampled confusion
matrices is built with a single ``bincount`` per chunk, no Python loop over replicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

HEADLINE = ("accuracy", "ua", "macro_f1", "weighted_f1")
N_ECE_BINS = 15  # the usual choice since Guo et al. 2017; few enough bins to fill on ~1,500 clips
CI_LEVEL = 0.95
_BOOT_CHUNK_ELEMENTS = 4_000_000  # resampled indices held at once: bounds memory to ~32 MB


def encode_labels(values: Sequence[str] | np.ndarray, labels: Sequence[str], what: str) -> np.ndarray:
    """Map string labels to their index in ``labels``; unknown values are an error, not a class."""
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(v) for v in values if v not in index})
    if unknown:
        raise ValueError(f"{what} holds labels not in the label set {list(labels)}. Found: {unknown}")
    return np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))


def _check_labels(labels: Sequence[str]) -> list[str]:
    labels = [str(x) for x in labels]
    if len(labels) < 2:
        raise ValueError(f"labels must hold at least 2 classes. Found: {labels}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique. Found: {labels}")
    return labels


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class.  # (K, K)"""
    codes = y_true * n_classes + y_pred
    return np.bincount(codes, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _bootstrap_confusions(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, n_boot: int, seed: int) -> np.ndarray:
    """Confusion matrices of ``n_boot`` resamples of the clips (with replacement).  # (B, K, K)"""
    n = len(y_true)
    kk = n_classes * n_classes
    codes = y_true * n_classes + y_pred  # (n,)
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOT_CHUNK_ELEMENTS // n)
    out = np.empty((n_boot, n_classes, n_classes), dtype=np.int64)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))  # (b, n)
        shifted = codes[idx] + (np.arange(b) * kk)[:, None]  # each replicate gets its own K*K slots
        out[start : start + b] = np.bincount(shifted.ravel(), minlength=b * kk).reshape(b, n_classes, n_classes)
    return out


def headline_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """WA, UA, macro-F1 and weighted-F1 of a stack of confusion matrices (..., K, K).

    Conventions match scikit-learn's defaults: UA averages recall over the classes present
    in the truth (``balanced_accuracy_score``); macro-F1 averages over classes present in
    the truth or the predictions (``f1_score(average="macro")`` without ``labels``), so a
    class absent from a small test set does not count as F1 = 0.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)  # (..., K)
    support = cm.sum(axis=-1)  # (..., K)
    predicted = cm.sum(axis=-2)  # (..., K)
    n = cm.sum(axis=(-2, -1))  # (...,)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        denom = support + predicted
        f1 = np.where(denom > 0, 2 * tp / denom, np.nan)
        return {
            "accuracy": tp.sum(axis=-1) / n,
            "ua": np.nanmean(recall, axis=-1),
            "macro_f1": np.nanmean(f1, axis=-1),
            "weighted_f1": np.nansum(f1 * support, axis=-1) / n,
        }


def calibration(probs: np.ndarray, y_true: np.ndarray, n_bins: int = N_ECE_BINS) -> dict[str, Any]:
    """Expected calibration error on the top-class probability, with the reliability bins.

    Bins are equal-width on [0, 1], right-closed ((i/M, (i+1)/M], the first also holds 0).
    The predicted class here is argmax(probs), so confidence and correctness describe the
    same decision even when a model's reported ``pred`` was made another way.
    """
    conf = probs.max(axis=1)  # (n,)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)  # (n,)
    which = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    sum_conf = np.bincount(which, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(which, weights=correct, minlength=n_bins)
    bins: list[dict[str, Any]] = []
    ece = 0.0
    for i in range(n_bins):
        c = int(counts[i])
        acc = float(sum_acc[i] / c) if c else None
        mean_conf = float(sum_conf[i] / c) if c else None
        if c:
            ece += c / len(conf) * abs(acc - mean_conf)
        bins.append({"lo": i / n_bins, "hi": (i + 1) / n_bins, "count": c, "accuracy": acc, "confidence": mean_conf})
    return {"ece": float(ece), "n_bins": n_bins, "bins": bins}


def _check_probs(probs: Any, n: int, n_classes: int) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (n, n_classes):
        raise ValueError(f"probs must have shape (n_clips, n_labels) = ({n}, {n_classes}). Found: {probs.shape}")
    if not np.isfinite(probs).all():
        raise ValueError(f"probs must be finite. Found {int((~np.isfinite(probs)).sum())} NaN/Inf values")
    if (probs < 0).any() or (probs > 1 + 1e-6).any():
        raise ValueError(f"probs must lie in [0, 1]. Found range [{probs.min():.4g}, {probs.max():.4g}]")
    worst = float(np.abs(probs.sum(axis=1) - 1).max())
    if worst > 1e-2:
        raise ValueError(f"each row of probs must sum to 1 (softmax outputs). Found a row off by {worst:.4g}")
    return probs


def compute_metrics(
    y_true: Sequence[str] | np.ndarray,
    y_pred: Sequence[str] | np.ndarray,
    probs: np.ndarray | None,
    labels: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Headline metrics with bootstrap CIs, per-class table, confusion counts and calibration.

    Args:
        y_true, y_pred: string labels, one per clip.
        probs: (n_clips, n_labels) class probabilities in ``labels`` order, or None to skip ECE.
        labels: the label set; fixes the order of the confusion matrix and per-class rows.
        n_boot: bootstrap replicates (0 turns the CIs off).
        seed: seed of the bootstrap resampling, so reruns give identical CIs.

    Returns:
        A JSON-ready dict: ``n``, ``labels``, one ``{"value", "ci_low", "ci_high"}`` per
        name in :data:`HEADLINE`, ``per_class``, ``confusion`` (K x K list, rows = truth),
        ``ece`` and ``reliability`` (None without probs), ``pred_argmax_disagree``.
    """
    labels = _check_labels(labels)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred must have the same length. Found: {len(y_true)} and {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("cannot compute metrics on zero clips. Found: empty y_true")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0. Found: {n_boot}")
    k = len(labels)
    t = encode_labels(list(y_true), labels, "y_true")
    p = encode_labels(list(y_pred), labels, "y_pred")
    n = len(t)

    cm = confusion_matrix(t, p, k)
    point = {name: float(v) for name, v in headline_from_confusion(cm).items()}
    if n_boot > 0:
        boot = headline_from_confusion(_bootstrap_confusions(t, p, k, n_boot, seed))
        tail = (1 - CI_LEVEL) / 2 * 100
        ci = {name: np.nanpercentile(v, [tail, 100 - tail]) for name, v in boot.items()}
    out: dict[str, Any] = {"n": n, "labels": labels, "n_boot": n_boot, "ci_level": CI_LEVEL, "seed": seed}
    for name in HEADLINE:
        lo, hi = (float(ci[name][0]), float(ci[name][1])) if n_boot > 0 else (None, None)
        out[name] = {"value": point[name], "ci_low": lo, "ci_high": hi}

    prec, rec, f1, sup = precision_recall_fscore_support(t, p, labels=list(range(k)), zero_division=0)
    out["per_class"] = {
        label: {
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1": float(f1[i]),
            "support": int(sup[i]),
        }
        for i, label in enumerate(labels)
    }
    out["confusion"] = cm.tolist()

    if probs is None:
        out["ece"], out["reliability"], out["pred_argmax_disagree"] = None, None, None
    else:
        pr = _check_probs(probs, n, k)
        cal = calibration(pr, t)
        out["ece"] = cal["ece"]
        out["reliability"] = {"n_bins": cal["n_bins"], "bins": cal["bins"]}
        # A model whose `pred` is not argmax(probs) (thresholding, a buggy ensemble) is worth a flag.
        out["pred_argmax_disagree"] = int((pr.argmax(axis=1) != p).sum())
    return out


def aggregate_folds(fold_metrics: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1) of each headline metric and ECE over folds.

    The spread across folds says how much the number depends on which speakers were held
    out; it is not a CI of the mean (folds share training data), so both are reported.
    """
    if len(fold_metrics) == 0:
        raise ValueError("aggregate_folds needs at least one fold's metrics. Found: empty list")
    out: dict[str, Any] = {"n_folds": len(fold_metrics), "n": int(sum(m["n"] for m in fold_metrics))}
    for name in (*HEADLINE, "ece"):
        raw = [m.get(name) for m in fold_metrics]
        vals = [r["value"] if isinstance(r, dict) else r for r in raw]
        if any(v is None for v in vals):
            out[name] = None
            continue
        arr = np.asarray(vals, dtype=np.float64)
        std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
        out[name] = {"mean": float(arr.mean()), "std": std, "values": arr.tolist()}
    return out
