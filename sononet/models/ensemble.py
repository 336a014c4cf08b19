"""Ensemble folders: several saved models that answer as one, with the mean of their class probabilities.

Layout of an ensemble folder (``train-all`` writes one per fold as ``<fold>/ensemble``)::

    DIR/ensemble.json   {"format": "sononet-ensemble", "format_version": 1, "sononet_version": "...",
                         "members": ["../cnn/refit/model", "../bigru/refit/model"]}
    DIR/README.md       model card: members, labels, training data, the ensemble's metrics

The rules, and why:

* Member paths are relative to DIR, so a run folder keeps working when it is moved or copied
  whole. Absolute paths are refused: they break on another machine and can point anywhere.
  ``..`` is allowed (train-all's members live beside the ensemble folder) as long as the path
  resolves to a saved model folder (one with ``config.json``).
* A member is a model folder, never another ensemble: one level of averaging, no cycles.
* Members share the label list in the same order: probabilities are averaged column by column.
* ``ensemble.json`` is data, never code: JSON read through :func:`sononet.io.open_regular` (a FIFO
  is refused before a byte is read), at most ``MAX_BYTES``, every field's type checked. The
  members themselves are loaded later through ``load_model``'s own checks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from sononet.errors import NotFoundError, UserError
from sononet.io import atomic_write_bytes, open_regular
from sononet.models.card import USAGE, corpus_facts, metric_lines, provenance, use_and_licence
from sononet.version import __version__

FORMAT = "sononet-ensemble"
FORMAT_VERSION = 1  # bump when the file changes; older readers refuse newer files
ENSEMBLE_FILE = "ensemble.json"
CONFIG_FILE = "config.json"  # a member's: the file that makes a folder a saved model (models/saving.py)
MAX_BYTES = 64 * 1024  # a short list of paths; anything larger is not an ensemble.json
MAX_CONFIG_BYTES = 16 * 1024 * 1024  # a member's config.json (labels, features, norm statistics): KBs in practice
MAX_MEMBERS = 64  # each member is a forward pass per window: more is a mistake, not an ensemble
KEYS = {"format", "format_version", "sononet_version", "members"}


@dataclass(frozen=True)
class Ensemble:
    """Checked member folders (absolute, resolved) and the label list they share."""

    members: tuple[Path, ...]
    labels: tuple[str, ...]
    docs: tuple[dict[str, Any], ...]  # each member's config.json


def is_ensemble(path: str | os.PathLike) -> bool:
    """``path`` is meant as an ensemble folder (it holds ``ensemble.json``, readable or not)."""
    return os.path.lexists(Path(path) / ENSEMBLE_FILE)


def _read_bounded_json(path: Path, limit: int, what: str) -> Any:
    """JSON from a regular file of at most ``limit`` bytes; anything else is one error naming ``path``."""
    if not os.path.lexists(path):
        raise NotFoundError(f"{path} is missing: not {what}")
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path} is larger than {limit} bytes: not {what}")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def _member_doc(folder: Path, shown: str) -> dict[str, Any]:
    """A member's config.json, after the checks that need no weights: a model folder, not an ensemble, labels."""
    if not folder.is_dir():
        raise NotFoundError(f"ensemble member {shown} is not a folder ({folder})")
    if is_ensemble(folder):
        raise UserError(f"ensemble member {shown} is itself an ensemble; list its member models instead")
    doc = _read_bounded_json(folder / CONFIG_FILE, MAX_CONFIG_BYTES, "a saved SonoNet model")
    meta = doc.get("meta") if isinstance(doc, dict) else None
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) and x for x in labels):
        raise ValueError(f"ensemble member {shown}: {folder / CONFIG_FILE} has no label list (meta.labels)")
    return doc


def check_members(folders: Sequence[Path], shown: Sequence[str]) -> Ensemble:
    """The members as one :class:`Ensemble`: 1 to ``MAX_MEMBERS`` distinct model folders with one label list."""
    if not folders:
        raise ValueError("an ensemble needs at least one member model folder. Found: none")
    if len(folders) > MAX_MEMBERS:
        raise ValueError(f"an ensemble holds at most {MAX_MEMBERS} members. Found: {len(folders)}")
    resolved = [Path(f).resolve() for f in folders]
    twice = [s for i, s in enumerate(shown) if resolved[i] in resolved[:i]]
    if twice:
        raise ValueError(f"ensemble member {twice[0]} is listed twice; list each model folder once")
    docs = [_member_doc(f, s) for f, s in zip(resolved, shown, strict=True)]
    labels = docs[0]["meta"]["labels"]
    for doc, s in zip(docs[1:], shown[1:], strict=True):
        if doc["meta"]["labels"] != labels:
            raise ValueError(
                f"ensemble members must share the label list in the same order: {shown[0]} has {labels}, "
                f"{s} has {doc['meta']['labels']}"
            )
    return Ensemble(tuple(resolved), tuple(labels), tuple(docs))


def _member_path(folder: Path, entry: Any) -> Path:
    """One ``members`` entry: a relative path, resolved against the ensemble folder."""
    if not isinstance(entry, str) or not entry or "\x00" in entry:
        raise ValueError(f"{folder / ENSEMBLE_FILE}: members must be relative folder paths. Found: {entry!r:.100}")
    if PurePosixPath(entry).is_absolute() or PureWindowsPath(entry).is_absolute() or PureWindowsPath(entry).drive:
        raise ValueError(
            f"{folder / ENSEMBLE_FILE}: member {entry!r:.100} is an absolute path; members are relative to the "
            "ensemble folder, so the folder can be moved with its models"
        )
    return folder / entry


