"""Training curves where users already look: TensorBoard event files through ``torch.utils.tensorboard``.

Per epoch: loss and accuracy (train, val), validation UA (unweighted accuracy, the mean of
per-class recalls: what SER papers report beside WA) and the learning rate; at the end, the best
epoch's validation confusion matrix as an image. Files go to ``<model run>/tb`` (for train-all:
``runs/<name>/<model>/tb``), so ``tensorboard --logdir runs`` shows every model of every run.

``tensorboard`` is an optional extra (``pip install 'sononet[tensorboard]'``); without it training
logs one line saying so and carries on, and so it does when the folder cannot be written (``tb``
is a file, a read-only mount): the curves are optional, the model is not.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class TrainingBoard:
    """A SummaryWriter for one model's training, or a silent stand-in when disabled or not installed."""

    def __init__(self, logdir: str | Path | None, labels: list[str]) -> None:
        self.labels, self.writer = labels, None
        if logdir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info("tensorboard is not installed; no training curves (pip install 'sononet[tensorboard]')")
            return
        try:
            self.writer = SummaryWriter(log_dir=str(logdir))
        except OSError as e:  # `tb` is a file, or the folder is read-only
            log.warning("no TensorBoard curves: cannot write %s (%s); training goes on", logdir, e)

    def epoch(self, row: dict[str, Any]) -> None:
        """One history row: epoch, train_loss, train_acc, val_loss, val_acc, lr and (if present) val_ua."""
        if self.writer is None:
            return
        step = int(row["epoch"])
        for key, tag in (("train_loss", "loss/train"), ("val_loss", "loss/val"), ("train_acc", "accuracy/train"),
                         ("val_acc", "accuracy/val"), ("val_ua", "ua/val"), ("lr", "lr")):  # fmt: skip
            if row.get(key) is not None:
                self.writer.add_scalar(tag, float(row[key]), step)
        self.writer.flush()

    def confusion(self, counts: np.ndarray, step: int, tag: str = "confusion/val") -> None:
        """The (true, pred) counts as a row-normalised heat map image."""
        if self.writer is None:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        norm = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(self.labels), 0.8 + 0.6 * len(self.labels)))
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(self.labels)), self.labels)
        ax.set_yticks(range(len(self.labels)), self.labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for (i, j), n in np.ndenumerate(counts):
            ax.text(j, i, int(n), ha="center", va="center", fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
        fig.tight_layout()
        self.writer.add_figure(tag, fig, step)  # closes the figure
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
