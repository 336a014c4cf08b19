"""One part of output rows, its resume state, and the merge of every shard's parts into one file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sononet import stopping
from sononet.errors import NotFoundError, UserError
from sononet.io import read_json
from sononet.label.engine import file_embedding, file_probs, score_sources
from sononet.label.labeller import Labeller
from sononet.label.windows import Source, open_source, prefetch

if TYPE_CHECKING:
    import pyarrow as pa

    from sononet.label.config import LabelConfig
    from sononet.label.speakers import GroupMean, SpeakerRule

FORMAT = "sononet-labels/2"  # 2: `scope` and `pred` columns, provenance, optional `embedding`
NONFINITE = "nonfinite"  # the status of a row whose model output is no probability distribution
NONFINITE_DETAIL = "the model's output is not a finite probability distribution (NaN/Inf weights or input)"


def parts_dir(out: str | Path) -> Path:
    return Path(out).with_suffix(".parts")


def summary_path(out: str | Path) -> Path:
    return Path(out).with_suffix(".summary.json")


def _rows(src: Source, lab: Labeller, sr: int) -> list[dict]:
    from sononet.models.outputs import is_distribution  # here: importing sononet.models loads torch
    from sononet.version import __version__

    labels, prov = lab.labels, lab.provenance
    base = {
        "path": src.path, "duration_s": src.duration_s, "orig_sr": src.orig_sr,
        "orig_channels": src.orig_channels, "source_sha256": src.sha256, "model_id": lab.id,
        "train_corpus": prov["corpus"], "train_split": prov["split"], "pretrained": prov["pretrained"],
        "sononet_version": __version__, "speaker_group": src.speaker_group, "speaker_files": src.speaker_files,
    }  # fmt: skip
    if src.error is not None:
        return [{**base, "scope": "file", "window_index": -1, "n_windows": 0, "status": "error",
                 "error_reason": src.error.reason, "error_detail": src.error.detail}]  # fmt: skip

    def pred(p: np.ndarray) -> dict:
        if not is_distribution(p):  # NaN would argmax to the first class: never an `ok` row
            return {"status": NONFINITE, "error_detail": NONFINITE_DETAIL}
        probs = {f"prob_{lab}": float(q) for lab, q in zip(labels, p)}
        return {"pred": labels[int(p.argmax())], "confidence": float(p.max()), **probs, "status": "ok"}

    probs = np.stack(src.probs)  # (n_windows, n_classes)
    rows = []
    if len(src.windows) > 1:
        for i, ((start, n), p) in enumerate(zip(src.windows, probs)):
            rows.append({**base, "scope": "window", "window_index": i, "start_s": start / sr,
                         "end_s": (start + n) / sr, "n_windows": 1, **pred(p)})  # fmt: skip
    end = src.duration_s
    rows.append({**base, "scope": "file", "window_index": -1, "start_s": 0.0, "end_s": end,
                 "n_windows": len(src.windows), **pred(file_probs(src))})  # fmt: skip
    return rows


def _embeddings(src: Source) -> list[np.ndarray | None]:
    """One vector per row of :func:`_rows`, in the same order; None for an error row."""
    if src.error is not None:
        return [None]
    return [*(src.embeddings if len(src.windows) > 1 else []), file_embedding(src)]


def schema(labels: list[str], speakers: bool = False) -> pa.Schema:
    """Column names shared with predictions.parquet where they mean the same: ``pred``, ``prob_<label>``.

    ``speakers`` (``--speaker-from``) adds ``speaker_group`` (None: no group) and ``speaker_files``,
    the files whose mean the row's file lost (0: the training speakers' default)."""
    import pyarrow as pa

    cols = [("path", pa.string()), ("scope", pa.string()), ("window_index", pa.int32()),
            ("start_s", pa.float64()), ("end_s", pa.float64()), ("pred", pa.string()),
            ("confidence", pa.float32())]  # fmt: skip
    cols += [(f"prob_{lab}", pa.float32()) for lab in labels]
    cols += [("n_windows", pa.int32()), ("duration_s", pa.float64()), ("orig_sr", pa.int32()),
             ("orig_channels", pa.int16()), ("source_sha256", pa.string()), ("status", pa.string()),
             ("error_reason", pa.string()), ("error_detail", pa.string()), ("model_id", pa.string()),
             ("train_corpus", pa.string()), ("train_split", pa.string()), ("pretrained", pa.bool_()),
             ("sononet_version", pa.string())]  # fmt: skip
    if speakers:
        cols += [("speaker_group", pa.string()), ("speaker_files", pa.int32())]
    return pa.schema(cols)


def embedding_column(vectors: list[np.ndarray | None], dim: int) -> pa.ExtensionArray:
    """Per-row clip vectors -> an Arrow fixed-shape tensor column (dim,); NaN on error rows.

    NaN rather than null: Parquet cannot store null entries of a fixed-size list.
    """
    from sononet.features.shards import tensor_array

    flat = np.full((len(vectors), dim), np.nan, np.float32)  # (rows, D)
    for i, v in enumerate(vectors):
        if v is not None:
            flat[i] = v
    return tensor_array(flat)


def label_files(
    files: list[str], lab: Labeller, cfg: LabelConfig, window: tuple[int, int], pool: ThreadPoolExecutor,
    bar: Any = None, repeats: set[int] | frozenset[int] = frozenset(),
    speakers: tuple[list[str | None], dict[str, GroupMean]] | None = None,
) -> tuple[pa.Table, dict]:  # fmt: skip
    """One part: files -> (Arrow table, stats). Memory: one batch of windows plus prefetched clips.

    ``repeats``: positions in ``files`` listed earlier in the input; each is a ``duplicate`` row, unread.
    ``speakers``: each file's speaker group and the groups' means (``label.speakers``); a group of
    at least ``cfg.speaker_min_files`` files gives its files its mean, others keep the training default.
    """
    import pyarrow as pa

    from sononet.errors import AudioError

    length, hop = window
    audio = lab.audio
    whole_s = lab.clip_span_s(length / audio.sample_rate)

    keys, means = speakers or ([None] * len(files), {})

    def source(item: tuple[int, str]) -> Source:
        i, path = item
        if i in repeats:
            return Source(path, error=AudioError("duplicate", "listed more than once; the first listing is labelled"))
        src = open_source(path, audio, whole_s)
        src.speaker_group = keys[i]
        group = means.get(keys[i]) if keys[i] is not None else None
        if group is not None and group.files >= cfg.speaker_min_files:
            src.speaker_mean, src.speaker_files = group.mean, group.files
        return src

    def opened() -> Iterator[Source]:
        for src in prefetch(source, enumerate(files), pool, 2 * cfg.batch_size):
            stopping.check()  # SIGTERM in a worker process: this part is dropped, the finished ones resume
            yield src
            if bar is not None:
                bar.update(1)

    sources = list(score_sources(opened(), lab, length, hop, cfg.batch_size, audio, embed=cfg.embeddings))
    rows = [r for src in sources for r in _rows(src, lab, audio.sample_rate)]
    errors = Counter(s.error.reason for s in sources if s.error is not None)
    nonfinite = sum(r["status"] == NONFINITE for r in rows if r["scope"] == "file")
    stats = {
        "files": len(sources), "ok_files": len(sources) - sum(errors.values()) - nonfinite,
        "nonfinite_files": nonfinite, "errors_by_reason": dict(errors), "rows": len(rows),
        "windows": sum(len(s.windows) for s in sources if s.error is None),
    }  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=schema(lab.labels, speakers=cfg.speaker_from is not None))
    if cfg.embeddings:
        vectors = [v for src in sources for v in _embeddings(src)]
        dim = next((v.shape[0] for v in vectors if v is not None), 0) or lab.embedding_dim()
        table = table.append_column("embedding", embedding_column(vectors, dim))
    return table, stats


def _fingerprint(
    files: list[str], lab: Labeller, window: tuple[int, int], n: int, part_size: int, embeddings: bool = False,
    speaker_from: SpeakerRule | None = None, speaker_min_files: int = 0,
) -> dict:  # fmt: skip
    return {
        "format": FORMAT, "files_sha256": hashlib.sha256("\n".join(files).encode()).hexdigest()[:16],
        "n_files": len(files), "model_id": lab.id, "feature_config": lab.features.hash(),
        "window_samples": window[0], "hop_samples": window[1], "shards": n, "part_size": part_size,
        "embeddings": embeddings, "speaker_from": str(speaker_from) if speaker_from else None,
        "speaker_min_files": speaker_min_files if speaker_from else None,
    }  # fmt: skip


def _load_state(path: Path, fingerprint: dict, shard: int) -> dict:
    for other in sorted(path.parent.glob("state-*.json")):  # this shard's own state, then its siblings'
        old = read_json(other)["fingerprint"]
        changed = ", ".join(sorted(k for k in fingerprint if old.get(k) != fingerprint[k]))
        if changed:
            raise ValueError(f"{other} was written with a different {changed}; delete it or use another --out")
    if not path.exists():
        return {"fingerprint": fingerprint, "shard": shard, "parts": {}, "complete": False}
    return read_json(path)


def _add_stats(stats: Iterable[dict]) -> dict:
    total: dict[str, Any] = {"files": 0, "ok_files": 0, "nonfinite_files": 0, "windows": 0, "rows": 0}
    reasons: Counter = Counter()
    for s in stats:
        for k in total:
            total[k] += s.get(k, 0)  # parts written before `nonfinite_files` existed had none
        reasons.update(s["errors_by_reason"])
    total["error_files"] = total["files"] - total["ok_files"] - total["nonfinite_files"]
    return {**total, "errors_by_reason": dict(sorted(reasons.items()))}


def merge(out: str | Path) -> dict:
    """Combine all shards' parts into ``out``, one part in memory at a time, after checking all finished.

    Holds ``<out>.parts/.lock`` exclusively, so no shard writes while it reads, and re-hashes every
    part against its state file first: a part changed since it was listed is never merged.
    """
    from sononet.locking import folder_lock

    with folder_lock(parts_dir(out), "label --merge"):
        return _merge(Path(out))


def _merge(out: Path) -> dict:
    import pyarrow.parquet as pq

    from sononet.io import atomic_write_json, sha256_file, temp_beside

    pdir = parts_dir(out)
    states = [read_json(p) for p in sorted(pdir.glob("state-*.json"))]
    if not states:
        raise NotFoundError(f"no label state in {pdir}; run `sononet label PATH --model M --out {out}`")
    if len({json.dumps(s["fingerprint"], sort_keys=True) for s in states}) > 1:
        raise ValueError(f"{pdir} mixes runs of different inputs, models or shard counts; use a new --out")
    n = states[0]["fingerprint"]["shards"]
    by_shard = {s["shard"]: s for s in states}
    missing = [i for i in range(n) if i not in by_shard]
    unfinished = [i for i, s in sorted(by_shard.items()) if not s["complete"]]
    if missing or unfinished:
        raise UserError(
            f"cannot merge {pdir}: of {n} shards, {missing or 'none'} never started and "
            f"{unfinished or 'none'} did not finish; rerun those (same command and --shard) first"
        )
    parts = [(s, k) for _, s in sorted(by_shard.items()) for k in sorted(s["parts"], key=int)]
    paths = [pdir / s["parts"][k]["file"] for s, k in parts]
    lost = [p.name for p in paths if not p.exists()]
    if lost:
        raise NotFoundError(f"{pdir} lacks listed part(s) {lost}; rerun the labelling command")
    changed = [p.name for (s, k), p in zip(parts, paths) if sha256_file(p) != s["parts"][k]["sha256"]]
    if changed:
        raise ValueError(
            f"{pdir}: part(s) {changed} no longer match the sha256 in their state file; rerun the labelling "
            "command for their shard (it redoes exactly those parts), then merge again"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    with temp_beside(out) as tmp:  # removed on any failure; a full disk names `out` and says rerun
        writer = None
        try:
            for p in paths:
                table = pq.read_table(p)
                writer = writer or pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table)
        except BaseException:
            if writer is not None:
                with contextlib.suppress(Exception):  # the first error is the one to report
                    writer.close()
            raise
        if writer is not None:
            writer.close()
            os.replace(tmp, out)
    shard_sums = [s["summary"] for s in states]
    seconds = max(s["seconds"] for s in shard_sums)
    now = sum(s["files_labelled_now"] for s in shard_sums)
    summary = {
        **_add_stats(shard_sums), "shards": n, "parts": len(paths), "out": str(out),
        "ignored_non_audio": shard_sums[0]["ignored_non_audio"],
        "seconds": seconds, "files_per_s": round(now / seconds, 1) if seconds > 0 else None,
        **{k: shard_sums[0][k] for k in ("model_id", "device", "mel_backend", "window_s", "hop_s")},
        **{k: shard_sums[0].get(k) for k in ("train_corpus", "warning", "speaker_from")},
        "speaker_groups": sum(s.get("speaker_groups", 0) for s in shard_sums),
    }  # fmt: skip
    atomic_write_json(summary_path(out), summary)
    return summary


def format_summary(s: dict) -> str:
    reasons = ", ".join(f"{k} {v}" for k, v in s["errors_by_reason"].items()) or "none"
    where = s.get("out") or f"shard {s['shard']}"
    nonfinite = f", {s['nonfinite_files']} with non-finite model output" if s.get("nonfinite_files") else ""
    return (
        f"{s['files']} files -> {s['windows']} windows, {s['error_files']} errors ({reasons}){nonfinite}; "
        f"{s['seconds']:.1f} s, {s['files_per_s']} files/s; {where}"
    )
