"""PNG figures: confusion matrices, training curves, reliability diagrams.

Figures are built with matplotlib's object API on an Agg canvas, never through ``pyplot``,
so evaluation does not switch the process-wide backend (a notebook or GUI that imported us
keeps its own) and holds no global figure state between calls. Every figure's title
carries the corpus and split protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sononet.corpus.protocol import Protocol
from sononet.io import atomic_write

DPI = 110  # sharp enough for a README, small enough to commit under results/


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return str(path)


def _short_protocol(protocol: Protocol) -> str:
    return f"{protocol.corpus}, {protocol.split} split"


def plot_confusion(
    confusion: Sequence[Sequence[int]],
    labels: Sequence[str],
    title: str,
    protocol: Protocol,
    path: Path,
) -> str:
    """Counts and row-normalised (recall per true class) side by side."""
    cm = np.asarray(confusion, dtype=np.float64)  # (K, K), rows = truth
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(labels)
    side = max(3.2, 0.55 * k + 1.8)
    fig = _figure(2 * side + 0.6, side + 0.4)
    axes = fig.subplots(1, 2)
    for ax, mat, name, fmt in (
        (axes[0], cm, "counts", "{:.0f}"),
        (axes[1], norm, "row-normalised", "{:.2f}"),
    ):
        vmax = mat.max() if mat.max() > 0 else 1.0
        im = ax.imshow(mat, cmap="Blues", vmin=0, vmax=vmax)
        ax.set_xticks(range(k), labels, rotation=45, ha="right")
        ax.set_yticks(range(k), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
        for i in range(k):
            for j in range(k):
                colour = "white" if mat[i, j] > 0.6 * vmax else "black"
                ax.text(j, i, fmt.format(mat[i, j]), ha="center", va="center", fontsize=8, color=colour)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"{title}\n{_short_protocol(protocol)}", fontsize=10)
    return _save(fig, path)


def plot_training_curves(history: Sequence[Mapping[str, Any]], title: str, protocol: Protocol, path: Path) -> str:
    """Loss and accuracy per epoch, train vs validation; missing series are skipped."""
    fig = _figure(9, 3.6)
    axes = fig.subplots(1, 2)
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    for ax, metric in ((axes[0], "loss"), (axes[1], "acc")):
        for part, style in (("train", "-"), ("val", "--")):
            key = f"{part}_{metric}"
            pts = [(e, h[key]) for e, h in zip(epochs, history, strict=True) if h.get(key) is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, style, marker="o", markersize=3, label=part)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if metric == "acc" else "loss")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend()
    fig.suptitle(f"{title}\n{_short_protocol(protocol)}", fontsize=10)
    return _save(fig, path)


def plot_reliability(reliability: Mapping[str, Any], ece: float, title: str, protocol: Protocol, path: Path) -> str:
    """Accuracy per confidence bin against the diagonal, with the clip count per bin below."""
    bins = reliability["bins"]
    lo = np.array([b["lo"] for b in bins])
    width = float(bins[0]["hi"] - bins[0]["lo"])
    acc = np.array([b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins])
    conf = np.array([b["confidence"] if b["confidence"] is not None else np.nan for b in bins])
    counts = np.array([b["count"] for b in bins])
    fig = _figure(4.8, 5.6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(lo, acc, width=width, align="edge", edgecolor="black", alpha=0.8, label="accuracy")
    # The dot sits at the bin's mean confidence: its distance to the bar top is the bin's gap.
    top.plot(lo + width / 2, conf, "o", color="tab:red", markersize=4, label="mean confidence")
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(f"ECE = {ece:.3f} ({len(bins)} bins)", fontsize=9)
    bottom.bar(lo, counts, width=width, align="edge", edgecolor="black", color="grey")
    bottom.set_xlabel("confidence (max probability)")
    bottom.set_ylabel("clips")
    fig.suptitle(f"{title}\n{_short_protocol(protocol)}", fontsize=10)
    return _save(fig, path)
