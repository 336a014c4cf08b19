"""An experiment: prepare -> split -> train each model -> predict -> ensemble -> evaluate.

This is ``sononet train-all``. Every stage is resumable: prepare skips finished shards,
training continues from each model's last checkpoint (``resume=True``) and skips models
marked done, and evaluation is recomputed from the predictions. The run directory gets
the resolved spec first and a ``run.json`` whose status turns ``complete`` only at the
very end, so a half-finished run never looks finished.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from sononet.corpus import corpus_label, is_synthetic
from sononet.corpus.protocol import Protocol
from sononet.corpus.splits import SplitConfig, assign_splits, split_protocol
from sononet.device import check_device, resolve_device, thread_budget, worker_pool
from sononet.evaluate import write_evaluation
from sononet.evaluate.predictions import META_COLUMNS
from sononet.features.reader import load_metadata
from sononet.features.shards import read_manifest
from sononet.io import atomic_write_json
from sononet.jobs import write_spec
from sononet.models.card import write_card
from sononet.models.registry import MODELS, model_names
from sononet.models.saving import load_model
from sononet.prepare import PrepareConfig, format_summary, prepare
from sononet.runinfo import RunRecord
from sononet.train.loop import PROFILE_EPOCHS, TrainConfig, predict, refit_epochs, refit_model, train_model

log = logging.getLogger(__name__)
DEFAULT_MODELS = ("cnn", "bigru", "wav2vec2")
PROFILES = ("auto", "demo", "real")
REFIT_DIR = "refit"  # <fold>/<model>/refit/: the model refit on train + val, which the test split scores

# The one place where the synthetic demo and real speech differ: the demo trains PROFILE_EPOCHS
# ["demo"] epochs (it only shows that the pipeline runs, in about 4 CPU minutes) and has no
# silence to trim; real corpora get the recipe chosen on RAVDESS validation folds
# (results/ravdess): the dataclass defaults plus trimming of leading and trailing silence 30 dB
# below the peak before the 3 s window (acted corpora pad every utterance with silence).
REAL_TRIM_SILENCE_DB = 30.0
# Vocal tract length perturbation per model on real speech, where train.augment.vtlp is unset:
# BiGRU 66.5 against 63.0 val UA over RAVDESS's 6 validation folds (better on each); CNN 67.7
# against 71.2 (folds 0-2), so the CNN trains without it (results/ravdess, fifth round).
REAL_VTLP = {"bigru": 0.1}
# Refit on train + val for the selected epochs before testing, where train.refit is unset
# (results/ravdess, sixth round: nested inside the training actors, scored on validation actors).
REAL_REFIT = True


@dataclass
class ExperimentConfig:
    out: str = "runs/demo"  # run directory; shards go to <out>/shards unless prepare.out says otherwise
    models: tuple[str, ...] = DEFAULT_MODELS
    w2v2: str = "auto"  # tiny (random-init, offline), a hub id or a local dir; auto: tiny on CPU, base on CUDA
    device: str = "auto"
    resume: bool = True  # continue an interrupted run in the same directory
    jobs: int | None = None  # models (fold x model) trained at once, one process each; None: see resolve_experiment
    profile: str = "auto"  # demo | real; auto: demo for the generated corpus, real for any --data
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_device(self.device)
        if not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(f"models must name at least one model, each once. Found: {list(self.models)}")
        if not self.prepare.out:  # the shards belong to the run unless placed elsewhere
            self.prepare.out = str(Path(self.out) / "shards")
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}. Found: {self.profile!r}")
        if self.jobs is not None and self.jobs < 1:
            raise ValueError(f"jobs must be at least 1 (or unset for one per CPU thread). Found: {self.jobs}")


def resolve_experiment(cfg: ExperimentConfig) -> ExperimentConfig:
    """Fill in what the profile and the device decide, so the written spec says exactly what ran.

    Both entrypoints (``sononet train-all`` and ``sononet-batch train-all``) call this, and
    ``--print-spec`` prints its result. Values set explicitly are never changed.
    """
    cfg = copy.deepcopy(cfg)
    if cfg.profile == "auto":
        cfg.profile = "demo" if cfg.prepare.data is None else "real"
    if cfg.prepare.device == "auto":  # one device for the whole run unless prepare asks for its own
        cfg.prepare.device = cfg.device
    if cfg.profile == "real" and cfg.prepare.features.trim_silence_db is None:  # 0 turns it off explicitly
        cfg.prepare.features = replace(cfg.prepare.features, trim_silence_db=REAL_TRIM_SILENCE_DB)
    if cfg.jobs is None:
        # On the CPU, N single-threaded trainings beat one N-threaded one: these models are too small
        # for intra-op threads to pay (bench: BiGRU 1.2 -> 40 clips/s from 2 threads to 1).
        cpu = resolve_device(cfg.device).type == "cpu"
        cfg.jobs = min(thread_budget(), max(1, cfg.split.folds) * len(cfg.models)) if cpu else 1
    train = cfg.train
    if train.epochs is None:
        train.epochs = PROFILE_EPOCHS[cfg.profile]
    if train.refit is None:  # the demo stays short: a refit doubles the training time
        train.refit = REAL_REFIT if cfg.profile == "real" else False
    resolve_augment(train, cfg.profile)
    overrides = {k: dict(v) for k, v in train.model_overrides.items()}
    if "wav2vec2" in cfg.models:
        if cfg.w2v2 == "auto":
            cfg.w2v2 = "facebook/wav2vec2-base" if resolve_device(cfg.device).type == "cuda" else "tiny"
        overrides["wav2vec2"] = {**w2v2_overrides(cfg.w2v2)[0], **overrides.get("wav2vec2", {})}
    train.model_overrides = overrides
    return cfg


def resolve_augment(train: TrainConfig, profile: str) -> None:
    """Set an unset ``train.augment.vtlp`` from the profile's recipe, per model (``REAL_VTLP`` on
    real speech), in place; ``train-all`` and ``train`` both call it, so their recipes agree."""
    if train.augment.vtlp is not None:  # set explicitly (0 too): every log-mel model gets it
        return
    overrides = {k: dict(v) for k, v in train.model_overrides.items()}
    for name, vtlp in (REAL_VTLP if profile == "real" else {}).items():
        own = dict(overrides.get(name, {}).get("augment", {}))
        own.setdefault("vtlp", vtlp)
        overrides[name] = {**overrides.get(name, {}), "augment": own}
    train.augment = replace(train.augment, vtlp=0.0)
    train.model_overrides = overrides


@dataclass(frozen=True)
class TrainUnit:
    """One model of one fold: what a training process needs besides the run's shared settings."""

    name: str
    fold: int | None  # None: a single split
    splits: dict[str, str]
    model_dir: str

    @property
    def stage(self) -> str:
        return f"train/{self.name}" + (f"/fold-{self.fold}" if self.fold is not None else "")


