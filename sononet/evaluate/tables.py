"""Result tables (CSV and Markdown), each carrying the protocol that produced its numbers.

A CSV gets protocol columns (so a table pasted into a spreadsheet still says "synthetic" or
"leaky split" on every row); a Markdown file gets a protocol line above the table. The
Markdown writer is our own because ``DataFrame.to_markdown`` needs ``tabulate``, which the
project does not depend on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sononet.corpus.protocol import Protocol
from sononet.io import atomic_write, atomic_write_bytes

UNKNOWN_GROUP = "(unknown)"


def _cell(value: Any, floatfmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return format(float(value), floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """GitHub-flavoured Markdown for ``df`` (index dropped); numbers right-aligned."""
    cols = [str(c) for c in df.columns]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    lines = [
        "| " + " | ".join(_cell(c, floatfmt) for c in cols) + " |",
        "| " + " | ".join("---:" if num else "---" for num in numeric) + " |",
    ]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v, floatfmt) for v in row) + " |")
    return "\n".join(lines) + "\n"


def with_protocol_columns(df: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    """Append protocol columns; a per-model ``pretrained`` column when the table has ``model``."""
    out = df.copy()
    out["corpus"] = protocol.corpus
    out["split_protocol"] = protocol.split
    out["folds"] = protocol.folds
    out["seed"] = protocol.seed
    if "model" in out.columns:
        out["pretrained"] = [protocol.pretrained_note(str(m)) for m in out["model"]]
    return out


def write_table(df: pd.DataFrame, stem: Path, protocol: Protocol, title: str, floatfmt: str = ".3f") -> dict[str, str]:
    """Write ``stem``.csv (protocol columns) and ``stem``.md (title, protocol line, table)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    atomic_write(csv_path, lambda tmp: with_protocol_columns(df, protocol).to_csv(tmp, index=False))
    atomic_write_bytes(md_path, f"# {title}\n\n{protocol.line()}\n\n{markdown_table(df, floatfmt)}".encode())
    return {"csv": str(csv_path), "md": str(md_path)}


def per_class_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """One row per label: precision, recall, F1, support (from :func:`compute_metrics`)."""
    rows = [{"label": label, **vals} for label, vals in metrics["per_class"].items()]
    return pd.DataFrame(rows, columns=["label", "precision", "recall", "f1", "support"])


def _ua(true: np.ndarray, pred: np.ndarray) -> float:
    """Balanced accuracy over the classes present in ``true`` (groups can lack a class)."""
    recalls = [float((pred[true == c] == c).mean()) for c in np.unique(true)]
    return float(np.mean(recalls))


def breakdown_table(frame: pd.DataFrame, by: str, keys: Sequence[str] = ("model", "split")) -> pd.DataFrame:
    """Accuracy and UA per value of metadata column ``by``, per (model, split).

    Clips with unknown metadata form their own ``(unknown)`` group rather than vanishing.
    Returns an empty frame when the column is absent or entirely unknown.
    """
    columns = [*keys, by, "n", "accuracy", "ua"]
    if by not in frame.columns or frame[by].isna().all():
        return pd.DataFrame(columns=columns)
    groups = frame[by].astype(object).where(frame[by].notna(), UNKNOWN_GROUP).astype(str)
    rows = []
    for key_vals, group in frame.assign(_group=groups).groupby([*keys, "_group"], sort=True):
        true, pred = group["true"].to_numpy(), group["pred"].to_numpy()
        rows.append(
            {
                **dict(zip([*keys, by], key_vals, strict=True)),
                "n": len(group),
                "accuracy": float((true == pred).mean()),
                "ua": _ua(true, pred),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def wide_breakdown(long: pd.DataFrame, by: str, split: str = "test") -> pd.DataFrame:
    """Groups as rows, ``<model> WA`` / ``<model> UA`` as columns, for the report."""
    part = long[long["split"] == split]
    if part.empty:
        return pd.DataFrame()
    out = pd.DataFrame({by: sorted(part[by].unique())})
    n = part.groupby(by)["n"].max()
    out["n"] = out[by].map(n).astype(int)
    for model, g in part.groupby("model", sort=True):
        idx = g.set_index(by)
        out[f"{model} WA"] = out[by].map(idx["accuracy"])
        out[f"{model} UA"] = out[by].map(idx["ua"])
    return out


def speaker_summary(long: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Spread of per-speaker accuracy per model: how uneven a model is across voices."""
    part = long[long["split"] == split]
    rows = []
    for model, g in part.groupby("model", sort=True):
        acc = g["accuracy"].to_numpy()
        worst = g.loc[g["accuracy"].idxmin()]
        rows.append(
            {
                "model": model,
                "speakers": len(g),
                "mean WA": float(acc.mean()),
                "std WA": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                "min WA": float(acc.min()),
                "max WA": float(acc.max()),
                "worst speaker": str(worst["speaker"]),
            }
        )
    return pd.DataFrame(rows)
