"""Targets and the Markdown report: verdicts first, then one table per benchmark, ratios leading."""

from __future__ import annotations

from collections.abc import Sequence

from sononet.corpus.cremad import N_CLIPS as FULL_CORPUS  # the prepare target is for all of CREMA-D
from sononet.prepare import CPU_MEL_BATCH

PREPARE_TARGET_S = 15.0
PREPARE_MOONSHOT_S = 10.0  # the first moonshot, now a target of its own
MEL_TARGET = 4.0
PAD_TRIM_TARGET = 0.50  # fraction of this machine's memcpy bandwidth
CONTENTION_TARGET = 1.2  # CPU-seconds per training step beside a CPU hog / quiet
LABEL_TARGET = 400.0  # files/s, wall, on the CPU: the first target
LABEL_TARGET_2 = 1000.0  # files/s, the second
DEMO_TARGET_S = 120.0  # the demo train-all, quiet, wall from a cold start
CV_TARGET_S = 20 * 60.0  # the README's RAVDESS 6-fold CV (CNN + BiGRU with refit) on 2 cores
RSS_TARGET = 1.10
MEL_TARGET_BATCH = CPU_MEL_BATCH  # the batch size the pipeline uses on the CPU


def _target(name: str, goal: str, measured: str, reached: bool | None, note: str = "") -> dict:
    verdict = None if reached is None else bool(reached)  # a NumPy bool would not serialise
    return {"name": name, "target": goal, "measured": measured, "reached": verdict, "note": note}


def evaluate_targets(benchmarks: dict, device: str, tiny: bool = False) -> list[dict]:
    """One verdict per stated target, computed from the measured numbers; ``reached`` is None where
    this run could not judge it (too small a run, the wrong device, one size where two are needed)."""
    return [
        *_prepare_targets(benchmarks.get("prepare", {}), device),
        *_label_targets(benchmarks.get("label", {}), tiny),
        *_mel_targets(benchmarks.get("mel", {})),
        *_pad_trim_targets(benchmarks.get("pad_trim", {})),
        *_train_targets(benchmarks.get("train", {})),
        *_demo_targets(benchmarks.get("demo", {}), benchmarks.get("cv", {}), tiny),
    ]


def _stages(stages: dict[str, float], top: int = 4) -> str:
    """The longest stages, for the note beside a wall time."""
    longest = sorted(stages.items(), key=lambda kv: -kv[1])[:top]
    return ", ".join(f"{k} {v:.0f} s" for k, v in longest)


def _demo_targets(demo: dict, cv: dict, tiny: bool) -> list[dict]:
    out = []
    if demo.get("wall_s") is not None:
        wall = demo["wall_s"]
        out.append(_target(
            "demo train-all", f"<= {DEMO_TARGET_S:.0f} s wall, cold start, CPU", f"{wall:.0f} s wall",
            None if tiny else wall <= DEMO_TARGET_S,
            "tiny mode: one CNN epoch, not the demo" if tiny else f"longest stages: {_stages(demo['stages_s'])}",
        ))  # fmt: skip
    if cv.get("seconds") is not None:
        load = cv.get("load_avg_start"), cv.get("load_avg_end")
        seen = f"load average {load[0]} at start, {load[1]} at end" if load[0] is not None else "load not recorded"
        out.append(_target(
            "real-speech cross-validation", f"<= {CV_TARGET_S / 60:.0f} min wall on 2 cores",
            f"{cv['seconds'] / 60:.1f} min ({cv['folds']} folds, {cv['corpus']})", cv["seconds"] <= CV_TARGET_S,
            f"read from {cv['run']}/run.json ({seen}); longest stages: {_stages(cv['stages_s'], 2)}",
        ))  # fmt: skip
    return out


def _spread(row: dict) -> str:
    """The runs behind a median wall time, where there were several."""
    runs = row.get("runs", 1)
    return f", median of {runs} runs, {row['wall_min_s']:.1f}-{row['wall_max_s']:.1f} s" if runs > 1 else ""