def train_unit(
    unit: TrainUnit, shards: str, labels: list[str], cfg: TrainConfig, device: str, resume: bool, meta: dict,
    progress: bool = False,
) -> float:  # fmt: skip
    """Train one unit (and its refit, with ``cfg.refit``) and mark it done; returns its seconds.
    Runs in this process or in a worker."""
    t = time.perf_counter()
    dev = resolve_device(device)
    result = train_model(
        unit.name, shards, unit.splits, labels, cfg, unit.model_dir, dev, resume=resume, meta=meta, progress=progress,
    )  # fmt: skip
    done = {"best_epoch": result.best_epoch, "epochs": len(result.history)}
    if cfg.refit:
        ids = [c for c, s in unit.splits.items() if s in ("train", "val")]
        selected = result.history[: refit_epochs(result.history, cfg.select_on, cfg.refit_window)]
        refit_model(
            unit.name, shards, ids, labels, cfg, Path(unit.model_dir) / REFIT_DIR, dev, selected,
            resume=resume, meta=meta, progress=progress,
        )  # fmt: skip
        done["refit_epochs"] = len(selected)
    atomic_write_json(Path(unit.model_dir) / "done.json", done)
    return time.perf_counter() - t


def _train_parallel(
    units: list[TrainUnit], run_unit: Callable[..., float], jobs: int, record: RunRecord, progress: bool
) -> None:
    """``units`` in ``jobs`` worker processes (``device.worker_pool``).

    A worker's error stops the queue (running units finish or die with the pool) and is raised
    here; a rerun resumes, as every finished unit left its ``done.json``.
    """
    pool, threads = worker_pool(jobs)
    log.info("training %d models, %d at a time, %d thread(s) each", len(units), jobs, threads)
    try:
        futures = {pool.submit(run_unit, unit): unit for unit in units}
        bar = tqdm(as_completed(futures), total=len(futures), desc="train", unit="model", disable=not progress)
        for future in bar:
            unit = futures[future]
            record.add_stage(unit.stage, future.result())
            bar.set_postfix_str(unit.stage.removeprefix("train/"))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def w2v2_overrides(choice: str) -> tuple[dict, str]:
    """Model options and a protocol note for ``--w2v2 tiny|hub-id|dir`` (resolve ``auto`` first)."""
    if choice == "tiny":
        # Random-init weights train from scratch: the conv encoder too, at a from-scratch rate.
        return {"tiny": True, "lr": 5e-4, "freeze_feature_encoder": False}, "random-init tiny, not pretrained"
    return {"tiny": False, "backbone": choice}, f"pretrained: {choice}"


