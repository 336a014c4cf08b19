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
from concurrent.futures import FIRST_COMPLETED, wait
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from sononet import stopping
from sononet.corpus import corpus_label, is_synthetic
from sononet.corpus.protocol import Protocol
from sononet.corpus.splits import SplitConfig, split_protocol
from sononet.device import check_device, resolve_device, thread_budget, worker_pool
from sononet.evaluate import write_evaluation
from sononet.evaluate.predictions import ENSEMBLE, META_COLUMNS, ensemble_members
from sononet.evaluate.robustness import RobustnessConfig, suite_clips, ua_rows
from sononet.features.reader import load_metadata
from sononet.features.shards import read_manifest
from sononet.io import atomic_write, atomic_write_json, output_dir, read_json, remove_stale_temps
from sononet.jobs import write_spec
from sononet.locking import folder_lock
from sononet.models.card import write_card
from sononet.models.ensemble import write_ensemble
from sononet.models.registry import MODELS, model_names
from sononet.models.saved import SavedModel
from sononet.prepare import PrepareConfig, format_summary, prepare
from sononet.robustness import suite_probabilities
from sononet.runinfo import RunRecord
from sononet.train.config import TrainConfig
from sononet.train.predict import predict
from sononet.train.profiles import (
    PROFILE_CHOICES,
    resolve_features,
    resolve_profile,
    resolve_train,
    resolve_w2v2,
    w2v2_overrides,
    with_w2v2,
)
from sononet.train.progress import LOG_FILE, LogTail, logged
from sononet.train.refit import REFIT_DIR, train_with_refit
from sononet.train.shard_info import shard_labels, shard_splits

log = logging.getLogger(__name__)
ECHO_EVERY_S = 2.0  # how often the parent prints the training workers' new log lines
DEFAULT_MODELS = ("cnn", "bigru", "wav2vec2")


@dataclass
class ExperimentConfig:
    out: str = "runs/demo"  # run directory; shards go to <out>/shards unless prepare.out says otherwise
    models: tuple[str, ...] = DEFAULT_MODELS
    w2v2: str = "auto"  # tiny (random-init, offline), a hub id or a local dir; auto: profiles.W2V2_AUTO
    device: str = "auto"
    resume: bool = True  # continue an interrupted run in the same directory
    jobs: int | None = None  # models (fold x model) trained at once, one process each; None: see resolve_experiment
    profile: str = "auto"  # demo | real; auto: by the corpus (profiles.corpus_profile)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)  # perturb = [] skips the suite

    def __post_init__(self) -> None:
        check_device(self.device)
        if not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(f"models must name at least one model, each once. Found: {list(self.models)}")
        unknown = [m for m in self.models if m not in model_names()]
        if unknown:  # here, so --print-spec refuses a spec that would fail at run time
            raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(model_names())}")
        if not self.prepare.out:  # the shards belong to the run unless placed elsewhere
            self.prepare.out = str(Path(self.out) / "shards")
        if self.profile not in PROFILE_CHOICES:
            raise ValueError(f"profile must be one of {PROFILE_CHOICES}. Found: {self.profile!r}")
        if self.jobs is not None and self.jobs < 1:
            raise ValueError(f"jobs must be at least 1 (or unset for one per CPU thread). Found: {self.jobs}")


