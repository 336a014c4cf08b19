"""``sononet train``: one model on a speaker-disjoint split of prepared shards, DDP under torchrun.

::

    sononet train --shards runs/demo/shards --model cnn --out runs/cnn
    torchrun --nproc-per-node 2 -m sononet train --shards runs/demo/shards --model cnn --out runs/ddp
    sononet-batch train --set shards=runs/demo/shards --set model_name=cnn --set out=runs/cnn

The recipe resolves exactly as ``train-all``'s does (:mod:`sononet.train.profiles`, the profile
picked from the shards' corpus), and the resolved spec is written to ``<out>/spec.toml``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sononet import stopping
from sononet.corpus import corpus_label, is_synthetic
from sononet.corpus.protocol import Protocol
from sononet.corpus.splits import SplitConfig
from sononet.device import check_device, resolve_device
from sononet.features.reader import load_metadata
from sononet.features.shards import read_manifest
from sononet.io import atomic_write_json
from sononet.jobs import write_spec
from sononet.locking import folder_lock
from sononet.models.registry import model_names
from sononet.train import ddp
from sononet.train.config import TrainConfig
from sononet.train.profiles import (
    PROFILE_CHOICES,
    resolve_profile,
    resolve_train,
    resolve_w2v2,
    w2v2_overrides,
    with_w2v2,
)
from sononet.train.refit import train_with_refit
from sononet.train.shard_info import shard_labels, shard_splits

log = logging.getLogger(__name__)


@dataclass
class TrainingConfig:
    shards: str = ""  # shard folder from `sononet prepare`
    model_name: str = "cnn"  # a registered model
    out: str = ""  # model run folder: checkpoint/, model/, history.json, done.json, spec.toml
    w2v2: str = "auto"  # as train-all's: tiny | hub id | dir; auto: profiles.W2V2_AUTO
    device: str = "auto"
    resume: bool = False  # continue from <out>/checkpoint/last.pt
    profile: str = "auto"  # demo | real; auto: by the shards' corpus (profiles.corpus_profile)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_device(self.device)
        if self.profile not in PROFILE_CHOICES:
            raise ValueError(f"profile must be one of {PROFILE_CHOICES}. Found: {self.profile!r}")
        if not self.shards or not self.out:
            raise ValueError(f"training needs shards and out folders. Found: shards={self.shards!r}, out={self.out!r}")
        if self.model_name not in model_names():
            raise ValueError(f"unknown model {self.model_name!r}; choose from {', '.join(model_names())}")


def resolve_training(cfg: TrainingConfig) -> TrainingConfig:
    """The profile (from the shards' corpus), its recipe and the wav2vec2 choice filled in: the spec that runs."""
    cfg = copy.deepcopy(cfg)
    cfg.profile = resolve_profile(cfg.profile, read_manifest(cfg.shards)["corpus"]["root"])
    cfg.train = resolve_train(cfg.train, cfg.profile)
    if cfg.model_name == "wav2vec2":
        cfg.w2v2 = resolve_w2v2(cfg.w2v2, resolve_device(cfg.device).type)
        cfg.train = with_w2v2(cfg.train, cfg.w2v2)
    return cfg


def run_training(cfg: TrainingConfig, progress: bool = True) -> dict:
    """Train (or resume) ``cfg.model_name`` in ``cfg.out`` (and its refit in ``out/refit`` when the recipe
    refits); returns best epoch, epochs, model folder and world size.

    Under torchrun every rank calls this; rank 0 writes the spec and ``done.json``.
    """
    cfg = resolve_training(cfg)
    dev = resolve_device(cfg.device)
    info = ddp.init_from_env(dev)
    if info.enabled and dev.type == "cuda":
        dev = torch.device("cuda", info.local_rank)
    out = Path(cfg.out)
    # Rank 0 holds the folder's lock: a second training into it stops at once (the ranks share it).
    # SIGTERM (docker stop, a scheduler's preemption) checkpoints at the next step and exits 143.
    with folder_lock(out, "train") if info.is_main else contextlib.nullcontext(), stopping.handling_unless_installed():
        return _train(cfg, out, dev, info, progress)


def _train(cfg: TrainingConfig, out: Path, dev: Any, info: Any, progress: bool) -> dict:
    if info.is_main:
        write_spec(out / "spec.toml", cfg, "train")
    manifest = read_manifest(cfg.shards)
    meta = load_metadata(cfg.shards, ["clip_id", "speaker", "sex", "label"]).to_pandas()
    splits = shard_splits(meta, cfg.split)
    labels = shard_labels(manifest, meta)
    protocol = Protocol(
        corpus=corpus_label(manifest, list(meta.clip_id)), split=cfg.split.protocol, synthetic=is_synthetic(manifest),
        speaker_disjoint=cfg.split.mode == "speaker", seed=cfg.train.seed, profile=cfg.profile,
        pretrained={"wav2vec2": w2v2_overrides(cfg.w2v2)[1]} if cfg.model_name == "wav2vec2" else {},
    )  # fmt: skip
    train_meta = {"feature_config": manifest["feature_config"], "protocol": protocol.to_dict()}
    result, done = train_with_refit(
        cfg.model_name, cfg.shards, splits, labels, cfg.train, out, dev, cfg.resume, train_meta, progress, info
    )
    done["world_size"] = info.world_size
    if info.is_main:
        atomic_write_json(out / "done.json", {**done, "digests": result.digests})
    ddp.shutdown(info)
    return {**done, "model_dir": str(result.model_dir), "is_main": info.is_main}
