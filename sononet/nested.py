"""Nested validation: how a training default is chosen without reading a test speaker.

``sononet nested`` (and the ``nested`` job of ``sononet-batch``) reruns the procedure that chose
the real-speech recipe (docs/recipe.md). For each outer fold of the speaker-grouped k-fold split
that ``train-all --folds k`` uses: R = its training speakers, V = its validation speakers; its
test speakers are never read. Inside R, the validation group G of another fold chooses the epoch
for model A, trained on R minus G; B is A's refit on all of R for ``refit_epochs`` of A's history
(``train.refit_window``), as train-all's refit does. A, B and the mean of the models'
probabilities (the ensemble) are scored on V, which none of them has seen. So comparing two
settings (``--set train.batch_size=16``) is a comparison on validation speakers only.

``score_labels`` lets extra classes train without being scored (RAVDESS's CAL and SUR as
classes of their own, scored on the six CREMA-D classes): validation inside R and V keep only
those classes, and V is scored on their probability columns.

With ``robustness.perturb`` (``--perturb noise``) the B models and their ensemble are also
scored on V under those perturbations (the suite of :mod:`sononet.robustness`, speakers known and
unknown), so a recipe meant for noisy or re-levelled audio is chosen on validation speakers too.
Off by default: nesting is run to compare recipes, and the suite costs (1 + perturbations) x V's
front end.

Outputs in ``out``: ``nested.jsonl`` (one line per outer fold), ``nested.md`` and
``nested.csv`` (UA per fold, mean and std), ``spec.toml`` (the resolved spec: rerunning it
reuses every finished model, so a new refit window retrains only B); with the suite,
``robustness.md`` and ``robustness.csv`` (B and ensemble UA per perturbation over the folds).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sononet.corpus.splits import SplitConfig
from sononet.device import resolve_device, worker_pool
from sononet.errors import UserError
from sononet.evaluate.robustness import RobustnessConfig
from sononet.experiment import ExperimentConfig, resolve_experiment
from sononet.io import atomic_write_bytes, atomic_write_json, output_dir
from sononet.jobs import write_spec
from sononet.locking import folder_lock

log = logging.getLogger(__name__)
MIN_FOLDS = 4  # R minus G must keep at least one group of speakers to train A on


@dataclass
class NestedConfig(ExperimentConfig):
    """train-all's spec (data, labels, folds, models, training settings) plus what nesting adds."""

    out: str = "runs/nested"
    split: SplitConfig = field(default_factory=lambda: SplitConfig(folds=6))  # the protocol that chose the recipe
    outer_folds: tuple[int, ...] = ()  # outer folds to run; empty: every fold
    score_labels: tuple[str, ...] = ()  # classes scored on V; empty: every trained class
    robustness: RobustnessConfig = field(default_factory=lambda: RobustnessConfig(perturb=()))  # off: see above

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.split.mode != "speaker" or self.split.emobox:
            raise ValueError("nested validation needs the speaker-grouped k-fold split (split.mode = speaker)")
        if self.split.folds < MIN_FOLDS:
            raise ValueError(
                f"nested validation needs split.folds >= {MIN_FOLDS} (outer test + validation groups, an inner "
                f"validation group and speakers left to train on). Found: {self.split.folds}"
            )
        bad = [f for f in self.outer_folds if isinstance(f, bool) or not 0 <= f < self.split.folds]
        if bad or len(set(self.outer_folds)) != len(self.outer_folds):
            raise ValueError(
                f"outer_folds must be distinct folds in [0, {self.split.folds}). Found: {self.outer_folds}"
            )


@dataclass(frozen=True)
class NestedUnit:
    """One model of one outer fold: A on ``inner``, its refit B on all of R, both scored on ``scored``."""

    fold: int
    name: str
    inner: dict[str, str]  # clip -> train | val (G), R's clips only
    scored: list[str]  # V's clips (all classes: a speaker's mean takes in all its clips)
    model_dir: str


def resolve_nested(cfg: NestedConfig) -> NestedConfig:
    """The profile's and the device's choices filled in, as train-all's resolver does."""
    return resolve_experiment(cfg)


def plan_fold(groups: list[dict[str, str]], fold: int) -> tuple[set[str], set[str], set[str]]:
    """(R, V, G) of an outer fold: training and validation speakers, and the inner validation group
    (the first other fold's validation group that lies wholly inside R)."""
    own = groups[fold]
    r = {s for s, part in own.items() if part == "train"}
    v = {s for s, part in own.items() if part == "val"}
    inner = ({s for s, part in g.items() if part == "val"} for g in groups)
    g = next((grp for grp in inner if grp and grp <= r), None)
    if g is None or g == r:
        raise UserError(f"outer fold {fold}: no other fold's validation group leaves speakers to train on")
    return r, v, g


