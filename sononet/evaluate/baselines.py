"""Reference points for CREMA-D: the seed's reported accuracies and the crowd's voice-only vote.

The crowd baseline is computed, never copied: for the clips a run actually tested, how
often did the majority of human raters, hearing the voice only, name the acted emotion?

Ties. ``summaryTable.csv`` writes a tied majority as several letters (``"A:N"``, with one
level per letter, ``"37.2:58.6"``); 644 of the 7,442 voice votes are ties. A tie is not a
majority for any emotion, so by default it counts as wrong (``tie_policy="wrong"``); over
all clips that gives 41.6 % accuracy with recall NEU 95.7, ANG 60.6, FEA 32.0, DIS 27.0,
HAP 26.0, SAD 16.4, the figures quoted for this baseline. Keeping the first letter
(``"first"``) gives 45.5 %, crediting the tie exactly when the acted emotion sorts first
alphabetically (A < D < F < H < N < S), which favours anger and disgust.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sononet.corpus.cremad import VOICE_VOTE_LETTERS, read_voice_votes

SEED_SOURCE = (
    "seed project's results table: CREMA-D, single T4 GPU; accuracy only; the seed does not "
    "state its split protocol (speaker-disjoint or random), so these are indicative, not "
    "like-for-like"
)
# Accuracy (WA) the seed reported; compared by model name.
SEED_ACCURACY = {"cnn": 0.65, "bigru": 0.65, "wav2vec2": 0.69}
CROWD_SOURCE = "CREMA-D summaryTable.csv, VoiceVote (crowd majority, voice only), ODbL 1.0"
TIE_POLICIES = ("wrong", "first")
_TIE = "(tie)"


def load_voice_vote_sets() -> dict[str, tuple[str, ...]]:
    """Clip id -> the emotions of the crowd's voice-only majority (several when tied)."""
    return read_voice_votes()


def _vote_set(value: Any) -> tuple[str, ...]:
    """Accept ("ANG",), "ANG", "A:N", "ANG:NEU" or read_voice_votes's (label, level) pair."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], (int, float)):
        value = value[0]
    parts = value.split(":") if isinstance(value, str) else list(value)
    return tuple(VOICE_VOTE_LETTERS.get(p.strip(), p.strip()) for p in parts if p.strip())


def crowd_baseline(
    clip_ids: Sequence[str],
    y_true: Sequence[str],
    labels: Sequence[str],
    votes: Mapping[str, Any] | None = None,
    tie_policy: str = "wrong",
) -> dict[str, Any]:
    """Accuracy, UA and per-class recall of the crowd's voice-only vote on the given clips.

    Clips without a vote (not CREMA-D, or renamed) are skipped and counted, never guessed.
    ``votes`` defaults to :func:`load_voice_vote_sets`; ``tie_policy`` is "wrong" (a tie is
    no majority) or "first" (keep the first letter, as ``read_voice_votes`` does).
    """
    if tie_policy not in TIE_POLICIES:
        raise ValueError(f"tie_policy must be one of {TIE_POLICIES}. Found: {tie_policy!r}")
    if len(clip_ids) != len(y_true):
        raise ValueError(f"clip_ids and y_true must have the same length. Found: {len(clip_ids)} and {len(y_true)}")
    votes = load_voice_vote_sets() if votes is None else votes
    true, pred = [], []
    n_ties = 0
    for clip, label in zip(clip_ids, y_true, strict=True):
        if clip not in votes:
            continue
        vs = _vote_set(votes[clip])
        if not vs:
            continue
        n_ties += len(vs) > 1
        true.append(str(label))
        pred.append(vs[0] if len(vs) == 1 or tie_policy == "first" else _TIE)
    out: dict[str, Any] = {
        "source": CROWD_SOURCE,
        "tie_policy": tie_policy,
        "n_clips": len(clip_ids),
        "n_with_vote": len(true),
        "n_skipped_no_vote": len(clip_ids) - len(true),
        "n_ties": int(n_ties),
    }
    if not true:
        out.update(accuracy=None, ua=None, per_class_recall={})
        return out
    t, p = np.asarray(true), np.asarray(pred)
    recall = {c: float((p[t == c] == c).mean()) if (t == c).any() else None for c in labels}
    present = [r for r in recall.values() if r is not None]
    out.update(accuracy=float((t == p).mean()), ua=float(np.mean(present)), per_class_recall=recall)
    return out


def seed_comparison(test_accuracy: Mapping[str, float]) -> pd.DataFrame:
    """Our test accuracy next to the seed's, in percent, for every model the seed reported."""
    rows = []
    for model, seed_acc in SEED_ACCURACY.items():
        ours = test_accuracy.get(model)
        rows.append(
            {
                "model": model,
                "seed WA %": 100 * seed_acc,
                "our WA %": None if ours is None else 100 * ours,
                "difference (points)": None if ours is None else 100 * (ours - seed_acc),
            }
        )
    return pd.DataFrame(rows, columns=["model", "seed WA %", "our WA %", "difference (points)"])
