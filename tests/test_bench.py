"""``sononet bench``: tiny mode runs end to end and writes well-formed outputs; the measuring parts are right.

Speed is never asserted (shared CI cores); what is asserted is that every benchmark ran,
produced positive numbers under the documented keys, that verdicts follow from the numbers,
and that the pieces that make the numbers honest (same output from both pad/trim sides,
librosa parity, per-child peak RSS, a CPU hog that never outlives the benchmark) do what
they claim.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sononet.bench import BENCHMARKS, CREMAD_CLIPS, BenchConfig, run_bench
from sononet.bench.corpus import cremad_like, write_wavs
from sononet.bench.report import evaluate_targets, markdown
from sononet.bench.timing import HOG_MARKER, cpu_hog, pinned_threads, run_child, time_call, time_interleaved
from sononet.cli.bench import bench_command

POSITIVE_KEYS = {
    "mel": ("clips_per_s", "speedup_vs_librosa", "median_s"),
    "pad_trim": ("clips_per_s", "speedup_vs_numpy", "gib_per_s", "pct_of_memcpy", "median_s"),
    "decode": ("clips_per_s", "audio_s_per_s", "median_s"),
    "prepare": ("wall_s", "prepare_s", "clips_per_s", "shards_per_s", "peak_rss_mb"),
    "train": (
        "steps_per_s",
        "clips_per_s",
        "params_m",
        "median_s",
        "cpu_s_per_step",
        "contended_steps_per_s",
        "contended_cpu_s_per_step",
        "cpu_s_ratio_contended",
        "hog_processes",
    ),
    "label": ("wall_s", "files_per_s", "peak_rss_mb"),
    "demo": ("wall_s", "peak_rss_mb"),
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """One tiny CPU run shared by the output tests (the expensive part of this file)."""
    out = tmp_path_factory.mktemp("bench")
    cfg = BenchConfig(out=str(out), device="cpu", tiny=True, clips=16, threads=1, label_files=(6,))
    return run_bench(cfg), out


def test_tiny_run_writes_json_with_every_benchmark(tiny_run: tuple[dict, Path]) -> None:
    doc, out = tiny_run
    on_disk = json.loads((out / "bench-cpu.json").read_text())
    assert on_disk["benchmarks"].keys() == set(BENCHMARKS)
    for key in ("command", "created", "machine", "config", "resolved_config", "targets", "seconds"):
        assert key in on_disk, key
    for key in ("load_avg_start", "load_avg_end"):
        assert isinstance(on_disk[key], float) and on_disk[key] >= 0, key
    machine = on_disk["machine"]
    assert machine["cpu_model"] and machine["logical_cores"] >= 1 and machine["ram_gib"] > 0
    assert machine["torch_threads"] == 1  # pinned for the run
    assert {"torch", "numba", "nnAudio", "librosa"} <= machine["versions"].keys()
    for name, keys in POSITIVE_KEYS.items():
        result = on_disk["benchmarks"][name]
        assert result["status"] == "ok", (name, result.get("reason"))
        assert result["rows"], name
        for row in result["rows"]:
            for key in keys:
                assert isinstance(row[key], (int, float)) and row[key] > 0 and math.isfinite(row[key]), (
                    name,
                    key,
                    row,
                )


def test_tiny_run_sizes_follow_tiny_mode(tiny_run: tuple[dict, Path]) -> None:
    doc, _ = tiny_run
    b = doc["benchmarks"]
    assert {r["batch"] for r in b["mel"]["rows"]} == {1, 4}
    assert {r["backend"] for r in b["mel"]["rows"]} == {"librosa", "nnaudio", "torchaudio"}
    assert [r["clips"] for r in b["prepare"]["rows"]] == [16]  # no 4x run in tiny mode
    assert b["prepare"]["rows"][0]["clips_written"] + b["prepare"]["rows"][0]["errors"] == 16
    first = b["prepare"]["rows"][0]  # the target's size runs --repeats times (tiny: 2); the median is reported
    assert first["runs"] == len(first["wall_runs_s"]) == 2
    assert first["wall_min_s"] <= first["wall_s"] <= first["wall_max_s"] and first["wall_s"] in first["wall_runs_s"]
    assert [r["files"] for r in b["label"]["rows"]] == [6]  # no 10,000-file run
    assert {r["model"] for r in b["train"]["rows"]} == {"cnn", "bigru", "wav2vec2"}
    # Backends compute the same thing as librosa: the speed comparison is like for like.
    assert max(b["mel"]["max_abs_db_diff_vs_librosa"].values()) < 0.05


def test_tiny_run_markdown_has_machine_targets_and_one_table_per_benchmark(
    tiny_run: tuple[dict, Path],
) -> None:
    _, out = tiny_run
    text = (out / "bench-cpu.md").read_text()
    assert text.index("Machine:") < text.index("## Targets") < text.index("## 1. Log-mel")
    assert "Command: `" in text and "tiny mode" in text
    for n in range(1, 8):
        assert f"## {n}. " in text
    # Judging the prepare targets needs the full corpus, the label ones 10,000 files and two
    # folder sizes; tiny mode must say so, not pass them.
    for name in (
        "prepare, full corpus",
        "prepare, full corpus (10 s)",
        "prepare peak RSS flat",
        "sononet label rate, CPU",
        "sononet label rate, CPU (1,000)",
        "sononet label peak RSS flat",
        "demo train-all",
    ):
        assert f"| {name} | not judged |" in text, name
    assert "| % of memcpy | x NumPy loop |" in text
    assert "| model | CPU s/step contended / quiet |" in text
    assert "at start," in text and "at end" in text


def test_tiny_run_judges_every_measured_target(tiny_run: tuple[dict, Path]) -> None:
    doc, _ = tiny_run
    judged = {t["name"] for t in doc["targets"] if t["reached"] is not None}
    assert {"mel backend vs librosa, CPU", "numba pad/trim vs memcpy", "training CPU-s per step beside a CPU hog"} <= (
        judged
    )
    assert not _hog_children()  # every hog process of the train benchmark was ended and reaped


def test_cli_runs_a_subset_and_prints_verdicts(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        bench_command, ["--tiny", "--device", "cpu", "--only", "pad_trim", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "numba pad/trim vs memcpy:" in result.output
    doc = json.loads((tmp_path / "bench-cpu.json").read_text())
    assert list(doc["benchmarks"]) == ["pad_trim"]
    assert (tmp_path / "bench-cpu.md").exists()
    result = doc["benchmarks"]["pad_trim"]
    rows = {r["key"]: r for r in result["rows"]}
    assert list(rows) == [
        "numba",
        "memcpy",
        "numba_pretouched",
        "memcpy_pretouched",
        "numba_list",
        "numpy_loop",
        "python_loop",
    ]
    assert {r["dest"] for r in result["rows"]} == {"fresh", "pre-touched"}
    assert rows["memcpy"]["pct_of_memcpy"] == pytest.approx(100.0) == rows["memcpy_pretouched"]["pct_of_memcpy"]
    # Each row is judged against the copy with the same kind of destination.
    want = 100 * rows["numba_pretouched"]["gib_per_s"] / rows["memcpy_pretouched"]["gib_per_s"]
    assert rows["numba_pretouched"]["pct_of_memcpy"] == pytest.approx(want)
    assert result["numba_threads"] >= 1 and result["memcpy_threads"] == 1
    (target,) = doc["targets"]
    fraction = rows["numba"]["gib_per_s"] / rows["memcpy"]["gib_per_s"]
    assert target["name"] == "numba pad/trim vs memcpy" and target["reached"] == (fraction >= 0.5)


def test_only_train_measures_each_model_quiet_and_beside_a_hog(tmp_path: Path) -> None:
    cfg = BenchConfig(out=str(tmp_path), device="cpu", tiny=True, only=("train",), train_models=("cnn",), threads=1)
    doc = run_bench(cfg)
    assert doc["benchmarks"]["train"]["status"] == "ok", doc["benchmarks"]["train"].get("reason")
    (row,) = doc["benchmarks"]["train"]["rows"]
    assert row["hog_processes"] == 1  # as many busy processes as torch's threads (pinned to 1)
    assert row["cpu_s_ratio_contended"] == pytest.approx(row["contended_cpu_s_per_step"] / row["cpu_s_per_step"])
    (target,) = doc["targets"]
    assert target["name"] == "training CPU-s per step beside a CPU hog"
    assert target["reached"] == (row["cpu_s_ratio_contended"] <= 1.2)
    lines = (tmp_path / "bench-cpu.md").read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| model | CPU s/step contended / quiet |"))
    assert lines[header + 2].startswith("| cnn | ")  # the contention table has the model's row
    assert not _hog_children()


def test_failed_benchmark_is_recorded_and_the_cli_exits_nonzero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sononet.bench.pad_trim as pt

    def broken(*args: object, **kwargs: object) -> dict:
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(pt, "run_pad_trim", broken)
    result = CliRunner().invoke(
        bench_command, ["--tiny", "--device", "cpu", "--only", "pad_trim", "--out", str(tmp_path)]
    )
    assert result.exit_code == 1
    doc = json.loads((tmp_path / "bench-cpu.json").read_text())
    assert doc["benchmarks"]["pad_trim"]["status"] == "failed"
    assert "kernel exploded" in doc["benchmarks"]["pad_trim"]["reason"]
    assert "failed: RuntimeError: kernel exploded" in (tmp_path / "bench-cpu.md").read_text()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N. Found: 'tpu'"),
        ({"only": ("mel", "gpu_burn")}, "only must name some of"),
        ({"only": ()}, "only must name some of"),
        ({"clips": 0}, "clips must be positive. Found: 0"),
        ({"repeats": -1}, "repeats must be positive. Found: -1"),
        ({"clips": CREMAD_CLIPS * 2, "scale": 4}, "clips x scale must be at most 37210"),
        ({"mel_batches": (1, 0)}, "mel_batches and label_files must be non-empty positive sizes"),
        ({"threads": 0}, "threads must be positive"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        BenchConfig(**kwargs)


def test_cli_rejects_unknown_benchmark_with_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(bench_command, ["--only", "mel,nope", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "'nope' is not one of 'mel', 'pad_trim'" in result.output  # the names come from BENCHMARKS
    assert not any(tmp_path.iterdir())


def test_tiny_mode_shrinks_sizes_and_skips_the_big_parts() -> None:
    cfg = BenchConfig(tiny=True).resolved()
    assert cfg.mel_batches == (1, 4) and cfg.scale == 1 and len(cfg.label_files) == 1
    assert cfg.clips <= 64 and cfg.label_files[0] <= 16
    full = BenchConfig()
    assert full.resolved() is full and full.scale == 4 and full.label_files == (1000, 10_000)


def test_importing_the_bench_module_stays_light() -> None:
    code = "import sys, sononet.bench; print(sorted({'torch', 'librosa', 'numpy', 'numba'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cremad_like_keeps_names_and_durations() -> None:
    from sononet.corpus.cremad import NAME_RE

    specs = cremad_like(CREMAD_CLIPS * 2 + 10)
    names = [s.name for s in specs]
    assert len(set(names)) == len(names)
    assert all(NAME_RE.match(Path(n).stem) for n in names)
    assert {n[:1] for n in names[CREMAD_CLIPS : 2 * CREMAD_CLIPS]} == {"3"}  # second copy: actors 3001+
    seconds = np.array([s.seconds for s in specs[:CREMAD_CLIPS]])
    assert seconds.min() > 1.2 and seconds.max() < 5.1 and abs(seconds.mean() - 2.54) < 0.01
    with pytest.raises(ValueError, match="clips must be in"):
        cremad_like(0)


def test_written_wavs_have_the_manifest_byte_size(tmp_path: Path) -> None:
    from sononet.corpus.cremad import read_audio_manifest

    row = read_audio_manifest()[0]
    (path,) = write_wavs(tmp_path, cremad_like(1))
    assert path.name == row["file"]
    assert path.stat().st_size == int(row["bytes"])


def test_pad_trim_reference_equals_kernel_on_short_and_long_clips() -> None:
    from sononet.kernels import pad_trim_ragged

    from sononet.bench.pad_trim import numpy_pad_trim, python_pad_trim

    lengths = np.array([5, 10, 17, 10, 1])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.arange(offsets[-1], dtype=np.float32) + 1
    want = pad_trim_ragged(flat, offsets, 10, pad="right", trim="center")
    np.testing.assert_array_equal(numpy_pad_trim(flat, offsets, 10), want)
    np.testing.assert_array_equal(python_pad_trim(flat, offsets, 10), want)
    assert numpy_pad_trim(flat, offsets, 10)[2, 0] == flat[offsets[2] + 3]  # centre of 17 keeps [3:13]


def test_run_child_reports_each_childs_own_peak_rss(tmp_path: Path) -> None:
    big = [sys.executable, "-c", "import numpy as np; a = np.ones(40_000_000); print(a.sum())"]
    small = [sys.executable, "-c", "print(1)"]
    r_big = run_child(big, tmp_path / "big.log")
    r_small = run_child(small, tmp_path / "small.log")  # after the big one: RUSAGE_CHILDREN would say 320 MB
    assert r_big.returncode == 0 and r_small.returncode == 0
    assert r_big.peak_rss_mb > 300
    assert r_small.peak_rss_mb < 100
    failing = run_child([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "fail.log")
    assert failing.returncode == 3


def test_time_interleaved_takes_turns_after_warming_each() -> None:
    calls: list[str] = []
    t = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warm-ups, then one of each per repetition
    assert set(t) == {"a", "b"} and all(x.repeats == 3 and x.min_s <= x.median_s <= x.max_s for x in t.values())
    with pytest.raises(ValueError, match="repeats must be positive"):
        time_interleaved({"a": lambda: None}, repeats=0)


def test_time_call_reports_median_and_rejects_zero_repeats() -> None:
    calls: list[int] = []
    t = time_call(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and t.repeats == 3 and t.min_s <= t.median_s <= t.max_s
    with pytest.raises(ValueError, match="repeats must be positive. Found: 0"):
        time_call(lambda: None, repeats=0)


def test_pinned_threads_restores_settings() -> None:
    import os

    import torch

    before = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    with pinned_threads(1):
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    assert (torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")) == before


def _fake_results(
    ok: bool, prepare_clips: int = CREMAD_CLIPS, prepare_wall: float | None = None, label_device: str = "cpu"
) -> dict:
    """Hand-made measurements, each just inside (``ok``) or just outside its target."""
    wall = prepare_wall if prepare_wall is not None else (14.9 if ok else 15.1)
    rss_big = 1090.0 if ok else 1110.0  # x1.09 / x1.11 against 1000 MB
    label_rate = 401.0 if ok else 399.0
    return {
        "prepare": {
            "scale": 4,
            "rows": [
                {"clips": prepare_clips, "wall_s": wall, "prepare_s": wall - 3, "peak_rss_mb": 1000.0},
                {"clips": prepare_clips * 4, "wall_s": 4 * wall, "prepare_s": 4 * wall, "peak_rss_mb": rss_big},
            ],
        },
        "label": {
            "rows": [
                {"files": 10_000, "files_per_s": label_rate, "wall_s": 10_000 / label_rate, "peak_rss_mb": rss_big,
                 "device": label_device},
                {"files": 1000, "files_per_s": 300.0, "wall_s": 3.3, "peak_rss_mb": 1000.0, "device": label_device},
            ],  # largest first: the verdicts must not depend on the order
        },
        "mel": {
            "chosen_backend": {"cpu": {"backend": "torchaudio"}},
            "rows": [
                {"device": "cpu", "backend": "torchaudio", "batch": 1, "speedup_vs_librosa": 2.0},
                {"device": "cpu", "backend": "torchaudio", "batch": 16, "speedup_vs_librosa": 4.1 if ok else 3.9},
                {"device": "cpu", "backend": "torchaudio", "batch": 256, "speedup_vs_librosa": 9.0},
            ],
        },
        "pad_trim": {
            "clips": 4096,
            "rows": [
                {"key": "numba", "gib_per_s": 5.1 if ok else 4.9, "speedup_vs_numpy": 1.5},
                {"key": "memcpy", "gib_per_s": 10.0, "speedup_vs_numpy": 2.0},
                {"key": "numba_pretouched", "gib_per_s": 9.0, "speedup_vs_numpy": 1.5},
                {"key": "memcpy_pretouched", "gib_per_s": 12.0, "speedup_vs_numpy": 2.0},
                {"key": "numpy_loop", "gib_per_s": 3.0, "speedup_vs_numpy": 1.0},
            ],
        },
        "demo": {"wall_s": 119.0 if ok else 121.0, "stages_s": {"prepare": 20.0, "train/wav2vec2": 90.0, "x": 1.0}},
        "cv": {"seconds": 1199.0 if ok else 1201.0, "folds": 6, "corpus": "ravdess", "run": "r", "load_avg_start": 0.5,
               "load_avg_end": 1.9, "stages_s": {"train/bigru/fold-0": 300.0}},
        "train": {
            "rows": [
                {"model": "cnn", "device": "cpu", "hog_processes": 2, "cpu_s_per_step": 0.1,
                 "contended_cpu_s_per_step": 0.119},
                {"model": "bigru", "device": "cpu", "hog_processes": 2, "cpu_s_per_step": 0.5,
                 "contended_cpu_s_per_step": 0.595 if ok else 0.605},
                {"model": "cnn", "device": "cuda", "cpu_s_per_step": 0.01},  # CUDA rows: no hog, not judged
            ],
        },
    }  # fmt: skip


def _verdicts(results: dict, device: str = "cpu", tiny: bool = False) -> dict[str, bool | None]:
    return {t["name"]: t["reached"] for t in evaluate_targets(results, device, tiny)}


def test_targets_are_judged_against_the_stated_thresholds() -> None:
    assert _verdicts(_fake_results(ok=True)) == {
        "prepare, full corpus": True,  # 14.9 s
        "prepare, full corpus (10 s)": False,  # 14.9 s is not 10 s
        "prepare peak RSS flat": True,
        "sononet label rate, CPU": True,
        "sononet label rate, CPU (1,000)": False,  # 401 files/s
        "sononet label peak RSS flat": True,
        "mel backend vs librosa, CPU": True,  # judged at batch 16, prepare's CPU batch, not the best batch
        "numba pad/trim vs memcpy": True,
        "training CPU-s per step beside a CPU hog": True,
        "demo train-all": True,  # 119 s
        "real-speech cross-validation": True,  # 1199 s
    }
    assert set(_verdicts(_fake_results(ok=False)).values()) == {False}
    moonshot = _verdicts(_fake_results(ok=True, prepare_wall=9.9))
    assert moonshot["prepare, full corpus"] is moonshot["prepare, full corpus (10 s)"] is True


def test_target_rows_say_what_was_measured() -> None:
    targets = {t["name"]: t for t in evaluate_targets(_fake_results(ok=False, prepare_wall=15.1), "cpu")}
    assert "1.51x the target" in targets["prepare, full corpus (10 s)"]["measured"]
    assert "0.40x the target" in targets["sononet label rate, CPU (1,000)"]["measured"]
    assert targets["demo train-all"]["note"] == "longest stages: train/wav2vec2 90 s, prepare 20 s, x 1 s"
    cv = targets["real-speech cross-validation"]
    assert cv["measured"] == "20.0 min (6 folds, ravdess)" and "load average 0.5 at start, 1.9 at end" in cv["note"]
    assert "399 files/s on 10,000 files" in targets["sononet label rate, CPU"]["measured"]
    assert "x1.110" in targets["sononet label peak RSS flat"]["measured"]
    assert "49.0 %" in targets["numba pad/trim vs memcpy"]["measured"]
    assert "pre-touched out: 75.0 %" in targets["numba pad/trim vs memcpy"]["note"]
    contention = targets["training CPU-s per step beside a CPU hog"]
    assert contention["measured"] == "cnn x1.19, bigru x1.21"
    assert contention["note"] == "over the target: bigru"  # the model that misses is named, the other not


def test_targets_not_judged_where_the_run_cannot_judge_them() -> None:
    small = _verdicts(_fake_results(ok=True, prepare_clips=500))
    assert small["prepare, full corpus"] is None and small["prepare, full corpus (10 s)"] is None
    assert _verdicts(_fake_results(ok=True), tiny=True)["demo train-all"] is None
    assert _verdicts(_fake_results(ok=True), device="cuda")["prepare, full corpus"] is None
    assert _verdicts(_fake_results(ok=True), tiny=True)["sononet label rate, CPU"] is None
    assert _verdicts(_fake_results(ok=True, label_device="cuda:0"))["sononet label rate, CPU"] is None
    one_size = _fake_results(ok=True)
    one_size["label"]["rows"] = one_size["label"]["rows"][:1]
    one_size["prepare"]["rows"] = one_size["prepare"]["rows"][:1]
    verdicts = _verdicts(one_size)
    assert verdicts["sononet label peak RSS flat"] is None and verdicts["prepare peak RSS flat"] is None
    assert verdicts["sononet label rate, CPU"] is True  # the largest folder run is judged
    assert _verdicts({"train": {"rows": [{"model": "cnn", "device": "cuda", "cpu_s_per_step": 0.01}]}}) == {}


def test_markdown_marks_missed_targets_and_unavailable_benchmarks() -> None:
    results = _fake_results(ok=False)
    results = {k: {**v, "status": "ok"} for k, v in results.items() if k == "pad_trim"}
    for row in results["pad_trim"]["rows"]:
        row.update(impl=row["key"], clips_per_s=1.0, pct_of_memcpy=1.0, dest="fresh")
    results["pad_trim"].update(input_mb=1.0, output_mb=1.0, fraction_trimmed=0.1)
    results["label"] = {"status": "unavailable", "reason": "sononet.label is not importable", "rows": []}
    doc = {
        "device": "cpu",
        "command": "sononet bench",
        "created": "now",
        "seconds": 1.0,
        "load_avg_start": 0.25,
        "load_avg_end": 0.5,
        "config": {"tiny": False},
        "machine": _machine(),
        "targets": evaluate_targets(results, "cpu"),
        "benchmarks": results,
    }
    text = markdown(doc)
    assert "| numba pad/trim vs memcpy | MISSED |" in text
    assert "unavailable: sononet.label is not importable" in text
    assert "load average 0.25 at start, 0.5 at end" in text


def _hog_children() -> list[int]:
    """Pids of this process's children that run a CPU hog (its code carries ``HOG_MARKER``)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        if ppid == os.getpid() and HOG_MARKER.encode() in cmdline:
            pids.append(int(stat.parent.name))
    return pids


