"""The prepare stage: corpus -> audio -> kernels -> features -> shards.

Clips are taken in a fixed order and cut into chunks of ``shard_size`` inputs; chunk
``k`` becomes ``shard-k.parquet`` (the clips that decoded) plus ``errors-k.parquet`` (those
that did not), so a rerun after a crash recomputes exactly the missing chunks and the
final bytes equal an uninterrupted run's. Decoding runs in a thread pool (soundfile and
soxr release the GIL) one chunk ahead of the feature step, so the device never waits on
disk; memory holds at most two chunks, whatever the corpus size.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from sononet.audio import AudioConfig, Decoded, load_audio
from sononet.corpus import Clip, Corpus, load_corpus, parse_label_map, select_labels
from sononet.device import check_device, decode_workers, resolve_device, reuse_freed_memory
from sononet.errors import AudioError, ErrorRow, count_by_reason
from sononet.features.frontend import decode_samples, fixed_length, frame_lengths
from sononet.features.mel import BACKENDS, CPU_BLOCK, FeatureConfig, LogMel, pick_backend
from sononet.features.shards import ShardWriter, packed_array, shard_schema
from sononet.io import remove_stale_temps, sha256_file
from sononet.locking import folder_lock

log = logging.getLogger(__name__)


# torchaudio's CPU FFT runs fastest around 16 clips a call (the batch stays in cache): 1,437
# clips/s at 16 against 657 at 64 (results/bench, section 1). A GPU wants large batches.
CPU_MEL_BATCH = CPU_BLOCK
CUDA_MEL_BATCH = 256


@dataclass
class PrepareConfig:
    data: str | None = None  # CREMA-D or RAVDESS folder, manifest CSV/Parquet or audiofolder; None = demo corpus
    labels: tuple[str, ...] | None = None  # keep only these classes (after label_map); None = every class
    label_map: dict[str, str] = field(default_factory=dict)  # relabel before selecting, e.g. {"CAL": "NEU"}
    out: str = ""  # shard folder; a rerun resumes here (train-all: <run>/shards)
    shard_size: int = 256  # inputs per shard: ~30 MB files, and the bound on memory
    workers: int | None = None  # decode threads; None = the CPU threads chosen (--threads), else usable CPUs
    device: str = "auto"  # cuda when present, else cpu
    mel_backend: str = "auto"  # auto: torchaudio on the CPU; on CUDA the faster of both, timed
    mel_batch: int = 0  # clips per device call; 0 = CPU_MEL_BATCH on the CPU, CUDA_MEL_BATCH on CUDA
    demo_actors: int = 16  # size of the generated demo corpus (82 clips per actor)
    demo_seed: int = 0
    features: FeatureConfig = field(default_factory=FeatureConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be positive. Found: {self.shard_size}")
        if self.mel_batch < 0:
            raise ValueError(f"mel_batch must be positive, or 0 for the device default. Found: {self.mel_batch}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be positive (or unset for one per CPU). Found: {self.workers}")
        check_device(self.device)
        if self.mel_backend not in ("auto", *BACKENDS):
            raise ValueError(f"mel_backend must be auto or one of {BACKENDS}. Found: {self.mel_backend!r}")
        if not 1 <= self.demo_actors <= 999 or self.demo_seed < 0:  # DemoConfig's rules, checked before any work
            raise ValueError(
                f"need 1 <= demo_actors <= 999, demo_seed >= 0. Found: {self.demo_actors}, {self.demo_seed}"
            )
        if isinstance(self.labels, str):
            self.labels = tuple(x.strip() for x in self.labels.split(",") if x.strip())
        if self.labels is not None and len(self.labels) < 2:
            raise ValueError(f"labels must name at least two classes. Found: {self.labels}")
        self.label_map = parse_label_map(self.label_map)
        if self.audio.sample_rate != self.features.sample_rate:
            raise ValueError(
                f"prepare.audio.sample_rate ({self.audio.sample_rate}) and prepare.features.sample_rate "
                f"({self.features.sample_rate}) must agree: the mel filterbank assumes the decoder's rate. "
                "Set both, or only features.sample_rate and audio.sample_rate to the same value"
            )


def open_corpus(cfg: PrepareConfig, progress: bool = True) -> Corpus:
    """The configured corpus with its class selection; the demo corpus is generated beside the shards."""
    if cfg.data is None:
        from sononet.corpus.demo import DemoConfig
        from sononet.corpus.demo_synth import generate_demo

        root = Path(cfg.out).parent / "demo-corpus"
        generate_demo(root, DemoConfig(seed=cfg.demo_seed, n_actors=cfg.demo_actors), progress=progress)
        corpus = load_corpus(root, kind="cremad")
    else:
        corpus = load_corpus(cfg.data)
    return select_labels(corpus, cfg.labels, cfg.label_map)


def _decode(clip: Clip, cfg: PrepareConfig) -> tuple[Clip, Decoded | ErrorRow, str]:
    try:
        decoded: Decoded | ErrorRow = load_audio(
            clip.path, cfg.audio, max_samples=decode_samples(cfg.features), keep=cfg.features.trim
        )
    except AudioError as e:
        return clip, ErrorRow(clip.path, e.reason, e.detail), ""
    return clip, decoded, sha256_file(clip.path)


def _chunks(clips: list[Clip], size: int) -> list[list[Clip]]:
    return [clips[i : i + size] for i in range(0, len(clips), size)]


def _decoded_chunks(
    chunks: list[list[Clip]], todo: list[int], pool: ThreadPoolExecutor, cfg: PrepareConfig
) -> Iterator[tuple[int, list[tuple[Clip, Decoded | ErrorRow, str]]]]:
    """Yield decoded chunks in order while the pool already decodes the next one."""
    pending: list[tuple[int, list[Future]]] = []
    for k in todo:
        pending.append((k, [pool.submit(_decode, clip, cfg) for clip in chunks[k]]))
        if len(pending) > 1:
            index, futures = pending.pop(0)
            yield index, [f.result() for f in futures]
    for index, futures in pending:
        yield index, [f.result() for f in futures]


def build_table(
    rows: list[tuple[Clip, Decoded, str]], mel: np.ndarray, wave: np.ndarray, n_valid: np.ndarray, cfg: FeatureConfig
) -> pa.Table:
    """One shard's Arrow table: metadata columns plus ``mel`` and ``wave`` tensor columns."""
    frames = frame_lengths(n_valid, cfg).astype(np.int16)

    def flags(d: Decoded, valid: int) -> list[str]:
        extra = ["silence_trimmed"] if cfg.trim_silence_db else []
        extra += ["trimmed"] if d.samples.shape[0] > cfg.clip_samples and valid == cfg.clip_samples else []
        extra += ["padded"] if valid < cfg.clip_samples else []
        return [*d.flags, *extra]

    scaled = np.multiply(wave, 32767.0)  # to int16 PCM in place: one float buffer, not three
    np.rint(scaled, out=scaled)
    np.clip(scaled, -32768, 32767, out=scaled)
    wave16 = scaled.astype(np.int16)
    columns = {
        "clip_id": [c.clip_id for c, _, _ in rows],
        "label": [c.label for c, _, _ in rows],
        "speaker": [c.speaker for c, _, _ in rows],
        "sex": [c.sex for c, _, _ in rows],
        "intensity": [c.intensity for c, _, _ in rows],
        "sentence": [c.sentence for c, _, _ in rows],
        "source_path": [c.path for c, _, _ in rows],
        "source_sha256": [sha for _, _, sha in rows],
        "duration_s": [d.duration_s for _, d, _ in rows],
        "orig_sr": [d.orig_sr for _, d, _ in rows],
        "orig_channels": [d.orig_channels for _, d, _ in rows],
        "n_samples": n_valid,
        "n_frames": frames,
        "flags": [flags(d, int(v)) for (_, d, _), v in zip(rows, n_valid)],
        "extra": [json.dumps(c.extra, sort_keys=True) for c, _, _ in rows],
        "mel": packed_array(mel.astype(cfg.mel_dtype)),
        "wave": packed_array(wave16),
    }
    return pa.Table.from_pydict(columns, schema=shard_schema(cfg))