def resolve_experiment(cfg: ExperimentConfig) -> ExperimentConfig:
    """Fill in what the profile and the device decide, so the written spec says exactly what ran.

    Both entrypoints (``sononet train-all`` and ``sononet-batch train-all``) call this, and
    ``--print-spec`` prints its result. Values set explicitly are never changed.
    """
    cfg = copy.deepcopy(cfg)
    cfg.profile = resolve_profile(cfg.profile, cfg.prepare.data)
    if cfg.prepare.device == "auto":  # one device for the whole run unless prepare asks for its own
        cfg.prepare.device = cfg.device
    cfg.prepare.features = resolve_features(cfg.prepare.features, cfg.profile)
    if cfg.jobs is None:
        # On the CPU, N single-threaded trainings beat one N-threaded one: these models are too small
        # for intra-op threads to pay (bench: BiGRU 1.2 -> 40 clips/s from 2 threads to 1).
        cpu = resolve_device(cfg.device).type == "cpu"
        cfg.jobs = min(thread_budget(), max(1, cfg.split.folds) * len(cfg.models)) if cpu else 1
    cfg.train = resolve_train(cfg.train, cfg.profile)
    if "wav2vec2" in cfg.models:
        cfg.w2v2 = resolve_w2v2(cfg.w2v2, resolve_device(cfg.device).type)
        cfg.train = with_w2v2(cfg.train, cfg.w2v2)
    return cfg


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
    _, done = train_with_refit(
        unit.name, shards, unit.splits, labels, cfg, unit.model_dir, resolve_device(device), resume, meta, progress
    )
    atomic_write_json(Path(unit.model_dir) / "done.json", done)
    return time.perf_counter() - t


def _train_parallel(
    units: list[TrainUnit], run_unit: Callable[..., float], jobs: int, record: RunRecord, progress: bool,
    scoring: Callable[[TrainUnit], ScoreUnit], score: Callable[[ScoreUnit], Scored], trained: list[ScoreUnit],
) -> list[Scored]:  # fmt: skip
    """``units`` in ``jobs`` worker processes (``device.worker_pool``), each scored there as soon as it is trained.

    A unit's scoring (``score(scoring(unit))``: its predictions and its robustness suite) joins the
    queue behind the training still waiting, so it fills a worker the training no longer needs: the
    last units train while the first ones are scored. ``trained`` are units a resumed run only scores.
    A worker's error stops the queue (running units finish or die with the pool) and is raised
    here; a rerun resumes, as every finished unit left its ``done.json``.
    """
    # Workers print warnings and errors themselves; their INFO lines come through echo() below,
    # with the unit's name and fold, so each line shows once.
    pool, threads = worker_pool(jobs, stderr_level=logging.WARNING)
    log.info("training %d models, %d at a time, %d thread(s) each", len(units), jobs, threads)
    tails = [(unit, LogTail(Path(unit.model_dir) / LOG_FILE)) for unit in units]

    def echo() -> None:  # the workers' epoch lines, as they come
        for unit, tail in tails:
            name = unit.stage.removeprefix("train/")
            for line in tail.lines():
                log.info("%s: %s", name, line.removeprefix(f"{unit.name}: ").removeprefix(f"{unit.name} "))

    scored: list[Scored] = []
    try:
        futures: dict = {pool.submit(run_unit, unit): unit for unit in units}
        futures |= {pool.submit(score, s): s for s in trained}
        bar = tqdm(total=len(units), desc="train", unit="model", disable=not progress)
        pending = set(futures)
        with logging_redirect_tqdm() if progress else nullcontext():
            while pending:
                done, pending = wait(pending, timeout=ECHO_EVERY_S, return_when=FIRST_COMPLETED)
                echo()
                for future in done:
                    unit = futures[future]
                    if isinstance(unit, ScoreUnit):
                        scored.append(future.result())
                        continue
                    record.add_stage(unit.stage, future.result())
                    bar.update(1)
                    bar.set_postfix_str(unit.stage.removeprefix("train/"))
                    follow = scoring(unit)
                    scoring_future = pool.submit(score, follow)
                    futures[scoring_future] = follow
                    pending.add(scoring_future)
        bar.close()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return scored


@dataclass(frozen=True)
class ScoreUnit:
    """One trained model of one fold to score: its predictions, and the robustness suite on ``suite``."""

    name: str
    fold: int
    model_dir: str
    splits: dict[str, str]
    suite: pd.DataFrame | None  # the fold's suite clips (clip_id, source_path, speaker, label); None: no suite


@dataclass
class Scored:
    """What :func:`score_unit` returns: its prediction rows, suite probabilities and the seconds of each."""

    unit: ScoreUnit
    predictions: pd.DataFrame
    probs: dict | None
    model_labels: list[str] | None
    seconds: dict[str, float]


