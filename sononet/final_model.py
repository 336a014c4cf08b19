"""``sononet train-final``: the model to ship, trained once more on every speaker of a finished
cross-validation run, for the epochs the folds chose.

::

    sononet train-all --data ../shared/data/ravdess --labels ANG,DIS,FEA,HAP,NEU,SAD --folds 6 \\
        --models cnn,bigru --out runs/ravdess-6
    sononet train-final --run runs/ravdess-6 --out results/models/ravdess-6

The folder is an ensemble (``ensemble.json``: the mean of its members' probabilities), so
``EmotionClassifier.load(out)``, ``sononet label DIR --model OUT``, ``evaluate`` and ``export``
take it whole. Cross-validation measures a recipe; it does not give the best model to use, since each fold's
refit saw only 20 of 24 actors. The final model trains on all of them with the fold refits' own
schedule: per model, the fold whose refit epoch count is the median over folds lends its
learning rate per epoch (warm-up and plateau drops included), so the epoch count and the drops
are the ones cross-validation chose and scored. The numbers that describe the final model are
the run's cross-validated ones (nothing is held out from it), and its card says so.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sononet.errors import UserError
from sononet.io import atomic_write_bytes, atomic_write_json, output_dir, read_json

log = logging.getLogger(__name__)

SPEC = "spec.toml"  # train-all's resolved spec in the run folder


@dataclass
class FinalConfig:
    run: str = ""  # a finished `train-all --folds K` run folder (spec.toml, fold-*/<model>/done.json)
    out: str = ""  # the final model folder: one subfolder per model, the ensemble and the card
    models: tuple[str, ...] | None = None  # None: every model the run trained
    device: str = "auto"
    resume: bool = False  # continue each model from its checkpoint

    def __post_init__(self) -> None:
        from sononet.device import check_device

        if not self.run or not self.out:
            raise ValueError(f"train-final needs --run and --out. Found: run={self.run!r}, out={self.out!r}")
        if Path(self.out).resolve() == Path(self.run).resolve():
            raise ValueError("--out must be a new folder, not the cross-validation run itself")
        check_device(self.device)


def fold_schedule(run: Path, model: str) -> tuple[int, list[float]]:
    """(fold, learning rate per epoch) of the fold whose refit epoch count is the (lower) median over folds.

    A run without refits (``--no-refit``) has no schedule to lend: refused, since the final model
    would otherwise train for an epoch count no fold tested.
    """
    from sononet.train.refit import REFIT_DIR

    counts = {}
    for done in sorted(run.glob(f"fold-*/{model}/done.json")):
        doc = read_json(done)
        if not isinstance(doc, dict) or not isinstance(doc.get("refit_epochs"), int):
            raise UserError(f"{done} has no refit epoch count: train-final needs a run trained with its refit")
        counts[int(done.parent.parent.name.removeprefix("fold-"))] = doc["refit_epochs"]
    if len(counts) < 2:
        raise UserError(f"{run} holds {len(counts)} finished fold(s) of {model}; train-final needs a --folds run")
    ranked = sorted(counts, key=lambda f: (counts[f], f))
    fold = ranked[(len(ranked) - 1) // 2]
    path = run / f"fold-{fold}" / model / REFIT_DIR / "history.json"
    history = read_json(path)
    lrs = [float(row["lr"]) for row in history] if isinstance(history, list) else []
    if len(lrs) != counts[fold]:
        raise UserError(f"{path} has {len(lrs)} epochs, done.json {counts[fold]}: rerun that fold")
    return fold, lrs


def train_final(cfg: FinalConfig, progress: bool = True) -> dict[str, Any]:
    """Train each model on every clip of the run's shards; returns what ``final.json`` records."""
    import torch

    from sononet.device import resolve_device
    from sononet.features.reader import load_metadata
    from sononet.features.shards import read_manifest
    from sononet.jobs import load_spec
    from sononet.locking import folder_lock
    from sononet.models.card import write_card
    from sononet.models.ensemble import write_ensemble
    from sononet.train.refit import refit_model
    from sononet.train.shard_info import shard_labels

    run = Path(cfg.run)
    if not (run / SPEC).is_file():
        raise UserError(f"{run} is not a train-all run folder (no {SPEC})")
    job, spec = load_spec(str(run / SPEC))
    if job != "train-all" or spec.split.folds < 2:
        raise UserError(f"{run}: train-final takes a cross-validated train-all run (--folds K). Found: {job}")
    models = list(cfg.models or spec.models)
    missing = [m for m in models if m not in spec.models]
    if missing:
        raise UserError(f"{run} did not train {missing}; it trained {list(spec.models)}")
    schedules = {name: fold_schedule(run, name) for name in models}  # every refusal before any work
    shards = run / "shards" if (run / "shards").is_dir() else Path(spec.prepare.out)  # the run may have moved
    manifest = read_manifest(shards)
    meta = load_metadata(shards, ["clip_id", "speaker", "label"]).to_pandas()
    labels = shard_labels(manifest, meta)
    clip_ids = sorted(meta.clip_id[meta.label.isin(labels)])
    out = output_dir(cfg.out, "--out")
    device = resolve_device(cfg.device)
    speakers = int(meta.speaker.nunique())
    protocol = json.loads(json.dumps(read_json(run / "metrics.json")["protocol"]))
    protocol.update(split=f"all {speakers} speakers (final model; scores are the run's {spec.split.folds}"
                    "-fold cross-validation)", folds=spec.split.folds)  # fmt: skip
    record: dict[str, Any] = {"run": str(run.resolve()), "clips": len(clip_ids), "speakers": speakers, "models": {}}
    with folder_lock(out, "train-final"):
        for name in models:
            fold, lrs = schedules[name]
            log.info("%s: %d epochs on %d clips, the schedule of fold %d's refit", name, len(lrs), len(clip_ids), fold)
            train_meta = {"feature_config": manifest["feature_config"], "protocol": protocol}
            result = refit_model(
                name, shards, clip_ids, labels, spec.train, out / name, device, [{"lr": lr} for lr in lrs],
                resume=cfg.resume, meta=train_meta, progress=progress,
            )  # fmt: skip
            write_card(result.model_dir, splits=())  # its scores are the run's, in the folder's card
            record["models"][name] = {"epochs": len(lrs), "schedule_from_fold": fold, "model": f"{name}/model"}
            torch.cuda.empty_cache() if device.type == "cuda" else None
        atomic_write_json(out / "final.json", record)
        write_ensemble(out, [out / name / "model" for name in models])  # the folder loads as one model
        _copy_run_tables(run, out)
        _copy_licence(Path(manifest["corpus"]["root"]), out)
        card = final_card(
            record, read_json(run / "metrics.json"), spec, (out / "cross-validation" / "robustness.md").is_file()
        )
        atomic_write_bytes(out / "README.md", card.encode())
    return record