def _write_shard(
    writer: ShardWriter,
    k: int,
    rows: list[tuple[Clip, Decoded, str]],
    mel: np.ndarray,
    waves: np.ndarray,
    n_valid: np.ndarray,
    errors: list[ErrorRow],
    n_files: int,
    cfg: FeatureConfig,
) -> None:
    """Build shard ``k``'s table and write it: the writer thread's half of a shard."""
    writer.write(k, build_table(rows, mel, waves, n_valid, cfg), errors, n_files)


def featurize(waves: np.ndarray, logmel: LogMel, device: torch.device, batch: int) -> np.ndarray:
    """(B, clip_samples) float32 -> (B, n_mels, frames) float32, ``batch`` clips per device call."""
    out = []
    for i in range(0, waves.shape[0], batch):
        x = torch.from_numpy(waves[i : i + batch]).to(device, non_blocking=True)
        out.append(logmel(x).float().cpu().numpy())
    n_frames = 1 + waves.shape[1] // logmel.cfg.hop_length
    return np.concatenate(out) if out else np.zeros((0, logmel.cfg.n_mels, n_frames), np.float32)


def prepare(cfg: PrepareConfig, progress: bool = True) -> dict:
    """Run the stage; returns (and writes) the summary. Safe to rerun: finished shards are kept.

    Holds ``<out>/.lock`` throughout: a second prepare into the same folder stops at once.
    """
    if not cfg.out:
        raise ValueError("prepare needs an output folder: pass --out DIR")
    with folder_lock(cfg.out, "prepare"):
        remove_stale_temps(cfg.out)  # a killed run's partial shard; the lock rules out a live writer
        return _prepare(cfg, progress)


