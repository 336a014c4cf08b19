"""EmoBox folds: train/test lists of the EmoBox benchmark, so numbers compare with its leaderboard.

About the protocol: EmoBox (Ma et al., Interspeech 2024, https://github.com/emo-box/EmoBox,
MIT licence) fixes train/test lists for 32 emotion corpora in 14 languages. Its metadata
folder ``data/<corpus>/`` holds ``fold_N/<corpus>_train_fold_N.jsonl`` and
``<corpus>_test_fold_N.jsonl`` (N from 1), one JSON object per clip::

    {"key": "cremad-1052-WSI-ANG-XX", "dataset": "cremad",
     "wav": "downloads/cremad/AudioWAV/1052_WSI_ANG_XX.wav", "sample_rate": 16000,
     "length": 2.30, "emo": "ANG", "channel": 1, ...}

There is no speaker field: EmoBox makes one fold per test speaker (4-6 speakers), speaker
groups (more), or, for corpora whose per-speaker emotion counts differ (CREMA-D among them),
ONE fold with a stratified random 25 % test set. That CREMA-D fold is speaker-dependent:
its 1,856 test clips come from the same 91 actors as its 5,586 train clips; the protocol
string says so when the data shows it.

SonoNet reads the lists and matches them to the corpus by clip id: an entry matches a clip
whose id (or the id's last path part) equals the entry's ``wav`` file stem (``1052_WSI_ANG_XX``,
what the CREMA-D and RAVDESS readers use) or its ``key``. Labels stay those of the data.
EmoBox has no validation lists (its recipes take a random 20 % of train); SonoNet needs one for
early stopping, so each fold carves 1/8 of the fold's train speakers out as validation,
seeded and speaker-disjoint from train (1/8 of the train clips at random when speakers are
unknown). Listed clips absent from the prepared data (missing files, or classes left out by
``--labels``) are counted in the protocol string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sononet.errors import NotFoundError, UserError
from sononet.sources import regular_input

VAL_FRACTION = 1 / 8  # of each fold's train speakers; EmoBox has no validation lists
_FOLD_RE = re.compile(r"^fold_(\d+)$")


@dataclass(frozen=True)
class Fold:
    number: int  # EmoBox's, from 1
    parts: dict[str, str]  # wav stem and key -> "train" | "test"
    n_listed: int
    n_test: int = 0  # entries of the test list

    def match(self, clip_id: str) -> str | None:
        """'train', 'test' or None: the clip id, or its last path part, against wav stems and keys."""
        return self.parts.get(clip_id) or self.parts.get(Path(clip_id).name)


def fold_dirs(meta_dir: str | Path) -> list[Path]:
    """``fold_1 .. fold_K`` under an EmoBox corpus folder, in order; raise with what to pass otherwise."""
    root = Path(meta_dir)
    if not root.is_dir():
        raise NotFoundError(f"EmoBox meta dir does not exist: {root} (pass data/<corpus> of an EmoBox checkout)")
    folds = sorted((int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _FOLD_RE.match(p.name)))
    if not folds:
        corpora = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("fold_*")))
        hint = f"; it holds corpora, pass one of: {', '.join(str(root / c) for c in corpora)}" if corpora else ""
        raise ValueError(f"{root} has no fold_N folders, so it is not an EmoBox corpus meta dir{hint}")
    numbers = [n for n, _ in folds]
    if numbers != list(range(1, len(folds) + 1)):
        raise ValueError(f"EmoBox folds in {root} must be fold_1..fold_K without gaps. Found: {numbers}")
    return [p for _, p in folds]


def _read_list(folder: Path, pattern: str) -> list[tuple[str, str]]:
    """(wav stem, key) per entry of the one list matching ``pattern`` in ``folder``."""
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise NotFoundError(f"expected one {pattern} in {folder}. Found: {[p.name for p in found]}")
    entries = []
    for i, line in enumerate(regular_input(found[0], "EmoBox list").read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            entries.append((Path(str(row["wav"])).stem, str(row["key"])))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{found[0]}:{i}: an EmoBox entry needs 'key' and 'wav'. Found: {line[:120]!r}") from e
    return entries


def read_folds(meta_dir: str | Path) -> list[Fold]:
    """Every fold's train and test lists under ``meta_dir`` (``data/<corpus>``)."""
    folds = []
    for i, d in enumerate(fold_dirs(meta_dir), 1):
        train = _read_list(d, f"*_train_fold_{i}.jsonl")
        test = _read_list(d, f"*_test_fold_{i}.jsonl")
        both = sorted({s for s, _ in train} & {s for s, _ in test})
        if both:
            raise ValueError(f"EmoBox fold {i} in {meta_dir} lists {len(both)} clips in train and test, e.g. {both[0]}")
        parts = {name: part for part, rows in (("train", train), ("test", test)) for row in rows for name in row}
        folds.append(Fold(i, parts, len(train) + len(test), len(test)))
    return folds


