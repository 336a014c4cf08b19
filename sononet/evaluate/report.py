"""Turn a run's predictions and histories into metrics.json, tables, figures and report.md.

Layout written into the run directory::

    metrics.json                      every number, per model / split / fold, with the protocol
    report.md                         the human summary, linking the files below
    tables/headline.{csv,md}          one row per (model, split)
    tables/per_class_<model>_<split>.{csv,md}
    tables/by_{intensity,sex,speaker}.{csv,md}
    tables/seed_comparison.{csv,md}   CREMA-D only
    tables/robustness.{csv,md}        UA under perturbations, speakers known/unknown (+ robustness_folds.csv)
    plots/confusion_<model>_<split>.png, plots/reliability_<model>_<split>.png
    plots/training_<model>.png

Under k-fold CV each clip is tested exactly once, so per-class tables, confusion matrices,
breakdowns and calibration use the folds pooled; the headline adds mean ± std over folds.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from sononet.corpus.protocol import Protocol
from sononet.evaluate.baselines import SEED_ACCURACY, SEED_SOURCE, crowd_baseline, seed_comparison
from sononet.evaluate.metrics import HEADLINE, aggregate_folds, compute_metrics
from sononet.evaluate.plots import plot_confusion, plot_reliability, plot_training_curves
from sononet.evaluate.predictions import check_predictions, prob_matrix, speakers_shared_between_splits
from sononet.evaluate.robustness import write_robustness
from sononet.evaluate.tables import (
    breakdown_table,
    markdown_table,
    per_class_table,
    speaker_summary,
    wide_breakdown,
    write_table,
)
from sononet.io import atomic_write_bytes

BREAKDOWNS = ("intensity", "sex", "speaker")
HEADLINE_NAMES = {"accuracy": "WA", "ua": "UA", "macro_f1": "macro-F1", "weighted_f1": "weighted-F1"}
SYNTHETIC_BANNER = (
    "> **Synthetic demo corpus — numbers are not comparable to CREMA-D.** They show that the "
    "pipeline runs end to end, not how well any model recognises emotion in real speech."
)
LEAKY_BANNER = (
    "> **Split is not speaker-disjoint ({split}).** The same voices are in training and test, "
    "so these numbers are optimistic and not comparable to speaker-independent results."
)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unnamed"


def _split_order(split: str) -> tuple[int, str]:
    return ({"test": 0, "val": 1}.get(split, 2), split)


def _jsonable(obj: Any) -> Any:
    """Plain JSON: NaN/Inf become null, numpy scalars become Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _check_protocol(protocol: Protocol | Mapping[str, Any]) -> Protocol:
    if isinstance(protocol, Protocol):
        return protocol
    if not isinstance(protocol, Mapping):
        raise ValueError(f"protocol must be a Protocol. Found: {type(protocol).__name__}")
    return Protocol.from_dict(dict(protocol))


def _pct(m: Mapping[str, Any]) -> str:
    if m["ci_low"] is None:
        return f"{100 * m['value']:.1f}"
    return f"{100 * m['value']:.1f} [{100 * m['ci_low']:.1f}, {100 * m['ci_high']:.1f}]"


