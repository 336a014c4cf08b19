"""``sononet bench``: measured speed and memory of every pipeline stage, with the machine they ran on.

::

    sononet bench --device cpu                    # full CPU run, ~10 min on 2 cores
    sononet bench --device cuda --out results/bench
    sononet bench --tiny --out /tmp/bench         # smoke sizes, under a minute
    sononet bench --only mel,pad_trim --repeats 9

Writes ``<out>/bench-<device>.json`` and ``.md``. Ratios are measured side by side in one
run on one batch, so they hold across machines better than the absolute figures, which are
only meaningful with the machine description written beside them. One module per benchmark:
``mel``, ``pad_trim``, ``decode``, ``prepare``, ``train``, ``label``, ``demo``; ``report`` judges the
targets and writes the tables. Heavy imports stay inside functions so ``sononet --help`` is instant.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from sononet.corpus.cremad import N_CLIPS

log = logging.getLogger(__name__)

BENCHMARKS = ("mel", "pad_trim", "decode", "prepare", "train", "label", "demo")
CREMAD_CLIPS = N_CLIPS  # all of CREMA-D
MAX_CLIPS = 5 * CREMAD_CLIPS  # synthetic copies of CREMA-D keep 4-digit actor ids
TINY_CLIPS = 64


@dataclass
class BenchConfig:
    out: str = "results/bench"  # committed reference outputs live here
    device: str = "auto"  # cuda when present (CPU rows are measured too), else cpu
    clips: int = CREMAD_CLIPS  # prepare corpus size: all of CREMA-D, the size the 15 s target is for
    tiny: bool = False  # smoke sizes for tests (prepare at most 64 clips, no 4x run): seconds, not figures
    only: tuple[str, ...] = BENCHMARKS  # which benchmarks to run
    repeats: int = 5  # timed repetitions per measurement; the median is reported
    mel_batches: tuple[int, ...] = (1, 16, 64, 256)  # 1 = streaming, 16 = prepare on CPU, 256 = on CUDA
    pad_trim_clips: int = 4096  # a large ragged batch: 0.6 GB in, 0.75 GB out
    decode_files: int = 200  # per input format; enough for a stable rate, seconds to write
    scale: int = 4  # prepare again at this many times the clips to see whether memory stays flat; 1 = skip
    workers: int = 2  # decode threads for decode/prepare/label: their default, one per core here
    train_models: tuple[str, ...] = ("cnn", "bigru", "wav2vec2")
    train_batch: int = 32  # the training default
    train_warmup: int = 2  # untimed steps: allocator, cuDNN autotuning, lazy init
    train_steps: int = 5  # timed steps; the median step time is reported
    w2v2: str = "tiny"  # wav2vec2 encoder: random-init tiny (no hub here) or a local weights directory
    label_files: tuple[int, ...] = (1000, 10_000)  # two folder sizes: rate, start-up cost and memory growth
    threads: int | None = None  # pin torch/numba/children to this many threads; None = their defaults
    tmp_dir: str | None = None  # where generated WAVs and shards go (~6 GB at full size); None = system temp
    cv_run: str | None = None  # a finished cross-validated train-all run: the CV row reads its run.json

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N. Found: {self.device!r}")
        unknown = sorted(set(self.only) - set(BENCHMARKS))
        if unknown or not self.only:
            raise ValueError(f"only must name some of {', '.join(BENCHMARKS)}. Found: {list(self.only)}")
        for name in (
            "clips",
            "repeats",
            "pad_trim_clips",
            "decode_files",
            "scale",
            "workers",
            "train_batch",
            "train_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive. Found: {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be positive (or None for the defaults). Found: {self.threads}")
        if self.train_warmup < 0:
            raise ValueError(f"train_warmup must be >= 0. Found: {self.train_warmup}")
        if self.clips * self.scale > MAX_CLIPS and not self.tiny:
            raise ValueError(
                f"clips x scale must be at most {MAX_CLIPS} (5 copies of CREMA-D). Found: {self.clips} x {self.scale}"
            )
        bad = [b for b in (*self.mel_batches, *self.label_files) if b < 1]
        if bad or not self.mel_batches or not self.label_files:
            raise ValueError(f"mel_batches and label_files must be non-empty positive sizes. Found: {bad}")

    def resolved(self) -> BenchConfig:
        """The sizes actually run: ``tiny`` shrinks everything and skips the 4x and 10,000-file parts."""
        if not self.tiny:
            return self
        return replace(
            self,
            clips=min(self.clips, TINY_CLIPS),
            repeats=min(self.repeats, 2),
            mel_batches=(1, 4),
            pad_trim_clips=64,
            decode_files=8,
            scale=1,
            train_batch=4,
            train_warmup=1,
            train_steps=2,
            label_files=(min(self.label_files[0], 16),),
        )


def _command_line() -> str:
    argv0 = Path(sys.argv[0]).name if sys.argv else "?"
    head = ["python", "-m", "sononet"] if argv0 == "__main__.py" else [argv0]
    return shlex.join([*head, *sys.argv[1:]])


def _run_one(name: str, cfg: BenchConfig, devices: list[str], tmp: Path) -> dict:
    if name == "mel":
        from sononet.bench.mel import run_mel

        return run_mel(cfg.mel_batches, cfg.repeats, devices)
    if name == "pad_trim":
        from sononet.bench.pad_trim import run_pad_trim

        return run_pad_trim(cfg.pad_trim_clips, cfg.repeats)
    if name == "decode":
        from sononet.bench.decode import run_decode

        return run_decode(cfg.decode_files, cfg.repeats, cfg.workers, tmp)
    if name == "prepare":
        from sononet.bench.prepare import run_prepare

        return run_prepare(cfg.clips, cfg.scale, devices[-1], cfg.workers, tmp, repeats=cfg.repeats)
    if name == "train":
        from sononet.bench.train import run_train

        return run_train(cfg.train_models, devices, cfg.train_batch, cfg.train_warmup, cfg.train_steps, cfg.w2v2)
    if name == "demo":
        from sononet.bench.demo import run_demo

        return run_demo(devices[-1], tmp, cfg.tiny)
    from sononet.bench.label import run_label

    return run_label(cfg.label_files, devices[-1], cfg.workers, tmp)


def run_bench(cfg: BenchConfig) -> dict:
    """Run the selected benchmarks and write ``bench-<device>.json`` and ``.md`` into ``cfg.out``.

    A benchmark that fails is recorded with its error (status ``failed``) and the others still
    run, so one broken stage never costs the numbers of the rest.
    """
    import os

    from sononet.bench.machine import describe_machine
    from sononet.bench.report import evaluate_targets, markdown
    from sononet.bench.timing import pinned_threads
    from sononet.device import resolve_device
    from sononet.io import atomic_write_bytes, output_dir
    from sononet.locking import folder_lock

    output_dir(cfg.out, "--out")  # before minutes of measuring, not after

    requested = cfg
    cfg = cfg.resolved()
    device = resolve_device(cfg.device)
    devices = ["cpu"] if device.type == "cpu" else ["cpu", str(device)]
    t0 = time.perf_counter()
    load_avg_start = round(os.getloadavg()[0], 2)  # others sharing the cores skew every number
    results: dict[str, dict] = {}
    with pinned_threads(cfg.threads):
        doc: dict = {
            "command": _command_line(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "device": device.type,
            "devices": devices,
            "config": dataclasses.asdict(requested),
            "resolved_config": dataclasses.asdict(cfg),
            "machine": describe_machine(),
        }
        if cfg.tmp_dir:  # an asked-for scratch folder is made, like every output folder
            Path(cfg.tmp_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="sononet-bench-", dir=cfg.tmp_dir) as tmp:
            for name in (b for b in BENCHMARKS if b in cfg.only):
                log.info("bench: %s", name)
                t = time.perf_counter()
                try:
                    results[name] = {"status": "ok", **_run_one(name, cfg, devices, Path(tmp))}
                except Exception as e:  # a bench stage's failure is a result, not the end of the run
                    log.exception("bench %s failed", name)
                    results[name] = {"status": "failed", "reason": f"{type(e).__name__}: {e}", "rows": []}
                results[name]["seconds"] = time.perf_counter() - t
    if cfg.cv_run:  # read, not run: a cross-validated run takes most of an hour
        from sononet.bench.demo import read_cv_run

        results["cv"] = {"status": "ok", **read_cv_run(cfg.cv_run)}
    doc["benchmarks"] = results
    doc["targets"] = evaluate_targets(results, device.type, tiny=cfg.tiny)
    doc["seconds"] = time.perf_counter() - t0
    doc["load_avg_start"] = load_avg_start
    doc["load_avg_end"] = round(os.getloadavg()[0], 2)
    out = Path(cfg.out)
    stem = out / f"bench-{device.type}"
    with folder_lock(out, "bench"):  # the report pair is written by one bench at a time
        atomic_write_bytes(stem.with_suffix(".json"), (json.dumps(doc, indent=2) + "\n").encode())
        atomic_write_bytes(stem.with_suffix(".md"), markdown(doc).encode())
    doc["files"] = [str(stem.with_suffix(".json")), str(stem.with_suffix(".md"))]
    return doc
