"""``sononet speaker-groups``: how large a speaker group must be for its own mean to pay."""

from __future__ import annotations

import click

from sononet.cli.options import given


def _ints(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, e.g. 0,1. Found: {value!r}") from None


@click.command("speaker-groups")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--models", default=None, metavar="cnn,bigru", help="Models of the run to measure [default: cnn,bigru].")
@click.option("--folds", callback=_ints, default=None, metavar="0,1,...", help="Folds of the run [default: 0].")
@click.option("--sizes", callback=_ints, default=None, metavar="1,2,4,...",
              help="Group sizes k [default: 1,2,3,4,5,6,8,10,12,16,24].")  # fmt: skip
@click.option("--reps", type=int, default=None, help="Random groups per speaker and size [default: 30].")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="JSON file [default: RUN/speaker-groups.json].")  # fmt: skip
def speaker_groups_command(run: str, models: str | None, **kw) -> None:
    """Measure label's --speaker-min-files rule on a cross-validated run: each fold's model scores
    its held-out speakers with the means of random groups of k of their files, against the
    training default and the speaker's whole mean (docs/robustness.md).

    \b
    sononet train-all --data ../shared/data/ravdess --labels ANG,DIS,FEA,HAP,NEU,SAD --folds 6 --out runs/r6
    sononet speaker-groups runs/r6 --folds 0
    """
    from sononet.label.group_size import GroupSizeConfig, measure_group_sizes

    names = tuple(m.strip() for m in models.split(",") if m.strip()) if models else None
    cfg = given(GroupSizeConfig(run=run), models=names, **kw)
    result = measure_group_sizes(cfg)
    for name, found in result["models"].items():
        scores = found["ua"]
        click.echo(f"{name}: unknown {scores['unknown']}, all {scores['all']}, " + ", ".join(
            f"k={k} {v}" for k, v in scores.items() if k not in ("unknown", "all")
        ))  # fmt: skip
    click.echo(f"written: {result['out']}")
