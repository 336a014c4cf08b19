"""``sononet prepare`` and ``sononet download``: a corpus into shards, CREMA-D onto disk."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sononet.cli.options import device_option, given, mel_backend_option
from sononet.errors import UserError


@click.command("prepare")
@click.option(
    "--data", type=click.Path(exists=True), help="CREMA-D or RAVDESS folder, manifest CSV/Parquet or audiofolder."
)
@click.option("--demo", is_flag=True, help="Use the generated synthetic demo corpus (no download).")
@click.option("--out", type=click.Path(), required=True, help="Shard folder; a rerun resumes here.")
@click.option("--shard-size", type=int, default=None, help="Clips per Parquet shard (bounds memory) [default: 256].")
@click.option("--workers", type=int, default=None, help="Decode threads [default: one per CPU thread, as --threads].")
@device_option
@mel_backend_option
def prepare_command(
    data: str | None, demo: bool, out: str, shard_size: int | None, workers: int | None, device: str | None,
    mel_backend: str | None,
) -> None:  # fmt: skip
    """Decode, pad/trim and log-mel a corpus into Parquet shards.

    \b
    sononet prepare --demo --out runs/demo/shards
    sononet prepare --data data/cremad --out runs/cremad/shards --device cuda
    """
    from sononet.prepare import PrepareConfig, format_summary, prepare

    if bool(data) == demo:
        raise UserError("pass exactly one of --data PATH or --demo")
    cfg = given(
        PrepareConfig(data=data, out=out), shard_size=shard_size, workers=workers, device=device,
        mel_backend=mel_backend,
    )  # fmt: skip
    summary = prepare(cfg)
    click.echo(format_summary(summary))
    click.echo(f"summary: {Path(out) / 'summary.json'}")


@click.command("download")
@click.option("--to", "to", type=click.Path(), required=True, help="Folder for the 7,442 WAV files.")
@click.option("--jobs", type=int, default=None, help="Parallel downloads [default: 8].")
@click.option("--base-url", default=None, help="Mirror URL ending in AudioWAV/ (default: the official LFS media URL).")
@click.option("--limit", type=int, default=None, help="Fetch only the first N files (for a quick check).")
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Seconds one attempt at one file may take in all, then it resumes [default: 120].",
)
def download_command(to: str, jobs: int | None, base_url: str | None, limit: int | None, timeout: float | None) -> None:
    """Download CREMA-D's audio, verified by size and sha256; resumable.

    \b
    sononet download --to data/cremad
    sononet download --to data/cremad --base-url https://my-mirror/crema-d/AudioWAV/
    """
    from sononet.corpus import download as dl

    config = given(dl.DownloadConfig(), jobs=jobs, base_url=base_url, file_timeout_s=timeout)
    summary = dl.download_cremad(to, files=limit, config=config)
    click.echo(summary.format())
    if not summary.ok:
        sys.exit(1)
