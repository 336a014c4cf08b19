"""Every option of every command tells the truth about its default.

Options default to None and fall through to the config dataclasses, so the help text is the only
place a user sees a default. Generated over every option: a default the help names as a value
must be the dataclass's (or click's own) value; a default it describes ("the model's clip") must be
one the code resolves at run time (None in the dataclass); an option whose dataclass default is a
value must show it.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Iterator
from typing import Any

import click
import pytest

from sononet.cli import main
from sononet.cli.batch import cli as batch_cli

# The config dataclasses each command fills from its options (unset options keep their defaults).
CONFIGS = {
    "sononet bench": ["sononet.bench:BenchConfig"],
    "sononet download": ["sononet.corpus.download:DownloadConfig"],
    "sononet evaluate": ["sononet.evaluation:CrossCorpusConfig"],
    "sononet export": ["sononet.export:ExportConfig"],
    "sononet label": ["sononet.label.config:LabelConfig"],
    "sononet nested": ["sononet.nested:NestedConfig"],
    "sononet prepare": ["sononet.prepare:PrepareConfig"],
    "sononet speaker-groups": ["sononet.label.group_size:GroupSizeConfig"],
    "sononet train": ["sononet.training:TrainingConfig"],
    "sononet train-all": ["sononet.experiment:ExperimentConfig"],
    "sononet train-final": ["sononet.final_model:FinalConfig"],
    "sononet-batch": [],  # its options are the runner's own: click shows their defaults
}
# Options whose config field has another name.
FIELD = {"timeout": "file_timeout_s", "window": "window_s", "hop": "hop_s", "split": "mode"}
# Options the command resolves itself, with no config field (each must still have no field).
NO_FIELD: set[tuple[str, str]] = set()
SPELLINGS = {True: ("on", "true"), False: ("off", "false")}


def commands() -> Iterator[tuple[str, click.Command]]:
    yield "sononet-batch", batch_cli
    for name, cmd in sorted(main.commands.items()):
        yield f"sononet {name}", cmd


def options() -> Iterator[tuple[str, click.Option]]:
    for name, cmd in commands():
        for param in cmd.params:
            if isinstance(param, click.Option) and param.name not in ("help", "verbose", "print_spec"):
                yield name, param


def defaults(cls: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, default) of every field, nested configs included (a config's own default for a
    nested one, e.g. nested's 6-fold split, wins over the nested class's); required fields are skipped."""
    for f in dataclasses.fields(cls):
        if not isinstance(cls, type):
            value = getattr(cls, f.name)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        if dataclasses.is_dataclass(value):
            yield from defaults(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value


def config_defaults(command: str, option: click.Option) -> dict[str, Any]:
    """The config fields this option sets (matched by name), with their defaults."""
    field = FIELD.get(option.name, option.name)
    found = {}
    for spec in CONFIGS[command]:
        module, attr = spec.split(":")
        for path, value in defaults(getattr(importlib.import_module(module), attr)):
            if path.rsplit(".", 1)[-1] == field:
                found[path] = value
    return found


def shown_default(command: str, option: click.Option) -> str | None:
    cmd = dict(commands())[command]
    record = option.get_help_record(click.Context(cmd, info_name=command, **cmd.context_settings))
    match = re.search(r"\[default: ([^\]]+)\]", record[1] if record else "")
    return match.group(1) if match else None


def spellings(value: Any, option: click.Option) -> set[str]:
    if isinstance(value, bool):
        return set(SPELLINGS[value])
    if isinstance(value, tuple) and hasattr(option.type, "choices") and set(value) == set(option.type.choices):
        return {"all"}
    if isinstance(value, float):
        return {str(value), f"{value:g}"}
    if isinstance(value, tuple) and value and all(isinstance(v, (str, int)) for v in value):
        return {",".join(map(str, value))}  # as the option takes it: --perturb gain,peak, --folds 0,1
    return {str(value)}


def is_literal(text: str) -> bool:
    """'256', '7,442', 'labels.parquet', 'on', 'gain,peak': a value, not a description ('<model>-onnx', '--window')."""
    return re.fullmatch(r"[\w./]+(,[\w./]+)*", re.sub(r"(?<=\d),(?=\d{3})", "", text)) is not None


def unset(value: Any) -> bool:
    empty = isinstance(value, (str, dict, list, tuple)) and not value
    return value is None or empty or type(value).__name__ == "Sentinel"  # click 8.3's UNSET


def test_every_command_is_covered() -> None:
    assert {name for name, _ in commands()} == set(CONFIGS)
    for command, name in NO_FIELD:
        option = next(o for c, o in options() if c == command and o.name == name)
        assert not config_defaults(command, option), f"{command} --{name} has a config field now: drop it from NO_FIELD"


@pytest.mark.parametrize(("command", "option"), list(options()), ids=lambda x: x if isinstance(x, str) else x.name)
def test_option_default_is_the_one_in_help(command: str, option: click.Option) -> None:
    shown, fields = shown_default(command, option), config_defaults(command, option)
    values = {path: v for path, v in fields.items() if not unset(v)}
    where = f"{command} {option.opts[-1]}"
    if option.required or (option.is_flag and not option.secondary_opts and not any(values.values())):
        return  # nothing to default, or a switch that starts off
    if not unset(option.default) and not (option.is_flag and option.default is False):
        # click's own default replaces the config's on every call: it must be shown, and be the config's too
        assert shown is not None, f"{where}: click's default {option.default!r} is not shown in the help"
        assert shown in spellings(option.default, option), (
            f"{where}: help says {shown!r}, click uses {option.default!r}"
        )
        assert all(v == option.default for v in values.values()), (
            f"{where}: click's {option.default!r}, config {fields}"
        )
        return
    if shown is None:
        assert not values, f"{where}: the config default {values} is not shown in the help"
        return
    if not fields and is_literal(shown):
        assert (command, option.name) in NO_FIELD, f"{where}: help names {shown!r}; no config field {option.name!r}"
    elif not values:
        return  # the config leaves it to run time (the demo corpus, the model's clip): the help describes that
    elif is_literal(shown):
        wanted = set().union(*(spellings(v, option) for v in fields.values()))
        assert {shown, shown.replace(",", "")} & wanted, f"{where}: help says {shown!r}, the config has {fields}"
    else:  # a description: where the config holds a value (not one resolved at run time), it names it
        words = set(re.findall(r"[\w.$/-]+", re.sub(r"(?<=\d),(?=\d{3})", "", shown)))
        assert all(spellings(v, option) & words for v in values.values()), f"{where}: help says {shown!r}, {values}"
