"""``sononet bench``: tiny mode runs end to end and writes well-formed outputs; the measuring parts are right.

Speed is never asserted (shared CI cores); what is asserted is that every benchmark ran,
produced positive numbers under the documented keys, and that the pieces that make the
numbers honest (same output from both pad/trim sides, librosa parity, per-child peak RSS)
do what they claim.
"""

from __future__ import annotations

import json
import math
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
from sononet.bench.timing import pinned_threads, run_child, time_call
from sononet.cli.bench import bench_command

POSITIVE_KEYS = {
    "mel": ("clips_per_s", "speedup_vs_librosa", "median_s"),
    "pad_trim": ("clips_per_s", "speedup_vs_numpy", "median_s"),
    "decode": ("clips_per_s", "audio_s_per_s", "median_s"),
    "prepare": ("wall_s", "prepare_s", "clips_per_s", "shards_per_s", "peak_rss_mb"),
    "train": ("steps_per_s", "clips_per_s", "params_m", "median_s"),
    "label": ("wall_s", "files_per_s", "peak_rss_mb"),
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
    for n in range(1, 7):
        assert f"## {n}. " in text
    # Judging the 60 s prepare target needs the full corpus; tiny mode must say so, not pass it.
    assert "| prepare, full corpus | not judged |" in text


def test_cli_runs_a_subset_and_prints_verdicts(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        bench_command, ["--tiny", "--device", "cpu", "--only", "pad_trim", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "numba pad/trim vs NumPy loop:" in result.output
    doc = json.loads((tmp_path / "bench-cpu.json").read_text())
    assert list(doc["benchmarks"]) == ["pad_trim"]
    assert (tmp_path / "bench-cpu.md").exists()


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


def _fake_results(prepare_clips: int, wall: float, rss: tuple[float, float], pad_speedup: float) -> dict:
    return {
        "prepare": {
            "scale": 4,
            "rss_ratio": rss[1] / rss[0],
            "rss_flat": rss[1] / rss[0] <= 1.1,
            "rows": [
                {"clips": prepare_clips, "wall_s": wall, "prepare_s": wall - 3, "peak_rss_mb": rss[0]},
                {
                    "clips": prepare_clips * 4,
                    "wall_s": 4 * wall,
                    "prepare_s": 4 * wall,
                    "peak_rss_mb": rss[1],
                },
            ],
        },
        "mel": {
            "chosen_backend": {"cpu": {"backend": "torchaudio"}},
            "rows": [
                {"device": "cpu", "backend": "torchaudio", "batch": 1, "speedup_vs_librosa": 2.0},
                {"device": "cpu", "backend": "torchaudio", "batch": 16, "speedup_vs_librosa": 4.5},
                {"device": "cpu", "backend": "torchaudio", "batch": 256, "speedup_vs_librosa": 1.0},
            ],
        },
        "pad_trim": {"clips": 4096, "rows": [{"speedup_vs_numpy": pad_speedup}]},
    }


def test_targets_are_judged_against_the_stated_thresholds() -> None:
    verdicts = {t["name"]: t["reached"] for t in evaluate_targets(_fake_results(7442, 50.0, (1000, 1050), 12), "cpu")}
    assert verdicts == {
        "prepare, full corpus": True,
        "prepare peak RSS flat": True,
        "mel backend vs librosa, CPU": True,  # judged at batch 16, prepare's CPU batch, not the best batch
        "numba pad/trim vs NumPy loop": True,
    }
    missed = {t["name"]: t["reached"] for t in evaluate_targets(_fake_results(7442, 61.0, (1000, 1200), 9), "cpu")}
    assert missed["prepare, full corpus"] is False
    assert missed["prepare peak RSS flat"] is False
    assert missed["numba pad/trim vs NumPy loop"] is False
    partial = {t["name"]: t["reached"] for t in evaluate_targets(_fake_results(500, 5.0, (1000, 1000), 12), "cpu")}
    assert partial["prepare, full corpus"] is None  # not the full corpus: not judged


def test_markdown_marks_missed_targets_and_unavailable_benchmarks() -> None:
    results = _fake_results(7442, 61.0, (1000, 1200), 9)
    results = {k: {**v, "status": "ok"} for k, v in results.items() if k == "pad_trim"}
    results["pad_trim"]["rows"][0].update(impl="numba", clips_per_s=1.0)
    results["pad_trim"].update(input_mb=1.0, output_mb=1.0, fraction_trimmed=0.1)
    results["label"] = {"status": "unavailable", "reason": "sononet.label is not importable", "rows": []}
    doc = {
        "device": "cpu",
        "command": "sononet bench",
        "created": "now",
        "seconds": 1.0,
        "load_avg_end": 0.5,
        "config": {"tiny": False},
        "machine": _machine(),
        "targets": evaluate_targets(results, "cpu"),
        "benchmarks": results,
    }
    text = markdown(doc)
    assert "| numba pad/trim vs NumPy loop | MISSED |" in text
    assert "unavailable: sononet.label is not importable" in text


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