def score_unit(
    unit: ScoreUnit, shards: str, refit: bool, device: str, robustness: RobustnessConfig, folds: int
) -> Scored:
    """Predict the unit's val and test clips with the models that score them, then run the robustness
    suite on its test model. Runs in this process or in a worker; the result is small (probabilities only)."""
    stopping.check()  # queued behind training that a stop ended: do not start
    suffix = f"/{unit.name}" + (f"/fold-{unit.fold}" if folds > 1 else "")
    t = time.perf_counter()
    frames = []
    for scored_by, scored_splits in _scored_by(Path(unit.model_dir), refit).items():
        ids = [c for c, s in unit.splits.items() if s in scored_splits]
        preds = predict(SavedModel.load(scored_by), shards, ids, resolve_device(device))
        preds["split"] = preds.clip_id.map(unit.splits)
        preds["model"] = unit.name
        preds["fold"] = unit.fold
        frames.append(preds)
    seconds = {f"predict{suffix}": time.perf_counter() - t}
    probs = model_labels = None
    if unit.suite is not None:
        t = time.perf_counter()
        test_model = _test_model(Path(unit.model_dir), refit)
        probs, model_labels = suite_probabilities({unit.name: test_model}, unit.suite, robustness, device)
        seconds[f"robustness{suffix}"] = time.perf_counter() - t
    return Scored(unit, pd.concat(frames, ignore_index=True), probs, model_labels, seconds)


def _ensembles(preds: pd.DataFrame, labels: list[str], models: list[str]) -> pd.DataFrame:
    """Average the class probabilities of trained models: all of them, and CNN + wav2vec2."""
    prob_cols = [f"prob_{lab}" for lab in labels]
    out = []
    keys = ["clip_id", "split", "fold"]
    for name, members in ensemble_members(models).items():
        part = preds[preds.model.isin(members)]
        mean = part.groupby(keys, sort=True)[prob_cols].mean().reset_index()
        first = part.drop_duplicates(keys).set_index(keys)
        mean = mean.join(first.drop(columns=prob_cols + ["model", "pred"]), on=keys)
        mean["pred"] = [labels[i] for i in mean[prob_cols].to_numpy().argmax(axis=1)]
        mean["model"] = name
        out.append(mean)
    return pd.concat(out, ignore_index=True) if out else preds.iloc[0:0]