def read_ensemble(folder: str | os.PathLike) -> Ensemble:
    """The ensemble in ``folder``, every rule in the module docstring checked; one error line otherwise."""
    folder = Path(folder).absolute()
    path = folder / ENSEMBLE_FILE
    doc = _read_bounded_json(path, MAX_BYTES, "an ensemble file")
    if not isinstance(doc, dict):
        raise ValueError(f"{path} must hold a JSON object. Found: {type(doc).__name__}")
    unknown = sorted(str(k) for k in set(doc) - KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {str(unknown)[:200]}; expected {sorted(KEYS)}")
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: format must be {FORMAT!r}. Found: {doc.get('format')!r:.100}")
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"{path}: format_version must be an integer. Found: {version!r:.100}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {version}; this SonoNet reads up to {FORMAT_VERSION}")
    members = doc.get("members")
    if not isinstance(members, list):
        raise ValueError(f"{path}: members must be a list of folder paths. Found: {type(members).__name__}")
    if len(members) > MAX_MEMBERS:  # before a single path is looked at
        raise ValueError(f"{path}: an ensemble holds at most {MAX_MEMBERS} members. Found: {len(members)}")
    folders = [_member_path(folder, m) for m in members]
    return check_members(folders, [str(m) for m in members])


def member_folders(model: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[list[Path], bool]:
    """(saved model folders, is an ensemble) behind what a user passed as ``--model`` or to ``load``:
    one model folder, one ensemble folder, or a list of model folders (each checked as an ensemble's)."""
    if isinstance(model, str | os.PathLike):
        if is_ensemble(model):
            return list(read_ensemble(model).members), True
        return [Path(model)], False
    if isinstance(model, bytes | dict) or not isinstance(model, Sequence):
        raise TypeError(f"model must be a folder or a list of model folders. Found: {type(model).__name__}")
    items = list(model)
    if not all(isinstance(m, str | os.PathLike) for m in items):
        raise TypeError("model must be a folder or a list of model folders (paths)")
    if len(items) == 1:
        return member_folders(items[0])
    ens = check_members([Path(m) for m in items], [str(m) for m in items])
    return list(ens.members), True


def write_ensemble(
    folder: str | os.PathLike, members: Sequence[str | os.PathLike], metrics: dict[str, Any] | None = None,
    fold: int = 0, splits: tuple[str, ...] = ("test", "val"), name: str = "ensemble",
) -> Path:  # fmt: skip
    """Write ``folder/ensemble.json`` (members relative to it) and its model card; returns ``folder``.

    ``metrics`` (metrics.json's content) gives the card the rows of model ``name`` for ``fold``
    and ``splits``, as :func:`sononet.models.card.write_card` does for a single model.
    """
    folder = Path(folder).absolute()
    if (folder / CONFIG_FILE).exists():
        raise UserError(f"{folder} holds a saved model (config.json); write the ensemble to another folder")
    ens = check_members([Path(m) for m in members], [str(m) for m in members])
    folder.mkdir(parents=True, exist_ok=True)
    rel = [Path(os.path.relpath(m, folder.resolve())).as_posix() for m in ens.members]
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "sononet_version": __version__, "members": rel}
    atomic_write_bytes(folder / ENSEMBLE_FILE, (json.dumps(doc, indent=2) + "\n").encode())
    card = render_ensemble_card(ens, rel, metrics, fold, splits, name)
    atomic_write_bytes(folder / "README.md", card.encode())
    return folder


def render_ensemble_card(
    ens: Ensemble, shown: Sequence[str], metrics: dict[str, Any] | None = None, fold: int = 0,
    splits: tuple[str, ...] = ("test", "val"), name: str = "ensemble",
) -> str:  # fmt: skip
    """Markdown for an ensemble, in the single-model card's shape (:func:`sononet.models.card.render_card`)."""
    provs = [provenance(doc) for doc in ens.docs]
    corpora = sorted({p["corpus"] for p in provs})
    material, licence = corpus_facts(corpora[0])
    if len(corpora) > 1:
        licence = "members trained on different corpora: see each member's card"
    members = [f"| `{s}` | {doc.get('model', '?')} | {p['describe'] or doc.get('model', '?')} |"
               for s, doc, p in zip(shown, ens.docs, provs, strict=True)]  # fmt: skip
    lines = [
        "---",
        "library_name: sononet",
        "pipeline_tag: audio-classification",
        "tags: [speech-emotion-recognition, audio-classification, sononet, ensemble]",
        f"datasets: [{', '.join(corpora)}]",
        "---",
        "",
        f"# SonoNet ensemble of {len(ens.members)}: speech emotion recognition",
        "",
        f"The mean of its members' class probabilities, each member scoring with its own features and "
        f"normalisation. Labels ({len(ens.labels)}): {', '.join(ens.labels)}.",
        "",
        *USAGE,
        "",
        "`sononet label DIR --model path/to/this/folder`, `sononet evaluate --model ...` and `sononet export",
        "--model ...` take the folder too. The members are folders of their own (paths relative to this one, in",
        "`ensemble.json`): move or copy them together.",
        "",
        "## Members",
        "",
        "| folder | model | description |",
        "| --- | --- | --- |",
        *members,
        "",
        "## Training",
        "",
        f"- corpus: **{', '.join(corpora)}** ({material})",
        f"- split protocol: {provs[0]['split']}; each member's card tells how it was trained and selected",
        "",
        "## Metrics",
        "",
        *metric_lines(metrics, name, fold, splits),
        "",
        *use_and_licence(material, licence, any(p["synthetic"] for p in provs)),
    ]
    return "\n".join(lines)
