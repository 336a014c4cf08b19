"""Parquet tensor shards: the hand-off between feature extraction and training.

Each shard is a Parquet file holding one chunk of the corpus: tensor columns ``mel``
(n_mels, frames) float16 and ``wave`` (clip_samples,) int16 plus the clip metadata. A tensor
is stored as one fixed-size binary value per clip (the C-order bytes), its dtype and shape in
the field's metadata (``sononet.tensor``). That is what makes shards cheap: Arrow's
fixed-shape tensor type is a fixed-size list in Parquet, which the writer encodes with a
definition level per sample (310 ms a 256-clip shard against 49 ms, 20 MB against 12 MB
with zstd, read back 8x slower). Shards of format 1 (fixed-shape tensors) are still read.

Shards are written to a temporary name and renamed, so a file with a shard's
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

from sononet.errors import ErrorRow, NotFoundError, UserError, to_table
from sononet.io import atomic_write_json, atomic_write_table, read_json, sha256_file

if TYPE_CHECKING:
    from sononet.features.mel import FeatureConfig

MANIFEST = "manifest.json"
FORMAT = "sononet-shards/2"
READABLE_FORMATS = ("sononet-shards/1", FORMAT)  # 1: tensors as Arrow fixed-shape tensors
TENSOR_KEY = b"sononet.tensor"  # field metadata: {"dtype": ..., "shape": [...]} of a packed tensor column
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


def tensor_field(name: str, dtype: str, shape: list[int]) -> pa.Field:
    """A column of (shape) tensors of ``dtype``, one fixed-size binary value per row."""
    nbytes = int(np.dtype(dtype).itemsize * np.prod(shape))
    meta = {TENSOR_KEY: json.dumps({"dtype": dtype, "shape": list(shape)}).encode()}
    return pa.field(name, pa.binary(nbytes), metadata=meta)


def shard_schema(cfg: FeatureConfig) -> pa.Schema:
    """The whole shard: the metadata, then ``mel`` (n_mels, frames) and ``wave`` int16 (clip_samples,) tensors."""
    return pa.schema(
        [
            *(pa.field(name, tp) for name, tp in METADATA),
            tensor_field("mel", cfg.mel_dtype, [cfg.n_mels, cfg.n_frames]),
            tensor_field("wave", "int16", [cfg.clip_samples]),
        ]
    )


def packed_array(values: np.ndarray) -> pa.FixedSizeBinaryArray:
    """(N, *shape) ndarray -> one fixed-size binary value per row, its C-order bytes (one copy at most)."""
    values = np.ascontiguousarray(values)
    width = int(values.dtype.itemsize * np.prod(values.shape[1:]))
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), values.shape[0], [None, pa.py_buffer(values)])


def shard_tensor(table: pa.Table, name: str) -> np.ndarray:
    """A shard's tensor column as (N, *shape), for both the packed (format 2) and the fixed-shape
    tensor (format 1) layout. Zero-copy where the column is one chunk."""
    column = table[name]
    if isinstance(column.type, pa.FixedShapeTensorType):
        if not len(column):
            return np.zeros((0, *column.type.shape), column.type.value_type.to_pandas_dtype())
        return tensor_numpy(column)
    spec = json.loads(table.schema.field(name).metadata[TENSOR_KEY])
    column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    data = np.frombuffer(column.buffers()[1], dtype=spec["dtype"], offset=column.offset * column.type.byte_width)
    return data[: len(column) * column.type.byte_width // data.itemsize].reshape(len(column), *spec["shape"])


class ConfigMismatchError(UserError):
    """The output folder holds shards made with another config or corpus: pass a new --out, or delete it."""


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

    def __init__(self, out: str | Path, fingerprint: dict, legacy: dict | None = None) -> None:
        """``legacy``: the value of each fingerprint key a manifest written before the key existed holds."""
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint
        self.path = self.out / MANIFEST
        if self.path.exists():
            self.manifest = read_json(self.path)
            if self.manifest.get("format") != FORMAT:
                raise ConfigMismatchError(
                    f"{self.out} holds shards of format {self.manifest.get('format')!r}, this SonoNet writes "
                    f"{FORMAT!r}; pass a new --out folder, or delete this one to rebuild (training still reads it)"
                )
            for key, value in (legacy or {}).items():
                self.manifest.setdefault(key, value)
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
    manifest = read_json(path)
    if manifest.get("format") not in READABLE_FORMATS:
        raise ValueError(
            f"{path} is not a SonoNet shard manifest {READABLE_FORMATS}. Found format: {manifest.get('format')!r}"
        )
    return manifest


def shard_paths(directory: str | Path, manifest: dict | None = None) -> list[Path]:
    """Finished shard files in index order."""
    manifest = manifest or read_manifest(directory)
    return [Path(directory) / manifest["shards"][k]["file"] for k in sorted(manifest["shards"], key=int)]