def _reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True  # no longer a child of ours: waited for already
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_cpu_hog_spins_in_the_block_and_is_gone_after_it() -> None:
    with cpu_hog(2, 30) as hog:
        pids = [p.pid for p in hog]
        assert sorted(_hog_children()) == sorted(pids)
        assert all(p.poll() is None for p in hog)
    assert not _hog_children() and all(_reaped(pid) for pid in pids)
    with pytest.raises(ZeroDivisionError), cpu_hog(1, 30) as hog:  # the block fails: the hog still ends
        pids = [p.pid for p in hog]
        _ = 1 / 0
    assert not _hog_children() and all(_reaped(pid) for pid in pids)
    with pytest.raises(ValueError, match="width and limit_s must be positive"), cpu_hog(0, 30):
        pass


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_cpu_hog_that_fails_to_start_leaves_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import sononet.bench.timing as timing

    # The first process starts (and would idle 30 s); the second dies before it says it spins.
    code = f"""
import sys, time  # {HOG_MARKER}
if sys.argv[3] == "0":
    print("spinning", flush=True)
    time.sleep(30)
sys.exit(3)
"""
    monkeypatch.setattr(timing, "_HOG", code)
    with pytest.raises(RuntimeError, match=r"did not start \(exit code 3\)"), cpu_hog(2, 30):
        pytest.fail("the block must not run when a hog process failed")
    assert not _hog_children()


