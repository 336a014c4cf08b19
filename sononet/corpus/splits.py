"""Train/val/test splits that keep speakers apart.

Emotion models learn voices as readily as emotions, so a clip-level random split lets a
model score well by recognising actors it has already heard. The default here is
speaker-disjoint (no speaker in two splits), stratified by sex where it is known and
reproducible from a seed; ``k``-fold cross-validation groups by speaker. A random,
speaker-dependent split exists only as an explicit option and names itself
``random (speaker-dependent, leaky)`` so every table that uses it says so. ``emobox`` takes
the train/test lists of an EmoBox metadata folder (``sononet.corpus.emobox``), so results
compare with the EmoBox leaderboard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")
SPEAKER_DISJOINT = "speaker-disjoint"
RANDOM_LEAKY = "random (speaker-dependent, leaky)"


@dataclass
class SplitConfig:
    mode: str = "speaker"  # speaker | random | emobox; random leaks voices between splits
    train: float = 0.70  # fractions of speakers (of clips for mode=random)
    val: float = 0.15
    test: float = 0.15
    folds: int = 1  # >1: speaker-grouped k-fold cross-validation (needs >= 3)
    seed: int = 0  # same seed, same split
    emobox: str | None = None  # mode=emobox: EmoBox meta dir data/<corpus> with fold_N/ lists; sets folds

    def __post_init__(self) -> None:
        if self.mode not in ("speaker", "random", "emobox"):
            raise ValueError(f"split mode must be 'speaker', 'random' or 'emobox'. Found: {self.mode!r}")
        if (self.mode == "emobox") != bool(self.emobox):
            raise ValueError("split mode 'emobox' needs the EmoBox meta dir (--split emobox:DIR), and only it does")
        if self.mode == "emobox":
            from sononet.corpus.emobox import fold_dirs

            n = len(fold_dirs(self.emobox))  # type: ignore[arg-type]
            if self.folds not in (1, n):
                raise ValueError(
                    f"EmoBox meta dir {self.emobox} has {n} fold(s); leave --folds unset. Found: {self.folds}"
                )
            self.folds = n
            return
        total = self.train + self.val + self.test
        if min(self.train, self.val, self.test) <= 0 or abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"split fractions must be positive and sum to 1. Found: {self.train}/{self.val}/{self.test}"
            )
        if self.folds < 1 or self.folds == 2:
            raise ValueError(
                "folds must be 1 (one speaker-disjoint split: leave --folds unset) or >= 3 (each fold needs a test, "
                f"a validation and a training group). Found: {self.folds}"
            )

    @property
    def protocol(self) -> str:
        if self.mode == "emobox":
            return f"emobox folds of {self.emobox}"  # split_protocol() says more once it sees the data
        return SPEAKER_DISJOINT if self.mode == "speaker" else RANDOM_LEAKY


def split_protocol(cfg: SplitConfig, clip_ids: Sequence[str], clip_speakers: Sequence[str | None]) -> tuple[str, bool]:
    """(the split in words for every table, whether it keeps test speakers out of training).

    For EmoBox folds both come from the data: the folds are fixed lists, and some are speaker-dependent.
    """
    if cfg.mode != "emobox":
        return cfg.protocol, cfg.mode == "speaker"
    from sononet.corpus.emobox import describe

    assert cfg.emobox is not None  # SplitConfig checks it
    return describe(cfg.emobox, clip_ids, clip_speakers)


def _counts(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    n_val = int(round(n * fractions[1]))
    n_test = int(round(n * fractions[2]))
    return n - n_val - n_test, n_val, n_test


def speaker_split(speakers: dict[str, str | None], cfg: SplitConfig) -> dict[str, str]:
    """Speaker -> split, stratified by sex (speakers of unknown sex form their own stratum)."""
    if len(speakers) < 3:
        raise ValueError(
            f"a speaker-disjoint split needs at least 3 speakers (train, val, test). Found: {len(speakers)}; "
            "add speakers, or pass --split random to accept a leaky speaker-dependent split"
        )
    rng = np.random.default_rng(cfg.seed)
    fractions = (cfg.train, cfg.val, cfg.test)
    strata: dict[str, list[str]] = {}
    for spk, sex in sorted(speakers.items()):
        strata.setdefault(sex or "unknown", []).append(spk)
    queues = [[group[i] for i in rng.permutation(len(group))] for _, group in sorted(strata.items())]
    # Interleave the shuffled strata, always taking from the one furthest behind its share, so
    # the test and val speakers (taken first) mirror the corpus's sex balance.
    sizes = np.array([len(q) for q in queues], dtype=float)
    taken = np.zeros(len(queues))
    interleaved: list[str] = []
    while len(interleaved) < len(speakers):
        behind = np.where(taken < sizes, (taken + 1) / sizes, np.inf)
        k = int(np.argmin(behind))
        interleaved.append(queues[k][int(taken[k])])
        taken[k] += 1
    n_train, n_val, n_test = _counts(len(speakers), fractions)
    assignment = {
        spk: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, spk in enumerate(interleaved)
    }
    if min(n_train, n_val, n_test) < 1:
        raise ValueError(f"{len(speakers)} speakers are too few for fractions {fractions}; every split needs one")
    return assignment


def speaker_folds(speakers: dict[str, str | None], cfg: SplitConfig) -> list[dict[str, str]]:
    """k speaker-grouped folds: fold i tests on group i, validates on group i+1, trains on the rest."""
    k = cfg.folds
    if len(speakers) < k:
        raise ValueError(f"{k}-fold cross-validation needs at least {k} speakers. Found: {len(speakers)}")
    rng = np.random.default_rng(cfg.seed)
    groups: dict[str, int] = {}
    strata: dict[str, list[str]] = {}
    for spk, sex in sorted(speakers.items()):
        strata.setdefault(sex or "unknown", []).append(spk)
    offset = 0
    for key in sorted(strata):
        members = strata[key]
        for j, idx in enumerate(rng.permutation(len(members))):
            groups[members[idx]] = (offset + j) % k
        offset += len(members)
    return [
        {spk: "test" if g == fold else "val" if g == (fold + 1) % k else "train" for spk, g in groups.items()}
        for fold in range(k)
    ]


def random_split(clip_ids: Sequence[str], cfg: SplitConfig) -> dict[str, str]:
    """Clip -> split ignoring speakers. Leaky: only for corpora without speaker labels, on request."""
    if len(clip_ids) < 3:
        raise ValueError(f"a split needs at least 3 clips. Found: {len(clip_ids)}")
    rng = np.random.default_rng(cfg.seed)
    n_train, n_val, n_test = _counts(len(clip_ids), (cfg.train, cfg.val, cfg.test))
    order = [clip_ids[i] for i in rng.permutation(len(clip_ids))]
    return {cid: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, cid in enumerate(order)}


def assign_splits(
    clip_ids: Sequence[str],
    clip_speakers: Sequence[str | None],
    speaker_sex: dict[str, str | None],
    cfg: SplitConfig,
    fold: int = 0,
) -> dict[str, str]:
    """Clip -> split for one fold, by the configured protocol (EmoBox: only the clips its lists name)."""
    if cfg.mode == "emobox":
        from sononet.corpus.emobox import emobox_split

        return emobox_split(cfg.emobox, fold, clip_ids, clip_speakers, cfg.seed)  # type: ignore[arg-type]
    if cfg.mode == "random":
        if cfg.folds > 1:
            raise ValueError("k-fold cross-validation is speaker-grouped; use --split speaker with --folds")
        return random_split(list(clip_ids), cfg)
    unknown = sum(s is None for s in clip_speakers)
    if unknown:
        raise ValueError(
            f"{unknown} clips have no speaker, so a speaker-disjoint split is impossible; give the manifest "
            "a speaker column, or pass --split random to accept a leaky speaker-dependent split"
        )
    spk_split = speaker_folds(speaker_sex, cfg)[fold] if cfg.folds > 1 else speaker_split(speaker_sex, cfg)
    return {cid: spk_split[spk] for cid, spk in zip(clip_ids, clip_speakers)}  # type: ignore[index]
