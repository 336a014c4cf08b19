"""``sononet label``: a thin click shim over ``sononet.label.label``; heavy imports stay inside it."""

from __future__ import annotations

import os
import sys

import click

from sononet.cli.options import device_option, given, mel_backend_option
from sononet.errors import UserError
from sononet.label.inputs import parse_shard
from sononet.label.parts import format_summary, summary_path
from sononet.label.speakers import MIN_GROUP_FILES

TABLE_MAX_FILES = 20  # up to this many inputs, the command prints one line per file


@click.command("label")
@click.argument("path", required=False, type=click.Path(exists=True))
@click.option(
    "--model", type=click.Path(exists=True, file_okay=False), multiple=True,
    help="Saved model or ensemble folder; repeat it to average several models (an ensemble).",
)  # fmt: skip
@click.option("--out", type=click.Path(), default=None, help="Output; parts in <out>.parts/ [default: labels.parquet].")
@click.option("--window", type=float, default=None, help="Window seconds [default: the model's clip, 3 s].")
@click.option("--hop", type=float, default=None, help="Seconds between windows [default: --window].")
@click.option("--shard", default=None, help="i/n [default: from JOB_COMPLETION_INDEX or RANK, else 0/1].")
@click.option("--merge", "merge_only", is_flag=True, help="Only combine all shards' parts into --out.")
@device_option
@click.option("--batch-size", type=int, default=None, help="Windows per forward pass [default: 64].")
@click.option("--workers", type=int, default=None, help="Decode threads [default: one per CPU thread, as --threads].")
@click.option(
    "--jobs", type=int, default=None,
    help="Processes labelling shards side by side, merged at the end [default: on the CPU one per --threads "
    "from 2,000 files; a rerun keeps the run's count].",
)  # fmt: skip
@click.option(
    "--part-size", type=int, default=None, help="Files per Parquet part (the unit of resume) [default: 1000]."
)
@mel_backend_option
@click.option("--embeddings", is_flag=True, help="Add each row's pooled clip vector (tensor column `embedding`).")
@click.option(
    "--speaker-from", default=None, metavar="parent|regex:PATTERN|column:NAME",
    help="Group files by speaker (their folder, a regex's first group in the path, or a manifest column): each "
    "group's files lose the group's own mean log-mel, as cross-validation scored test speakers [default: none: "
    "the training speakers' average].",
)  # fmt: skip
@click.option(
    "--speaker-min-files", type=int, default=None,
    help=f"Smaller speaker groups keep the training speakers' average [default: {MIN_GROUP_FILES}, measured in "
    "docs/robustness.md].",
)  # fmt: skip
@click.option("--strict", is_flag=True, help="Exit 1 when any file could not be labelled (error or nonfinite).")
def label_command(
    path: str | None, model: tuple[str, ...], out: str | None, window: float | None, hop: float | None,
    shard: str | None, merge_only: bool, device: str | None, batch_size: int | None, workers: int | None,
    jobs: int | None, part_size: int | None, mel_backend: str | None, embeddings: bool, speaker_from: str | None,
    speaker_min_files: int | None, strict: bool,
) -> None:  # fmt: skip
    """Label audio files (folder, .txt list, manifest or one file) with a trained model into Parquet.

    \b
    sononet label recordings/ --model runs/demo/cnn/model --out labels.parquet
    sononet label long_calls/ --model runs/demo/cnn/model --out calls.parquet --hop 1.5
    sononet label files.txt --model M --out labels.parquet --shard 2/8
    sononet label --merge --out labels.parquet
    sononet label clips/ --model M --out feats.parquet --embeddings --strict
    sononet label interviews/ --model M --out labels.parquet --speaker-from parent
    sononet label recordings/ --model runs/demo/ensemble --out labels.parquet
    sononet label recordings/ --model runs/demo/cnn/model --model runs/demo/bigru/model --out labels.parquet
    sononet label calls.csv --model M --out labels.parquet --speaker-from column:caller
    """
    from sononet.label.config import LabelConfig
    from sononet.label.run import label

    index, count = parse_shard(shard) if shard else (None, None)
    if not merge_only and (path is None or not model):
        raise UserError("pass PATH and --model (or --merge --out FILE to combine shards)")
    cfg = given(
        LabelConfig(
            input=path, model=(model[0] if len(model) == 1 else model) or None, window_s=window, hop_s=hop,
            shard_index=index, shard_count=count,
            merge=merge_only, embeddings=embeddings, speaker_from=speaker_from,
        ),
        out=out, batch_size=batch_size, part_size=part_size, device=device, workers=workers, jobs=jobs,
        mel_backend=mel_backend, speaker_min_files=speaker_min_files,
    )  # fmt: skip
    summary = label(cfg)
    out = cfg.out
    if "out" in summary and summary["files"] <= TABLE_MAX_FILES:
        click.echo(format_table(out))
    click.echo(format_summary(summary))
    if summary.get("speaker_from"):
        click.echo(
            f"speaker groups ({summary['speaker_from']}): {summary['speaker_groups']} with their own mean; "
            f"groups under {cfg.speaker_min_files} files and files without a group kept the training default"
        )
    if "out" in summary:
        click.echo(f"summary: {summary_path(out)}")
    if summary.get("warning"):
        click.echo(f"warning: {summary['warning']}", err=True)
    failed = summary["error_files"] + summary.get("nonfinite_files", 0)
    if strict and failed:
        click.echo(f"error: {failed} file(s) could not be labelled (--strict)", err=True)
        sys.exit(1)


def format_table(out: str, width: int = 48) -> str:
    """One line per input file: file, predicted label, confidence (or the error reason)."""
    import pyarrow.parquet as pq

    table = pq.read_table(out, columns=["path", "scope", "pred", "confidence", "status", "error_reason"])
    lines = [f"{'file':<{width}}  {'pred':<8} {'confidence':>10}"]
    for r in table.to_pylist():
        if r["scope"] != "file":
            continue
        rel = os.path.relpath(r["path"])
        name = rel if not rel.startswith("..") else r["path"]  # rows hold absolute paths; show them short
        name = name if len(name) <= width else "..." + name[-(width - 3) :]
        if r["status"] == "ok":
            lines.append(f"{name:<{width}}  {r['pred']:<8} {r['confidence']:>10.3f}")
        else:
            lines.append(f"{name:<{width}}  {'-':<8} {'-':>10}  error: {r['error_reason'] or r['status']}")
    return "\n".join(lines)
