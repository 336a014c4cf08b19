"""The robustness suite's configuration, UA per condition and its tables (the scoring is :mod:`sononet.robustness`).

An evaluation's test clips again, perturbed as users' recordings are.

Every clip is decoded from its source file, perturbed (:mod:`sononet.perturb`) and sent through
the front end ``sononet label`` runs (silence trimming, pad/trim or windows, log-mel:
:meth:`Labeller.stored_features`), then scored by every model twice:

- speakers known: each test speaker's mean log-mel over its own perturbed clips is removed, as
  cross-validation scores test actors (``label --speaker-from`` does the same);
- speakers unknown: the model's training-speaker default is removed, as ``sononet label`` and
  the API do without speakers.

Ensembles are the mean of their members' probabilities (``evaluate.predictions.ensemble_members``).
The ``clean`` row runs the same path without a perturbation; every drop is against it, so the
table compares like with like (it can differ a little from the headline, which scores the
shards: a file longer than the window is windowed here, centre-cut there).

Cost: (1 + perturbations) x the clips' front end, plus two forward passes per model. Clips are
processed one speaker at a time (memory: one speaker's audio and features), and at most
``max_clips`` are scored, whole speakers chosen by seed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sononet.corpus.protocol import Protocol
from sononet.evaluate.metrics import confusion_matrix, headline_from_confusion
from sononet.evaluate.predictions import ensemble_members
from sononet.evaluate.tables import markdown_table, write_table
from sononet.io import atomic_write, atomic_write_bytes
from sononet.perturb import CATALOGUE, GROUPS, parse, select

log = logging.getLogger(__name__)
CLEAN = "clean"
SPEAKERS = ("known", "unknown")
NOTE = (
    "Each test clip decoded from its file, perturbed, then through `sononet label`'s front end "
    "(silence trimming, pad/trim, log-mel). Speakers known: each test speaker's mean over its own "
    "perturbed clips is removed, as cross-validation does; unknown: the training speakers' default, "
    "as `sononet label` without --speaker-from. Δ: UA minus the clean UA of the same row kind, in points."
)


@dataclass
class RobustnessConfig:
    # Perturbation names or groups (sononet.perturb): gain, peak, noise, telephone, codec (mp3), or
    # single ones such as gain-20 or opus. An empty list skips the suite.
    perturb: tuple[str, ...] = GROUPS
    seed: int = 0  # noise seed, combined with each clip's id
    # The cost bound, per fold: (1 + 8 perturbations) x this many clips. A RAVDESS fold holds 176
    # test clips, a CREMA-D split about 1,100; whole speakers are kept, chosen by `seed`.
    max_clips: int = 1000

    def __post_init__(self) -> None:
        if isinstance(self.perturb, str):
            self.perturb = parse(self.perturb)
        self.perturb = tuple(self.perturb)
        select(self.perturb)  # unknown names are refused before any work
        if self.max_clips < 1 or self.seed < 0:
            raise ValueError(f"need robustness.max_clips >= 1 and seed >= 0. Found: {self.max_clips}, {self.seed}")


def suite_clips(clips: pd.DataFrame, max_clips: int, seed: int = 0) -> pd.DataFrame:
    """At most ``max_clips`` of ``clips`` (clip_id, source_path, speaker, label): whole speakers in a
    seeded order while they fit; clips without a speaker are one group, sampled when it alone is too big."""
    if len(clips) <= max_clips:
        return clips
    rng = np.random.default_rng(seed)
    spk = clips.speaker.fillna("").astype(str)
    order = sorted(spk.unique())
    rng.shuffle(order)
    keep, total = [], 0
    for s in order:
        n = int((spk == s).sum())
        if total + n <= max_clips:
            keep.append(s)
            total += n
    if keep:
        return clips[spk.isin(keep)]
    return clips.iloc[np.sort(rng.choice(len(clips), max_clips, replace=False))]


def ua_rows(
    probs: dict, clips: pd.DataFrame, labels: Sequence[str], model_labels: list[str], models: list[str]
) -> pd.DataFrame:
    """UA per (perturbation, speakers, model), ensembles added; argmax over ``labels`` only."""
    labels = list(labels)
    cols = [model_labels.index(lab) for lab in labels]
    truth = dict(zip(clips.clip_id, clips.label, strict=True))
    rows = []
    for pert, mode in dict.fromkeys((p, m) for p, m, _ in probs):
        per_model = {m: probs[(pert, mode, m)] for m in models}
        ids = sorted(set.intersection(*(set(p) for p in per_model.values())))
        stacked = {m: np.stack([per_model[m][c] for c in ids]) for m in models}  # (n, C) each
        for name, members in ensemble_members(models).items():
            stacked[name] = np.mean([stacked[m] for m in members], axis=0)
        y = np.array([labels.index(truth[c]) for c in ids], np.int64)
        for name, p in stacked.items():
            pred = p[:, cols].argmax(axis=1)
            ua = float(headline_from_confusion(confusion_matrix(y, pred, len(labels)))["ua"]) if len(ids) else None
            rows.append({"perturbation": pert, "speakers": mode, "model": name, "n": len(ids), "ua": ua})
    return pd.DataFrame(rows, columns=["perturbation", "speakers", "model", "n", "ua"])


def with_drops(long: pd.DataFrame) -> pd.DataFrame:
    """Add ``drop``: UA minus the clean UA of the same (fold, speakers, model)."""
    keys = ["fold", "speakers", "model"]
    clean = long[long.perturbation == CLEAN].set_index(keys)["ua"].rename("clean_ua")
    out = long.join(clean, on=keys)
    out["drop"] = out["ua"] - out.pop("clean_ua")
    return out


def robustness_tables(long: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numeric, shown): rows perturbation x speakers, per model UA and drop; over folds mean ± std (ddof 1).

    ``long``: :func:`run_suite` rows with a ``fold`` column (one value for a single split).
    """
    long = with_drops(long)
    folds = long.fold.nunique()
    perts = list(dict.fromkeys(long.perturbation))
    models = list(dict.fromkeys(long.model))
    numeric, shown = [], []
    for pert in perts:
        for mode in SPEAKERS:
            part = long[(long.perturbation == pert) & (long.speakers == mode)]
            if part.empty:
                continue
            n_clips = int(part.groupby("fold").n.max().sum())
            num: dict[str, Any] = {"perturbation": pert, "speakers": mode, "n_clips": n_clips, "n_folds": folds}
            txt: dict[str, Any] = {"perturbation": pert, "speakers": mode}
            for m in models:
                rows = part[part.model == m]
                for what in ("ua", "drop"):
                    vals = rows[what].astype(float).to_numpy()
                    mean = float(np.mean(vals)) if len(vals) else None
                    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
                    num[f"{m}_{what}"], num[f"{m}_{what}_std"] = mean, std
                txt[f"{m} UA %"] = _pct(num[f"{m}_ua"], num[f"{m}_ua_std"])
                txt[f"{m} Δ"] = "" if pert == CLEAN else _pct(num[f"{m}_drop"], num[f"{m}_drop_std"], signed=True)
            numeric.append(num)
            shown.append(txt)
    return pd.DataFrame(numeric), pd.DataFrame(shown)


