"""Stream shards back as torch batches, or load their metadata for pandas/duckdb.

Training never holds the corpus: each epoch walks the shards in a seeded order, a window
of ``window_shards`` shards at a time, shuffles rows inside the window and cuts batches.
Under DDP every rank walks the same windows and a ``DistributedSampler`` over each
window's rows gives each rank its equal share, so ranks step in lockstep. Memory is
bounded by the window, not the corpus.

The shards are plain Parquet, so any Arrow reader works too::

    import duckdb; duckdb.sql("select label, count(*) from 'shards/shard-*.parquet' group by 1")
    import pandas as pd; pd.read_parquet("shards", columns=["clip_id", "label", "speaker"])
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import DistributedSampler

from sononet.features.shards import METADATA_COLUMNS, read_manifest, shard_paths, shard_tensor

META_COLUMNS = METADATA_COLUMNS  # every column but the tensors
# The auxiliary intensity head's targets: CREMA-D's three grades (its XX and None are unknown), and
# RAVDESS's two on the same scale (its actors' "normal" is CREMA-D's medium, "strong" its high).
INTENSITY_INDEX = {"LO": 0, "MD": 1, "HI": 2, "normal": 1, "strong": 2}


def load_metadata(directory: str | Path, columns: Sequence[str] = META_COLUMNS) -> pa.Table:
    """Every shard's metadata columns (no tensors), in shard order."""
    paths = shard_paths(directory)
    if not paths:
        raise ValueError(f"{directory} lists no shards; run `sononet prepare` first")
    return pa.concat_tables(pq.read_table(p, columns=list(columns)) for p in paths)


def split_speakers(directory: str | Path, splits: dict[str, str]) -> dict[str, list[str]]:
    """The speakers of the ``train`` and ``val`` clips of ``splits``: whom a model learned from and was
    chosen on, saved with it so an evaluation on the same corpus can say which test speakers it knows."""
    meta = load_metadata(directory, ["clip_id", "speaker"]).to_pydict()
    found: dict[str, set[str]] = {"train": set(), "val": set()}
    for clip, speaker in zip(meta["clip_id"], meta["speaker"]):
        if speaker is not None and splits.get(clip) in found:
            found[splits[clip]].add(str(speaker))
    return {part: sorted(s) for part, s in found.items()}


@dataclass
class Batch:
    x: torch.Tensor  # (B, n_mels, T) float32 log-mel dB, or (B, S) float32 waveform in [-1, 1]
    lengths: torch.Tensor  # (B,) valid frames (mel) or samples (wave)
    labels: torch.Tensor  # (B,) class index
    intensity: torch.Tensor  # (B,) 0/1/2 for LO/MD/HI (INTENSITY_INDEX), -100 where unknown
    clip_ids: list[str]
    offsets: torch.Tensor | None = None  # (B, n_mels) each clip's speaker mean, when the stream has offsets
    wave: torch.Tensor | None = None  # (B, S) float32 waveform beside a log-mel, when the stream has ``with_wave``
    wave_lengths: torch.Tensor | None = None  # (B,) its valid samples