def _prepare_targets(prep: dict, device: str) -> list[dict]:
    if not prep.get("rows"):
        return []
    first = prep["rows"][0]
    judged = first["clips"] == FULL_CORPUS and device == "cpu"
    note = "" if judged else f"needs --clips {FULL_CORPUS} on the CPU"
    wall = first["wall_s"]
    out = [
        _target(
            "prepare, full corpus",
            f"<= {PREPARE_TARGET_S:.0f} s wall on {FULL_CORPUS} clips, CPU",
            f"{wall:.1f} s wall ({first['prepare_s']:.1f} s after imports){_spread(first)}, {first['clips']} clips",
            wall <= PREPARE_TARGET_S if judged else None,
            note,
        ),
        _target(
            "prepare, full corpus (10 s)",
            f"<= {PREPARE_MOONSHOT_S:.0f} s wall on {FULL_CORPUS} clips, CPU",
            f"{wall:.1f} s wall = {wall / PREPARE_MOONSHOT_S:.2f}x the target, {first['clips']} clips",
            wall <= PREPARE_MOONSHOT_S if judged else None,
            note,
        ),
    ]
    goal = f"{prep.get('scale', 4)}x clips within {RSS_TARGET - 1:.0%}"
    if len(prep["rows"]) >= 2:
        small, big = prep["rows"][0]["peak_rss_mb"], prep["rows"][-1]["peak_rss_mb"]
        ratio = big / small
        out.append(
            _target("prepare peak RSS flat", goal, f"x{ratio:.3f} ({small:.0f} -> {big:.0f} MB)", ratio <= RSS_TARGET)
        )
    else:
        out.append(_target("prepare peak RSS flat", goal, "one corpus size run", None, "needs --scale > 1"))
    return out


def _label_targets(label: dict, tiny: bool) -> list[dict]:
    rows = sorted(label.get("rows", []), key=lambda r: r["files"])
    if not rows:
        return []
    big = rows[-1]
    on_cpu = big.get("device") == "cpu"
    judged = on_cpu and not tiny
    out = [
        _target(
            "sononet label rate, CPU",
            f">= {LABEL_TARGET:.0f} files/s (wall) on the CPU",
            f"{big['files_per_s']:.0f} files/s on {big['files']:,} files ({big['wall_s']:.1f} s wall)",
            big["files_per_s"] >= LABEL_TARGET if judged else None,
            "needs the full-size run (10,000 files), not --tiny"
            if tiny
            else ""
            if on_cpu
            else f"ran on {big.get('device')}",
        ),
        _target(
            "sononet label rate, CPU (1,000)",
            f">= {LABEL_TARGET_2:,.0f} files/s (wall) on the CPU",
            f"{big['files_per_s']:.0f} files/s = {big['files_per_s'] / LABEL_TARGET_2:.2f}x the target",
            big["files_per_s"] >= LABEL_TARGET_2 if judged else None,
        ),
    ]
    goal = f"largest folder within {RSS_TARGET - 1:.0%} of the smallest"
    if len(rows) >= 2 and rows[0]["files"] < big["files"]:
        small_mb, big_mb = rows[0]["peak_rss_mb"], big["peak_rss_mb"]
        ratio = big_mb / small_mb
        out.append(
            _target(
                "sononet label peak RSS flat",
                goal,
                f"x{ratio:.3f} ({small_mb:.0f} -> {big_mb:.0f} MB, {rows[0]['files']:,} -> {big['files']:,} files)",
                ratio <= RSS_TARGET,
            )
        )
    else:
        out.append(_target("sononet label peak RSS flat", goal, "one folder size run", None, "needs two folder sizes"))
    return out


def _mel_targets(mel: dict) -> list[dict]:
    if not (mel.get("rows") and "cpu" in mel.get("chosen_backend", {})):
        return []
    chosen = mel["chosen_backend"]["cpu"]["backend"]
    rows = [r for r in mel["rows"] if r["device"] == "cpu" and r["backend"] == chosen]
    fitting = [r for r in rows if r["batch"] <= MEL_TARGET_BATCH] or rows
    row = max(fitting, key=lambda r: r["batch"])
    per_clip = row.get("speedup_vs_librosa_per_clip")
    return [
        _target(
            "mel backend vs librosa, CPU",
            f">= {MEL_TARGET:.0f}x at batch {MEL_TARGET_BATCH}",
            f"{chosen} (auto's pick) {row['speedup_vs_librosa']:.2f}x librosa at batch {row['batch']}",
            row["speedup_vs_librosa"] >= MEL_TARGET,
            "judged against librosa on the same batch (its batched best case); against librosa "
            f"one clip at a time: {per_clip:.1f}x"
            if per_clip
            else "judged against librosa on the same batch",
        )
    ]


def _pad_trim_targets(pt: dict) -> list[dict]:
    rows = {r.get("key"): r for r in pt.get("rows", [])}
    if "numba" not in rows or "memcpy" not in rows:
        return []
    kernel, copy = rows["numba"], rows["memcpy"]
    fraction = kernel["gib_per_s"] / copy["gib_per_s"]
    notes = [f"{kernel['speedup_vs_numpy']:.1f}x the NumPy loop"]
    if "numba_pretouched" in rows and "memcpy_pretouched" in rows:
        pre = rows["numba_pretouched"]["gib_per_s"] / rows["memcpy_pretouched"]["gib_per_s"]
        notes.insert(0, f"into a pre-touched out: {100 * pre:.1f} % of memcpy")
    return [
        _target(
            "numba pad/trim vs memcpy",
            f">= {PAD_TRIM_TARGET:.0%} of memcpy bandwidth (np.copyto, same output bytes)",
            f"{100 * fraction:.1f} % ({kernel['gib_per_s']:.2f} vs {copy['gib_per_s']:.2f} GiB/s moved, "
            f"both allocating their output), {pt.get('clips', '?')} clips",
            fraction >= PAD_TRIM_TARGET,
            "; ".join(notes),
        )
    ]


