"""Label any folder of audio with a trained model, in bounded memory, resumably, in shards.

::

    sononet label recordings/ --model runs/demo/cnn/model --out labels.parquet
    sononet label calls.txt --model runs/cremad/cnn/model --out calls.parquet --window 3 --hop 1.5
    sononet label manifest.csv --model M --out labels.parquet --shard 0/4   # one of 4 machines
    sononet label --merge --out labels.parquet                              # after all 4 finished

Input: a folder (walked recursively; files with an extension libsndfile knows), a ``.txt``
list of paths, a manifest CSV/TSV/Parquet with a ``path`` column (relative paths are relative
to the list), or one file. Any rate and channel count: decoding, downmix, resampling and the
bad-input checks are ``sononet.audio``'s, and the features are rebuilt from the model's saved
config (pad/trim kernel, log-mel, the training split's normalisation via ``model_inputs``).

Output rows: every input file gets exactly one ``window = "file"`` row (``window_index`` -1),
``status`` ok or error with the errors-table reason, so ``count(file rows) == inputs``.
A file longer than the window is streamed (never held whole) and cut into windows of
``window_s`` every ``hop_s``; the last window ends at the file's end, so every window is real
audio, and each gets its own row; the file row holds the mean of its windows' probabilities.
The hop defaults to the window (no overlap): every second is labelled once, so the file mean
weighs all of it equally and a long file costs one forward pass per 3 s; ``--hop`` smaller
gives smoother per-window tracks at proportional cost.
A file no longer than the window is one clip, padded as in training.

Parts ``<out>.parts/part-<shard>-<k>.parquet`` (``part_size`` files each) are written
atomically and listed in ``state-<shard>.json`` with a fingerprint of (file list, model,
window, shards); a rerun skips listed parts and refuses a changed fingerprint. The sorted
file list is dealt round-robin: shard i of n takes files i, i+n, ... (``--shard i/n``, or
``JOB_COMPLETION_INDEX``/``JOB_COMPLETIONS`` in a Kubernetes Indexed Job, or torchrun's
``RANK``/``WORLD_SIZE``). Query without merging::

    duckdb -c "select label, count(*) from 'labels.parts/part-*.parquet' where window = 'file' group by 1"
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from sononet.audio import AudioConfig
    from sononet.errors import AudioError

log = logging.getLogger(__name__)
FORMAT = "sononet-labels/1"
BLOCK_S = 10  # seconds of source audio decoded per read when streaming a long file
MIN_WINDOW_S = 1.0  # under 1 s a window holds too little prosody (and too few frames for the CNN)


@dataclass
class LabelConfig:
    input: str | None = None  # folder, .txt path list, manifest CSV/TSV/Parquet (`path` column) or file
    model: str | None = None  # saved model directory (holds config.json)
    out: str = "labels.parquet"  # merged output; parts and state go to <out>.parts/
    window_s: float | None = None  # None = the model's clip length (3 s): the input length it learned on
    hop_s: float | None = None  # None = window_s: no overlap, each second labelled once, rows independent
    batch_size: int = 64  # windows per forward pass; the memory bound with prefetch = 2 batches
    part_size: int = 1000  # files per part: the unit of resume and of output memory
    shard_index: int | None = None  # None = JOB_COMPLETION_INDEX or RANK from the environment, else 0
    shard_count: int | None = None  # None = JOB_COMPLETIONS or WORLD_SIZE from the environment, else 1
    device: str = "auto"  # cuda when present, else cpu
    workers: int = 2  # decode threads (soundfile and soxr release the GIL)
    mel_backend: str = "auto"  # as in prepare: both backends pass the librosa parity test
    merge: bool = False  # only combine every shard's finished parts into `out`

    def __post_init__(self) -> None:
        for name in ("batch_size", "part_size", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive. Found: {getattr(self, name)}")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n)."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/n, e.g. 0/4. Found: {text!r}") from None
    return resolve_shard(i, n)


def resolve_shard(
    index: int | None, count: int | None, env: Mapping[str, str] = os.environ
) -> tuple[int, int]:
    """(i, n): explicit values, else an Indexed Job's or torchrun's variables, else (0, 1)."""
    if index is None and count is None:
        index, count = 0, 1
        for i_key, n_key in (("JOB_COMPLETION_INDEX", "JOB_COMPLETIONS"), ("RANK", "WORLD_SIZE")):
            if i_key in env:
                if n_key not in env:
                    raise ValueError(f"{i_key} is set but {n_key} is not; set it to the number of shards")
                index, count = int(env[i_key]), int(env[n_key])
                break
    elif index is None or count is None:
        raise ValueError(f"shard_index and shard_count go together. Found: {index}, {count}")
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard index must be in [0, count) with count >= 1. Found: {index}/{count}")
    return index, count


def parts_dir(out: str | Path) -> Path:
    return Path(out).with_suffix(".parts")


def summary_path(out: str | Path) -> Path:
    return Path(out).with_suffix(".summary.json")


def audio_suffixes() -> set[str]:
    import soundfile as sf

    from sononet.corpus import AUDIO_SUFFIXES

    known = {f".{k.lower()}" for k in sf.available_formats() if k != "RAW"}  # RAW needs rate flags
    return known | set(AUDIO_SUFFIXES) | {".oga", ".wave"}


def list_inputs(source: str | Path) -> tuple[list[str], int]:
    """(sorted absolute paths, files ignored for an unknown extension). Listed paths are never ignored."""
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"input does not exist: {src}")
    ignored = 0
    if src.is_dir():
        suffixes, paths = audio_suffixes(), []
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith(".") or name.endswith(".part"):
                    continue
                if Path(name).suffix.lower() in suffixes:
                    paths.append(str(Path(dirpath, name).absolute()))
                else:
                    ignored += 1
    elif src.suffix.lower() in (".txt", ".lst"):
        lines = (ln.strip() for ln in src.read_text().splitlines())
        paths = [str((src.parent / ln).absolute()) for ln in lines if ln and not ln.startswith("#")]
    elif src.suffix.lower() in (".csv", ".tsv", ".parquet"):
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        if src.suffix.lower() == ".parquet":
            table = pq.read_table(src)
        else:
            delim = "\t" if src.suffix.lower() == ".tsv" else ","
            table = pacsv.read_csv(src, parse_options=pacsv.ParseOptions(delimiter=delim))
        if "path" not in table.column_names:
            raise ValueError(f"manifest {src} needs a `path` column. Found: {table.column_names}")
        cells = (str(v).strip() for v in table["path"].to_pylist() if v is not None)
        paths = [str((src.parent / v).absolute()) for v in cells if v]
    else:
        paths = [str(src.absolute())]
    return sorted(set(paths)), ignored


def model_id(model_dir: str | Path) -> str:
    """``<name>@<sha256[:12]>`` of every weights file, so rows say exactly which weights made them."""
    from sononet.features.shards import sha256_file

    directory = Path(model_dir)
    name = directory.parent.name if directory.name == "model" else directory.name
    h = hashlib.sha256()
    for p in sorted(directory.rglob("*.safetensors")):
        h.update(sha256_file(p).encode())
    return f"{name}@{h.hexdigest()[:12]}"


class Labeller:
    """A saved model plus the exact feature path it was trained on: clips -> class probabilities."""

    def __init__(self, model_dir: str | Path, device: str, mel_backend: str) -> None:
        import torch

        from sononet.features.mel import FeatureConfig, LogMel, pick_backend
        from sononet.models.saving import load_model
        from sononet.prepare import resolve_device

        self.device = resolve_device(device)
        model, doc = load_model(model_dir, map_location=self.device)
        meta = doc.get("meta") or {}
        missing = [k for k in ("labels", "feature_config", "input_kind") if k not in meta]
        if missing:
            raise ValueError(f"{model_dir}: saved meta lacks {missing}; cannot rebuild the training features")
        self.model, self.labels, self.kind = model, list(meta["labels"]), meta["input_kind"]
        self.features = FeatureConfig(**meta["feature_config"])
        self.norm = {k: torch.tensor(v, dtype=torch.float32) for k, v in (meta.get("norm") or {}).items()}
        self.mel_backend = None
        if self.kind == "mel":
            self.mel_backend, _ = pick_backend(mel_backend, self.device, self.features)
            self.logmel = LogMel(self.features, self.mel_backend).to(self.device)
        self.id = model_id(model_dir)

    def predict(self, clips: list[np.ndarray], length: int) -> np.ndarray:
        """Clips (each at most ``length`` samples) -> (B, n_classes) probabilities."""
        import torch

        from sononet.features.reader import Batch
        from sononet.kernels import pad_trim
        from sononet.train.loop import model_inputs

        fc = self.features
        waves = torch.from_numpy(pad_trim(clips, length, fc.pad, fc.trim))  # (B, length)
        n_valid = torch.tensor([min(c.shape[0], length) for c in clips], dtype=torch.int64)
        with torch.no_grad():
            if self.kind == "mel":
                mel = self.logmel(waves.to(self.device))  # (B, n_mels, T)
                x = mel.to(getattr(torch, fc.mel_dtype)).float()  # the shards' storage rounding
                lengths = torch.clamp(-(-n_valid // fc.hop_length), max=x.shape[-1])
            else:
                x, lengths = waves, n_valid
            n = len(clips)
            batch = Batch(x, lengths, torch.zeros(n, dtype=torch.long), torch.full((n,), -100), [])
            x = model_inputs(batch, self.kind, self.norm, self.device)
            logits, _ = self.model(x, lengths.to(self.device))
            return torch.softmax(logits.float(), dim=-1).cpu().numpy()


@dataclass
class Source:
    """One input file after probing: short files decoded whole, long ones streamed later."""

    path: str
    sha256: str | None = None
    duration_s: float | None = None
    orig_sr: int | None = None
    orig_channels: int | None = None
    samples: np.ndarray | None = None  # (n,) mono at the model rate when the file fits one window
    info: Any = None  # soundfile info of a long file, streamed by `stream_windows`
    error: AudioError | None = None
    windows: list[tuple[int, int]] = field(default_factory=list)  # (start, valid samples) per window
    probs: list[np.ndarray] = field(default_factory=list)


def open_source(path: str, audio: AudioConfig, window_s: float) -> Source:
    """Hash and probe a file; decode it whole only when it fits one window."""
    from sononet.audio import load_audio, probe
    from sononet.errors import AudioError
    from sononet.features.shards import sha256_file

    src = Source(path)
    with contextlib.suppress(OSError):  # missing/unreadable: the probe below names the reason
        src.sha256 = sha256_file(path)
    try:
        info = probe(path)
        src.orig_sr, src.orig_channels = info.samplerate, info.channels
        src.duration_s = info.frames / info.samplerate
        if src.duration_s <= window_s:
            src.samples = load_audio(path, audio).samples
        else:
            src.info = info
    except AudioError as e:
        src.error = e
    return src


def stream_windows(
    src: Source, length: int, hop: int, audio: AudioConfig
) -> Iterator[tuple[int, np.ndarray]]:
    """(start sample, clip) windows of a long file, decoded ``BLOCK_S`` at a time.

    Holds at most one window plus one block. Raises AudioError (non_finite, silent, corrupt) when
    the stream shows it, possibly after some windows were yielded: the caller drops those.
    """
    import soundfile as sf
    import soxr

    from sononet.errors import AudioError

    sr = src.info.samplerate
    rs = None
    if sr != audio.sample_rate:
        rs = soxr.ResampleStream(sr, audio.sample_rate, 1, dtype="float32", quality=audio.resample_quality)
    buf, pos, nxt, end, read, sound = np.zeros(0, np.float32), 0, 0, 0, 0, False
    try:
        with sf.SoundFile(src.path) as f:
            blocks = f.blocks(blocksize=sr * BLOCK_S, dtype="float32", always_2d=True)
            for data in itertools.chain(blocks, [None]):
                if data is None:  # flush the resampler's delay line
                    chunk = rs.resample_chunk(np.zeros(0, np.float32), last=True) if rs else buf[:0]
                else:
                    read += data.shape[0]
                    if not np.isfinite(data).all():
                        span = f"{(read - data.shape[0]) / sr:.1f}-{read / sr:.1f} s"
                        raise AudioError("non_finite", f"NaN/Inf samples within {span}")
                    sound = sound or bool(data.any())
                    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
                    chunk = rs.resample_chunk(mono) if rs else mono
                buf = np.concatenate([buf, chunk])
                while nxt + length <= pos + buf.size:
                    yield nxt, buf[nxt - pos : nxt - pos + length].copy()
                    end, nxt = nxt + length, nxt + hop
                keep = max(pos, min(nxt, pos + buf.size - length))  # next window, or the last `length`
                buf, pos = buf[keep - pos :], keep
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError("corrupt", str(e)) from e
    if not sound:
        raise AudioError("silent", "every sample is zero")
    total = pos + buf.size
    if end == 0:  # resampling rounded it down to one window
        yield 0, buf.copy()
    elif end < total:  # align the last window to the end so the tail is labelled with real audio
        yield total - length, buf[-length:].copy()


def prefetch(
    fn: Callable[[str], Source], items: Iterable[str], pool: ThreadPoolExecutor, depth: int
) -> Iterator[Source]:
    """``fn`` over ``items`` in order, ``depth`` calls ahead in ``pool``."""
    futures: deque = deque()
    for item in items:
        futures.append(pool.submit(fn, item))
        if len(futures) >= depth:
            yield futures.popleft().result()
    while futures:
        yield futures.popleft().result()


def _rows(src: Source, labels: list[str], sr: int, ident: str) -> list[dict]:
    from sononet import __version__

    base = {
        "path": src.path, "duration_s": src.duration_s, "orig_sr": src.orig_sr,
        "orig_channels": src.orig_channels, "source_sha256": src.sha256, "model_id": ident,
        "sononet_version": __version__,
    }  # fmt: skip
    if src.error is not None:
        return [{**base, "window": "file", "window_index": -1, "n_windows": 0, "status": "error",
                 "error_reason": src.error.reason, "error_detail": src.error.detail}]  # fmt: skip

    def pred(p: np.ndarray) -> dict:
        probs = {f"prob_{lab}": float(q) for lab, q in zip(labels, p)}
        return {"label": labels[int(p.argmax())], "confidence": float(p.max()), **probs, "status": "ok"}

    probs = np.stack(src.probs)  # (n_windows, n_classes)
    rows = []
    if len(src.windows) > 1:
        for i, ((start, n), p) in enumerate(zip(src.windows, probs)):
            rows.append({**base, "window": "window", "window_index": i, "start_s": start / sr,
                         "end_s": (start + n) / sr, "n_windows": 1, **pred(p)})  # fmt: skip
    end = src.duration_s
    rows.append({**base, "window": "file", "window_index": -1, "start_s": 0.0, "end_s": end,
                 "n_windows": len(src.windows), **pred(probs.mean(axis=0))})  # fmt: skip
    return rows


def schema(labels: list[str]) -> pa.Schema:
    import pyarrow as pa

    cols = [("path", pa.string()), ("window", pa.string()), ("window_index", pa.int32()),
            ("start_s", pa.float64()), ("end_s", pa.float64()), ("label", pa.string()),
            ("confidence", pa.float32())]  # fmt: skip
    cols += [(f"prob_{lab}", pa.float32()) for lab in labels]
    cols += [("n_windows", pa.int32()), ("duration_s", pa.float64()), ("orig_sr", pa.int32()),
             ("orig_channels", pa.int16()), ("source_sha256", pa.string()), ("status", pa.string()),
             ("error_reason", pa.string()), ("error_detail", pa.string()), ("model_id", pa.string()),
             ("sononet_version", pa.string())]  # fmt: skip
    return pa.schema(cols)


def label_files(
    files: list[str], lab: Labeller, cfg: LabelConfig, window: tuple[int, int], pool: ThreadPoolExecutor,
    bar: Any = None,
) -> tuple[pa.Table, dict]:  # fmt: skip
    """One part: files -> (Arrow table, stats). Memory: one batch of windows plus prefetched clips."""
    import pyarrow as pa

    from sononet.audio import AudioConfig
    from sononet.errors import AudioError

    length, hop = window
    audio = AudioConfig(sample_rate=lab.features.sample_rate)
    window_s = length / audio.sample_rate
    sources: list[Source] = []
    pending: list[tuple[Source, np.ndarray]] = []

    def flush() -> None:
        if pending:
            for (src, _), p in zip(pending, lab.predict([c for _, c in pending], length)):
                src.probs.append(p)
            pending.clear()

    for src in prefetch(lambda p: open_source(p, audio, window_s), files, pool, 2 * cfg.batch_size):
        sources.append(src)
        if src.error is None:
            clips = [(0, src.samples)] if src.samples is not None else stream_windows(src, length, hop, audio)
            src.samples = None  # the pending batch holds it now; a part must not keep 1,000 clips
            try:
                for start, clip in clips:
                    src.windows.append((start, min(clip.shape[0], length)))
                    pending.append((src, clip))
                    if len(pending) >= cfg.batch_size:
                        flush()
            except AudioError as e:
                src.error = e
        if bar is not None:
            bar.update(1)
    flush()
    rows = [r for src in sources for r in _rows(src, lab.labels, audio.sample_rate, lab.id)]
    errors = Counter(s.error.reason for s in sources if s.error is not None)
    stats = {
        "files": len(sources), "ok_files": len(sources) - sum(errors.values()),
        "errors_by_reason": dict(errors), "rows": len(rows),
        "windows": sum(len(s.windows) for s in sources if s.error is None),
    }  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schema(lab.labels)), stats


def _fingerprint(files: list[str], lab: Labeller, window: tuple[int, int], n: int, part_size: int) -> dict:
    return {
        "format": FORMAT, "files_sha256": hashlib.sha256("\n".join(files).encode()).hexdigest()[:16],
        "n_files": len(files), "model_id": lab.id, "feature_config": lab.features.hash(),
        "window_samples": window[0], "hop_samples": window[1], "shards": n, "part_size": part_size,
    }  # fmt: skip


def _load_state(path: Path, fingerprint: dict, shard: int) -> dict:
    if not path.exists():
        return {"fingerprint": fingerprint, "shard": shard, "parts": {}, "complete": False}
    state = json.loads(path.read_text())
    changed = ", ".join(sorted(k for k in fingerprint if state["fingerprint"].get(k) != fingerprint[k]))
    if changed:
        raise ValueError(f"{path} was written with a different {changed}; delete it or use another --out")
    return state


def _add_stats(stats: Iterable[dict]) -> dict:
    total: dict[str, Any] = {"files": 0, "ok_files": 0, "windows": 0, "rows": 0}
    reasons: Counter = Counter()
    for s in stats:
        for k in total:
            total[k] += s[k]
        reasons.update(s["errors_by_reason"])
    total["error_files"] = total["files"] - total["ok_files"]
    return {**total, "errors_by_reason": dict(sorted(reasons.items()))}


def label(cfg: LabelConfig, progress: bool = True) -> dict:
    """Label this process's shard; with one shard (or ``cfg.merge``) also write ``cfg.out``."""
    if cfg.merge:
        return merge(cfg.out)
    if cfg.input is None or cfg.model is None:
        raise ValueError("labelling needs an input path and a model directory (or merge = true)")
    from tqdm import tqdm

    from sononet.features.shards import atomic_write_json, atomic_write_table, sha256_file

    t0 = time.perf_counter()
    shard, n = resolve_shard(cfg.shard_index, cfg.shard_count)
    files, ignored = list_inputs(cfg.input)
    if not files:
        raise ValueError(f"no audio files in {cfg.input} ({ignored} files with other extensions ignored)")
    lab = Labeller(cfg.model, cfg.device, cfg.mel_backend)
    sr = lab.features.sample_rate
    window_s = cfg.window_s or lab.features.clip_samples / sr
    hop_s = cfg.hop_s or window_s
    if window_s < MIN_WINDOW_S or not 0 < hop_s <= window_s:
        rule = f"need window_s >= {MIN_WINDOW_S} and 0 < hop_s <= window_s"
        raise ValueError(f"{rule}. Found: {window_s}, {hop_s}")
    window = (round(window_s * sr), round(hop_s * sr))
    mine = files[shard::n]
    chunks = [mine[i : i + cfg.part_size] for i in range(0, len(mine), cfg.part_size)]
    out_dir = parts_dir(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / f"state-{shard:05d}.json"
    state = _load_state(state_path, _fingerprint(files, lab, window, n, cfg.part_size), shard)
    state["n_parts"] = len(chunks)

    def done(k: int) -> bool:  # listed, present and unchanged
        entry = state["parts"].get(str(k), {"file": ".missing"})
        path = out_dir / entry["file"]
        return path.exists() and sha256_file(path) == entry["sha256"]

    todo = [k for k in range(len(chunks)) if not done(k)]
    state["complete"] = not todo
    atomic_write_json(state_path, state)
    bar = tqdm(total=len(mine), unit="file", desc=f"label {shard}/{n}", disable=not progress)
    bar.update(len(mine) - sum(len(chunks[k]) for k in todo))
    processed = 0
    with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        for k in todo:
            table, stats = label_files(chunks[k], lab, cfg, window, pool, bar)
            path = out_dir / f"part-{shard:05d}-{k:05d}.parquet"
            atomic_write_table(path, table)
            state["parts"][str(k)] = {"file": path.name, "sha256": sha256_file(path), **stats}
            atomic_write_json(state_path, state)
            processed += stats["files"]
    bar.close()
    seconds = time.perf_counter() - t0
    summary = {
        **_add_stats(state["parts"].values()), "shard": f"{shard}/{n}", "parts": len(chunks),
        "parts_skipped_as_done": len(chunks) - len(todo), "files_labelled_now": processed,
        "ignored_non_audio": ignored, "seconds": round(seconds, 3),
        "files_per_s": round(processed / seconds, 1) if seconds > 0 else None, "model_id": lab.id,
        "device": str(lab.device), "mel_backend": lab.mel_backend, "window_s": window_s, "hop_s": hop_s,
    }  # fmt: skip
    state.update(complete=True, summary=summary)
    atomic_write_json(state_path, state)
    if n == 1:
        return merge(cfg.out)
    log.info("shard %d/%d done; when all are: sononet label --merge --out %s", shard, n, cfg.out)
    return summary


def merge(out: str | Path) -> dict:
    """Combine all shards' parts into ``out``, one part in memory at a time, after checking all finished."""
    import pyarrow.parquet as pq

    from sononet.features.shards import atomic_write_json

    out, pdir = Path(out), parts_dir(out)
    states = [json.loads(p.read_text()) for p in sorted(pdir.glob("state-*.json"))]
    if not states:
        raise FileNotFoundError(f"no label state in {pdir}; run `sononet label PATH --model M --out {out}`")
    if len({json.dumps(s["fingerprint"], sort_keys=True) for s in states}) > 1:
        raise ValueError(f"{pdir} mixes runs of different inputs, models or shard counts; use a new --out")
    n = states[0]["fingerprint"]["shards"]
    by_shard = {s["shard"]: s for s in states}
    missing = [i for i in range(n) if i not in by_shard]
    unfinished = [i for i, s in sorted(by_shard.items()) if not s["complete"]]
    if missing or unfinished:
        raise RuntimeError(
            f"cannot merge {pdir}: of {n} shards, {missing or 'none'} never started and "
            f"{unfinished or 'none'} did not finish; rerun those (same command and --shard) first"
        )
    parts = [(s, k) for _, s in sorted(by_shard.items()) for k in sorted(s["parts"], key=int)]
    paths = [pdir / s["parts"][k]["file"] for s, k in parts]
    lost = [p.name for p in paths if not p.exists()]
    if lost:
        raise FileNotFoundError(f"{pdir} lacks listed part(s) {lost}; rerun the labelling command")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    writer = None
    for p in paths:
        table = pq.read_table(p)
        writer = writer or pq.ParquetWriter(tmp, table.schema, compression="zstd")
        writer.write_table(table)
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
    }  # fmt: skip
    atomic_write_json(summary_path(out), summary)
    return summary


