"""``sononet bench``: speed and memory of every stage, written under ``results/bench``."""

from __future__ import annotations

import sys

import click

from sononet.cli.options import RegistryList, given

BENCHMARKS = "sononet.bench:BENCHMARKS"


@click.command("bench")
@click.option(
    "--device", default=None, help="auto | cpu | cuda | cuda:N; on CUDA the CPU rows are measured too [default: auto]."
)
@click.option(
    "--clips", type=int, default=None, help="Clips in the prepare benchmark, then 4x that [default: CREMA-D's 7,442]."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for bench-<device>.json/.md [default: results/bench].",
)
@click.option("--tiny", is_flag=True, help="Smoke sizes (tests): under a minute, numbers not meaningful.")
@click.option("--only", type=RegistryList(BENCHMARKS), default=None, help="A subset of the benchmarks [default: all].")
@click.option(
    "--repeats", type=int, default=None, help="Timed repetitions per measurement, median reported [default: 5]."
)
@click.option("--threads", type=int, default=None, help="Pin torch/numba (and children) to N threads.")
@click.option("--tmp-dir", type=click.Path(file_okay=False), default=None, help="Scratch space [default: system temp].")
@click.option("--cv-run", type=click.Path(exists=True, file_okay=False), default=None,
              help="A finished cross-validated train-all run: the CV target row reads its run.json.")  # fmt: skip
def bench_command(
    device: str | None,
    clips: int | None,
    out: str | None,
    tiny: bool,
    only: tuple[str, ...] | None,
    repeats: int | None,
    threads: int | None,
    tmp_dir: str | None,
    cv_run: str | None,
) -> None:
    """Measure speed and memory of every stage; ratios side by side, machine described.

    \b
    sononet bench --device cpu --out results/bench
    sononet bench --tiny --out /tmp/bench
    sononet bench --only mel,pad_trim --repeats 9
    sononet bench --only demo --cv-run runs/ravdess-6class   # the demo and a CV run's wall time
    """
    from sononet.bench import BenchConfig, run_bench

    cfg = given(
        BenchConfig(tiny=tiny, threads=threads, tmp_dir=tmp_dir), out=out, device=device, clips=clips, only=only,
        repeats=repeats, cv_run=cv_run,
    )  # fmt: skip
    doc = run_bench(cfg)
    for t in doc["targets"]:
        verdict = {True: "reached", False: "MISSED", None: "not judged"}[t["reached"]]
        click.echo(f"{t['name']}: {verdict} ({t['measured']}; goal {t['target']})")
    failed = [k for k, v in doc["benchmarks"].items() if v["status"] == "failed"]
    click.echo(f"wrote {' and '.join(doc['files'])} in {doc['seconds']:.0f} s")
    if failed:
        click.echo(f"failed benchmarks: {', '.join(failed)} (see the JSON for the error)", err=True)
        sys.exit(1)
