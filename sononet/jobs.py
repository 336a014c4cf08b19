"""Job specs: TOML files that map onto the typed config dataclasses.

A spec names its job and sets any field of that job's config, nested tables for nested
configs::

    job = "train-all"
    out = "/work/runs/cremad"
    models = ["cnn", "bigru", "wav2vec2"]
    [prepare]
    data = "/data/cremad/AudioWAV"
    [train]
    epochs = 40

Unknown keys and wrong types are errors that name the key. ``--set train.epochs=5``
overrides a field after loading. Every run writes the resolved spec (all fields, defaults
included) next to its outputs, so ``sononet-batch <run>/spec.toml`` reproduces it.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import tomli_w


def _packaged_jobs() -> Path:
    """The specs installed with the package (``jobs/`` is package data ``sononet.jobspecs``)."""
    from importlib import resources

    try:
        return Path(str(resources.files("sononet.jobspecs")))
    except ModuleNotFoundError:  # a source tree installed before jobs/ became package data
        return Path(__file__).resolve().parent.parent / "jobs"


# $SONONET_JOBS_DIR (the container sets it) or the specs that ship with the package.
JOBS_DIR = Path(os.environ["SONONET_JOBS_DIR"]) if os.environ.get("SONONET_JOBS_DIR") else _packaged_jobs()
# job name -> (config class, runner); "module:attr" strings keep `--help` imports light.
JOBS: dict[str, tuple[str, str]] = {
    "train-all": ("sononet.experiment:ExperimentConfig", "sononet.experiment:run_experiment"),
    "train": ("sononet.training:TrainingConfig", "sononet.training:run_training"),
    "prepare": ("sononet.prepare:PrepareConfig", "sononet.prepare:prepare"),
    "label-folder": ("sononet.label:LabelConfig", "sononet.label:label"),
    "bench": ("sononet.bench:BenchConfig", "sononet.bench:run_bench"),
    "nested": ("sononet.nested:NestedConfig", "sononet.nested:run_nested"),
}


# Jobs whose spec is completed before it runs (the profile, the device's choices): what `--print-spec` shows.
RESOLVERS: dict[str, str] = {
    "train-all": "sononet.experiment:resolve_experiment",
    "train": "sononet.training:resolve_training",
    "nested": "sononet.nested:resolve_nested",
}


class SpecError(ValueError):
    """A job spec that does not match its config; the message names the key."""


def resolve(ref: str) -> Any:
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


def _check(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(value, arg, key)
            except SpecError as e:
                errors.append(str(e))
        raise SpecError(errors[0] if errors else f"{key}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SpecError(f"{key} must be a table of {tp.__name__} fields. Found: {value!r}")
        return from_dict(tp, value, key)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{key} must be a list. Found: {value!r}")
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        items = [_check(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{key} must be a table. Found: {value!r}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise SpecError(f"{key} must be {tp.__name__}. Found: {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise SpecError(f"{key} must be {tp.__name__}. Found: {value!r} ({type(value).__name__})")
    return value


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, refusing unknown keys and wrong types by name."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise SpecError(f"unknown key {full!r}; {cls.__name__} has {', '.join(sorted(names))}")
        kwargs[key] = _check(value, hints[key], full)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise SpecError(f"{prefix or cls.__name__}: {e}") from e


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # bare words are strings: --set prepare.data=/data/cremad


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` strings (TOML values, bare strings allowed) to a spec dict."""
    for item in overrides:
        if "=" not in item:
            raise SpecError(f"--set takes key=value. Found: {item!r}")
        key, text = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SpecError(f"--set {key}: {part} is not a table")
        node[parts[-1]] = _parse_value(text.strip())
    return data


def find_spec(name_or_path: str) -> Path:
    """A spec by path, or by name from the packaged ``jobs/`` folder (``train-all`` -> jobs/train-all.toml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = JOBS_DIR / f"{name_or_path}.toml"
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in JOBS_DIR.glob("*.toml")) if JOBS_DIR.is_dir() else []
    raise SpecError(f"no job spec {name_or_path!r}: not a file, and not one of {', '.join(known) or '(none found)'}")


def load_spec(name_or_path: str, overrides: list[str] | None = None) -> tuple[str, Any]:
    """(job name, typed config) from a TOML spec plus overrides."""
    path = find_spec(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML ({e})") from e
    data = apply_overrides(data, overrides or [])
    job = data.pop("job", None)
    if job not in JOBS:
        raise SpecError(f"{path}: 'job' must be one of {', '.join(JOBS)}. Found: {job!r}")
    return job, from_dict(resolve(JOBS[job][0]), data)


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_drop_none(v) for v in obj]
    return obj


def spec_text(cfg: Any, job: str | None = None) -> str:
    data = _drop_none(dataclasses.asdict(cfg))
    if job is None:
        job = next((name for name, (ref, _) in JOBS.items() if ref.endswith(":" + type(cfg).__name__)), None)
    return tomli_w.dumps({"job": job, **data} if job else data)


def write_spec(path: str | Path, cfg: Any, job: str | None = None) -> None:
    """Write the resolved spec (every field; None omitted since TOML has no null)."""
    from sononet.io import atomic_write_bytes

    atomic_write_bytes(Path(path), spec_text(cfg, job).encode())
