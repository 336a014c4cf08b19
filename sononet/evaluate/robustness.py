"""The robustness suite: an evaluation's test clips again, perturbed as users' recordings are.

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
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sononet.corpus.protocol import Protocol
from sononet.evaluate.metrics import confusion_matrix, headline_from_confusion
from sononet.evaluate.predictions import ensemble_members
from sononet.evaluate.tables import markdown_table, write_table
from sononet.perturb import CATALOGUE, GROUPS, Perturbation, parse, select

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


def run_suite(
    model_dirs: Mapping[str, str | Path], clips: pd.DataFrame, labels: Sequence[str], cfg: RobustnessConfig,
    device: str = "auto", progress: bool = False,
) -> pd.DataFrame:  # fmt: skip
    """UA of each model and ensemble on ``clips``, clean and under each perturbation, speakers known and unknown.

    Args:
        model_dirs: table name -> saved model folder (all with the same labels).
        clips: clip_id, source_path, speaker, label (the true class, one of ``labels``).
        labels: the classes scored (a model's other classes are ignored, as cross-corpus does).

    Returns:
        One row per (perturbation, speakers, model): n (clips scored) and ua (0-1).
    """
    clips = suite_clips(clips, cfg.max_clips, cfg.seed)
    probs, model_labels = suite_probabilities(model_dirs, clips, cfg, device, progress)
    return _ua_rows(probs, clips, labels, model_labels, list(model_dirs))


def suite_probabilities(
    model_dirs: Mapping[str, str | Path], clips: pd.DataFrame, cfg: RobustnessConfig, device: str = "auto",
    progress: bool = False,
) -> tuple[dict[tuple[str, str, str], dict[str, np.ndarray]], list[str]]:  # fmt: skip
    """((perturbation, speakers, model) -> clip_id -> (n_classes,) probabilities, the models' labels).

    Clips whose file cannot be decoded are left out (logged). One speaker at a time: its clips
    are decoded once, then each perturbation's windows are featurised once per feature path and
    scored by every model on it, with the speaker's mean (known) and the default (unknown).
    """
    from tqdm import tqdm

    from sononet.device import decode_workers
    from sononet.label.labeller import Labeller

    labs = {name: Labeller(d, device, "auto") for name, d in model_dirs.items()}
    paths: dict[tuple, list[str]] = {}  # one front end per feature path, shared by the models on it
    for name, lab in labs.items():
        paths.setdefault((lab.kind, lab.features.hash(), lab.mel_backend), []).append(name)
    perts: list[Perturbation | None] = [None, *select(cfg.perturb)]
    probs: dict[tuple[str, str, str], dict[str, np.ndarray]] = {}
    groups = list(clips.groupby(clips.speaker.fillna("").astype(str), sort=True))
    bar = tqdm(total=len(groups) * len(perts), desc="robustness", unit="speaker x pert", disable=not progress)
    with ThreadPoolExecutor(max_workers=decode_workers()) as pool:
        for _, group in groups:
            for names in paths.values():
                _score_group(group, [labs[n] for n in names], names, perts, cfg.seed, pool, probs)
            bar.update(len(perts))
    bar.close()
    return probs, next(iter(labs.values())).labels


def _decode(path: str, sr: int) -> np.ndarray | None:
    from sononet.audio import AudioConfig, load_audio
    from sononet.errors import AudioError

    audio = AudioConfig(sample_rate=sr)
    try:  # a file past long_duration_s is scored on its central part
        return load_audio(path, audio, max_samples=int(audio.long_duration_s * sr)).samples
    except AudioError as e:
        log.warning("robustness: %s left out (%s)", path, e)
        return None


def _score_group(
    group: pd.DataFrame, labs: list, names: list[str], perts: list[Perturbation | None], seed: int,
    pool: ThreadPoolExecutor, probs: dict,
) -> None:  # fmt: skip
    """One speaker's clips through one feature path: clean and each perturbation, every model, both speaker modes."""
    from sononet.audio import AudioConfig
    from sononet.features.normalize import valid_frame_sums
    from sononet.label.engine import resolve_window, windows_of
    from sononet.label.run import LabelConfig
    from sononet.label.windows import Source

    lead = labs[0]  # the same features for every model here
    sr = lead.features.sample_rate
    window_s, _, (length, hop) = resolve_window(lead, None, None)
    audio, whole_s = AudioConfig(sample_rate=sr), lead.clip_span_s(window_s)
    decoded = dict(zip(group.clip_id, pool.map(lambda p: _decode(p, sr), group.source_path), strict=True))
    ids = [c for c, w in decoded.items() if w is not None]

    def perturbed(pert: Perturbation | None, cid: str) -> list[np.ndarray]:
        w = decoded[cid] if pert is None else pert(decoded[cid], sr, key=cid, seed=seed)
        return [
            clip for _, clip in windows_of(Source(cid, samples=w, duration_s=w.size / sr), length, hop, audio, whole_s)
        ]

    for pert in perts:
        windows = list(pool.map(lambda c, p=pert: perturbed(p, c), ids))  # per clip: its window clips
        owner = np.repeat(np.arange(len(ids)), [len(w) for w in windows])  # (n_windows,) clip index
        flat = [c for w in windows for c in w]
        batch = LabelConfig.batch_size
        feats = [lead.stored_features(flat[i : i + batch], length) for i in range(0, len(flat), batch)]
        mean = None
        if any(lab.takes_speaker for lab in labs):  # the speaker's mean over all its perturbed windows
            sums = [valid_frame_sums(x.cpu().numpy(), n.numpy()) for x, n in feats]
            mean = (sum(s.sum(0) for s, _ in sums) / max(sum(int(n.sum()) for _, n in sums), 1)).astype(np.float32)
        key = CLEAN if pert is None else pert.name
        for name, lab in zip(names, labs, strict=True):
            unknown = _file_probs(lab, feats, None, owner, len(ids))
            known = _file_probs(lab, feats, mean, owner, len(ids)) if lab.takes_speaker else unknown
            for mode, p in (("known", known), ("unknown", unknown)):
                probs.setdefault((key, mode, name), {}).update(zip(ids, p, strict=True))


def _file_probs(lab: Any, feats: list, mean: np.ndarray | None, owner: np.ndarray, n: int) -> np.ndarray:
    """(n, C): each clip's mean over its windows' probabilities, as label's file rows."""
    win = np.concatenate([lab.forward(x, lengths, mean)[0] for x, lengths in feats])  # (n_windows, C)
    out = np.zeros((n, win.shape[1]), np.float64)
    np.add.at(out, owner, win)
    return (out / np.bincount(owner, minlength=n)[:, None]).astype(np.float32)


def _ua_rows(
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
    folds.to_csv(per_fold, index=False)
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
    md.write_text(md.read_text(encoding="utf-8") + "\n" + "\n".join(notes) + "\n", encoding="utf-8")
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
