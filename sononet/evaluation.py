"""Evaluation of a saved model on a corpus: usually another one (cross-corpus), checked against its own.

The test corpus goes through the model's own feature path (its saved feature config), its
labels through ``label_map`` (e.g. ``CAL=NEU``), and only the classes both corpora share
are scored: the model's probabilities over those classes are renormalised, so a RAVDESS
8-class model is not marked wrong on the demo corpus for answering "calm".

The protocol line comes from the data, not from the command's name: a model saves its training
corpus and the speakers of its training and validation splits, so when the test corpus is the
training corpus the line says "same corpus as training" and how many test speakers the model
trained or was chosen on ("speaker-dependent: 18 of 24 ...", with the report's not-speaker-disjoint
banner); a model saved without its speakers gets the same warning, since it cannot rule it out.
Only a different corpus is "cross-corpus: trained on X, tested on Y" with every test speaker new.

The report folder is locked (a second evaluation into it stops at once), written atomically, and
refused when it holds a training run or a saved model, or lies inside the test corpus's folder.

    sononet evaluate --model runs/ravdess/cnn/model --data runs/demo/demo-corpus --out runs/xc

``sononet evaluate`` is a thin shim over :func:`evaluate_cross_corpus`; the metrics, tables and
report are :mod:`sononet.evaluate`'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sononet.corpus import corpus_label, is_synthetic, load_corpus, select_labels
from sononet.corpus.protocol import CrossCorpus, Protocol
from sononet.device import resolve_device
from sononet.errors import UserError
from sononet.evaluate.predictions import ENSEMBLE, META_COLUMNS
from sononet.evaluate.report import write_evaluation
from sononet.evaluate.robustness import RobustnessConfig
from sononet.features.reader import load_metadata
from sononet.features.shards import read_manifest
from sononet.io import atomic_write, atomic_write_json, remove_stale_temps
from sononet.locking import folder_lock
from sononet.models.ensemble import member_folders
from sononet.models.saved import SavedModel
from sononet.prepare import PrepareConfig, prepare
from sononet.robustness import run_suite
from sononet.train.predict import predict

log = logging.getLogger(__name__)


@dataclass
class CrossCorpusConfig:
    model: str  # a saved model folder (<run>/<model>/model) or an ensemble folder (<run>/ensemble)
    data: str  # the test corpus: any kind `load_corpus` reads
    out: str  # report folder; the test corpus's shards go to <out>/shards
    label_map: dict[str, str] = field(default_factory=dict)  # test-corpus relabelling, e.g. {"CAL": "NEU"}
    device: str = "auto"
    workers: int | None = None  # decode threads for preparing the test corpus; None = as prepare
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)  # perturb = [] skips the suite


def shared_labels(model_labels: list[str], corpus_labels: list[str]) -> list[str]:
    """Classes both corpora have, in the model's order; two at least, or there is nothing to score."""
    shared = [lab for lab in model_labels if lab in set(corpus_labels)]
    if len(shared) < 2:
        raise ValueError(
            f"the model's classes {model_labels} and the test corpus's {corpus_labels} share {shared}: "
            "need at least two; relabel the test corpus with --label-map FROM=TO"
        )
    return shared


