"""What every corpus kind returns: clips with their labels and metadata, and the class selection.

The corpus modules (cremad, ravdess, folder, hf, lhotse, demo) build these; prepare, label and
evaluation read them. They live apart from the package's ``load_corpus`` so the corpus modules
import them without importing the package that imports them.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from sononet.errors import ErrorRow

# A label that reads as a non-integer number (1.5, 2.0, nan, inf) is a rating or a missing value, not a class.
_NUMBER_RE = re.compile(r"[-+]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][-+]?\d+|nan|inf(inity)?)", re.IGNORECASE)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus")
AUDIO_SUFFIXES += (".m4a", ".aac", ".mp4", ".m4b", ".webm", ".mka", ".mkv", ".mov", ".wma", ".amr", ".3gp")  # PyAV


@dataclass(frozen=True)
class Clip:
    """One labelled audio file; metadata fields are None where the corpus does not know them."""

    clip_id: str  # unique within the corpus, stable across runs
    path: str  # absolute path of the audio file
    label: str
    speaker: str | None = None
    intensity: str | None = None  # CREMA-D: LO/MD/HI/XX
    sex: str | None = None
    sentence: str | None = None
    extra: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Corpus:
    kind: str  # cremad | ravdess | manifest | audiofolder | hf | lhotse
    root: str
    clips: list[Clip]
    errors: list[ErrorRow]
    labels: list[str]  # sorted label set, from the data
    excluded: dict[str, int] = field(default_factory=dict)  # label -> clips left out by select_labels

    @property
    def n_files(self) -> int:
        return len(self.clips) + len(self.errors) + sum(self.excluded.values())

    def why_nothing_usable(self, errors: Sequence[ErrorRow] | None = None) -> str:
        """Why no clip is left, for the error a user sees: the commonest refusal reasons with counts
        and one example each, clips left out by the class selection, and for a manifest the folder
        its relative paths were resolved against (a manifest written for another folder shows there).

        ``errors``: the refusals to explain (default: the corpus's own; prepare adds decoding's).
        """
        errors = self.errors if errors is None else errors
        if not self.n_files:
            return f"no usable audio in {self.root}: it lists no audio files"
        parts = []
        for reason, n in Counter(e.reason for e in errors).most_common(3):
            example = next(e for e in errors if e.reason == reason)
            parts.append(f"{reason} {n} (e.g. {example.path}" + (f": {example.detail})" if example.detail else ")"))
        if len(Counter(e.reason for e in errors)) > 3:
            parts.append("more in the errors table")
        if self.excluded:
            parts.append(f"left out by the class selection {sum(self.excluded.values())} ({_counts(self.excluded)})")
        where = f"; relative paths were resolved against {Path(self.root).parent}/" if self.kind == "manifest" else ""
        return (
            f"no usable audio in {self.root}: {len(errors)} of {self.n_files} files refused: {'; '.join(parts)}{where}"
        )

    def summary(self) -> str:
        speakers = {c.speaker for c in self.clips if c.speaker is not None}
        return (
            f"{self.kind} corpus at {self.root}: {len(self.clips)} clips, "
            f"{len(speakers) if speakers else 'unknown'} speakers, labels {','.join(self.labels)}, "
            f"{len(self.errors)} refused"
            + (f", {sum(self.excluded.values())} excluded ({_counts(self.excluded)})" if self.excluded else "")
        )


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def label_text(value: object) -> tuple[str | None, str]:
    """A label cell of any corpus as a class name, or (None, why): the one rule every reader applies.

    Text is stripped; integers stay as written ("2"); an empty cell, a float, or text that reads as a
    non-integer number ("1.5", "2.0", "nan", "inf") is no class name: a rating or a missing value
    that would otherwise become a class of its own.
    """
    if value is None:
        return None, "empty label"
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None, f"label {value!r} is a {type(value).__name__}, not a class name"
    text = str(value).strip()
    if not text:
        return None, "empty label"
    if _NUMBER_RE.fullmatch(text):
        return None, f"label {text!r} is a non-integer number, not a class name"
    return text, ""


def _read_label_map_file(path: Path) -> str | list[tuple[object, object]]:
    """A mapping file: JSON or TOML tables, or text with one FROM=TO per line."""
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text, object_pairs_hook=list)  # pairs as written: a repeated key must not vanish
        except json.JSONDecodeError as e:
            raise ValueError(f"label map file {path} is not valid JSON: {e}") from None
    elif path.suffix.lower() == ".toml":
        try:
            data = list(tomllib.loads(text).items())  # TOML itself refuses a key given twice
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"label map file {path} is not valid TOML: {e}") from None
    else:
        return ",".join(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    if not isinstance(data, list) or not all(isinstance(p, tuple) and isinstance(p[1], str) for p in data):
        raise ValueError(f"label map file {path} must hold one table of FROM = TO strings")
    return data


def _map_name(name: object, entry: str) -> str:
    """One side of a label map entry: a class name by :func:`label_text`'s rule, without the map's own
    syntax (``=`` and ``,``), so ``CAL==NEU`` or ``{"CAL": ""}`` is refused instead of making a class."""
    label, why = label_text(name) if isinstance(name, str) else (None, f"{name!r} is not text")
    if label is None:
        raise ValueError(f"label map entry {entry}: {why}; entries look like FROM=TO (e.g. CAL=NEU)")
    if "=" in label or "," in label:
        raise ValueError(
            f"label map entry {entry}: {label!r} holds '=' or ','; entries look like FROM=TO (e.g. CAL=NEU)"
        )
    return label


def parse_label_map(text: str | Mapping[str, str] | None) -> dict[str, str]:
    """``"CAL=NEU,SUR=HAP"``, a mapping, or a file (JSON, TOML, FROM=TO lines) -> {"CAL": "NEU", "SUR": "HAP"}.

    Every name follows the label rule of the readers; a source mapped twice to different targets,
    a chain (a target that is also a source) and an empty side are refused, with the entry named.
    """
    if not text:
        return {}
    if isinstance(text, str) and "=" not in text and Path(text).is_file():
        text = _read_label_map_file(Path(text))
    if isinstance(text, Mapping):
        pairs: list[tuple[object, object]] = list(text.items())
    elif isinstance(text, list):
        pairs = text
    else:
        pairs = []
        for item in str(text).split(","):
            if item.strip():
                src, sep, dst = item.partition("=")
                if not sep:
                    raise ValueError(f"label map entries look like FROM=TO (e.g. CAL=NEU). Found: {item.strip()!r}")
                pairs.append((src, dst))
    mapping: dict[str, str] = {}
    for src, dst in pairs:
        entry = f"{src}={dst}"
        src, dst = _map_name(src, repr(entry)), _map_name(dst, repr(entry))
        if mapping.get(src, dst) != dst:
            raise ValueError(f"label map maps {src} twice, to {mapping[src]} and to {dst}; keep one")
        mapping[src] = dst
    chained = sorted(set(mapping) & set(mapping.values()))
    if chained:
        raise ValueError(f"label map must not chain (a target is also a source): {chained}")
    return mapping


def select_labels(
    corpus: Corpus, keep: Sequence[str] | None = None, label_map: Mapping[str, str] | None = None
) -> Corpus:
    """Relabel through ``label_map``, then keep only clips whose label is in ``keep`` (all if None).

    Clips left out are counted per (mapped) label in ``Corpus.excluded``. Asking for a label
    the data does not have is an error that lists what it does have: a typo should not
    silently train a five-class model.
    """
    label_map = dict(label_map or {})
    unknown_src = sorted(set(label_map) - {c.label for c in corpus.clips})
    if unknown_src:
        raise ValueError(f"--label-map names labels the data lacks: {unknown_src}. Labels present: {corpus.labels}")
    clips = [replace(c, label=label_map[c.label]) if c.label in label_map else c for c in corpus.clips]
    present = sorted({c.label for c in clips})
    if keep is None:
        return replace(corpus, clips=clips, labels=present)
    keep = [str(k).strip() for k in keep]
    missing = sorted(set(keep) - set(present))
    if missing:
        raise ValueError(f"--labels asks for {missing}, which the data lacks. Labels present: {present}")
    wanted = set(keep)
    excluded = Counter(c.label for c in clips if c.label not in wanted)
    kept = [c for c in clips if c.label in wanted]
    return replace(corpus, clips=kept, labels=sorted(wanted), excluded=dict(sorted(excluded.items())))