def _headline_rows(models: Mapping[str, Any], protocol: Protocol) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numeric table for CSV, formatted table for Markdown), one row per (model, split)."""
    numeric, shown = [], []
    for model, splits in models.items():
        for split, entry in splits.items():
            pooled, agg = entry["pooled"], entry["aggregate"]
            num: dict[str, Any] = {
                "model": model,
                "split": split,
                "n": pooled["n"],
                "n_folds": len(entry["folds"]),
            }
            txt: dict[str, Any] = {"model": model, "split": split, "n": pooled["n"]}
            for name in HEADLINE:
                short = HEADLINE_NAMES[name]
                num[name] = pooled[name]["value"]
                num[f"{name}_ci_low"] = pooled[name]["ci_low"]
                num[f"{name}_ci_high"] = pooled[name]["ci_high"]
                if agg is not None:
                    num[f"{name}_fold_mean"] = agg[name]["mean"]
                    num[f"{name}_fold_std"] = agg[name]["std"]
                    txt[f"{short} %"] = f"{100 * agg[name]['mean']:.1f} ± {100 * agg[name]['std']:.1f}"
                else:
                    txt[f"{short} %"] = _pct(pooled[name])
            num["ece"] = pooled["ece"]
            txt["ECE"] = "" if pooled["ece"] is None else f"{pooled['ece']:.3f}"
            txt["corpus"] = protocol.corpus
            txt["split protocol"] = protocol.split
            txt["folds"] = len(entry["folds"])
            txt["pretrained"] = protocol.pretrained_note(model)
            numeric.append(num)
            shown.append(txt)
    return pd.DataFrame(numeric), pd.DataFrame(shown)


def _evaluate_models(
    frame: pd.DataFrame, labels: list[str], protocol: Protocol, out: Path, n_boot: int, seed: int
) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    models: dict[str, Any] = {}
    files: dict[str, dict[str, str]] = {}
    # Models in the order training wrote them (the ensemble last, usually); test before val.
    model_rank = {m: i for i, m in enumerate(dict.fromkeys(frame["model"]))}
    for (model, split), sub in sorted(
        frame.groupby(["model", "split"]), key=lambda kv: (model_rank[kv[0][0]], _split_order(kv[0][1]))
    ):
        folds = {}
        for fold, part in sub.groupby("fold", sort=True):
            folds[str(fold)] = compute_metrics(
                part["true"], part["pred"], prob_matrix(part, labels), labels, n_boot, seed
            )
        pooled = (
            next(iter(folds.values()))
            if len(folds) == 1
            else compute_metrics(sub["true"], sub["pred"], prob_matrix(sub, labels), labels, n_boot, seed)
        )
        agg = aggregate_folds(list(folds.values())) if len(folds) > 1 else None
        models.setdefault(model, {})[split] = {"folds": folds, "pooled": pooled, "aggregate": agg}

        key, title = f"{_safe(model)}_{_safe(split)}", f"{model}, {split} split"
        f = write_table(
            per_class_table(pooled),
            out / "tables" / f"per_class_{key}",
            protocol,
            f"Per-class metrics: {title}",
        )
        png = out / "plots" / f"confusion_{key}.png"
        f["confusion"] = plot_confusion(pooled["confusion"], labels, f"Confusion: {title}", protocol, png)
        if pooled["reliability"] is not None:
            png = out / "plots" / f"reliability_{key}.png"
            f["reliability"] = plot_reliability(
                pooled["reliability"], pooled["ece"], f"Reliability: {title}", protocol, png
            )
        files[key] = f
    return models, files


def _baselines(frame: pd.DataFrame, models: Mapping[str, Any], labels: list[str]) -> dict[str, Any]:
    test_acc = {m: s["test"]["pooled"]["accuracy"]["value"] for m, s in models.items() if "test" in s}
    clips = frame[frame["split"] == "test"].drop_duplicates("clip_id")
    crowd = crowd_baseline(clips["clip_id"].tolist(), clips["true"].tolist(), labels)
    crowd_first = crowd_baseline(clips["clip_id"].tolist(), clips["true"].tolist(), labels, tie_policy="first")
    return {
        "seed": {"source": SEED_SOURCE, "accuracy": SEED_ACCURACY, "ours_test_accuracy": test_acc},
        "crowd_voice_only": crowd,
        "crowd_voice_only_ties_first": crowd_first,
    }


def write_evaluation(
    run_dir: str | Path,
    predictions: pd.DataFrame,
    labels: Sequence[str],
    protocol: Protocol | Mapping[str, Any],
    histories: Mapping[str, Sequence[Mapping[str, Any]]] | None,
    reference_baselines: bool = True,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    robustness: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Evaluate every (model, split, fold) in ``predictions`` and write the run's report.

    ``reference_baselines`` adds the seed comparison and the crowd's voice-only vote, only
    when ``protocol.corpus == "cremad"`` (elsewhere they would compare unlike things). A stored
    protocol dict is read with :meth:`Protocol.from_dict`. ``robustness``: the robustness suite's
    rows (``evaluate.robustness.run_suite`` plus ``fold``), written as its table and report section.
    Returns the dict written to ``metrics.json``.
    """
    labels = [str(x) for x in labels]
    frame = check_predictions(predictions, labels)
    protocol = _check_protocol(protocol)
    histories = dict(histories or {})
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)

    models, files = _evaluate_models(frame, labels, protocol, out, n_boot, seed)

    breakdowns: dict[str, Any] = {}
    for by in BREAKDOWNS:
        long = breakdown_table(frame, by)
        if long.empty:
            continue
        breakdowns[by] = long
        files[f"by_{by}"] = write_table(long, out / "tables" / f"by_{by}", protocol, f"Accuracy and UA by {by}")

    for model, history in histories.items():
        if history:
            png = out / "plots" / f"training_{_safe(model)}.png"
            curve = plot_training_curves(history, f"Training curves: {model}", protocol, png)
            files[f"training_{_safe(model)}"] = {"png": curve}

    baselines, seed_df = None, None
    if reference_baselines and protocol.corpus == "cremad":
        baselines = _baselines(frame, models, labels)
        seed_df = seed_comparison(baselines["seed"]["ours_test_accuracy"])
        title = "Test accuracy vs the seed's reported accuracy"
        files["seed_comparison"] = write_table(seed_df, out / "tables" / "seed_comparison", protocol, title, ".1f")

    robust_doc, robust_lines = None, []
    if robustness is not None and len(robustness):
        files["robustness"], robust_doc, robust_lines = write_robustness(robustness, out, protocol)

    numeric, shown = _headline_rows(models, protocol)
    files["headline"] = write_table(numeric, out / "tables" / "headline", protocol, "Headline metrics")
    checks = {
        "synthetic_corpus": protocol.synthetic,
        "speaker_disjoint_claimed": protocol.speaker_disjoint,
        "speakers_shared_between_splits": speakers_shared_between_splits(frame),
    }
    metrics = _jsonable(
        {
            "protocol": protocol.to_dict(),
            "labels": labels,
            "models": models,
            "breakdowns": {by: df.to_dict(orient="records") for by, df in breakdowns.items()},
            "baselines": baselines,
            "robustness": robust_doc,
            "checks": checks,
            "files": {k: {kk: str(Path(v).relative_to(out)) for kk, v in d.items()} for k, d in files.items()},
        }
    )
    atomic_write_bytes(out / "metrics.json", json.dumps(metrics, indent=2, allow_nan=False).encode())
    report = _report_markdown(metrics, protocol, shown, breakdowns, seed_df, n_boot, robust_lines)
    atomic_write_bytes(out / "report.md", report.encode())
    return metrics


