"""Speaker groups: files that share a speaker lose that speaker's own mean log-mel, as cross-validation
scored each test actor (:func:`sononet.features.normalize.speaker_means`).

A speaker-normalised model (the default) removes a speaker's per-band mean before it classifies.
Without a speaker it removes the training speakers' average, which carries the training corpus's
recording level and voices: that costs accuracy and makes the answer follow the gain. When the
user knows who speaks, ``sononet label --speaker-from`` and ``EmotionClassifier.predict(...,
speakers=...)`` group the files and take each group's mean over the valid frames of all its
files' windows (a first pass), then score every file with its group's mean (the second).

Rules (``--speaker-from``):

- ``parent``: the folder a file is in (files directly in the input folder form the group ``.``);
- ``regex:PATTERN``: searched in the file's absolute path; the first capture group (else the
  whole match) names the speaker; a path it does not match has no group;
- ``column:NAME``: the ``NAME`` column of a manifest input (CSV/TSV/Parquet with ``path``).

A group of fewer than ``min_files`` readable files keeps the training speakers' default: its
own mean would hold its emotion too (one angry clip alone would be heard as that speaker's
normal voice). Sharding keeps each group in one shard, so each shard computes its own groups'
means and shards never wait on each other.
"""

from __future__ import annotations

import heapq
import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sononet.label.labeller import Labeller

# Fewest files whose own mean replaces the training default: on 24 held-out RAVDESS actors, groups
# of 8 random clips beat it (BiGRU +3.2 UA, CNN -0.1), smaller ones gained less or lost
# (docs/robustness.md, `sononet speaker-groups`).
MIN_GROUP_FILES = 8
REGEX_TIMEOUT_S = 0.1  # per path: a pattern that backtracks catastrophically is refused, not waited on
MAX_PATTERN_CHARS = 1000
RULES = ("parent", "regex:PATTERN", "column:NAME")


@dataclass(frozen=True)
class SpeakerRule:
    """How a file's speaker is read: ``parent``, ``regex`` (``arg``: the pattern) or ``column`` (``arg``: its name)."""

    kind: str
    arg: str = ""

    @classmethod
    def parse(cls, text: str) -> SpeakerRule:
        """``parent`` | ``regex:PATTERN`` | ``column:NAME`` -> a rule; a pattern that does not compile is refused."""
        kind, sep, arg = str(text).partition(":")
        if kind == "parent" and not sep:
            return cls("parent")
        if kind == "column" and arg.strip():
            return cls("column", arg.strip())
        if kind == "regex" and arg:
            if len(arg) > MAX_PATTERN_CHARS:
                raise ValueError(f"speaker regex is over {MAX_PATTERN_CHARS} characters. Found: {len(arg)}")
            _compile(arg)
            return cls("regex", arg)
        raise ValueError(f"speaker_from must be one of {', '.join(RULES)}. Found: {text!r}")

    def __str__(self) -> str:
        return self.kind if self.kind == "parent" else f"{self.kind}:{self.arg}"

    def keys(self, files: list[str], source: str | Path | None = None) -> list[str | None]:
        """Each file's speaker (None: no group). ``source``: the input as given (a folder names groups
        relative to itself; ``column`` reads its manifest)."""
        if self.kind == "parent":
            root = Path(source).resolve() if source is not None and Path(source).is_dir() else None
            return [_relative(os.path.dirname(f), root) for f in files]
        if self.kind == "column":
            if source is None:
                raise ValueError("speaker_from column:NAME needs a manifest input (CSV/TSV/Parquet with `path`)")
            from sononet.label.inputs import manifest_column

            values = manifest_column(source, self.arg)
            return [values.get(f) for f in files]
        pattern = _compile(self.arg)
        keys = [_search(pattern, f) for f in files]
        if files and not any(keys):
            raise ValueError(
                f"speaker regex '{self.arg}' matches none of the {len(files)} input paths (e.g. {files[0]}); "
                "check it against a path, or leave --speaker-from out"
            )
        return keys


def _compile(pattern: str) -> Any:
    import regex  # like re, plus a timeout on each search

    try:
        return regex.compile(pattern)
    except regex.error as e:
        raise ValueError(f"speaker regex '{pattern}' does not compile: {e}") from None


def _search(pattern: Any, path: str) -> str | None:
    try:
        m = pattern.search(path, timeout=REGEX_TIMEOUT_S)
    except TimeoutError:
        raise ValueError(
            f"speaker regex '{pattern.pattern}' took over {REGEX_TIMEOUT_S} s on {path}: it backtracks "
            "catastrophically (nested repeats such as (a|aa)+); write it without nested repeats"
        ) from None
    if m is None:
        return None
    key = m.group(1) if pattern.groups else m.group(0)
    return key or None


def _relative(folder: str, root: Path | None) -> str:
    if root is not None:
        rel = os.path.relpath(folder, root)
        if not rel.startswith(".."):
            return rel
    return folder


def assign_shards(keys: list[str | None], n: int) -> list[int]:
    """Shard of each file: a group's files all in one shard (largest groups first, each to the least
    loaded shard), files without a group one by one. Deterministic for the same input list."""
    if n == 1:
        return [0] * len(keys)
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key if key is not None else ("", i), []).append(i)
    owner = [0] * len(keys)
    load = [(0, s) for s in range(n)]  # (files, shard): a min-heap
    for members in sorted(groups.values(), key=lambda m: (-len(m), m[0])):
        files, shard = heapq.heappop(load)
        for i in members:
            owner[i] = shard
        heapq.heappush(load, (files + len(members), shard))
    return owner