def _train_targets(train: dict) -> list[dict]:
    rows = [r for r in train.get("rows", []) if r.get("contended_cpu_s_per_step") is not None]
    if not rows:
        return []
    ratios = {r["model"]: r["contended_cpu_s_per_step"] / r["cpu_s_per_step"] for r in rows}  # CPU rows only
    over = [name for name, ratio in ratios.items() if ratio > CONTENTION_TARGET]
    return [
        _target(
            "training CPU-s per step beside a CPU hog",
            f"<= {CONTENTION_TARGET}x quiet, every model",
            ", ".join(f"{name} x{ratio:.2f}" for name, ratio in ratios.items()),
            not over,
            f"over the target: {', '.join(over)}" if over else f"beside {_hog(rows[0])} (torch's intra-op threads)",
        )
    ]


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v).replace("|", "\\|")


def table(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> list[str]:
    """Markdown table of ``rows`` with (key, header) ``columns``."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return lines


TIMING = [("median_s", "median s"), ("min_s", "min s"), ("max_s", "max s"), ("repeats", "reps")]
SECTIONS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "mel": (
        "1. Log-mel, same batch of 3 s clips",
        [
            ("speedup_vs_librosa", "x librosa"),
            ("speedup_vs_librosa_per_clip", "x librosa per clip"),
            ("backend", "backend"),
            ("device", "device"),
            ("batch", "batch"),
            ("clips_per_s", "clips/s"),
            *TIMING,
        ],
    ),
    "pad_trim": (
        "2. Pad/trim a ragged batch to 48,000 samples, against memcpy",
        [
            ("pct_of_memcpy", "% of memcpy"),
            ("speedup_vs_numpy", "x NumPy loop"),
            ("impl", "implementation"),
            ("dest", "destination"),
            ("gib_per_s", "GiB/s moved"),
            ("clips_per_s", "clips/s"),
            *TIMING,
        ],
    ),
    "decode": (
        "3. Decode + downmix + resample to 16 kHz (load_audio)",
        [
            ("input", "input"),
            ("threads", "threads"),
            ("clips_per_s", "clips/s"),
            ("audio_s_per_s", "input audio s/s"),
            *TIMING,
        ],
    ),
    "prepare": (
        "4. `sononet prepare` end to end (child process)",
        [
            ("clips", "clips"),
            ("peak_rss_mb", "peak RSS MB"),
            ("runs", "runs"),
            ("wall_s", "wall s (median)"),
            ("wall_min_s", "min"),
            ("wall_max_s", "max"),
            ("prepare_s", "s after imports"),
            ("clips_per_s", "clips/s (wall)"),
            ("shards_per_s", "shards/s (wall)"),
            ("shards", "shards"),
            ("errors", "errors"),
            ("mel_backend", "mel"),
            ("wav_mb", "WAV MB"),
            ("shard_mb", "shards MB"),
        ],
    ),
    "train": (
        "5. Training steps (forward + backward + clip + AdamW), random inputs",
        [
            ("model", "model"),
            ("device", "device"),
            ("batch", "batch"),
            ("steps_per_s", "steps/s"),
            ("clips_per_s", "clips/s"),
            ("cpu_s_per_step", "CPU s/step"),
            ("params_m", "params M"),
            ("trainable_m", "trainable M"),
            ("peak_gpu_mb", "peak GPU MB"),
            ("median_s", "median s"),
            ("repeats", "steps"),
            ("describe", "what"),
        ],
    ),
    "demo": (
        "7. Demo `sononet train-all` (child process, cold start)",
        [("wall_s", "wall s"), ("run_s", "run.json s"), ("peak_rss_mb", "peak RSS MB"), ("stages", "stages, s")],
    ),
    "cv": (
        "8. Real-speech cross-validation (read from a finished run)",
        [
            ("seconds", "wall s"),
            ("folds", "folds"),
            ("corpus", "corpus"),
            ("load", "load average start / end"),
            ("stages", "stages, s"),
            ("run", "run"),
        ],
    ),  # fmt: skip
    "label": (
        "6. `sononet label` (child process, untrained CNN)",
        [
            ("files", "files"),
            ("files_per_s", "files/s (wall)"),
            ("peak_rss_mb", "peak RSS MB"),
            ("wall_s", "wall s"),
            ("label_s", "s after model load"),
            ("error_files", "errors"),
            ("mel_backend", "mel"),
        ],
    ),
}


CONTENTION_COLUMNS = [
    ("model", "model"),
    ("cpu_s_ratio_contended", "CPU s/step contended / quiet"),
    ("steps_per_s", "quiet steps/s"),
    ("contended_steps_per_s", "contended steps/s"),
    ("cpu_s_per_step", "quiet CPU s/step"),
    ("contended_cpu_s_per_step", "contended CPU s/step"),
]


def _hog(row: dict) -> str:
    n = row.get("hog_processes", 0)
    return f"a CPU hog of {n} busy process{'' if n == 1 else 'es'}"


def _extras(name: str, result: dict) -> list[str]:
    lines = []
    if name == "prepare" and "rss_ratio" in result:
        lines.append(
            f"Peak RSS at {result['scale']}x the clips: x{result['rss_ratio']:.3f} "
            f"({'flat' if result['rss_flat'] else 'NOT flat'}, tolerance 10 %)."
        )
    if name == "label" and "rss_ratio" in result:
        marginal = result.get("marginal_files_per_s")
        rate = f"{marginal:.0f} files/s" if marginal else "not measurable (noise)"
        lines.append(
            f"Marginal rate between the two sizes (start-up excluded): {rate}; "
            f"peak RSS ratio x{result['rss_ratio']:.3f}."
        )
    if name == "mel":
        picks = ", ".join(f"{d}: {v['backend']}" for d, v in result.get("chosen_backend", {}).items())
        diffs = ", ".join(f"{k} {v:.3g}" for k, v in result.get("max_abs_db_diff_vs_librosa", {}).items())
        lines.append(f"`auto` picks {picks}. Max |dB - librosa| on 4 clips: {diffs}.")
        lines.append(
            "librosa runs batched on the CPU; torch backends with the batch already on the device. "
            "The three take turns repetition by repetition, so each ratio is measured under the same load."
        )
    if name == "pad_trim":
        lines.append(
            f"{result['clips']} clips, {result['input_mb']:.0f} MB in, {result['output_mb']:.0f} MB out, "
            f"{result['fraction_trimmed']:.0%} trimmed; right pad, centre trim. % of memcpy: against `np.copyto` "
            "of the same output bytes into the same kind of destination (fresh `np.empty`, or a pre-touched `out`); "
            "bytes moved: output written plus kept input read, a copy's read plus write. "
            f"numba threads {result.get('numba_threads', '?')}, memcpy 1 thread."
        )
    if name == "train":
        hogged = [r for r in result["rows"] if r.get("contended_cpu_s_per_step") is not None]
        if hogged:
            lines += [
                f"The same steps beside {_hog(hogged[0])}, as many as torch's intra-op threads; "
                "CPU s = this process's CPU time, every thread:",
                "",
                *table(hogged, CONTENTION_COLUMNS),
            ]
    return lines


def markdown(doc: dict) -> str:
    m = doc["machine"]
    gpu = m["gpu"]["name"] if m.get("gpu") else "none"
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    tiny = " (tiny mode: smoke sizes, not reference figures)" if doc["config"]["tiny"] else ""
    lines = [
        f"# SonoNet benchmark: {doc['device']}",
        "",
        f"Command: `{doc['command']}`  ",
        f"Date: {doc['created']}; total {doc['seconds']:.0f} s{tiny}",
        "",
        f"Machine: {m['cpu_model']}, {m['usable_cores']} usable cores ({m['logical_cores']} logical), "
        f"torch threads {m['torch_threads']}, {m['ram_gib']} GiB RAM, GPU {gpu}; "
        f"load average {doc.get('load_avg_start', m['load_avg_1m'])} at start, {doc['load_avg_end']} at end; "
        f"{m['os']}, Python {m['python']}.  ",
        f"Versions: {versions}.",
        "",
        "## Targets",
        "",
    ]
    verdicts = [
        {**t, "reached": {True: "reached", False: "MISSED", None: "not judged"}[t["reached"]]} for t in doc["targets"]
    ]
    lines += table(
        verdicts,
        [
            ("name", "target"),
            ("reached", "verdict"),
            ("target", "goal"),
            ("measured", "measured"),
            ("note", "note"),
        ],
    )
    for name, result in doc["benchmarks"].items():
        title, columns = SECTIONS[name]
        lines += ["", f"## {title}", ""]
        if result.get("status", "ok") != "ok":
            lines.append(f"{result['status']}: {result.get('reason', '')}")
            continue
        lines += table(result["rows"], columns)
        extra = _extras(name, result)
        if extra:
            lines += ["", *extra]
    return "\n".join(lines) + "\n"