def final_card(record: dict[str, Any], metrics: dict[str, Any], spec: Any, robustness: bool) -> str:
    """The folder's model card: what it is, how it was trained, the run's cross-validated scores."""
    from sononet.models.card import CORPORA, USAGE

    protocol = metrics["protocol"]
    material, licence = CORPORA.get(protocol["corpus"], ("unknown material", "see the training data's licence"))
    rows = []
    for name, m in metrics["models"].items():
        agg = (m.get("test") or {}).get("aggregate")
        if agg:
            cells = [f"{100 * agg[k]['mean']:.1f} ± {100 * agg[k]['std']:.1f}" for k in ("accuracy", "ua", "macro_f1")]
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
    trained = "\n".join(f"- `{n}/model`: {m['epochs']} epochs on all {record['clips']} clips, the learning rate per "
                        f"epoch of fold {m['schedule_from_fold']}'s refit (the median refit length)"
                        for n, m in record["models"].items())  # fmt: skip
    return "\n".join(
        [
            f"# SonoNet {'+'.join(record['models'])} on {protocol['corpus']} ({', '.join(metrics['labels'])})",
            "",
            *USAGE,
            "",
            f"Trained from scratch on every speaker of the corpus ({record['speakers']} speakers, {record['clips']} "
            f"clips; {material}) with the recipe that {spec.split.folds}-fold cross-validation scored below:",
            "",
            trained,
            "",
            "## Cross-validated scores of this recipe",
            "",
            f"Test speakers, mean ± std over {spec.split.folds} actor-disjoint folds, % "
            "(each fold's model trained on the other speakers; this model has no held-out speakers of its own):",
            "",
            "| model | WA | UA | macro-F1 |",
            "| --- | ---: | ---: | ---: |",
            *rows,
            "",
            "Under gain, peak normalisation, noise, a telephone band and a codec, speakers known and unknown: "
            f"`cross-validation/robustness.md`{'' if robustness else ' (not in this run)'}.",
            "",
            "## Intended use and limits",
            "",
            f"Trained on {material}: emotions as actors portray them, in a quiet studio. Expect lower scores on "
            "spontaneous speech, other languages, children, far-field or noisy recordings, and on classes "
            "outside the label set (every clip gets one of them). Not for decisions about people.",
            "",
            "## Licence",
            "",
            f"The weights are derived from the training audio ({licence}) and are distributed under its terms "
            "(`LICENSE`: non-commercial, attribution, share-alike for RAVDESS). SonoNet's code is Apache-2.0; "
            "this folder is not part of the package.",
            "",
        ]
    )


def _copy_licence(corpus_root: Path, out: Path) -> None:
    """The training audio's licence file (``LICENSE*`` in the corpus folder or the one above), as ``LICENSE``."""
    for folder in (corpus_root, corpus_root.parent):
        found = sorted(folder.glob("LICENSE*")) if folder.is_dir() else []
        if found and found[0].is_file():
            head = ("The model weights in this folder were trained on the audio licensed below and are distributed\n"
                    "under the same licence, with its attribution. SonoNet's code is Apache-2.0 (not this folder).\n"
                    "\n---\n\n")  # fmt: skip
            atomic_write_bytes(out / "LICENSE", head.encode() + found[0].read_bytes())
            return
    log.warning("no LICENSE file beside the corpus at %s: add the training data's licence to %s", corpus_root, out)


def _copy_run_tables(run: Path, out: Path) -> None:
    """The cross-validation evidence beside the model: the report's headline and robustness tables."""
    tables = out / "cross-validation"
    tables.mkdir(exist_ok=True)
    for name in ("headline.md", "robustness.md", "robustness.csv"):
        src = run / "tables" / name
        if src.is_file():
            shutil.copyfile(src, tables / name)
    for name in ("spec.toml", "metrics.json"):
        shutil.copyfile(run / name, tables / name)
    atomic_write_bytes(tables / "README.md", f"Copied from the cross-validation run `{run.name}`.\n".encode())