@dataclass
class GroupMean:
    mean: np.ndarray  # (n_mels,) float32: what every file of the group loses
    files: int  # readable files that formed it
    frames: int  # valid log-mel frames it averages


class MeanAccumulator:
    """Per-group sums of log-mel over the valid frames of each file's windows: the first pass.

    Windows are featurised ``batch_size`` at a time, exactly as :meth:`Labeller.predict` sees
    them; a file counts only once all its windows were read, so a file that fails part-way adds
    nothing (label gives it an error row). Memory: one batch plus one (n_mels,) sum per group.
    """

    def __init__(self, lab: Labeller, length: int, batch_size: int) -> None:
        check_model(lab)
        self.lab, self.length, self.batch_size = lab, length, batch_size
        self._tokens = itertools.count()
        self._pending: list[tuple[int, np.ndarray]] = []  # (file token, window clip)
        self._partial: dict[int, list] = {}  # token -> [sum (n_mels,) float64, frames]
        self._key: dict[int, Any] = {}  # finished tokens -> group
        self.sums: dict[Any, np.ndarray] = {}
        self.frames: dict[Any, int] = {}
        self.files: dict[Any, int] = {}

    def add(self, key: Any, clips: Iterable[np.ndarray]) -> None:
        """One file's window clips for group ``key``; an AudioError while reading them drops the file."""
        from sononet.errors import AudioError

        token = next(self._tokens)
        self._partial[token] = [0.0, 0]
        try:
            for clip in clips:
                self._pending.append((token, clip))
                if len(self._pending) >= self.batch_size:
                    self._flush()
        except AudioError:
            del self._partial[token]
            return
        self._key[token] = key

    def _flush(self) -> None:
        from sononet.features.normalize import valid_frame_sums

        if self._pending:
            x, lengths = self.lab.stored_features([c for _, c in self._pending], self.length)  # (B, n_mels, T)
            sums, counts = valid_frame_sums(x.cpu().numpy(), lengths.numpy(), level=self.lab.level)
            for (token, _), s, c in zip(self._pending, sums, counts, strict=True):
                if token in self._partial:  # dropped files' windows are skipped
                    self._partial[token][0] = self._partial[token][0] + s
                    self._partial[token][1] += int(c)
            self._pending.clear()
        for token in [t for t in self._partial if t in self._key]:  # finished files: into their group
            total, frames = self._partial.pop(token)
            key = self._key[token]
            self.sums[key] = self.sums.get(key, 0.0) + total
            self.frames[key] = self.frames.get(key, 0) + frames
            self.files[key] = self.files.get(key, 0) + 1

    def means(self) -> dict[Any, GroupMean]:
        """Every group with at least one valid frame: its mean, files and frames."""
        self._flush()
        return {
            k: GroupMean((self.sums[k] / self.frames[k]).astype(np.float32), self.files[k], self.frames[k])
            for k in self.sums
            if self.frames[k] > 0
        }


def check_model(lab: Labeller) -> None:
    if not lab.takes_speaker:
        raise ValueError(
            f"model {lab.id} is not speaker-normalised (trained without speaker_norm, or a waveform "
            "model): it takes no speaker groups; leave --speaker-from / speakers= out"
        )


def shard_group_means(
    files: list[str], keys: list[str | None], lab: Labeller, window: tuple[int, int], batch_size: int,
    workers: int | None, path: Path, fingerprint: dict,
) -> dict[str, GroupMean]:  # fmt: skip
    """A label shard's first pass: the mean of each speaker group among its ``files`` (``keys``: each
    file's group, None for none), saved to ``path`` so that a rerun with the same fingerprint reads
    it back instead of decoding every file again. Holds one batch of windows plus a sum per group."""
    from concurrent.futures import ThreadPoolExecutor

    from sononet.device import decode_workers
    from sononet.io import atomic_write_json, read_json
    from sononet.label.engine import windows_of
    from sononet.label.windows import open_source, prefetch

    todo = [(f, k) for f, k in zip(files, keys, strict=True) if k is not None]
    if not todo:
        return {}
    if path.exists():
        doc = read_json(path)
        if isinstance(doc, dict) and doc.get("fingerprint") == fingerprint:
            groups = doc["groups"].items()
            return {k: GroupMean(np.asarray(g["mean"], np.float32), g["files"], g["frames"]) for k, g in groups}
    length, hop = window
    audio = lab.audio
    whole_s = lab.clip_span_s(length / audio.sample_rate)
    acc = MeanAccumulator(lab, length, batch_size)
    with ThreadPoolExecutor(max_workers=decode_workers(workers)) as pool:
        opened = prefetch(lambda item: open_source(item[0], audio, whole_s), todo, pool, 2 * batch_size)
        for src, (_, key) in zip(opened, todo, strict=True):
            if src.error is None:
                acc.add(key, (clip for _, clip in windows_of(src, length, hop, audio, whole_s)))
    means = acc.means()
    groups = {k: {"files": m.files, "frames": m.frames, "mean": m.mean.tolist()} for k, m in means.items()}
    atomic_write_json(path, {"fingerprint": fingerprint, "groups": groups})
    return means
