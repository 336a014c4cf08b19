"""Parquet tensor shards: the hand-off between feature extraction and training.

Each shard is a Parquet file holding one chunk of the corpus: Arrow fixed-shape tensor
columns ``mel`` (n_mels, frames) and ``wave`` int16 (clip_samples,) plus the clip
metadata. Shards are written to a temporary name and renamed, so a file with a shard's
name is always complete; ``manifest.json`` lists each finished shard with its row count
and sha256 and carries the feature config and its hash. A rerun skips shards the
manifest already lists (after checking their checksum) and refuses to add shards of a
different config or corpus to the folder, the way lhotse's resumable writers skip what
is done::

    writer = ShardWriter(out, fingerprint)
    for index, chunk in enumerate(chunks):
        if writer.is_done(index):
            continue
        writer.write(index, table, errors)
    writer.finish(summary)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sononet.errors import ErrorRow, NotFoundError, to_table
from sononet.io import atomic_write_json, atomic_write_table, sha256_file

if TYPE_CHECKING:
    from sononet.features.mel import FeatureConfig

MANIFEST = "manifest.json"
FORMAT = "sononet-shards/1"
ERRORS = "errors.parquet"
SUMMARY = "summary.json"


# Every shard's metadata columns, declared once: prepare writes them, the reader and label read them.
METADATA = (
    ("clip_id", pa.string()), ("label", pa.string()), ("speaker", pa.string()), ("sex", pa.string()),
    ("intensity", pa.string()), ("sentence", pa.string()), ("source_path", pa.string()),
    ("source_sha256", pa.string()), ("duration_s", pa.float32()), ("orig_sr", pa.int32()),
    ("orig_channels", pa.int16()), ("n_samples", pa.int32()), ("n_frames", pa.int16()),
    ("flags", pa.list_(pa.string())), ("extra", pa.string()),  # extra: the corpus's own fields, as JSON
)  # fmt: skip
METADATA_COLUMNS = tuple(name for name, _ in METADATA)


def shard_schema(cfg: FeatureConfig) -> pa.Schema:
    """The whole shard: the metadata, then ``mel`` (n_mels, frames) and ``wave`` int16 (clip_samples,) tensors."""
    mel = pa.fixed_shape_tensor(pa.from_numpy_dtype(np.dtype(cfg.mel_dtype)), [cfg.n_mels, cfg.n_frames])
    return pa.schema([*METADATA, ("mel", mel), ("wave", pa.fixed_shape_tensor(pa.int16(), [cfg.clip_samples]))])


class ConfigMismatchError(RuntimeError):
    """The output folder holds shards made with another config or corpus."""


def tensor_array(values: np.ndarray) -> pa.FixedShapeTensorArray:
    """(N, *shape) ndarray -> Arrow fixed-shape tensor array (zero-copy for contiguous input)."""
    if values.shape[0] == 0:  # a chunk whose every file was refused still writes a (typed) shard
        value_type = pa.from_numpy_dtype(values.dtype)
        storage = pa.array([], pa.list_(value_type, int(np.prod(values.shape[1:]))))
        return pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(value_type, list(values.shape[1:])), storage)
    return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(values))


def tensor_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Arrow fixed-shape tensor column -> (N, *shape) ndarray."""
    if isinstance(column, pa.ChunkedArray):
        chunks = [c.to_numpy_ndarray() for c in column.chunks]
        return np.concatenate(chunks) if len(chunks) != 1 else chunks[0]
    return column.to_numpy_ndarray()


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


class ShardWriter:
    """Write shards of one (config, corpus) fingerprint into ``out``, resumably."""

    def __init__(self, out: str | Path, fingerprint: dict) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint
        self.path = self.out / MANIFEST
        if self.path.exists():
            self.manifest = json.loads(self.path.read_text())
            old = {k: self.manifest.get(k) for k in fingerprint}
            if old != fingerprint:
                changed = sorted(k for k in fingerprint if old.get(k) != fingerprint[k])
                raise ConfigMismatchError(
                    f"{self.out} holds shards made with a different {', '.join(changed)}; "
                    "pass a new --out folder, or delete this one to rebuild"
                )
        else:
            self.manifest = {"format": FORMAT, **fingerprint, "shards": {}, "complete": False}
            atomic_write_json(self.path, self.manifest)

    def is_done(self, index: int) -> bool:
        """True when shard ``index`` is listed and its file still matches its checksum."""
        entry = self.manifest["shards"].get(str(index))
        if entry is None:
            return False
        path = self.out / entry["file"]
        return path.exists() and sha256_file(path) == entry["sha256"]

    def write(self, index: int, table: pa.Table, errors: list[ErrorRow], inputs: int) -> dict:
        """Write shard ``index`` (clips) and its errors, then record both in the manifest."""
        if table.num_rows + len(errors) != inputs:
            raise RuntimeError(f"shard {index}: {inputs} inputs but {table.num_rows} rows + {len(errors)} errors")
        path = self.out / shard_name(index)
        atomic_write_table(path, table)
        err_path = self.out / f"errors-{index:05d}.parquet"
        atomic_write_table(err_path, to_table(errors))
        entry = {
            "file": path.name,
            "rows": table.num_rows,
            "sha256": sha256_file(path),
            "errors_file": err_path.name,
            "error_rows": len(errors),
            "inputs": inputs,
        }
        self.manifest["shards"][str(index)] = entry
        atomic_write_json(self.path, self.manifest)
        return entry

    def finish(self, corpus_errors: list[ErrorRow], summary: dict) -> None:
        """Gather every errors part into ``errors.parquet`` and mark the manifest complete."""
        parts = [to_table(corpus_errors)]
        for key in sorted(self.manifest["shards"], key=int):
            parts.append(pq.read_table(self.out / self.manifest["shards"][key]["errors_file"]))
        atomic_write_table(self.out / ERRORS, pa.concat_tables(parts))
        self.manifest["complete"] = True
        self.manifest["rows"] = sum(e["rows"] for e in self.manifest["shards"].values())
        atomic_write_json(self.path, self.manifest)
        atomic_write_json(self.out / SUMMARY, summary)


def read_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise NotFoundError(f"no {MANIFEST} in {directory}; run `sononet prepare --out {directory}` first")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} manifest. Found format: {manifest.get('format')!r}")
    return manifest


def shard_paths(directory: str | Path, manifest: dict | None = None) -> list[Path]:
    """Finished shard files in index order."""
    manifest = manifest or read_manifest(directory)
    return [Path(directory) / manifest["shards"][k]["file"] for k in sorted(manifest["shards"], key=int)]
