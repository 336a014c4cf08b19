"""``sononet label``'s settings: what to label, with which model, into which file, how fast."""

from __future__ import annotations

import os
from dataclasses import dataclass

from sononet.device import check_device
from sononet.label.engine import check_window
from sononet.label.inputs import resolve_shard
from sononet.label.speakers import MIN_GROUP_FILES, SpeakerRule


@dataclass
class LabelConfig:
    input: str | None = None  # folder, .txt path list, manifest CSV/TSV/Parquet (`path` column) or file
    # saved model folder (config.json), ensemble folder (ensemble.json) or several model folders, averaged
    model: str | tuple[str, ...] | None = None
    out: str = "labels.parquet"  # merged output; parts and state go to <out>.parts/
    window_s: float | None = None  # None = the model's clip length (3 s): the input length it learned on
    hop_s: float | None = None  # None = window_s: no overlap, each second labelled once, rows independent
    batch_size: int = 64  # windows per forward pass; the memory bound with prefetch = 2 batches
    part_size: int = 1000  # files per part: the unit of resume and of output memory
    shard_index: int | None = None  # None = JOB_COMPLETION_INDEX or RANK from the environment, else 0
    shard_count: int | None = None  # None = JOB_COMPLETIONS or WORLD_SIZE from the environment, else 1
    device: str = "auto"  # cuda when present, else cpu
    workers: int | None = None  # decode threads; None = the CPU threads chosen (--threads), else usable CPUs
    mel_backend: str = "auto"  # as in prepare: both backends pass the librosa parity test
    merge: bool = False  # only combine every shard's finished parts into `out`
    embeddings: bool = False  # add the pooled clip vector per row (fixed-shape tensor column `embedding`)
    jobs: int | None = None  # processes labelling shards side by side, then merged; None: see label_jobs
    # parent | regex:PATTERN | column:NAME: files of one speaker lose that speaker's own mean log-mel
    # (label/speakers.py); None: every file gets the training speakers' default
    speaker_from: str | None = None
    speaker_min_files: int = MIN_GROUP_FILES  # smaller groups keep the training default (label/speakers.py)

    def __post_init__(self) -> None:
        if not str(self.out).endswith(".parquet"):
            raise ValueError(f"out must be a .parquet file (labels are written as Parquet). Found: {self.out!r}")
        if os.path.isdir(self.out):
            raise ValueError(f"out must be a .parquet file, not a folder. Found the folder {self.out!r}")
        if self.speaker_from is not None:
            SpeakerRule.parse(self.speaker_from)  # a bad rule or a pattern that does not compile: refused now
        for name in ("batch_size", "part_size", "workers", "jobs", "speaker_min_files"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive. Found: {getattr(self, name)}")
        check_window(self.window_s, self.hop_s)  # in samples once the model's rate is known (resolve_window)
        if (self.shard_index, self.shard_count) != (None, None):
            resolve_shard(self.shard_index, self.shard_count)  # both given, 0 <= i < n
        check_device(self.device)
        if self.mel_backend not in ("auto", "nnaudio", "torchaudio"):
            raise ValueError(f"mel_backend must be auto, nnaudio or torchaudio. Found: {self.mel_backend!r}")
