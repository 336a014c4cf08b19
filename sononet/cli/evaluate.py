"""``sononet evaluate``: a trained model scored on another corpus (cross-corpus)."""

from __future__ import annotations

from pathlib import Path

import click

from sononet.cli.options import device_option, given, perturb_options, robustness_config


@click.command("evaluate")
@click.option(
    "--model", "model_dir", type=click.Path(exists=True, file_okay=False), required=True,
    help="Saved model or ensemble folder, e.g. runs/ravdess/cnn/model or runs/ravdess/fold-0/ensemble.",
)  # fmt: skip
@click.option("--data", type=click.Path(exists=True), required=True, help="Test corpus (any kind --data takes).")
@click.option("--out", type=click.Path(), required=True, help="Report folder (shards go to OUT/shards).")
@click.option("--label-map", default=None, help="Relabel the test corpus first, e.g. CAL=NEU,SUR=HAP.")
@device_option
@perturb_options
def evaluate_command(
    model_dir: str, data: str, out: str, label_map: str | None, device: str | None, perturb: str | None,
    no_perturb: bool | None,
) -> None:  # fmt: skip
    """Cross-corpus evaluation: a trained model on every clip of another corpus.

    Scores the classes both corpora share (after --label-map) and writes the same
    predictions, metrics, tables, plots and report as train-all, labelled
    "cross-corpus: trained on X, tested on Y", with the robustness table (--no-perturb skips it).

    \b
    sononet evaluate --model runs/ravdess/cnn/model --data runs/demo/demo-corpus --out runs/ravdess-on-demo
    sononet evaluate --model runs/demo/cnn/model --data ../shared/data/ravdess --out runs/demo-on-ravdess
    sononet evaluate --model runs/ravdess/cnn/model --data data/cremad --out runs/xc --perturb gain,noise
    """
    from sononet.corpus import parse_label_map
    from sononet.evaluation import CrossCorpusConfig, evaluate_cross_corpus, headline

    base = CrossCorpusConfig(model=model_dir, data=data, out=out, label_map=parse_label_map(label_map))
    cfg = given(base, device=device, robustness=robustness_config(base.robustness, perturb, no_perturb))
    result = evaluate_cross_corpus(cfg)
    click.echo(headline(result))
    click.echo(f"report: {Path(out) / 'report.md'}")