def _report_markdown(
    metrics: Mapping[str, Any],
    protocol: Protocol,
    shown: pd.DataFrame,
    breakdowns: Mapping[str, pd.DataFrame],
    seed_df: pd.DataFrame | None,
    n_boot: int,
    robustness: Sequence[str] = (),
) -> str:
    checks, files = metrics["checks"], metrics["files"]
    lines = ["# SonoNet evaluation", ""]
    if checks["synthetic_corpus"]:
        lines += [SYNTHETIC_BANNER, ""]
    if not checks["speaker_disjoint_claimed"]:
        lines += [LEAKY_BANNER.format(split=protocol.split), ""]
    shared = checks["speakers_shared_between_splits"]
    if shared and checks["speaker_disjoint_claimed"]:
        detail = "; ".join(f"fold {f}: {', '.join(s[:5])}{' …' if len(s) > 5 else ''}" for f, s in shared.items())
        lines += [
            "> **Warning:** the protocol says speaker-disjoint, but speakers appear in more than one "
            f"split ({detail}).",
            "",
        ]
    lines += [protocol.line(), "", "## Headline", ""]
    lines += [
        "Percentages with a percentile bootstrap 95 % CI over clips "
        f"({n_boot} resamples); "
        "under k-fold CV, mean ± std over folds. WA = accuracy, UA = unweighted average recall. "
        "ECE: 15-bin expected calibration error of the top-class probability.",
        "",
        markdown_table(shown),
        f"Machine-readable: [{files['headline']['csv']}]({files['headline']['csv']}), all numbers in "
        "[metrics.json](metrics.json).",
        "",
    ]
    lines += list(robustness)
    baselines = metrics["baselines"]
    if baselines is not None and seed_df is not None:
        lines += ["## Comparison with the seed", "", f"Source: {baselines['seed']['source']}.", ""]
        lines += [markdown_table(seed_df, ".1f"), ""]
        crowd, first = baselines["crowd_voice_only"], baselines["crowd_voice_only_ties_first"]
        lines += ["## Crowd voice-only baseline", ""]
        if crowd["accuracy"] is None:
            lines += [f"No test clip has a crowd vote ({crowd['n_clips']} test clips).", ""]
        else:
            rec = _recall_comparison(crowd, metrics["models"])
            lines += [
                "Human raters hearing the voice only, majority vote, on the same "
                f"{crowd['n_with_vote']} test clips "
                f"({crowd['n_skipped_no_vote']} skipped for lack of a vote). Source: {crowd['source']}.",
                "",
                f"- accuracy (WA): {100 * crowd['accuracy']:.1f} %, UA: {100 * crowd['ua']:.1f} %",
                f"- {crowd['n_ties']} tied votes count as wrong (no majority); breaking ties by the first "
                "letter "
                f"instead gives WA {100 * first['accuracy']:.1f} %.",
                "",
                "Per-class recall (%), crowd next to each model's test recall:",
                "",
                markdown_table(rec, ".1f"),
            ]
    for model, splits in metrics["models"].items():
        lines += [f"## {model}", "", f"Pretraining: {protocol.pretrained_note(model)}.", ""]
        for split, entry in splits.items():
            key = f"{_safe(model)}_{_safe(split)}"
            f = files[key]
            pooled = entry["pooled"]
            lines += [f"### {split} split (n = {pooled['n']}, folds = {len(entry['folds'])})", ""]
            lines += [markdown_table(per_class_table(pooled)), f"Table: [{f['csv']}]({f['csv']})", ""]
            if split == "test":
                lines += [f"![confusion matrices]({f['confusion']})", ""]
                if "reliability" in f:
                    lines += [f"![reliability diagram]({f['reliability']})", ""]
            if pooled.get("pred_argmax_disagree"):
                lines += [
                    f"Note: {pooled['pred_argmax_disagree']} predictions differ from argmax(probabilities).",
                    "",
                ]
        curve = files.get(f"training_{_safe(model)}")
        lines += [f"![training curves]({curve['png']})" if curve else "No training history was recorded.", ""]
    lines += _breakdown_section(breakdowns, files)
    return "\n".join(lines).rstrip() + "\n"


