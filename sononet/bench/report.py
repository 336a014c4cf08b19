"""Targets and the Markdown report: verdicts first, then one table per benchmark, ratios leading."""

from __future__ import annotations

from collections.abc import Sequence

from sononet.corpus.cremad import N_CLIPS as FULL_CORPUS  # the prepare target is for all of CREMA-D
from sononet.prepare import CPU_MEL_BATCH

PREPARE_TARGET_S = 60.0
MEL_TARGET = 4.0
PAD_TRIM_TARGET = 10.0
RSS_TARGET = 1.10
MEL_TARGET_BATCH = CPU_MEL_BATCH  # the batch size the pipeline uses on the CPU


def _target(name: str, goal: str, measured: str, reached: bool | None, note: str = "") -> dict:
    return {"name": name, "target": goal, "measured": measured, "reached": reached, "note": note}


def evaluate_targets(benchmarks: dict, device: str) -> list[dict]:
    """One verdict per stated target; ``reached`` is None where this run could not judge it."""
    out = []
    prep = benchmarks.get("prepare", {})
    if prep.get("rows"):
        first = prep["rows"][0]
        judged = first["clips"] == FULL_CORPUS and device == "cpu"
        out.append(
            _target(
                "prepare, full corpus",
                f"<= {PREPARE_TARGET_S:.0f} s wall on {FULL_CORPUS} clips, CPU",
                f"{first['wall_s']:.1f} s wall ({first['prepare_s']:.1f} s after imports), {first['clips']} clips",
                first["wall_s"] <= PREPARE_TARGET_S if judged else None,
                "" if judged else f"needs --clips {FULL_CORPUS} on the CPU",
            )
        )
    if "rss_ratio" in prep:
        small, big = (r["peak_rss_mb"] for r in prep["rows"])
        out.append(
            _target(
                "prepare peak RSS flat",
                f"{prep['scale']}x clips within {RSS_TARGET - 1:.0%}",
                f"x{prep['rss_ratio']:.3f} ({small:.0f} -> {big:.0f} MB)",
                prep["rss_ratio"] <= RSS_TARGET,
            )
        )
    mel = benchmarks.get("mel", {})
    if mel.get("rows") and "cpu" in mel.get("chosen_backend", {}):
        chosen = mel["chosen_backend"]["cpu"]["backend"]
        rows = [r for r in mel["rows"] if r["device"] == "cpu" and r["backend"] == chosen]
        fitting = [r for r in rows if r["batch"] <= MEL_TARGET_BATCH] or rows
        row = max(fitting, key=lambda r: r["batch"])
        out.append(
            _target(
                "mel backend vs librosa, CPU",
                f">= {MEL_TARGET:.0f}x at batch {MEL_TARGET_BATCH}",
                f"{chosen} (auto's pick) {row['speedup_vs_librosa']:.2f}x librosa at batch {row['batch']}",
                row["speedup_vs_librosa"] >= MEL_TARGET,
                "judged against librosa on the same batch (its batched best case); against librosa "
                f"one clip at a time: {per_clip:.1f}x"
                if (per_clip := row.get("speedup_vs_librosa_per_clip"))
                else "judged against librosa on the same batch",
            )
        )
    pt = benchmarks.get("pad_trim", {})
    if pt.get("rows"):
        row = pt["rows"][0]
        out.append(
            _target(
                "numba pad/trim vs NumPy loop",
                f">= {PAD_TRIM_TARGET:.0f}x",
                f"{row['speedup_vs_numpy']:.2f}x on {pt['clips']} clips",
                row["speedup_vs_numpy"] >= PAD_TRIM_TARGET,
            )
        )
    return out


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
        "2. Pad/trim a ragged batch to 48,000 samples",
        [
            ("speedup_vs_numpy", "x NumPy loop"),
            ("impl", "implementation"),
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
            ("wall_s", "wall s"),
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
            ("params_m", "params M"),
            ("trainable_m", "trainable M"),
            ("peak_gpu_mb", "peak GPU MB"),
            ("median_s", "median s"),
            ("repeats", "steps"),
            ("describe", "what"),
        ],
    ),
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
        lines.append("librosa runs batched on the CPU; torch backends with the batch already on the device.")
    if name == "pad_trim":
        lines.append(
            f"{result['clips']} clips, {result['input_mb']:.0f} MB in, {result['output_mb']:.0f} MB out, "
            f"{result['fraction_trimmed']:.0%} trimmed; right pad, centre trim."
        )
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
        f"load average {m['load_avg_1m']} at start, {doc['load_avg_end']} at end; "
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
