"""Model inputs from stored features: normalisation with statistics from the training split only.

Log-mel features are standardised per mel band with the training clips' mean and std (over
valid frames), so nothing about validation or test clips leaks into the model. With
``per_clip`` each clip's own per-band mean (over its valid frames) is removed first, as in
cepstral mean normalisation: what a microphone, a room or a voice adds to every frame of a
clip goes, what changes within the clip (the prosody) stays. Waveforms are standardised per
clip over their valid samples, as ``Wav2Vec2FeatureExtractor(do_normalize=True)`` does.

Training, evaluation and labelling all call :func:`model_inputs`, so a saved model's inputs
are rebuilt exactly from the ``norm`` dict it carries.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from sononet.features.shards import shard_paths, shard_tensor


def mel_band_stats(
    directory: str | Path, clip_ids: Collection[str], per_clip: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std over the valid frames of ``clip_ids``, one shard at a time.

    With ``per_clip`` the statistics are those of the clip-mean-removed features (the mean is ~0).
    """
    ids = pa.array(sorted(clip_ids), pa.string())
    total = sq = None
    count = 0
    for path in shard_paths(directory):
        table = pq.read_table(path, columns=["clip_id", "n_frames", "mel"])
        table = table.filter(pc.is_in(table["clip_id"], ids))
        if not table.num_rows:
            continue
        mel = shard_tensor(table, "mel").astype(np.float64)  # (N, n_mels, T)
        frames = table["n_frames"].to_numpy()
        mask = np.arange(mel.shape[-1])[None, :] < frames[:, None]  # (N, T)
        if per_clip:
            mel = mel - (mel * mask[:, None, :]).sum(-1, keepdims=True) / np.maximum(frames, 1)[:, None, None]
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


def clip_mean(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, n_mels, T) and valid frames (B,) -> each clip's per-band mean over its valid frames, (B, n_mels, 1)."""
    mask = (torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)  # (B, T)
    return (x * mask[:, None, :]).sum(-1, keepdim=True) / mask.sum(-1).clamp(min=1)[:, None, None]


def normalize_mel(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, n_mels, T) dB -> standardised per band; minus each clip's own mean first when ``lengths`` is given."""
    if lengths is not None:
        x = x - clip_mean(x, lengths)
    return (x - mean[None, :, None]) / std[None, :, None]


def normalize_wave(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, S) waveform -> zero mean, unit variance over each clip's valid samples; padding stays 0."""
    mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
    n = mask.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (x * mask).sum(dim=1, keepdim=True) / n
    var = (((x - mean) * mask) ** 2).sum(dim=1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + 1e-7) * mask


def model_inputs(
    x: torch.Tensor, lengths: torch.Tensor, kind: str, norm: dict[str, torch.Tensor], device: torch.device
) -> torch.Tensor:
    """Stored features of one batch -> what the model takes, on ``device``.

    Args:
        x: (B, n_mels, T) log-mel dB (``kind="mel"``) or (B, S) waveform (``kind="wave"``).
        lengths: (B,) valid frames or samples.
        norm: the saved statistics: ``mean``, ``std`` (n_mels,) and, when set, ``per_clip``.
    """
    x = x.to(device, non_blocking=True)
    lengths = lengths.to(device)
    if kind == "mel":
        per_clip = bool(norm.get("per_clip", torch.tensor(0.0)).item())
        return normalize_mel(x, norm["mean"].to(device), norm["std"].to(device), lengths if per_clip else None)
    return normalize_wave(x, lengths)