def format_summary(s: dict) -> str:
    reasons = ", ".join(f"{k} {v}" for k, v in s["errors_by_reason"].items()) or "none"
    where = s.get("out") or f"shard {s['shard']}"
    return (
        f"{s['files']} files -> {s['windows']} windows, {s['error_files']} errors ({reasons}); "
        f"{s['seconds']:.1f} s, {s['files_per_s']} files/s; {where}"
    )


@click.command("label", context_settings={"show_default": True})
@click.argument("path", required=False, type=click.Path(exists=True))
@click.option("--model", type=click.Path(exists=True, file_okay=False), help="Saved model dir (config.json).")
@click.option("--out", type=click.Path(), default="labels.parquet", help="Output; parts in <out>.parts/.")
@click.option("--window", type=float, default=None, help="Window seconds [default: the model's clip, 3 s].")
@click.option("--hop", type=float, default=None, help="Seconds between windows [default: --window].")
@click.option("--shard", default=None, help="i/n [default: from JOB_COMPLETION_INDEX or RANK, else 0/1].")
@click.option("--merge", "merge_only", is_flag=True, help="Only combine all shards' parts into --out.")
@click.option("--device", default="auto", help="auto | cpu | cuda | cuda:N.")
@click.option("--batch-size", type=int, default=64, help="Windows per forward pass.")
@click.option("--workers", type=int, default=2, help="Decode threads.")
@click.option("--part-size", type=int, default=1000, help="Files per Parquet part (the unit of resume).")
@click.option("--mel-backend", type=click.Choice(["auto", "nnaudio", "torchaudio"]), default="auto")
def label_command(
    path: str | None, model: str | None, out: str, window: float | None, hop: float | None, shard: str | None,
    merge_only: bool, device: str, batch_size: int, workers: int, part_size: int, mel_backend: str,
) -> None:  # fmt: skip
    """Label audio files (folder, .txt list, manifest or one file) with a trained model into Parquet.

    \b
    sononet label recordings/ --model runs/demo/cnn/model --out labels.parquet
    sononet label long_calls/ --model runs/demo/cnn/model --out calls.parquet --hop 1.5
    sononet label files.txt --model M --out labels.parquet --shard 2/8
    sononet label --merge --out labels.parquet
    """
    from sononet.cli import USER_ERRORS, _fail

    try:
        index, count = parse_shard(shard) if shard else (None, None)
        if not merge_only and (path is None or model is None):
            raise ValueError("pass PATH and --model (or --merge --out FILE to combine shards)")
        cfg = LabelConfig(
            input=path, model=model, out=out, window_s=window, hop_s=hop, batch_size=batch_size,
            part_size=part_size, shard_index=index, shard_count=count, device=device, workers=workers,
            mel_backend=mel_backend, merge=merge_only,
        )  # fmt: skip
        summary = label(cfg)
    except USER_ERRORS as e:
        _fail(e)
    click.echo(format_summary(summary))
    if "out" in summary:
        click.echo(f"summary: {summary_path(out)}")
