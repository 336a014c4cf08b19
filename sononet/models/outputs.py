"""What a model's output must be before anything is written from it: one probability distribution per row.

NaN weights, a float WAV at 1e20 (its power overflows float32) or a NaN speaker mean make a model
return NaN. ``argmax`` of NaN is the first class, so without this check such a row would be written
``ok`` with a confident-looking label. Every writer asks :func:`is_distribution` first:
``sononet label`` gives the row the status ``nonfinite`` (counted in its summary, failing
``--strict``), the Python API and evaluation raise :class:`NonFiniteOutputError`.
"""

from __future__ import annotations

import numpy as np

from sononet.errors import UserError

SUM_TOLERANCE = 1e-3  # a float32 softmax (and a mean of them) sums to 1 within ~1e-6


class NonFiniteOutputError(UserError):
    """A model gave no probability distribution (NaN/Inf, or not summing to 1) for an input."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"the model's output for {what} is not a finite probability distribution (NaN or Inf): the model's "
            "weights are broken (retrain it) or the input is (e.g. float samples far outside [-1, 1])"
        )


def is_distribution(probs: np.ndarray) -> np.ndarray:
    """(N,) bool for (N, n_classes) probabilities: finite, each in [0, 1], summing to 1; (n,) -> a 0-d bool."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(all="ignore"):  # NaN and overflowing sums are answered False, not warned about
        finite = np.isfinite(p).all(axis=-1)
        ranged = ((p >= 0) & (p <= 1 + SUM_TOLERANCE)).all(axis=-1)
        summed = np.abs(p.sum(axis=-1) - 1) <= SUM_TOLERANCE
    return finite & ranged & summed


def check_distribution(probs: np.ndarray, what: str) -> np.ndarray:
    """``probs`` unchanged when every row is a distribution; else NonFiniteOutputError naming ``what``."""
    if not np.all(is_distribution(probs)):
        raise NonFiniteOutputError(what)
    return probs