class ShardStream:
    """An epoch-seeded, windowed-shuffle stream over the rows of ``clip_ids``.

    ``offsets`` (clip_id -> (n_mels,), from ``normalize.SpeakerMeans.offsets``) ride along with each
    batch for :func:`~sononet.features.normalize.model_inputs`; with ``with_wave`` a log-mel stream
    carries each clip's stored waveform too (what noise augmentation recomputes features from).
    """

    def __init__(
        self,
        directory: str | Path,
        clip_ids: Collection[str],
        labels: Sequence[str],
        input_kind: str = "mel",
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int = 0,
        window_shards: int = 4,
        rank: int = 0,
        world_size: int = 1,
        offsets: Mapping[str, np.ndarray] | None = None,
        with_wave: bool = False,
    ) -> None:
        if input_kind not in ("mel", "wave"):
            raise ValueError(f"input_kind must be 'mel' or 'wave'. Found: {input_kind!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive. Found: {batch_size}")
        self.directory = Path(directory)
        self.manifest = read_manifest(directory)
        self.paths = shard_paths(directory, self.manifest)
        self.clip_ids = frozenset(clip_ids)
        self._ids = pa.array(sorted(self.clip_ids), pa.string())
        self.label_index = {lab: i for i, lab in enumerate(labels)}
        self.input_kind = input_kind
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.window_shards = max(1, window_shards)
        self.rank = rank
        self.world_size = world_size
        self.offsets = offsets
        self.with_wave = with_wave and input_kind == "mel"
        self.epoch = 0
        counts = self._rows_per_shard()
        self._window_counts = [
            sum(counts[i : i + self.window_shards]) for i in range(0, len(counts), self.window_shards)
        ]

    def _rows_per_shard(self) -> list[int]:
        return [
            int(pc.sum(pc.is_in(t["clip_id"], self._ids)).as_py() or 0)
            for t in (pq.read_table(p, columns=["clip_id"]) for p in self.paths)
        ]

    @property
    def n_rows(self) -> int:
        """Rows this rank sees per epoch (DistributedSampler pads each window to a multiple of world_size)."""
        return sum(-(-n // self.world_size) for n in self._window_counts if n)

    def __len__(self) -> int:
        return -(-self.n_rows // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _read(self, path: Path) -> dict[str, np.ndarray]:
        col = self.input_kind
        length_col = "n_frames" if col == "mel" else "n_samples"
        waves = ["wave", "n_samples"] if self.with_wave else []
        table = pq.read_table(path, columns=["clip_id", "label", "intensity", length_col, col, *waves])
        keep = pc.is_in(table["clip_id"], self._ids)
        table = table.filter(keep)
        unknown = sorted(set(table["label"].to_pylist()) - set(self.label_index))
        if unknown:
            raise ValueError(f"{path.name} holds labels {unknown} outside the label set {list(self.label_index)}")
        values = shard_tensor(table, col)
        offsets = {}
        if self.offsets is not None:
            rows = [self.offsets[c] for c in table["clip_id"].to_pylist()]
            empty = np.zeros((0, values.shape[1]), np.float32)
            offsets["offsets"] = np.stack(rows).astype(np.float32) if rows else empty
        if self.with_wave:
            offsets["wave"] = shard_tensor(table, "wave")
            offsets["wave_lengths"] = table["n_samples"].to_numpy().astype(np.int64)
        return {
            **offsets,
            "x": values,
            "lengths": table[length_col].to_numpy().astype(np.int64),
            "labels": np.array([self.label_index[lab] for lab in table["label"].to_pylist()], np.int64),
            "intensity": np.array(
                [INTENSITY_INDEX.get(i, -100) for i in table["intensity"].to_pylist()],
                np.int64,
            ),
            "clip_ids": np.array(table["clip_id"].to_pylist(), dtype=object),
        }

    def _windows(self) -> Iterator[dict[str, np.ndarray]]:
        order = np.arange(len(self.paths))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.paths))
        for i in range(0, len(order), self.window_shards):
            parts = [self._read(self.paths[j]) for j in order[i : i + self.window_shards]]
            parts = [p for p in parts if p["labels"].size]
            if parts:
                yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def __iter__(self) -> Iterator[Batch]:
        buffer: list[dict[str, np.ndarray]] = []
        buffered = 0
        for w, window in enumerate(self._windows()):
            sampler = DistributedSampler(
                range(window["labels"].size),
                num_replicas=self.world_size,
                rank=self.rank,
                shuffle=self.shuffle,
                seed=self.seed * 1000 + w,
            )
            sampler.set_epoch(self.epoch)
            idx = np.fromiter(sampler, dtype=np.int64)
            buffer.append({k: v[idx] for k, v in window.items()})
            buffered += idx.size
            while buffered >= self.batch_size:
                merged = {k: np.concatenate([b[k] for b in buffer]) for k in buffer[0]}
                yield self._batch({k: v[: self.batch_size] for k, v in merged.items()})
                buffer = [{k: v[self.batch_size :] for k, v in merged.items()}]
                buffered -= self.batch_size
        if buffered:
            merged = {k: np.concatenate([b[k] for b in buffer]) for k in buffer[0]}
            yield self._batch(merged)

    def _batch(self, rows: dict[str, np.ndarray]) -> Batch:
        x = rows["x"]
        x = x.astype(np.float32) / 32768.0 if self.input_kind == "wave" else x.astype(np.float32)
        return Batch(
            x=torch.from_numpy(x),
            lengths=torch.from_numpy(rows["lengths"]),
            labels=torch.from_numpy(rows["labels"]),
            intensity=torch.from_numpy(rows["intensity"]),
            clip_ids=list(rows["clip_ids"]),
            offsets=torch.from_numpy(rows["offsets"]) if "offsets" in rows else None,
            wave=torch.from_numpy(rows["wave"].astype(np.float32) / 32768.0) if "wave" in rows else None,
            wave_lengths=torch.from_numpy(rows["wave_lengths"]) if "wave_lengths" in rows else None,
        )