def _prepare(cfg: PrepareConfig, progress: bool) -> dict:
    t0 = time.perf_counter()
    reuse_freed_memory()  # every mel batch allocates the same STFT buffers again
    corpus = open_corpus(cfg, progress)
    if not corpus.clips:
        raise ValueError(corpus.why_nothing_usable())
    log.info(corpus.summary())
    device = resolve_device(cfg.device)
    backend, rates = pick_backend(cfg.mel_backend, device, cfg.features)
    logmel = LogMel(cfg.features, backend).to(device)
    mel_batch = cfg.mel_batch or (CUDA_MEL_BATCH if device.type == "cuda" else CPU_MEL_BATCH)
    fingerprint = {
        "feature_config": cfg.features.to_dict(),
        "config_hash": cfg.features.hash(),
        "audio_config": cfg.audio.to_dict(),  # the resampler and duration rules change the clips too
        "shard_size": cfg.shard_size,
        "corpus": {
            "kind": corpus.kind,
            "root": corpus.root,
            "labels": corpus.labels,
            "n_files": corpus.n_files,
            "label_map": cfg.label_map,
        },
    }
    # A folder prepared before the audio config was recorded: taken as made with the defaults.
    legacy = {"audio_config": AudioConfig.recorded(None, cfg.features.sample_rate).to_dict()}
    writer = ShardWriter(cfg.out, fingerprint, legacy)
    chunks = _chunks(corpus.clips, cfg.shard_size)
    todo = [k for k in range(len(chunks)) if not writer.is_done(k)]
    skipped = len(chunks) - len(todo)
    bar = tqdm(total=len(corpus.clips), unit="clip", desc="prepare", disable=not progress, dynamic_ncols=True)
    bar.update(len(corpus.clips) - sum(len(chunks[k]) for k in todo))
    # Decoding runs one chunk ahead in `pool`; building and encoding shard k's table overlaps the
    # features of shard k+1 in `writer_pool` (one writer, so the manifest is updated in order).
    # The main thread does only what the shard needs first, pad/trim and mel: it is the critical path.
    workers = decode_workers(cfg.workers)
    with ThreadPoolExecutor(max_workers=workers) as pool, ThreadPoolExecutor(max_workers=1) as writer_pool:
        pending: Future | None = None
        for k, results in _decoded_chunks(chunks, todo, pool, cfg):
            good = [(c, d, sha) for c, d, sha in results if isinstance(d, Decoded)]
            errors = [d for _, d, _ in results if isinstance(d, ErrorRow)]
            waves, n_valid = fixed_length([d.samples for _, d, _ in good], cfg.features)
            mel = featurize(waves, logmel, device, mel_batch)
            if pending is not None:
                pending.result()
            pending = writer_pool.submit(
                _write_shard, writer, k, good, mel, waves, n_valid, errors, len(chunks[k]), cfg.features
            )
            bar.update(len(chunks[k]))
        if pending is not None:
            pending.result()
    bar.close()
    seconds = time.perf_counter() - t0
    all_errors = list(corpus.errors)
    for entry in writer.manifest["shards"].values():
        all_errors += [ErrorRow(**r) for r in pq.read_table(writer.out / entry["errors_file"]).to_pylist()]
    rows = sum(e["rows"] for e in writer.manifest["shards"].values())
    summary = {
        "corpus": "demo (synthetic, CREMA-D naming)" if cfg.data is None else corpus.kind,
        "data": corpus.root,
        "labels": corpus.labels,
        "files_seen": corpus.n_files,
        "clips_written": rows,
        "errors": len(all_errors),
        "errors_by_reason": count_by_reason(all_errors),
        "excluded": sum(corpus.excluded.values()),
        "excluded_by_label": corpus.excluded,
        "shards": len(chunks),
        "shards_skipped_as_done": skipped,
        "device": str(device),
        "mel_backend": backend,
        "mel_backend_timing_clips_per_s": {k: round(v, 1) for k, v in rates.items()},
        "seconds": round(seconds, 3),
        "clips_per_s": round(len(corpus.clips) / seconds, 1) if seconds > 0 else None,
        "config": {**asdict(cfg), "features": cfg.features.to_dict()},
        "config_hash": cfg.features.hash(),
    }
    if rows == 0:
        raise ValueError(f"{corpus.why_nothing_usable(all_errors)}; see {writer.out}/errors-*.parquet")
    excluded = sum(corpus.excluded.values())
    if rows + len(all_errors) + excluded != corpus.n_files:
        raise RuntimeError(
            f"lost files: {corpus.n_files} seen, {rows} written, {len(all_errors)} errors, {excluded} excluded"
        )
    writer.finish(corpus.errors, summary)
    return summary


def format_summary(summary: dict) -> str:
    reasons = ", ".join(f"{k} {v}" for k, v in summary["errors_by_reason"].items()) or "none"
    by_label = ", ".join(f"{k} {v}" for k, v in summary.get("excluded_by_label", {}).items())
    excluded = f", {summary['excluded']} excluded by --labels ({by_label})" if summary.get("excluded") else ""
    return (
        f"{summary['corpus']} corpus: {summary['files_seen']} files -> {summary['clips_written']} clips in "
        f"{summary['shards']} shards ({summary['shards_skipped_as_done']} already done), "
        f"{summary['errors']} errors ({reasons}){excluded}; {summary['mel_backend']} on {summary['device']}; "
        f"{summary['seconds']:.1f} s, {summary['clips_per_s']} clips/s"
    )
