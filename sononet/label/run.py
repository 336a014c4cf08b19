"""``sononet label``'s job: the config and the loop over shards and parts (see the package docstring)."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from sononet.device import (
    configure_threads,
    decode_workers,
    device_type,
    reuse_freed_memory,
    thread_budget,
    worker_pool,
)
from sononet.io import read_json
from sononet.label.config import LabelConfig
from sononet.label.engine import resolve_window
from sononet.label.ensemble import open_labeller
from sononet.label.inputs import duplicates, list_inputs, resolve_shard
from sononet.label.parts import _add_stats, _fingerprint, _load_state, label_files, merge, parts_dir
from sononet.label.speakers import SpeakerRule, assign_shards, check_model, shard_group_means
from sononet.locking import folder_lock

log = logging.getLogger(__name__)
# Below this many files a second process costs more than it saves: measured on 2 cores, one
# process started in 6.5 s and labelled 334 files/s after, two started in 7.4 s and did 389.
JOBS_MIN_FILES = 2000


def label(cfg: LabelConfig, progress: bool = True) -> dict:
    """Label this process's shard; with one shard (or ``cfg.merge``) also write ``cfg.out``.

    Holds ``<out>.parts/.lock`` shared (the shards of one run work side by side, ``--merge``
    waits) and ``.lock-<shard>`` exclusive (a second process on the same shard stops at once).
    """
    if cfg.merge:
        return merge(cfg.out)
    if cfg.input is None or cfg.model is None:
        raise ValueError("labelling needs an input path and a model directory (or merge = true)")
    shard, n = resolve_shard(cfg.shard_index, cfg.shard_count)
    jobs = label_jobs(cfg) if n == 1 else 1
    if jobs > 1:
        return _label_in_processes(cfg, jobs, progress)
    out_dir = parts_dir(cfg.out)
    with (
        folder_lock(out_dir, "label", shared=True),
        folder_lock(out_dir, f"label shard {shard}/{n}", name=f".lock-{shard:05d}"),
    ):
        summary = _label_shard(cfg, progress)
    if n == 1:
        return merge(cfg.out)
    log.info("shard %d/%d done; when all are: sononet label --merge --out %s", shard, n, cfg.out)
    return summary


def label_jobs(cfg: LabelConfig) -> int:
    """Processes for one unsharded run: ``cfg.jobs``; else the shard count of a run already
    started in ``out`` (so a rerun resumes it); else on the CPU one per CPU thread, each
    single-threaded, when there are at least ``JOBS_MIN_FILES`` files (one more process per
    half of that); else 1.

    One process per core beats one process with a thread per core here: per file, the CNN and
    the log-mel are small tensor ops that intra-op threads barely speed up, and the Python
    between them holds the GIL.
    """
    if cfg.jobs is not None:
        return cfg.jobs
    states = sorted(parts_dir(cfg.out).glob("state-*.json"))
    if states:
        return int(read_json(states[0])["fingerprint"]["shards"])
    if device_type(cfg.device) != "cpu" or thread_budget() < 2:
        return 1
    files, _ = list_inputs(cfg.input)
    return min(thread_budget(), len(files) // (JOBS_MIN_FILES // 2)) if len(files) >= JOBS_MIN_FILES else 1


def _label_in_processes(cfg: LabelConfig, jobs: int, progress: bool) -> dict:
    """Shards 0..jobs-1 of ``cfg`` in worker processes (``device.worker_pool``), then the merge."""
    workers = max(1, cfg.workers // jobs) if cfg.workers else None
    shards = [replace(cfg, shard_index=i, shard_count=jobs, jobs=1, workers=workers) for i in range(jobs)]
    pool, threads = worker_pool(jobs)
    log.info("labelling in %d processes of %d thread(s) each", jobs, threads)
    with pool:
        futures = [pool.submit(label, shard, progress) for shard in shards]
        for future in futures:
            future.result()  # a worker's error, raised here; finished shards stay done for the rerun
    return merge(cfg.out)


def _label_shard(cfg: LabelConfig, progress: bool) -> dict:
    from tqdm import tqdm

    from sononet.io import atomic_write_json, atomic_write_table, sha256_file

    t0 = time.perf_counter()
    configure_threads(thread_budget())  # the count the command chose, applied now that torch loads
    reuse_freed_memory()  # every batch allocates the same activations again
    shard, n = resolve_shard(cfg.shard_index, cfg.shard_count)
    files, ignored = list_inputs(cfg.input)
    if not files:
        raise ValueError(f"no audio files in {cfg.input} ({ignored} files with other extensions ignored)")
    lab = open_labeller(cfg.model, cfg.device, cfg.mel_backend)
    if cfg.embeddings:
        lab.embedding_dim()  # an ensemble has no single clip vector: refused before any file is read
    if lab.warning:
        log.warning(lab.warning)
    window_s, hop_s, window = resolve_window(lab, cfg.window_s, cfg.hop_s)
    rule = SpeakerRule.parse(cfg.speaker_from) if cfg.speaker_from else None
    if rule:
        check_model(lab)
    keys = rule.keys(files, cfg.input) if rule else [None] * len(files)
    # A speaker's files all go to one shard, which computes its groups' means on its own.
    owner = assign_shards(keys, n) if rule else [i % n for i in range(len(files))]
    mine_idx = [i for i in range(len(files)) if owner[i] == shard]
    mine = [files[i] for i in mine_idx]
    chunks = [mine[i : i + cfg.part_size] for i in range(0, len(mine), cfg.part_size)]
    repeated = duplicates(files)  # over all shards: the first listing is kept wherever it falls
    mine_repeated = [i in repeated for i in mine_idx]
    chunk_repeats = [{j for j in range(len(c)) if mine_repeated[k * cfg.part_size + j]} for k, c in enumerate(chunks)]
    out_dir = parts_dir(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / f"state-{shard:05d}.json"
    fingerprint = _fingerprint(files, lab, window, n, cfg.part_size, cfg.embeddings, rule, cfg.speaker_min_files)
    state = _load_state(state_path, fingerprint, shard)
    state["n_parts"] = len(chunks)
    mine_keys = [None if r else keys[i] for i, r in zip(mine_idx, mine_repeated)]
    means = shard_group_means(
        mine, mine_keys, lab, window, cfg.batch_size, cfg.workers, out_dir / f"speakers-{shard:05d}.json", fingerprint
    )
    chunk_keys = [mine_keys[i : i + cfg.part_size] for i in range(0, len(mine), cfg.part_size)]

    def done(k: int) -> bool:  # listed, present and unchanged
        entry = state["parts"].get(str(k), {"file": ".missing"})
        path = out_dir / entry["file"]
        return path.exists() and sha256_file(path) == entry["sha256"]

    todo = [k for k in range(len(chunks)) if not done(k)]
    state["complete"] = not todo
    atomic_write_json(state_path, state)
    bar = tqdm(total=len(mine), unit="file", desc=f"label {shard}/{n}", disable=not progress, position=shard)
    bar.update(len(mine) - sum(len(chunks[k]) for k in todo))
    processed = 0
    with ThreadPoolExecutor(max_workers=decode_workers(cfg.workers)) as pool:
        for k in todo:
            table, stats = label_files(
                chunks[k], lab, cfg, window, pool, bar, repeats=chunk_repeats[k], speakers=(chunk_keys[k], means)
            )  # fmt: skip
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
        "train_corpus": lab.provenance["corpus"], "warning": lab.warning,
        "speaker_from": cfg.speaker_from,
        "speaker_groups": sum(m.files >= cfg.speaker_min_files for m in means.values()),
    }  # fmt: skip
    state.update(complete=True, summary=summary)
    atomic_write_json(state_path, state)
    return summary
