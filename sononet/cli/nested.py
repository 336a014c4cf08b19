"""``sononet nested``: nested validation, the procedure that chose the real-speech recipe."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import click

from sononet.cli.options import robustness_config
from sononet.cli.train import experiment_config, experiment_options

# train-all options that mean nothing here: nesting always trains A and its refit B, scores them
# on validation speakers (the robustness suite only when --perturb names it), and has no test split.
NOT_NESTED = ("refit", "perturb", "no_perturb", "split", "out", "folds")


def _folds(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated fold numbers, e.g. 0,1. Found: {value!r}") from None


@click.command("nested")
@experiment_options(*NOT_NESTED)
@click.option(
    "--out",
    type=click.Path(),
    default=None,
    help="Run folder [default: runs/nested, or runs/nested-<data> with --data].",
)
@click.option("--folds", type=click.IntRange(min=4), default=None,
              help="Speaker-grouped folds of the split, as train-all --folds [default: 6].")  # fmt: skip
@click.option("--outer-folds", callback=_folds, default=None, metavar="0,1,...",
              help="Outer folds to run [default: every fold of --folds].")  # fmt: skip
@click.option("--score-labels", default=None, metavar="A,B,...",
              help="Classes scored on the validation speakers; other --labels train but are not scored "
              "[default: every class].")  # fmt: skip
@click.option("--perturb", default=None, metavar="NAMES",
              help="Also score the refit models on the validation speakers under these perturbations "
              "(docs/robustness.md), e.g. noise,gain [default: none].")  # fmt: skip
def nested_command(
    print_spec: bool,
    folds: int | None,
    outer_folds: tuple[int, ...] | None,
    score_labels: str | None,
    perturb: str | None,
    **kw,
) -> None:
    """Score a recipe on validation speakers only: per outer fold, A (epoch chosen on an inner
    validation group) and its refit B, both scored on the fold's validation speakers; test
    speakers are never read. Compare two settings by running each into its own --out.

    \b
    sononet nested --data ../shared/data/ravdess --labels ANG,DIS,FEA,HAP,NEU,SAD --folds 6 --models cnn,bigru
    sononet nested --data ../shared/data/ravdess --labels ANG,DIS,FEA,HAP,NEU,SAD --folds 6 --batch-size 16 \\
        --out runs/nested-bs16
    sononet nested --data ../shared/data/ravdess --labels ANG,DIS,FEA,HAP,NEU,SAD --outer-folds 0,1 \\
        --perturb noise,gain --out runs/nested-robust   # also the suite on the validation speakers
    sononet nested --folds 4 --models cnn --epochs 2 --outer-folds 0   # the demo corpus, a pipeline check
    """
    from sononet.jobs import spec_text
    from sononet.nested import NestedConfig, resolve_nested, run_nested

    data = kw.get("data")
    kw["out"] = kw.get("out") or (f"runs/nested-{Path(data).resolve().name.lower()}" if data else NestedConfig.out)
    base = experiment_config(**kw)
    extra = {
        "outer_folds": outer_folds or (),
        "score_labels": tuple(x.strip() for x in score_labels.split(",") if x.strip()) if score_labels else (),
    }
    given = {f.name: getattr(base, f.name) for f in fields(base)}
    given["split"] = replace(base.split, folds=folds if folds is not None else NestedConfig().split.folds)
    given["robustness"] = robustness_config(NestedConfig().robustness, perturb, None)  # off unless asked
    cfg = NestedConfig(**given, **extra)
    if print_spec:
        click.echo(spec_text(resolve_nested(cfg), "nested"), nl=False)
        return
    result = run_nested(cfg)
    click.echo(f"done: {Path(result['out']) / 'nested.md'}")
