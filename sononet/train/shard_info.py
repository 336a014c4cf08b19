"""What a training run reads from prepared shards besides the features: the class labels and each clip's split."""

from __future__ import annotations

import pandas as pd

from sononet.corpus.splits import SplitConfig, assign_splits


def shard_labels(manifest: dict, meta: pd.DataFrame) -> list[str]:
    """The corpus's labels that the shards hold, in the corpus's order; a classifier needs two."""
    present = set(meta.label)
    if len(present) < 2:
        raise ValueError(f"the data holds one class only ({sorted(present)}); a classifier needs at least two labels")
    return [lab for lab in manifest["corpus"]["labels"] if lab in present]


def shard_splits(meta: pd.DataFrame, cfg: SplitConfig, fold: int = 0) -> dict[str, str]:
    """Clip -> split from the shards' clip_id, speaker and sex columns."""
    speaker_sex = meta.dropna(subset=["speaker"]).groupby("speaker").sex.first().to_dict()
    return assign_splits(list(meta.clip_id), list(meta.speaker), speaker_sex, cfg, fold)
