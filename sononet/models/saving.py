"""Self-contained model directories: weights, full config and the caller's metadata, nothing else needed.

Layout of a saved model::

    DIR/config.json         {"model": name, "model_config": {...}, "meta": {...}, "describe": ...}
    DIR/model.safetensors   state dict (for wav2vec2: everything except the encoder)
    DIR/backbone/           wav2vec2 only: the fine-tuned encoder, via save_pretrained, so
                            transformers' AutoModel.from_pretrained(DIR/backbone) also reads it

As in nanoGPT's checkpoints, the model's arguments travel with the weights: :func:`load_model`
rebuilds the model from ``config.json`` alone, with no training data and no hub access.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from sononet.errors import NotFoundError
from sononet.models.backbone import BackboneNotFoundError
from sononet.models.card import write_card
from sononet.models.config_check import build_config, check_document, check_meta
from sononet.models.registry import get_spec
from sononet.version import __version__

FORMAT_VERSION = 1  # bump when the directory layout changes; older readers refuse newer dirs
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
BACKBONE_DIR = "backbone"


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays/scalars and tensors, e.g. normalisation statistics
        return obj.tolist()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def save_model(directory: str | Path, model: nn.Module, name: str, meta: dict[str, Any]) -> Path:
    """Write ``model`` (registered as ``name``) and ``meta`` (labels, feature config, normalisation
    statistics, protocol...) to ``directory``, replacing an earlier save there as a whole."""
    spec = get_spec(name)
    if not isinstance(model, spec.model_cls):
        raise ValueError(f"model is a {type(model).__name__}, but {name!r} expects {spec.model_cls.__name__}")
    doc = {
        "format_version": FORMAT_VERSION,
        "sononet_version": __version__,
        "model": name,
        "describe": model.describe(),
        "model_config": dataclasses.asdict(model.config),
        "meta": meta,
    }
    try:  # fail before writing anything
        text = json.dumps(doc, indent=2, default=_json_default)
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta must be JSON-serialisable (lists, dicts, numbers, strings): {e}") from e

    directory = Path(directory).absolute()
    if directory.is_file() or (
        directory.exists() and any(directory.iterdir()) and not (directory / CONFIG_FILE).is_file()
    ):
        raise ValueError(f"{directory} exists and is not a saved SonoNet model; refusing to overwrite it")
    # Write a sibling directory, then swap it in: a crash never leaves a half-new model behind.
    staging = directory.with_name(f".{directory.name}.saving")
    previous = directory.with_name(f".{directory.name}.previous")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    state = model.state_dict()
    if spec.input_kind == "wave":
        model.backbone.save_pretrained(staging / BACKBONE_DIR)
        state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, staging / WEIGHTS_FILE)
    (staging / CONFIG_FILE).write_text(text + "\n")
    write_card(staging)  # README.md model card; train-all adds the metrics after evaluation
    if directory.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(directory, previous)
    os.replace(staging, directory)
    shutil.rmtree(previous, ignore_errors=True)
    return directory


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise NotFoundError(f"{path} is missing: not a saved SonoNet model (or an unfinished save)")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    check_document(doc, path, FORMAT_VERSION)
    return doc


def _check_shapes(model_cls: type, cfg: Any, weights: Path, config_path: Path) -> None:
    """The tensors ``config.json`` describes must be the ones the weights file holds, compared before a
    byte is allocated: the model is built on the meta device, the file's shapes come from its header.

    So a tampered config (a million channels, a huge head) is refused in one line instead of
    allocating what no weights file backs.
    """
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in model_cls(cfg).state_dict().items()}
    try:
        with safe_open(weights, "pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{weights} is corrupt or not a safetensors file: {e}") from e
    differ = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    if differ or missing or unexpected:
        first = f"{differ[0]} {expected[differ[0]]} in config, {found[differ[0]]} in weights" if differ else ""
        raise ValueError(
            f"{weights} does not fit the model in {config_path}: {len(differ)} tensor(s) differ in shape"
            f"{' (' + first + ')' if first else ''}, missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def load_model(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_model`, in eval mode, and return it with its config.json."""
    directory = Path(directory).absolute()
    if not directory.is_dir():
        previous = directory.with_name(f".{directory.name}.previous")
        hint = f"; an interrupted save left the previous model in {previous}" if previous.is_dir() else ""
        raise NotFoundError(f"model directory {directory} does not exist{hint}")
    config_path = directory / CONFIG_FILE
    doc = _read_config(config_path)
    spec = get_spec(doc["model"])
    cfg = build_config(spec.config_cls, doc["model_config"], config_path)
    check_meta(doc.get("meta") or {}, cfg, spec.input_kind, config_path)  # before any weights are read
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise NotFoundError(f"{weights} is missing")
    if spec.input_kind != "wave":  # the encoder of a wave model is sized by its own backbone/config.json
        _check_shapes(spec.model_cls, cfg, weights, config_path)

    if spec.input_kind == "wave":
        backbone = directory / BACKBONE_DIR
        if not (backbone / "config.json").is_file():
            raise NotFoundError(f"{backbone / 'config.json'} is missing: the saved encoder is incomplete")
        try:
            model = spec.model_cls(cfg, weights_from=backbone)
        except BackboneNotFoundError as e:
            cause = e.__cause__ or e  # the transformers error names the missing file
            raise NotFoundError(f"could not read the saved encoder in {backbone}: {cause}") from e
    else:
        model = spec.model_cls(cfg)

    try:
        state = load_file(weights)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{weights} is corrupt or not a safetensors file: {e}") from e
    skip = "backbone." if spec.input_kind == "wave" else None  # the encoder came from backbone/
    expected = {k for k in model.state_dict() if not (skip and k.startswith(skip))}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{weights} does not match model {doc['model']!r}: missing {missing}, unexpected {unexpected}")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch: weights from a different config
        raise ValueError(f"{weights} does not fit the model in {config_path}: {e}") from e
    return model.to(map_location).eval(), doc