def _ensembles(preds: pd.DataFrame, labels: list[str], models: list[str]) -> pd.DataFrame:
    """Average the class probabilities of trained models: all of them, and CNN + wav2vec2."""
    prob_cols = [f"prob_{lab}" for lab in labels]
    combos = {}
    if len(models) > 1:
        combos["ensemble"] = models
    if {"cnn", "wav2vec2"} <= set(models) and len(models) > 2:
        combos["cnn+wav2vec2"] = ["cnn", "wav2vec2"]
    out = []
    keys = ["clip_id", "split", "fold"]
    for name, members in combos.items():
        part = preds[preds.model.isin(members)]
        mean = part.groupby(keys, sort=True)[prob_cols].mean().reset_index()
        first = part.drop_duplicates(keys).set_index(keys)
        mean = mean.join(first.drop(columns=prob_cols + ["model", "pred"]), on=keys)
        mean["pred"] = [labels[i] for i in mean[prob_cols].to_numpy().argmax(axis=1)]
        mean["model"] = name
        out.append(mean)
    return pd.concat(out, ignore_index=True) if out else preds.iloc[0:0]


def shard_labels(manifest: dict, meta: pd.DataFrame) -> list[str]:
    """The corpus's labels that the shards hold, in the corpus's order; a classifier needs two."""
    present = set(meta.label)
    if len(present) < 2:
        raise ValueError(f"the data holds one class only ({sorted(present)}); a classifier needs at least two labels")
    return [lab for lab in manifest["corpus"]["labels"] if lab in present]


def shard_splits(meta: pd.DataFrame, cfg: SplitConfig, fold: int = 0) -> dict[str, str]:
    """Clip -> split from the shards' clip_id, speaker and sex columns."""
    speaker_sex = meta.dropna(subset=["speaker"]).groupby("speaker").sex.first().to_dict()
    return assign_splits(list(meta.clip_id), list(meta.speaker), speaker_sex, cfg, fold)


