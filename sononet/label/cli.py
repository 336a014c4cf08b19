"""``sononet label``: a thin click shim over ``sononet.label.label``; heavy imports stay inside it."""

from __future__ import annotations

import click

from sononet.label.inputs import parse_shard
from sononet.label.parts import format_summary, summary_path


@click.command("label", context_settings={"show_default": True})
@click.argument("path", required=False, type=click.Path(exists=True))
@click.option("--model", type=click.Path(exists=True, file_okay=False), help="Saved model dir (config.json).")
@click.option("--out", type=click.Path(), default="labels.parquet", help="Output; parts in <out>.parts/.")
@click.option("--window", type=float, default=None, help="Window seconds [default: the model's clip, 3 s].")
@click.option("--hop", type=float, default=None, help="Seconds between windows [default: --window].")
@click.option("--shard", default=None, help="i/n [default: from JOB_COMPLETION_INDEX or RANK, else 0/1].")
@click.option("--merge", "merge_only", is_flag=True, help="Only combine all shards' parts into --out.")
@click.option("--device", default="auto", help="auto | cpu | cuda | cuda:N.")
@click.option("--batch-size", type=int, default=64, help="Windows per forward pass.")
@click.option("--workers", type=int, default=2, help="Decode threads.")
@click.option("--part-size", type=int, default=1000, help="Files per Parquet part (the unit of resume).")
@click.option("--mel-backend", type=click.Choice(["auto", "nnaudio", "torchaudio"]), default="auto")
def label_command(
    path: str | None, model: str | None, out: str, window: float | None, hop: float | None, shard: str | None,
    merge_only: bool, device: str, batch_size: int, workers: int, part_size: int, mel_backend: str,
) -> None:  # fmt: skip
    """Label audio files (folder, .txt list, manifest or one file) with a trained model into Parquet.

    \b
    sononet label recordings/ --model runs/demo/cnn/model --out labels.parquet
    sononet label long_calls/ --model runs/demo/cnn/model --out calls.parquet --hop 1.5
    sononet label files.txt --model M --out labels.parquet --shard 2/8
    sononet label --merge --out labels.parquet
    """
    from sononet.cli import USER_ERRORS, _fail
    from sononet.label import LabelConfig, label  # the package imports this module first

    try:
        index, count = parse_shard(shard) if shard else (None, None)
        if not merge_only and (path is None or model is None):
            raise ValueError("pass PATH and --model (or --merge --out FILE to combine shards)")
        cfg = LabelConfig(
            input=path, model=model, out=out, window_s=window, hop_s=hop, batch_size=batch_size,
            part_size=part_size, shard_index=index, shard_count=count, device=device, workers=workers,
            mel_backend=mel_backend, merge=merge_only,
        )  # fmt: skip
        summary = label(cfg)
    except USER_ERRORS as e:
        _fail(e)
    click.echo(format_summary(summary))
    if "out" in summary:
        click.echo(f"summary: {summary_path(out)}")
