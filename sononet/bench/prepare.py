"""Benchmark 4: ``sononet prepare`` end to end, and whether its memory stays flat in corpus size.

A CREMA-D-shaped corpus (real file names, durations from the official manifest, synthetic
sound) is written to a temporary folder, then ``python -m sononet prepare`` runs on it in a
child process, exactly as a user would start it; we record wall time, the child's own peak
RSS, and prepare's summary (its timer starts after imports). The corpus size the target names
runs ``repeats`` times into a fresh output folder and the median run is reported, with the
range beside it: one run on a shared VM moved by 4 s from one bench to the next. Then the same at
``scale`` times the clips, once (copies of the corpus under new actor ids): since prepare holds at
most two shards at a time, peak RSS should stay within 10 %.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from sononet.bench.corpus import cremad_like, folder_bytes, write_wavs
from sononet.bench.timing import run_sononet

log = logging.getLogger(__name__)
RSS_TOLERANCE = 0.10  # "flat": the larger corpus may use at most 10 % more peak memory


def prepare_once(n_clips: int, device: str, workers: int, tmp: Path, keep: bool = False, repeats: int = 1) -> dict:
    """Generate ``n_clips`` WAVs, run prepare on them ``repeats`` times in a child, measure, clean up.

    Times and rates are the median run's; peak RSS is the largest of the runs.
    """
    from sononet.features.shards import SUMMARY

    data, out = tmp / f"corpus-{n_clips}", tmp / f"shards-{n_clips}"
    t0 = time.perf_counter()
    write_wavs(data, cremad_like(n_clips))
    gen_s = time.perf_counter() - t0
    wav_mb = folder_bytes(data, "*.wav") / 2**20
    command = ["prepare", "--data", str(data), "--out", str(out), "--device", device, "--workers", str(workers)]
    log.info("prepare bench: %d clips (%.0f MB of WAV, written in %.1f s)", n_clips, wav_mb, gen_s)
    runs = []
    for i in range(repeats):
        shutil.rmtree(out, ignore_errors=True)  # every run prepares from scratch: no shard is "already done"
        os.sync()  # nor writes back the previous run's shards during this one
        child = run_sononet(command, tmp / f"prepare-{n_clips}-{i}.log")
        runs.append((child, json.loads((out / SUMMARY).read_text())))
    walls = [child.wall_s for child, _ in runs]
    child, summary = sorted(runs, key=lambda run: run[0].wall_s)[(len(runs) - 1) // 2]  # the (lower) median run
    result = {
        "clips": n_clips,
        "clips_written": summary["clips_written"],
        "errors": summary["errors"],
        "shards": summary["shards"],
        "runs": len(runs),
        "wall_s": child.wall_s,  # what the user waits: interpreter, imports, backend timing included
        "wall_min_s": min(walls),
        "wall_max_s": max(walls),
        "prepare_s": summary["seconds"],  # prepare's own timer, after imports
        "clips_per_s": n_clips / child.wall_s,
        "shards_per_s": summary["shards"] / child.wall_s,
        "peak_rss_mb": max(c.peak_rss_mb for c, _ in runs),
        "mel_backend": summary["mel_backend"],
        "device": summary["device"],
        "wav_mb": wav_mb,
        "shard_mb": folder_bytes(out, "*.parquet") / 2**20,
        "generate_s": gen_s,
        "command": " ".join(command),
        "wall_runs_s": walls,
    }
    if not keep:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    return result


def run_prepare(
    n_clips: int, scale: int, device: str, workers: int, tmp: Path, keep: bool = False, repeats: int = 1
) -> dict:
    runs = [prepare_once(n_clips, device, workers, tmp, keep, repeats)]
    if scale > 1:
        runs.append(prepare_once(n_clips * scale, device, workers, tmp, keep))
    result: dict = {"rows": runs, "scale": scale}
    if len(runs) == 2:
        ratio = runs[1]["peak_rss_mb"] / runs[0]["peak_rss_mb"]
        result["rss_ratio"] = ratio
        result["rss_flat"] = ratio <= 1.0 + RSS_TOLERANCE
    return result