def run_experiment(cfg: ExperimentConfig, progress: bool = True) -> dict:
    """Run (or resume) the experiment in ``cfg.out``; returns seconds, metrics, protocol and folder.

    With ``jobs`` > 1 training runs in spawned worker processes: a script calling this must
    guard its top level with ``if __name__ == "__main__":``, as ``multiprocessing`` requires.
    """
    unknown = [m for m in cfg.models if m not in model_names()]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(model_names())}")
    cfg = resolve_experiment(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_spec(out / "spec.toml", cfg)
    record = RunRecord(out / "run.json")
    with record.running():
        protocol, metrics = _run(cfg, out, record, progress)
    record.finish("complete", protocol=protocol)
    return {"seconds": record.doc["seconds"], "metrics": metrics, "protocol": protocol, "out": str(out)}


def _run(cfg: ExperimentConfig, out: Path, record: RunRecord, progress: bool) -> tuple[dict, dict]:
    """The stages of :func:`run_experiment`, each timed into ``run.json``."""

    device = resolve_device(cfg.device)
    with record.stage("prepare"):
        summary = prepare(cfg.prepare, progress=progress)
    log.info(format_summary(summary))
    manifest = read_manifest(cfg.prepare.out)
    meta = load_metadata(cfg.prepare.out, [*META_COLUMNS, "label"]).to_pandas()
    labels = shard_labels(manifest, meta)
    train_cfg = cfg.train
    split_text, disjoint = split_protocol(cfg.split, list(meta.clip_id), list(meta.speaker))
    protocol = Protocol(
        corpus=corpus_label(manifest, list(meta.clip_id)), split=split_text, synthetic=is_synthetic(manifest),
        speaker_disjoint=disjoint, folds=cfg.split.folds, seed=cfg.split.seed,
        pretrained={"wav2vec2": w2v2_overrides(cfg.w2v2)[1]} if "wav2vec2" in cfg.models else {},
        profile=cfg.profile, device=str(device), refit=bool(train_cfg.refit),
    )  # fmt: skip
    train_meta = {"feature_config": manifest["feature_config"], "protocol": protocol.to_dict()}
    folds = max(1, cfg.split.folds)
    units = []  # (fold, model, splits, model dir) still to train
    fold_splits = {}
    for fold in range(folds):
        fold_splits[fold] = splits = shard_splits(meta, cfg.split, fold)
        fold_dir = out / (f"fold-{fold}" if folds > 1 else ".")
        fold_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(fold_dir / "splits.json", splits)
        for name in cfg.models:
            if not (cfg.resume and _unit_done(fold_dir / name, bool(train_cfg.refit))):
                units.append(TrainUnit(name, fold if folds > 1 else None, splits, str(fold_dir / name)))
    run_unit = partial(
        train_unit, shards=cfg.prepare.out, labels=labels, cfg=train_cfg, device=str(device), resume=cfg.resume,
        meta=train_meta,
    )  # fmt: skip
    # Waveform models (wav2vec2) first: each takes several times a log-mel model's time, and a
    # pool that starts the longest units first finishes soonest.
    units.sort(key=lambda u: MODELS[u.name].input_kind != "wave")
    jobs = min(cfg.jobs or 1, len(units))
    if jobs <= 1:
        for unit in units:
            record.add_stage(unit.stage, run_unit(unit, progress=progress))
    else:
        _train_parallel(units, run_unit, jobs, record, progress)
    all_preds = []
    histories: dict[str, list[dict]] = {}
    for fold in range(folds):
        splits = fold_splits[fold]
        fold_dir = out / (f"fold-{fold}" if folds > 1 else ".")
        for name in cfg.models:
            model_dir = fold_dir / name
            histories[name if folds == 1 else f"{name}/fold-{fold}"] = json.loads(
                (model_dir / "history.json").read_text()
            )
            for scored_by, scored_splits in _scored_by(model_dir, bool(train_cfg.refit)).items():
                model, saved = load_model(scored_by)
                ids = [c for c, s in splits.items() if s in scored_splits]
                preds = predict(model, saved["meta"], cfg.prepare.out, ids, device)
                preds["split"] = preds.clip_id.map(splits)
                preds["model"] = name
                preds["fold"] = fold
                all_preds.append(preds)
    predictions = pd.concat(all_preds, ignore_index=True).merge(meta[list(META_COLUMNS)], on="clip_id", how="left")
    predictions = pd.concat([predictions, _ensembles(predictions, labels, list(cfg.models))], ignore_index=True)
    predictions.to_parquet(out / "predictions.parquet", index=False)
    with record.stage("evaluate"):
        metrics = write_evaluation(out, predictions, labels, protocol, histories)
    for fold, name in ((f, m) for f in range(folds) for m in cfg.models):  # model cards get the metrics
        model_dir = out / (f"fold-{fold}" if folds > 1 else ".") / name
        for scored_by, scored_splits in _scored_by(model_dir, bool(train_cfg.refit)).items():
            write_card(scored_by, metrics, fold, splits=scored_splits)
    return protocol.to_dict(), metrics


def _unit_done(model_dir: Path, refit: bool) -> bool:
    """Trained, and refit when the run refits: a run resumed with the refit newly on refits its models."""
    done = model_dir / "done.json"
    return done.is_file() and (not refit or "refit_epochs" in json.loads(done.read_text()))


def _scored_by(model_dir: Path, refit: bool) -> dict[Path, tuple[str, ...]]:
    """The saved model that scores each split: the selected one, and for the test split its refit."""
    if not refit:
        return {model_dir / "model": ("test", "val")}
    return {model_dir / "model": ("val",), model_dir / REFIT_DIR / "model": ("test",)}