def nested_unit(unit: NestedUnit, shards: str, labels: list[str], scored_labels: list[str], cfg: Any,
                device: str, resume: bool, meta: dict) -> dict:  # fmt: skip
    """Train A and B for one unit (or reuse them) and return their probabilities on V. Runs in a worker."""
    from sononet.models.saved import SavedModel
    from sononet.train.loop import train_model
    from sononet.train.predict import predict
    from sononet.train.refit import refit_epochs, refit_model

    dev = resolve_device(device)
    root = Path(unit.model_dir)
    a = train_model(unit.name, shards, unit.inner, labels, cfg, root / "A", dev, resume=resume, meta=meta,
                    progress=False)  # fmt: skip
    n = refit_epochs(a.history, cfg.select_on, cfg.refit_window)
    b = refit_model(unit.name, shards, list(unit.inner), labels, cfg, root / f"B-w{cfg.refit_window}", dev,
                    a.history[:n], resume=resume, meta=meta, progress=False)  # fmt: skip
    out: dict[str, Any] = {"best_epoch": a.best_epoch, "epochs": n, "B_dir": str(b.model_dir)}
    for key, run in (("A", a), ("B", b)):
        p = predict(SavedModel.load(run.model_dir), shards, unit.scored, dev).set_index("clip_id").loc[unit.scored]
        p = p[p["true"].isin(scored_labels)]  # classes trained beyond the scored ones are never scored
        out[key] = p[[f"prob_{c}" for c in scored_labels]].to_numpy()
        out["truth"] = p["true"].to_numpy()
    return out


def run_nested(cfg: NestedConfig, progress: bool = True) -> dict:
    """Run (or resume) nested validation in ``cfg.out``; returns the per-fold rows and the summary.

    With ``jobs`` > 1 the units run in spawned workers: a script calling this must guard its top
    level with ``if __name__ == "__main__":``.
    """
    cfg = resolve_nested(cfg)
    out = output_dir(cfg.out, "--out")
    with folder_lock(out, "nested"):
        write_spec(out / "spec.toml", cfg, "nested")
        rows = _run(cfg, out, progress)
        summary = summarise(rows)
        atomic_write_bytes(out / "nested.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
        summary.to_csv(out / "nested.csv", index=False)
        atomic_write_bytes(out / "nested.md", report(cfg, summary).encode())
        if cfg.robustness.perturb:
            write_robustness_summary(rows, out)
    return {"rows": rows, "summary": summary.to_dict(orient="records"), "out": str(out)}


def _run(cfg: NestedConfig, out: Path, progress: bool) -> list[dict]:
    from tqdm import tqdm

    from sononet.corpus.splits import speaker_folds
    from sononet.evaluate.predictions import META_COLUMNS
    from sononet.features.reader import load_metadata
    from sononet.features.shards import read_manifest
    from sononet.prepare import prepare
    from sononet.train.shard_info import shard_labels

    prepare(cfg.prepare, progress=progress)
    shards = cfg.prepare.out
    manifest = read_manifest(shards)
    meta = load_metadata(shards, [*META_COLUMNS, "label", "source_path"]).to_pandas()
    labels = shard_labels(manifest, meta)
    scored_labels = list(cfg.score_labels) or labels
    unknown = sorted(set(scored_labels) - set(labels))
    if unknown:
        raise UserError(f"score_labels {unknown} are not classes of the prepared corpus ({', '.join(labels)})")
    groups = speaker_folds(meta.dropna(subset=["speaker"]).groupby("speaker").sex.first().to_dict(), cfg.split)
    folds = list(cfg.outer_folds) or list(range(cfg.split.folds))
    scored = set(scored_labels)
    units, plans = [], {}
    for f in folds:
        r, v, g = plan_fold(groups, f)
        plans[f] = {"fold": f, "inner_val": sorted(g), "scored_on": sorted(v)}
        inner = {c: ("val" if s in g else "train") for c, s, y in zip(meta.clip_id, meta.speaker, meta.label)
                 if s in r and (y in scored or s not in g)}  # fmt: skip
        v_ids = [c for c, s in zip(meta.clip_id, meta.speaker) if s in v]
        for name in cfg.models:
            units.append(NestedUnit(f, name, inner, v_ids, str(out / f"fold-{f}" / name)))
    train_meta = {"feature_config": manifest["feature_config"]}
    args = (cfg.prepare.out, labels, scored_labels, cfg.train, str(resolve_device(cfg.device)), cfg.resume, train_meta)
    results = _train_all(units, args, cfg.jobs or 1, progress, tqdm)
    rows = []
    for f in folds:
        row = dict(plans[f])
        probs: dict[str, np.ndarray] = {}
        for unit in (u for u in units if u.fold == f):
            res = results[(f, unit.name)]
            row[f"{unit.name}_best_epoch"], row[f"{unit.name}_epochs"] = res["best_epoch"], res["epochs"]
            probs[f"{unit.name}_A"], probs[f"{unit.name}_B"], truth = res["A"], res["B"], res["truth"]
        if len(cfg.models) > 1:
            for key in ("A", "B"):
                probs[f"ensemble_{key}"] = np.mean([probs[f"{m}_{key}"] for m in cfg.models], axis=0)
        for key, prob in probs.items():
            row[f"{key}_ua"] = round(100 * unweighted_recall(truth, np.array(scored_labels)[prob.argmax(1)]), 2)
        if cfg.robustness.perturb:
            b_dirs = {m: results[(f, m)]["B_dir"] for m in cfg.models}
            row["robustness"] = fold_robustness(b_dirs, meta, plans[f]["scored_on"], scored_labels, cfg, progress)
        log.info("nested fold %d: %s", f, ", ".join(f"{k[:-3]} {v}" for k, v in row.items() if k.endswith("_ua")))
        atomic_write_json(out / f"fold-{f}" / "nested.json", row)
        rows.append(row)
    return rows


def fold_robustness(b_dirs: dict[str, str], meta: pd.DataFrame, speakers: list[str], labels: list[str],
                    cfg: NestedConfig, progress: bool) -> list[dict]:  # fmt: skip
    """The suite's rows (perturbation, speakers, model, n, ua in %) for the B models on V's clips of ``labels``."""
    from sononet.evaluate.robustness import suite_clips
    from sononet.robustness import run_suite

    clips = meta[meta.speaker.isin(speakers) & meta.label.isin(labels)]
    clips = suite_clips(clips[["clip_id", "source_path", "speaker", "label"]], cfg.robustness.max_clips,
                        cfg.robustness.seed)  # fmt: skip
    table = run_suite(b_dirs, clips, labels, cfg.robustness, str(resolve_device(cfg.device)), progress)
    table["ua"] = (100 * table.ua.astype(float)).round(2)
    return table.to_dict(orient="records")


def write_robustness_summary(rows: list[dict], out: Path) -> None:
    """robustness.csv / .md: each B model's and ensemble's UA per perturbation and its drop from clean, over folds."""
    from sononet.evaluate.robustness import robustness_tables
    from sononet.evaluate.tables import markdown_table

    long = pd.DataFrame([{**r, "fold": row["fold"], "ua": r["ua"] / 100} for row in rows for r in row["robustness"]])
    numeric, shown = robustness_tables(long)
    numeric.to_csv(out / "robustness.csv", index=False)
    text = (
        "# Nested validation: robustness of the refit models (B) on validation speakers\n\n"
        f"Outer folds {', '.join(str(r['fold']) for r in rows)}; UA % mean ± std over folds, Δ: minus clean. "
        "Speakers known: each validation speaker's own mean removed; unknown: the training speakers' default.\n\n"
        + markdown_table(shown)
    )
    atomic_write_bytes(out / "robustness.md", text.encode())


def _train_all(units: list[NestedUnit], args: tuple, jobs: int, progress: bool, tqdm: Any) -> dict:
    """Every unit's :func:`nested_unit` result by (fold, model), in ``jobs`` worker processes."""
    bar = tqdm(total=len(units), unit="model", desc="nested", disable=not progress)
    results: dict[tuple[int, str], dict] = {}
    if min(jobs, len(units)) <= 1:
        for unit in units:
            results[(unit.fold, unit.name)] = nested_unit(unit, *args)
            bar.update()
    else:
        pool, _ = worker_pool(min(jobs, len(units)))
        with pool:
            futures = {pool.submit(nested_unit, unit, *args): unit for unit in units}
            for future, unit in futures.items():
                results[(unit.fold, unit.name)] = future.result()
                bar.update()
    bar.close()
    return results


def unweighted_recall(truth: np.ndarray, pred: np.ndarray) -> float:
    """UA: the mean over the classes present of each class's recall (scikit-learn's balanced accuracy)."""
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(truth, pred))


