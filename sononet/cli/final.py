"""``sononet train-final``: the model to ship, from a finished cross-validation run (see :mod:`sononet.final_model`)."""

from __future__ import annotations

import click

from sononet.cli.options import RegistryList


@click.command("train-final")
@click.option(
    "--run",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="A finished `sononet train-all --folds K` run folder.",
)
@click.option("--out", required=True, type=click.Path(), help="The final model folder (a new one).")
@click.option(
    "--models",
    type=RegistryList("sononet.models.registry:MODELS"),
    default=None,
    help="Comma-separated subset of the run's models [default: all of them].",
)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N.")
@click.option("--resume", is_flag=True, help="Continue each model from its checkpoint.")
def final_command(run: str, out: str, models: tuple[str, ...] | None, device: str, resume: bool) -> None:
    """Train a cross-validated recipe once more on every speaker: the model to use.

    Each model trains on all clips of the run's shards for the epochs its folds' refits chose
    (the schedule of the fold with the median refit length); the folder gets the members, a model
    card with the run's cross-validated scores and robustness table, and the training data's licence.

    \b
    sononet train-all --data ../shared/data/ravdess --labels ANG,DIS,FEA,HAP,NEU,SAD --folds 6 \\
        --models cnn,bigru --out runs/ravdess-6
    sononet train-final --run runs/ravdess-6 --out models/ravdess-6
    """
    from sononet.final_model import FinalConfig, train_final

    record = train_final(FinalConfig(run=run, out=out, models=models, device=device, resume=resume))
    for name, m in record["models"].items():
        click.echo(f"{name}: {m['epochs']} epochs on {record['clips']} clips -> {out}/{m['model']}")