def restrict(preds: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Keep ``prob_<label>`` for ``labels`` only, renormalised, and re-take the argmax."""
    cols = [f"prob_{lab}" for lab in labels]
    probs = preds[cols].to_numpy(dtype=np.float64)  # (N, n_shared)
    probs /= np.clip(probs.sum(axis=1, keepdims=True), 1e-12, None)
    out = preds.drop(columns=[c for c in preds.columns if c.startswith("prob_")]).copy()
    out[cols] = probs
    out["pred"] = [labels[i] for i in probs.argmax(axis=1)]
    return out


def speaker_protocol(meta: dict, trained_on: str, tested_on: str, test_speakers: set[str]) -> tuple[str, str, bool]:
    """(corpus text, split text, speaker-disjoint) for a model tested on ``tested_on``, from the data.

    Another corpus: every test speaker is new. The training corpus: the test speakers are compared
    with the speakers the model saved for its training and validation splits; a model that saved
    none (or test clips without speakers) cannot rule a shared speaker out, so the line says so.
    """
    if trained_on != tested_on:
        corpus = f"cross-corpus: trained on {trained_on}, tested on {tested_on}"
        return corpus, "speaker-disjoint (cross-corpus: every test speaker is new)", True
    corpus = f"same corpus as training: {tested_on}"
    known = meta.get("speakers")
    if not isinstance(known, dict) or not test_speakers:
        why = "the model does not record its training speakers" if test_speakers else "the test clips name no speakers"
        return (
            corpus,
            f"speakers unknown (same corpus as the model's training; {why}, so some may be trained on)",
            False,
        )
    seen = {str(s) for part in ("train", "val") for s in known.get(part) or []}
    shared = sorted(test_speakers & seen)
    if shared:
        split = f"speaker-dependent: {len(shared)} of {len(test_speakers)} test speakers were in the model's training"
        return corpus, f"{split} or validation split (e.g. {', '.join(shared[:3])})", False
    return corpus, f"speaker-disjoint (same corpus; none of its {len(test_speakers)} test speakers trained on)", True


def _check_out(out: Path, data: str) -> None:
    """Refuse a report folder that would overwrite a training run or a saved model, or pollute the data."""
    from sononet.runinfo import training_run_evidence

    evidence = training_run_evidence(out)
    if evidence is not None:
        raise UserError(
            f"--out {out} holds a training run or a saved model ({evidence}); pass a new folder for the evaluation"
        )
    if Path(data).is_dir() and out.resolve().is_relative_to(Path(data).resolve()):
        raise UserError(f"--out {out} lies inside the test corpus {data}; pass a folder outside it")


def evaluate_cross_corpus(cfg: CrossCorpusConfig, progress: bool = True) -> dict:
    """Prepare ``cfg.data`` with the model's features, predict every clip, write the evaluation.

    Holds ``<out>/.lock`` throughout: a second evaluation into the same folder stops at once.
    """
    device = resolve_device(cfg.device)
    folders, ensemble = member_folders(cfg.model)
    loaded = [SavedModel.load(f, device) for f in folders]  # a broken model is the first thing to say
    out = Path(cfg.out)
    _check_out(out, cfg.data)
    with folder_lock(out, "evaluate"):
        _check_out(out, cfg.data)  # again under the lock: a training run may have started meanwhile
        for folder in (out, out / "tables", out / "plots"):  # a killed evaluation's partial files
            remove_stale_temps(folder)
        name = loaded[0].doc["model"] if not ensemble else ENSEMBLE
        return _evaluate(cfg, out, loaded, name, device, progress)


def _member_meta(loaded: list[SavedModel]) -> dict:
    """The meta the evaluation reads: the first member's, with every member's training speakers.

    Members are scored on one preparation of the test corpus, so they must share its features.
    """
    lead = loaded[0]
    for other in loaded[1:]:
        if (other.features, other.audio) != (lead.features, lead.audio):
            raise UserError(
                f"ensemble members {lead.folder} and {other.folder} use different feature or audio configs; evaluate "
                "prepares the test corpus once, so its members must share one (label and the API take such ensembles)"
            )
    metas = [m.meta for m in loaded]
    merged = dict(metas[0])
    if all(isinstance(m.get("speakers"), dict) for m in metas):  # trained or chosen on by any member
        merged["speakers"] = {
            part: sorted({str(s) for m in metas for s in m["speakers"].get(part) or []}) for part in ("train", "val")
        }
    else:
        merged.pop("speakers", None)
    return merged


def _evaluate(
    cfg: CrossCorpusConfig, out: Path, loaded: list[SavedModel], name: str, device: Any, progress: bool
) -> dict:
    meta, lead = _member_meta(loaded), loaded[0]
    corpus = select_labels(load_corpus(cfg.data), None, cfg.label_map)
    labels = shared_labels(lead.labels, corpus.labels)
    prep = PrepareConfig(
        data=cfg.data,
        out=str(out / "shards"),
        labels=tuple(labels),
        label_map=dict(cfg.label_map),
        workers=cfg.workers,
        device=cfg.device,
        features=lead.features,
        audio=lead.audio,
    )
    summary = prepare(prep, progress=progress)
    shard_meta = load_metadata(prep.out, [*META_COLUMNS]).to_pandas()
    test_speakers = {str(s) for s in shard_meta.speaker.dropna()}
    ids = list(shard_meta.clip_id)
    preds = _mean_predictions([predict(m, prep.out, ids, device) for m in loaded])
    preds = restrict(preds, labels).merge(shard_meta, on="clip_id", how="left")
    preds["split"], preds["model"], preds["fold"] = "test", name, 0
    trained = Protocol.from_dict(lead.protocol) if lead.protocol else None
    trained_on = trained.corpus if trained else "unknown corpus"
    test_manifest = read_manifest(prep.out)
    tested_on = corpus_label(test_manifest, list(shard_meta.clip_id))
    corpus_text, split_text, disjoint = speaker_protocol(meta, trained_on, tested_on, test_speakers)
    protocol = Protocol(
        corpus=corpus_text,
        split=split_text,
        synthetic=is_synthetic(test_manifest) or bool(trained and trained.synthetic),
        speaker_disjoint=disjoint,
        pretrained=trained.pretrained if trained else {},
        device=str(device),
        cross_corpus=CrossCorpus(
            trained_on=trained_on, tested_on=tested_on, model_dir=str(Path(cfg.model).resolve()),
            shared_labels=tuple(labels), label_map=dict(cfg.label_map),
        ),
    )  # fmt: skip
    atomic_write(out / "predictions.parquet", lambda tmp: preds.to_parquet(tmp, index=False))
    robustness = None
    if cfg.robustness.perturb:  # every test speaker is new: "known" means its own mean over the test corpus
        clips = load_metadata(prep.out, ["clip_id", "source_path", "speaker", "label"]).to_pandas()
        dirs = {name: lead.folder} if len(loaded) == 1 else _member_names(loaded)  # + the ensemble rows
        robustness = run_suite(dirs, clips, labels, cfg.robustness, cfg.device, progress).assign(fold=0)
    metrics = write_evaluation(out, preds, labels, protocol, histories=None, robustness=robustness)
    atomic_write_json(
        out / "run.json",
        {
            "command": "evaluate",
            "status": "complete",
            "protocol": protocol.to_dict(),
            "prepare": summary["clips_written"],
        },
    )
    log.info("cross-corpus report: %s", out / "report.md")
    return {"metrics": metrics, "protocol": protocol.to_dict(), "out": str(out), "n_clips": len(preds)}


def _mean_predictions(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """One member's predictions as they are; several: the mean of their probabilities per clip, argmax
    retaken, as ``train-all``'s ensemble rows."""
    if len(parts) == 1:
        return parts[0]
    cols = [c for c in parts[0].columns if c.startswith("prob_")]
    frames = [p.set_index("clip_id").loc[parts[0].clip_id] for p in parts]
    out = parts[0].copy()
    out[cols] = np.mean(np.stack([f[cols].to_numpy(dtype=np.float64) for f in frames]), axis=0)
    out["pred"] = [c.removeprefix("prob_") for c in np.asarray(cols)[out[cols].to_numpy().argmax(axis=1)]]
    return out


def _member_names(loaded: list[SavedModel]) -> dict[str, Path]:
    """Table names for an ensemble's members (``cnn``, ``bigru``, ``cnn-2`` ...) -> their folders."""
    names: dict[str, Path] = {}
    for member in loaded:
        base = member.doc["model"]
        key = base if base not in names else f"{base}-{sum(k.split('-')[0] == base for k in names) + 1}"
        names[key] = member.folder
    return names


def headline(result: dict) -> str:
    """One line for the terminal: WA and UA with their 95 % CIs on the test corpus."""
    parts = []
    for name, per_split in result["metrics"].get("models", {}).items():
        pooled = per_split["test"]["pooled"]
        acc, ua = pooled["accuracy"], pooled["ua"]
        parts.append(
            f"{name}: WA {100 * acc['value']:.1f} % [{100 * acc['ci_low']:.1f}, {100 * acc['ci_high']:.1f}], "
            f"UA {100 * ua['value']:.1f} % [{100 * ua['ci_low']:.1f}, {100 * ua['ci_high']:.1f}] on {pooled['n']} clips"
        )
    return "; ".join(parts)