def _pct(mean: float | None, std: float | None, signed: bool = False) -> str:
    if mean is None or mean != mean:
        return ""
    text = f"{100 * mean:+.1f}" if signed else f"{100 * mean:.1f}"
    return text.replace("-", "−") + ("" if std is None else f" ± {100 * std:.1f}")


def describe(names: Sequence[str]) -> dict[str, str]:
    """Each row's perturbation, in words, for the table's note and metrics.json."""
    return {CLEAN: "no perturbation", **{n: CATALOGUE[n].description for n in names if n in CATALOGUE}}


def write_robustness(long: pd.DataFrame, out: Path, protocol: Protocol) -> tuple[dict[str, str], dict, list[str]]:
    """tables/robustness.{csv,md} (and robustness_folds.csv), the metrics.json entry and report.md's section."""
    numeric, shown = robustness_tables(long)
    folds = with_drops(long)
    files = write_table(numeric, out / "tables" / "robustness", protocol, "Robustness: UA under perturbations")
    per_fold = out / "tables" / "robustness_folds.csv"
    atomic_write(per_fold, lambda tmp: folds.to_csv(tmp, index=False))
    files["folds_csv"] = str(per_fold)
    described = describe(list(dict.fromkeys(long.perturbation)))
    n_folds = long.fold.nunique()
    spread = f"mean ± std over {n_folds} folds, " if n_folds > 1 else ""
    notes = [
        NOTE,
        f"UA in %, {spread}{int(numeric.n_clips.max())} test clips in all.",
        "",
        *(f"- `{name}`: {text}" for name, text in described.items()),
    ]
    md = Path(files["md"])
    atomic_write_bytes(md, (md.read_text(encoding="utf-8") + "\n" + "\n".join(notes) + "\n").encode())
    doc = {
        "note": NOTE,
        "perturbations": described,
        "rows": numeric.to_dict(orient="records"),
        "folds": folds.to_dict(orient="records"),
    }
    csv, fold_csv = (str(Path(files[k]).relative_to(out)) for k in ("csv", "folds_csv"))
    lines = [
        "## Robustness",
        "",
        *notes,
        "",
        markdown_table(shown),
        f"Table: [{csv}]({csv}), per fold: [{fold_csv}]({fold_csv})",
        "",
    ]
    return files, doc, lines