def test_cpu_hog_ends_itself_at_its_time_limit() -> None:
    with cpu_hog(1, 0.2) as (proc,):
        assert proc.wait(timeout=20) == 0  # bounded: it cannot outlive the benchmark


def test_contended_steps_refuse_a_hog_that_ended_early(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import sononet.bench.train as train

    monkeypatch.setattr(train, "HOG_SLACK_S", 0.1)
    with pytest.raises(RuntimeError, match="the CPU hog ended before the contended steps did"):
        train.contended_steps(lambda: time.sleep(0.5), warmup=0, steps=1, width=1, quiet_s=0.0)
    assert not _hog_children()


def _machine() -> dict:
    return {
        "cpu_model": "Test CPU",
        "usable_cores": 2,
        "logical_cores": 2,
        "torch_threads": 2,
        "ram_gib": 8.0,
        "load_avg_1m": 0.1,
        "os": "Linux",
        "python": "3.11",
        "versions": {"torch": "x"},
        "gpu": None,
    }


def test_resolved_keeps_explicit_small_clips_in_tiny_mode() -> None:
    assert replace(BenchConfig(tiny=True), clips=10).resolved().clips == 10


def test_run_child_kills_a_command_past_its_timeout(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="ran past 0 s and was killed"):
        run_child([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "slow.log", timeout_s=0.3)


def test_a_scratch_folder_that_does_not_exist_yet_is_made(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch" / "deeper"
    doc = run_bench(
        BenchConfig(out=str(tmp_path / "out"), device="cpu", tiny=True, only=("pad_trim",), tmp_dir=str(scratch))
    )
    assert doc["benchmarks"]["pad_trim"]["status"] == "ok" and scratch.is_dir()
