"""Model inputs from stored features: normalisation with statistics from the training split only.

Log-mel features are standardised per mel band with the training clips' mean and std (over
valid frames), so nothing about validation or test clips leaks into the model. With
``per_clip`` each clip's own per-band mean (over its valid frames) is removed first, as in
cepstral mean normalisation: what a microphone, a room or a voice adds to every frame of a
clip goes, what changes within the clip (the prosody) stays. Waveforms are standardised per
clip over their valid samples, as ``Wav2Vec2FeatureExtractor(do_normalize=True)`` does.

With speaker normalisation (``TrainConfig.speaker_norm``, the default) each clip first loses
its speaker's per-band mean, taken over the valid frames of all of that speaker's clips in the
set at hand (:func:`speaker_means`): what is constant in a voice (vocal tract, habitual
level, microphone) goes, how this clip departs from the speaker's usual self stays. It needs no
labels, only which clips share a speaker, so test speakers are normalised by their own
unlabelled audio, as in speaker-independent SER practice (Busso et al. 2011). It assumes each
speaker's clips span several emotions; a speaker heard in one emotion only loses part of it.
Where the speaker is unknown (``sononet label``, the Python API, ONNX export) the offset is the
training speakers' average (``speaker_default``), which costs accuracy: see results/ravdess.

With level normalisation (``TrainConfig.level_norm``) each clip first loses one number, its
level (:func:`clip_level`: the dB of its mean mel power over its valid frames), before anything
else. A gain on the waveform adds the same dB to every cell of a clip's log-mel (``top_db`` and
silence trimming are relative to the clip's own peak), so after this step the same speech at
-20 dB, or peak-normalised, gives the model the same input: spectral shape, spectral tilt and the
clip's own dynamics stay, its absolute recording level goes.

Training, evaluation and labelling all call :func:`model_inputs` with one :class:`Normalizer`,
which training builds from its statistics and a saved model rebuilds from the ``norm`` dict it
carries, so a saved model's inputs are rebuilt exactly.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from sononet.features.shards import shard_paths, shard_tensor


def clip_level(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, n_mels, T) log-mel dB and valid frames (B,) -> each clip's level in dB, (B,).

    The dB of the clip's mean mel power over its valid frames: loud frames dominate it, so
    pauses inside the clip barely move it, and a gain of g dB on the waveform moves it by g.
    """
    valid = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]  # (B, T)
    cells = (x * (math.log(10) / 10)).masked_fill(~valid[:, None, :], -math.inf)  # ln(power)
    n = (valid.sum(-1).clamp(min=1) * x.shape[-2]).to(x.dtype)  # valid cells per clip
    level = (torch.logsumexp(cells.flatten(1), dim=1) - torch.log(n)) * (10 / math.log(10))
    return torch.where(valid.any(-1), level, torch.zeros_like(level))  # a clip with no valid frame keeps its dB


def remove_level(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, n_mels, T) log-mel dB -> the same minus each clip's :func:`clip_level`."""
    return x - clip_level(x, lengths)[:, None, None]


def _mel_tables(directory: str | Path, clip_ids: Collection[str], columns: list[str], level: bool = False):
    """(table, (N, n_mels, T) float64 log-mel, (N, T) valid-frame mask) per shard holding any of ``clip_ids``;
    with ``level`` each clip's level removed (:func:`remove_level`)."""
    ids = pa.array(sorted(clip_ids), pa.string())
    for path in shard_paths(directory):
        table = pq.read_table(path, columns=["clip_id", "n_frames", "mel", *columns])
        table = table.filter(pc.is_in(table["clip_id"], ids))
        if table.num_rows:
            mel = shard_tensor(table, "mel").astype(np.float64)
            frames = table["n_frames"].to_numpy()
            if level:
                mel = remove_level(torch.from_numpy(mel), torch.from_numpy(frames.astype(np.int64))).numpy()
            yield table, mel, np.arange(mel.shape[-1])[None, :] < frames[:, None]