def _recall_comparison(crowd: Mapping[str, Any], models: Mapping[str, Any]) -> pd.DataFrame:
    table = pd.DataFrame({"label": list(crowd["per_class_recall"])})
    table["crowd"] = [None if r is None else 100 * r for r in crowd["per_class_recall"].values()]
    for model, splits in models.items():
        if "test" in splits:
            per_class = splits["test"]["pooled"]["per_class"]
            table[model] = [100 * per_class[label]["recall"] for label in table["label"]]
    return table


def _breakdown_section(breakdowns: Mapping[str, pd.DataFrame], files: Mapping[str, Any]) -> list[str]:
    lines = ["## Breakdowns (test split)", ""]
    if not breakdowns:
        return [*lines, "No intensity, sex or speaker metadata in the predictions.", ""]
    for by in ("intensity", "sex"):
        if by in breakdowns:
            wide = wide_breakdown(breakdowns[by], by)
            if not wide.empty:
                lines += [
                    f"### By {by}",
                    "",
                    markdown_table(wide),
                    f"Table: [{files[f'by_{by}']['csv']}]({files[f'by_{by}']['csv']})",
                    "",
                ]
    if "speaker" in breakdowns:
        summary = speaker_summary(breakdowns["speaker"])
        if not summary.empty:
            lines += ["### By speaker", "", "Spread of per-speaker accuracy:", "", markdown_table(summary)]
            lines += [f"Full table: [{files['by_speaker']['csv']}]({files['by_speaker']['csv']})", ""]
    return lines
