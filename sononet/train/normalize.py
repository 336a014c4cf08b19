"""Input normalisation with statistics from the training split only.

Log-mel features are standardised per mel band with the training clips' mean and std
(over valid frames), so nothing about validation or test clips leaks into the model.
Waveforms are standardised per clip over their valid samples, as
``Wav2Vec2FeatureExtractor(do_normalize=True)`` does, which needs no statistics.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from sononet.features.shards import shard_paths, tensor_numpy


def mel_band_stats(directory: str | Path, clip_ids: Collection[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std over the valid frames of ``clip_ids``, one shard at a time."""
    ids = pa.array(sorted(clip_ids), pa.string())
    total = sq = None
    count = 0
    for path in shard_paths(directory):
        table = pq.read_table(path, columns=["clip_id", "n_frames", "mel"])
        table = table.filter(pc.is_in(table["clip_id"], ids))
        if not table.num_rows:
            continue
        mel = tensor_numpy(table["mel"]).astype(np.float64)  # (N, n_mels, T)
        frames = table["n_frames"].to_numpy()
        mask = np.arange(mel.shape[-1])[None, :] < frames[:, None]  # (N, T)
        valid = mel * mask[:, None, :]
        s = valid.sum(axis=(0, 2))
        s2 = (valid * mel).sum(axis=(0, 2))
        total = s if total is None else total + s
        sq = s2 if sq is None else sq + s2
        count += int(mask.sum())
    if total is None or count == 0:
        raise ValueError(f"no training clips found in {directory} to compute normalisation statistics")
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean**2, 1e-8))
    return mean.astype(np.float32), std.astype(np.float32)


def normalize_mel(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, n_mels, T) dB -> standardised per band."""
    return (x - mean[None, :, None]) / std[None, :, None]


def normalize_wave(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, S) waveform -> zero mean, unit variance over each clip's valid samples; padding stays 0."""
    mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
    n = mask.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (x * mask).sum(dim=1, keepdim=True) / n
    var = (((x - mean) * mask) ** 2).sum(dim=1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + 1e-7) * mask