def valid_frame_sums(mel: np.ndarray, n_frames: np.ndarray, level: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(N, n_mels, T) log-mel and (N,) valid frames -> (N, n_mels) float64 sums over each clip's
    valid frames (each clip's level removed first with ``level``), and the (N,) frame counts: the
    pieces of any mean over clips."""
    if level:
        mel = remove_level(torch.from_numpy(np.asarray(mel, np.float64)), torch.as_tensor(n_frames)).numpy()
    mask = np.arange(mel.shape[-1])[None, :] < np.asarray(n_frames)[:, None]  # (N, T)
    return (mel.astype(np.float64) * mask[:, None, :]).sum(-1), mask.sum(-1)


@dataclass
class SpeakerMeans:
    """Which speaker each clip has, and each speaker's per-band log-mel mean."""

    speaker_of: dict[str, str]  # clip_id -> speaker ("" where unknown)
    means: dict[str, np.ndarray]  # speaker -> (n_mels,) float32

    def offsets(self) -> dict[str, np.ndarray]:
        """clip_id -> its speaker's mean: what each clip loses before the model sees it."""
        return {cid: self.means[spk] for cid, spk in self.speaker_of.items()}

    def average(self, clip_ids: Collection[str]) -> np.ndarray:
        """The mean over the distinct speakers of ``clip_ids``, each speaker weighted once."""
        speakers = sorted({self.speaker_of[c] for c in clip_ids})
        return np.mean([self.means[s] for s in speakers], axis=0).astype(np.float32)


def speaker_means(directory: str | Path, clip_ids: Collection[str], level: bool = False) -> SpeakerMeans:
    """Each speaker's mean over the valid frames of its clips among ``clip_ids`` (each clip's
    level removed first with ``level``).

    Clips without a speaker are pooled as one unknown speaker (""), which for a corpus
    without speakers is a plain global mean.
    """
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    speaker_of: dict[str, str] = {}
    for table, mel, mask in _mel_tables(directory, clip_ids, ["speaker"], level):
        clip_sums, clip_frames = valid_frame_sums(mel, mask.sum(-1))  # (N, n_mels), (N,)
        for cid, spk, total, n in zip(
            table["clip_id"].to_pylist(), table["speaker"].to_pylist(), clip_sums, clip_frames, strict=True
        ):
            spk = spk or ""
            speaker_of[cid] = spk
            sums[spk] = sums[spk] + total if spk in sums else total
            counts[spk] = counts.get(spk, 0) + int(n)
    if not speaker_of:
        raise ValueError(f"none of the {len(clip_ids)} clips is in {directory}; cannot compute speaker means")
    means = {spk: (sums[spk] / max(counts[spk], 1)).astype(np.float32) for spk in sums}
    return SpeakerMeans(speaker_of, means)


def mel_band_stats(
    directory: str | Path,
    clip_ids: Collection[str],
    per_clip: bool = False,
    offsets: Mapping[str, np.ndarray] | None = None,
    level: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and std over the valid frames of ``clip_ids``, one shard at a time.

    With ``level`` each clip's level is removed first; with ``per_clip`` the statistics are
    those of the clip-mean-removed features, with ``offsets`` (clip_id -> (n_mels,),
    ``SpeakerMeans.offsets``) those of the features minus each clip's offset; the mean is then ~0.
    """
    total = sq = None
    count = 0
    for table, mel, mask in _mel_tables(directory, clip_ids, [], level):
        frames = mask.sum(-1)
        if offsets is not None:
            mel = mel - np.stack([offsets[c] for c in table["clip_id"].to_pylist()])[:, :, None]
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


FLAG = 1.0  # how a set flag (level, per_clip, speaker) is written in a saved model's ``norm``


@dataclass(frozen=True, eq=False)
class Normalizer:
    """A log-mel model's input normalisation: the training split's statistics and the steps it took.

    One object for training, evaluation, labelling and export, so the steps are read one way
    everywhere; ``from_meta``/``to_meta`` convert the ``norm`` dict a saved model carries.
    """

    mean: torch.Tensor  # (n_mels,) float32, per-band mean after the steps below
    std: torch.Tensor  # (n_mels,) float32
    level: bool = False  # each clip's level (:func:`clip_level`) removed first
    per_clip: bool = False  # each clip's own per-band mean removed before standardising
    speaker_default: torch.Tensor | None = None  # (n_mels,) the training speakers' average; None: no speaker norm

    @property
    def speaker(self) -> bool:
        """Speaker-normalised: each clip loses its speaker's mean (``speaker_default`` when unknown)."""
        return self.speaker_default is not None

    @classmethod
    def from_meta(cls, norm: Mapping[str, Any]) -> Normalizer:
        """A saved model's ``meta["norm"]``: ``mean``, ``std`` and, when set, ``level``, ``per_clip``,
        ``speaker`` with ``speaker_default`` (lists of numbers, flags 1.0)."""

        def tensor(key: str) -> torch.Tensor:
            return torch.tensor(norm[key], dtype=torch.float32)

        if "speaker" in norm and "speaker_default" not in norm:
            raise ValueError("norm has speaker set but no speaker_default to use for unknown speakers")
        return cls(
            mean=tensor("mean"),
            std=tensor("std"),
            level="level" in norm,
            per_clip=bool(norm.get("per_clip", 0.0)),
            speaker_default=tensor("speaker_default") if "speaker" in norm else None,
        )

    def to_meta(self) -> dict[str, Any]:
        """The ``norm`` dict saved with the model, keys in the order training has always written them."""
        norm: dict[str, Any] = {"mean": self.mean.tolist(), "std": self.std.tolist()}
        if self.level:
            norm["level"] = FLAG
        if self.per_clip:
            norm["per_clip"] = FLAG
        if self.speaker_default is not None:
            norm["speaker"] = FLAG
            norm["speaker_default"] = self.speaker_default.tolist()
        return norm

    def apply(
        self, x: torch.Tensor, lengths: torch.Tensor, device: torch.device, offsets: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, n_mels, T) log-mel dB and (B,) valid frames -> the model's input on ``device``.

        ``offsets``: (B, n_mels) each clip's speaker mean, for a speaker-normalised model; None:
        ``speaker_default`` for every clip (speakers unknown). Ignored by other models.
        """
        x = x.to(device, non_blocking=True)
        lengths = lengths.to(device)
        if self.level:
            x = remove_level(x, lengths)
        if self.speaker_default is not None:
            offsets = self.speaker_default.expand(x.shape[0], -1) if offsets is None else offsets
            x = x - offsets.to(device)[:, :, None]
        return normalize_mel(x, self.mean.to(device), self.std.to(device), lengths if self.per_clip else None)


def model_inputs(
    x: torch.Tensor,
    lengths: torch.Tensor,
    kind: str,
    normalizer: Normalizer | None,
    device: torch.device,
    offsets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Stored features of one batch -> what the model takes, on ``device``.

    Args:
        x: (B, n_mels, T) log-mel dB (``kind="mel"``) or (B, S) waveform (``kind="wave"``).
        lengths: (B,) valid frames or samples.
        normalizer: the saved statistics of a log-mel model; waveforms need none (None).
        offsets: (B, n_mels) each clip's speaker mean, for a speaker-normalised model; None:
            ``speaker_default`` for every clip (speakers unknown).
    """
    if kind == "mel":
        if normalizer is None:
            raise ValueError("a log-mel model needs its Normalizer (the training split's statistics)")
        return normalizer.apply(x, lengths, device, offsets)
    x = x.to(device, non_blocking=True)
    return normalize_wave(x, lengths.to(device))
