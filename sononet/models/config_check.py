"""Checks of a saved model's ``config.json`` against itself, before a weight is read or a file labelled.

A model folder is input like any other: copied between machines, edited by hand, written by
another version. Trusted as is, 8 labels on a 6-class head gave two all-NaN probability columns,
``"labels": "ANGDIS"`` gave six one-letter classes and 3 labels crashed after every file was
processed. Every rule here fails at load time with one error naming ``config.json`` and the field.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from sononet.audio import AudioConfig
from sononet.features.mel import FeatureConfig
from sononet.jobs import from_dict


class ConfigError(ValueError):
    """A saved model's config.json breaks a rule; the message names the file and the field."""

    def __init__(self, path: Path, field: str, rule: str, found: Any) -> None:
        super().__init__(f"{path}: {field} {rule}. Found: {found!r}")


def check_document(doc: Any, path: Path, format_version: int) -> None:
    """The top-level fields: an object with ``model`` (str), ``model_config`` and ``meta`` (objects)."""
    if not isinstance(doc, dict):
        raise ValueError(f"{path} must hold a JSON object. Found: {type(doc).__name__}")
    missing = [k for k in ("model", "model_config") if k not in doc]
    if missing:
        raise ValueError(f"{path} lacks required key(s) {missing}")
    version = doc.get("format_version", format_version)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ConfigError(path, "format_version", "must be an integer", version)
    if version > format_version:
        raise ValueError(f"{path} has format_version {version}; this SonoNet reads up to {format_version}")
    if not isinstance(doc["model"], str):
        raise ConfigError(path, "model", "must be a model name (a string)", doc["model"])
    for key in ("model_config", "meta"):
        if key in doc and not isinstance(doc[key], dict):
            raise ConfigError(path, key, "must be a JSON object", doc[key])


def build_config(config_cls: type, values: dict[str, Any], path: Path) -> Any:
    """``config_cls`` from ``values`` with every field's type and range checked (its ``check()``)."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"{path}: unknown model_config key(s) {unknown} for {config_cls.__name__}")
    try:
        cfg = from_dict(config_cls, values, "model_config")  # JSON lists become the tuples the fields declare
        cfg.check()
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    return cfg


def check_meta(meta: dict[str, Any], cfg: Any, input_kind: str, path: Path) -> None:
    """What the labeller and evaluation rebuild from ``meta`` must fit the model it describes."""
    if "labels" in meta:
        labels = meta["labels"]
        if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
            raise ConfigError(path, "meta.labels", "must be a list of non-empty strings", labels)
        if len(set(labels)) != len(labels):
            raise ConfigError(path, "meta.labels", "must not repeat a label", labels)
        if len(labels) != cfg.n_classes:
            rule = f"must hold one label per class of the head (model_config.n_classes = {cfg.n_classes})"
            raise ConfigError(path, "meta.labels", rule, labels)
    if "input_kind" in meta and meta["input_kind"] != input_kind:
        raise ConfigError(path, "meta.input_kind", f"must be {input_kind!r} for this model", meta["input_kind"])
    features = None
    if "feature_config" in meta:
        fc = meta["feature_config"]
        if not isinstance(fc, dict):
            raise ConfigError(path, "meta.feature_config", "must be a JSON object", fc)
        try:
            features = FeatureConfig(**fc)
        except (TypeError, ValueError) as e:
            raise ConfigError(path, "meta.feature_config", f"is not a valid feature config ({e})", fc) from None
        if input_kind == "mel" and features.n_mels != cfg.n_mels:
            rule = f"must equal model_config.n_mels = {cfg.n_mels}"
            raise ConfigError(path, "meta.feature_config.n_mels", rule, features.n_mels)
    if "audio_config" in meta:
        check_audio(meta["audio_config"], features, path)
    norm = meta.get("norm") or {}
    if not isinstance(norm, dict):
        raise ConfigError(path, "meta.norm", "must be a JSON object", norm)
    if input_kind == "mel" and (norm or "input_kind" in meta):  # a trained mel model carries its statistics
        for key in ("mean", "std", *(("speaker_default",) if "speaker" in norm else ())):
            values = norm.get(key)
            if not isinstance(values, list) or len(values) != cfg.n_mels:
                rule = f"must be a list of {cfg.n_mels} numbers (one per mel band)"
                raise ConfigError(path, f"meta.norm.{key}", rule, _short(values))
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)]
            if bad or (key == "std" and min(values) <= 0):
                raise ConfigError(path, f"meta.norm.{key}", "must hold finite numbers (std > 0)", _short(values))


def check_audio(values: Any, features: FeatureConfig | None, path: Path) -> AudioConfig:
    """``meta.audio_config``: the decoder settings the training clips were made with, at the features' rate."""
    if not isinstance(values, dict):
        raise ConfigError(path, "meta.audio_config", "must be a JSON object", values)
    try:
        audio = from_dict(AudioConfig, values, "meta.audio_config")
    except ValueError as e:
        raise ConfigError(path, "meta.audio_config", f"is not a valid audio config ({e})", values) from None
    for name in ("min_duration_s", "long_duration_s"):
        if not math.isfinite(getattr(audio, name)):
            raise ConfigError(path, f"meta.audio_config.{name}", "must be a finite number of seconds", values[name])
    if features is not None and audio.sample_rate != features.sample_rate:
        rule = f"must equal meta.feature_config.sample_rate = {features.sample_rate}"
        raise ConfigError(path, "meta.audio_config.sample_rate", rule, audio.sample_rate)
    return audio


def _short(value: Any) -> Any:
    return value[:8] + ["..."] if isinstance(value, list) and len(value) > 8 else value