def emobox_split(
    meta_dir: str | Path, fold: int, clip_ids: Sequence[str], clip_speakers: Sequence[str | None], seed: int
) -> dict[str, str]:
    """Clip -> train/val/test for EmoBox fold ``fold`` (from 0); clips EmoBox does not list get none."""
    folds = read_folds(meta_dir)
    if not 0 <= fold < len(folds):
        raise ValueError(f"EmoBox meta dir {meta_dir} has {len(folds)} fold(s). Found fold index: {fold}")
    part = {cid: folds[fold].match(cid) for cid in clip_ids}
    speaker = dict(zip(clip_ids, clip_speakers))
    if not any(part.values()):
        example = next(iter(folds[fold].parts), "?")
        raise ValueError(
            f"no clip of the data is listed in EmoBox fold {fold + 1} of {meta_dir}: EmoBox names clips like "
            f"{example!r}; the data's clip ids look like {clip_ids[0]!r}"
            if clip_ids
            else "the data holds no clips"
        )
    train = sorted(c for c, p in part.items() if p == "train")
    n_test = sum(p == "test" for p in part.values())
    if not train or not n_test:  # a fold that cannot test (or train) must not report validation numbers only
        what = "test" if not n_test else "train"
        listed = folds[fold].n_test if what == "test" else folds[fold].n_listed - folds[fold].n_test
        raise UserError(
            f"EmoBox fold {fold + 1} of {meta_dir}: no clip of the data is in its {what} list ({listed} entries listed"
            f"{', none of them in the data' if listed else ''}); check the fold's {what} list and the data's clip ids"
        )
    rng = np.random.default_rng(seed)
    if all(speaker[c] is not None for c in train):
        spk = sorted({speaker[c] for c in train})  # type: ignore[type-var]
        if len(spk) < 2:
            raise ValueError(f"EmoBox fold {fold + 1}: train has {len(spk)} speaker(s); a validation speaker needs 2")
        n_val = max(1, int(round(len(spk) * VAL_FRACTION)))
        val_spk = {spk[i] for i in rng.permutation(len(spk))[:n_val]}
        val = {c for c in train if speaker[c] in val_spk}
    else:
        n_val = max(1, int(round(len(train) * VAL_FRACTION)))
        val = {train[i] for i in rng.permutation(len(train))[:n_val]}
    return {c: "val" if c in val else p for c, p in part.items() if p is not None}


def describe(meta_dir: str | Path, clip_ids: Sequence[str], clip_speakers: Sequence[str | None]) -> tuple[str, bool]:
    """(the protocol string, whether no fold tests a speaker it trains on), both from one read of
    the folds: which folds, how validation was made, and what the data shows about speakers."""
    folds = read_folds(meta_dir)
    name = Path(meta_dir).resolve().name
    speaker = dict(zip(clip_ids, clip_speakers))
    known = all(s is not None for s in clip_speakers)
    notes = [f"val: 1/8 of train {'speakers' if known else 'clips, random'}, seeded"]
    listed = sum(f.n_listed for f in folds)
    matched = 0
    shared = False
    for f in folds:
        part = {cid: f.match(cid) for cid in clip_ids}
        matched += sum(p is not None for p in part.values())
        test_spk = {speaker[c] for c, p in part.items() if p == "test"} - {None}
        shared |= bool(test_spk & {speaker[c] for c, p in part.items() if p == "train"})
    shared &= known  # speaker sharing is only knowable when every clip names its speaker
    if shared:
        notes.append("speaker-dependent: test speakers also in train")
    if listed > matched:
        notes.append(f"{listed - matched} listed clips not in the data")
    return f"emobox {name} folds ({'; '.join(notes)})", not shared
