"""Options more than one command shares, and the rule that unset options keep the config's default."""

from __future__ import annotations

import functools
import importlib
from dataclasses import replace
from typing import Any, TypeVar

import click

T = TypeVar("T")


def given(obj: T, **values: Any) -> T:
    """``dataclasses.replace`` with only the values the user gave (None = keep the dataclass default)."""
    values = {k: v for k, v in values.items() if v is not None}
    return replace(obj, **values) if values else obj


class RegistryChoice(click.Choice):
    """A choice among a registry's names (``"module:attr"``), read when first needed.

    The registries live beside torch; reading them only to validate a value or to show this
    command's ``--help`` keeps ``sononet --help`` and the commands' start-up light.
    """

    def __init__(self, registry: str, extra: tuple[str, ...] = ()) -> None:
        self.registry, self.extra, self.case_sensitive = registry, extra, True

    @functools.cached_property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        module, attr = self.registry.split(":")
        return (*self.extra, *getattr(importlib.import_module(module), attr))


class RegistryList(RegistryChoice):
    """Comma-separated names from a registry -> a tuple, each checked."""

    name = "list"

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return f"{'|'.join(self.choices)}[,...]"

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201 - click's signature
        if isinstance(value, tuple):
            return value
        return tuple(super(RegistryList, self).convert(v.strip(), param, ctx) for v in value.split(",") if v.strip())


MODELS = "sononet.models.registry:MODELS"
MEL_BACKENDS = "sononet.features.mel:BACKENDS"


def device_option(f):
    return click.option("--device", default=None, help="auto | cpu | cuda | cuda:N [default: auto].")(f)


def mel_backend_option(f):
    return click.option(
        "--mel-backend", type=RegistryChoice(MEL_BACKENDS, extra=("auto",)), default=None,
        help="Log-mel backend; auto: torchaudio on the CPU, the faster of both (timed) on a GPU [default: auto].",
    )(f)  # fmt: skip


def with_threads(cmd: click.Command, defer: bool = False) -> click.Command:
    """Give ``cmd`` a ``--threads`` option that sizes the CPU thread pools before any heavy import
    (``defer``: chooses the count only; the command applies it where it loads torch)."""
    cmd.params.append(
        click.Option(
            ["--threads"], type=int, default=None,
            help="CPU threads for torch and numba [default: $SONONET_THREADS, else the CPUs this process may use].",
        )
    )  # fmt: skip
    callback = cmd.callback

    @functools.wraps(callback)
    def run(*args, threads: int | None = None, **kwargs):
        from sononet.device import configure_threads

        configure_threads(threads, defer=defer)
        return callback(*args, **kwargs)

    cmd.callback = run
    return cmd


def perturb_options(f):
    """``--perturb NAMES`` / ``--no-perturb``: which robustness perturbations every report scores."""
    from sononet.perturb import GROUPS  # numpy only: --help stays light

    f = click.option("--no-perturb", is_flag=True, default=None, help="Skip the robustness suite.")(f)
    return click.option(
        "--perturb", default=None, metavar="NAMES",
        help="Robustness suite (docs/robustness.md): perturbation groups or names, e.g. gain-20,noise10,opus "
        f"[default: {','.join(GROUPS)}].",
    )(f)  # fmt: skip


def robustness_config(base: Any, perturb: str | None, no_perturb: bool | None) -> Any:
    """``base`` (a RobustnessConfig) with ``--perturb`` / ``--no-perturb`` applied; both at once is refused."""
    from sononet.perturb import parse

    if perturb is not None and no_perturb:
        raise click.UsageError("--perturb and --no-perturb contradict each other; pass one")
    if no_perturb:
        return replace(base, perturb=())
    return replace(base, perturb=parse(perturb)) if perturb is not None else base
