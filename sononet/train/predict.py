"""A trained model's class probabilities for clips of prepared shards: what train-all and evaluate score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sononet.features.normalize import model_inputs, speaker_means
from sononet.features.reader import ShardStream
from sononet.models.outputs import NonFiniteOutputError, is_distribution
from sononet.models.saved import SavedModel


@torch.no_grad()
def predict(
    saved: SavedModel,
    shards: str | Path,
    clip_ids: list[str],
    device: torch.device,
    batch_size: int = 64,
    known_speakers: bool = True,
) -> pd.DataFrame:
    """Class probabilities for ``clip_ids``: columns clip_id, true, pred, prob_<label>...

    A speaker-normalised model gets each speaker's mean over its clips among ``clip_ids``; with
    ``known_speakers=False`` the training speakers' average instead, as ``sononet label`` does.
    """
    labels, kind, norm = saved.labels, saved.kind, saved.normalizer
    model = saved.model.eval().to(device)
    offsets = None
    if norm is not None and norm.speaker and known_speakers:
        offsets = speaker_means(shards, clip_ids, level=norm.level).offsets()
    stream = ShardStream(shards, clip_ids, labels, kind, batch_size, shuffle=False, offsets=offsets)
    rows = []
    for batch in stream:
        x = model_inputs(batch.x, batch.lengths, kind, norm, device, batch.offsets)
        logits, _ = model(x, batch.lengths.to(device))
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        bad = np.flatnonzero(~is_distribution(probs))
        if bad.size:  # NaN argmaxes to the first class: never a prediction
            raise NonFiniteOutputError(f"clip {batch.clip_ids[bad[0]]} (and {bad.size - 1} more in its batch)")
        for cid, y, p in zip(batch.clip_ids, batch.labels.tolist(), probs):
            rows.append(
                {
                    "clip_id": cid,
                    "true": labels[y],
                    "pred": labels[int(p.argmax())],
                    **{f"prob_{lab}": float(q) for lab, q in zip(labels, p)},
                }
            )
    return pd.DataFrame(rows)