def summarise(rows: list[dict]) -> pd.DataFrame:
    """One row per scored model (cnn_A, cnn_B, ensemble_B, ...): UA per fold, mean and std over folds."""
    keys = [k for k in rows[0] if k.endswith("_ua")]
    table = []
    for key in keys:
        values = [r[key] for r in rows]
        std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
        table.append({"model": key[:-3], **{f"fold_{r['fold']}": r[key] for r in rows},
                      "mean": round(float(np.mean(values)), 2), "std": round(std, 2)})  # fmt: skip
    return pd.DataFrame(table)


def report(cfg: NestedConfig, summary: pd.DataFrame) -> str:
    """nested.md: the protocol in one paragraph and the UA table."""
    folds = [c for c in summary.columns if c.startswith("fold_")]
    lines = [
        "# Nested validation",
        "",
        f"Corpus: {cfg.prepare.data or 'the generated demo corpus'}; {cfg.split.folds}-fold speaker-grouped split "
        f"(seed {cfg.split.seed}); outer folds {', '.join(c[5:] for c in folds)}. A: trained on the fold's training "
        "speakers minus an inner validation group, which chose its epoch; B: A's refit on all the fold's training "
        f"speakers (refit window {cfg.train.refit_window}). Both scored on the fold's validation speakers, never "
        "trained on; test speakers are not read. UA %.",
        "",
        "| model | " + " | ".join(c.replace("_", " ") for c in folds) + " | mean | std |",
        "| --- | " + " | ".join("---:" for _ in folds) + " | ---: | ---: |",
    ]
    for row in summary.to_dict(orient="records"):
        cells = [f"{row[c]:.1f}" for c in folds] + [f"{row['mean']:.1f}", f"{row['std']:.1f}"]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