def run_experiment(cfg: ExperimentConfig, progress: bool = True) -> dict:
    """Run (or resume) the experiment in ``cfg.out``; returns seconds, metrics, protocol and folder.

    With ``jobs`` > 1 training runs in spawned worker processes: a script calling this must
    guard its top level with ``if __name__ == "__main__":``, as ``multiprocessing`` requires.
    """
    cfg = resolve_experiment(cfg)
    out = output_dir(cfg.out, "--out")
    with folder_lock(out, "train-all"):  # a second run into the same folder stops at once
        for folder in (out, out / "tables", out / "plots"):  # a killed run's partial report files
            remove_stale_temps(folder)
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
    trained = []  # models a resumed run only scores
    fold_splits = {}
    suites: dict[int, pd.DataFrame | None] = {}  # per fold: its test clips for the robustness suite, if it runs
    refit = bool(train_cfg.refit)
    suite = None  # every clip's source file, speaker and class, for the robustness suite
    if cfg.robustness.perturb:
        suite = load_metadata(cfg.prepare.out, ["clip_id", "source_path", "speaker", "label"]).to_pandas()
    for fold in range(folds):
        fold_splits[fold] = splits = shard_splits(meta, cfg.split, fold)
        suites[fold] = None  # at most robustness.max_clips of the test clips (whole speakers)
        if suite is not None:
            test = suite[suite.clip_id.map(splits) == "test"]
            suites[fold] = suite_clips(test, cfg.robustness.max_clips, cfg.robustness.seed)
        fold_dir = out / (f"fold-{fold}" if folds > 1 else ".")
        fold_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(fold_dir / "splits.json", splits)
        for name in cfg.models:
            unit = TrainUnit(name, fold if folds > 1 else None, splits, str(fold_dir / name))
            (trained if cfg.resume and _unit_done(fold_dir / name, refit) else units).append(unit)
    run_unit = partial(logged, partial(  # each unit's epoch lines also go to <model>/train.log
        train_unit, shards=cfg.prepare.out, labels=labels, cfg=train_cfg, device=str(device), resume=cfg.resume,
        meta=train_meta,
    ))  # fmt: skip
    score = partial(
        score_unit, shards=cfg.prepare.out, refit=refit, device=str(device), robustness=cfg.robustness, folds=folds
    )

    def scoring(unit: TrainUnit) -> ScoreUnit:
        fold = unit.fold or 0
        return ScoreUnit(unit.name, fold, unit.model_dir, fold_splits[fold], suites[fold])

    # Waveform models (wav2vec2) first: each takes several times a log-mel model's time, and a
    # pool that starts the longest units first finishes soonest.
    units.sort(key=lambda u: MODELS[u.name].input_kind != "wave")
    jobs = min(cfg.jobs or 1, len(units))
    if jobs <= 1:
        for unit in units:
            record.add_stage(unit.stage, run_unit(unit, progress=progress))
        scored = [score(scoring(unit)) for unit in units + trained]
    else:
        scored = _train_parallel(units, run_unit, jobs, record, progress, scoring, score, list(map(scoring, trained)))
    by_unit = {(s.unit.fold, s.unit.name): s for s in scored}
    for s in scored:
        for stage, seconds in s.seconds.items():
            record.add_stage(stage, seconds)
    all_preds = []
    histories: dict[str, list[dict]] = {}
    robust_rows = []
    for fold in range(folds):
        fold_dir = out / (f"fold-{fold}" if folds > 1 else ".")
        probs: dict = {}
        for name in cfg.models:
            histories[name if folds == 1 else f"{name}/fold-{fold}"] = read_json(fold_dir / name / "history.json")
            all_preds.append(by_unit[fold, name].predictions)
            probs |= by_unit[fold, name].probs or {}
        if suites[fold] is not None:
            first = by_unit[fold, cfg.models[0]]
            rows = ua_rows(probs, suites[fold], labels, first.model_labels, list(cfg.models))
            robust_rows.append(rows.assign(fold=fold))
    predictions = pd.concat(all_preds, ignore_index=True).merge(meta[list(META_COLUMNS)], on="clip_id", how="left")
    predictions = pd.concat([predictions, _ensembles(predictions, labels, list(cfg.models))], ignore_index=True)
    atomic_write(out / "predictions.parquet", lambda tmp: predictions.to_parquet(tmp, index=False))
    robustness = pd.concat(robust_rows, ignore_index=True) if robust_rows else None  # the suite ran with scoring
    with record.stage("evaluate"):
        metrics = write_evaluation(out, predictions, labels, protocol, histories, robustness=robustness)
    for fold, name in ((f, m) for f in range(folds) for m in cfg.models):  # model cards get the metrics
        model_dir = out / (f"fold-{fold}" if folds > 1 else ".") / name
        for scored_by, scored_splits in _scored_by(model_dir, refit).items():
            write_card(scored_by, metrics, fold, splits=scored_splits)
    if len(cfg.models) > 1:  # the ensemble rows as a folder users load: the models that scored the test split
        for fold in range(folds):
            fold_dir = out / (f"fold-{fold}" if folds > 1 else ".")
            members = [_test_model(fold_dir / name, refit) for name in cfg.models]
            splits = ("test",) if refit else ("test", "val")  # with refit, val rows came from other models
            write_ensemble(fold_dir / ENSEMBLE, members, metrics, fold, splits, name=ENSEMBLE)
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


def _test_model(model_dir: Path, refit: bool) -> Path:
    """The saved model that scored the test split (the refit one when the run refits)."""
    return next(d for d, s in _scored_by(model_dir, refit).items() if "test" in s)
