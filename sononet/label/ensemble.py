"""Several saved models labelling as one: the mean of their probabilities, as ``train-all``'s ensemble rows.

:class:`EnsembleLabeller` stands in for :class:`~sononet.label.labeller.Labeller` on the one
inference path (:mod:`sononet.label.engine`): the clips are decoded and windowed once, then every
member turns them into its own features (its log-mel or waveform, its normalisation, its speaker
default) and the window probabilities are averaged. A file's probability is the mean over its
windows, so it equals the mean of the members' file probabilities (both are linear), which is
what ``train-all`` averages. Members must agree on what a window is (sample rate, clip length,
silence trimming); a speaker mean serves every speaker-normalised member, so those must compute
the same log-mel.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sononet.errors import UserError
from sononet.label.labeller import DEMO_WARNING, Labeller


class EnsembleLabeller:
    """The members' :class:`Labeller` objects behind the attributes and methods the engine, label and the API use."""

    def __init__(self, folders: Sequence[Path], device: str, mel_backend: str) -> None:
        from sononet.features.frontend import clip_span_s

        self.members = [Labeller(f, device, mel_backend) for f in folders]
        lead = self.members[0]

        def window(lab: Labeller) -> tuple:
            f = lab.features
            return f.sample_rate, f.clip_samples, clip_span_s(f, f.clip_samples / f.sample_rate), lab.audio

        differ = [str(f) for f, m in zip(folders, self.members, strict=True) if window(m) != window(lead)]
        if differ:
            raise UserError(
                f"ensemble members must decode and cut the same windows (audio config, clip length, silence "
                f"trimming): {folders[0]} and {differ[0]} differ"
            )
        self.labels, self.device, self.features, self.audio = list(lead.labels), lead.device, lead.features, lead.audio
        self.kind = "ensemble"
        self.mel_backend = next((m.mel_backend for m in self.members if m.mel_backend), None)
        self.id = ensemble_id([m.id for m in self.members])
        self.provenance = {**lead.provenance, "pretrained": any(m.provenance["pretrained"] for m in self.members)}
        demo = any(m.warning for m in self.members)
        self.warning = DEMO_WARNING.format(id=self.id) if demo else None
        speakers = [m for m in self.members if m.takes_speaker]
        self._speaker_lead = speakers[0] if speakers else None
        self._speaker_problem = None
        logmel = [(m.features.hash(), m.level) for m in speakers]  # what a speaker mean is taken over
        mixed = [m for m, key in zip(speakers, logmel, strict=True) if key != logmel[0]]
        if mixed:
            self._speaker_problem = (
                f"ensemble members {speakers[0].id} and {mixed[0].id} are speaker-normalised on different log-mels: "
                "one speaker mean cannot serve both; score speakers with each member separately"
            )

    @property
    def takes_speaker(self) -> bool:
        """Some member is speaker-normalised: a speaker mean (or speaker groups) reaches those members."""
        return self._speaker_lead is not None

    def _lead(self) -> Labeller:
        if self._speaker_problem:
            raise UserError(self._speaker_problem)
        return self._speaker_lead or self.members[0]

    @property
    def level(self) -> bool:
        """The speaker-normalised members remove each clip's level: a speaker mean is taken the same way."""
        return self._lead().level if self.takes_speaker else False

    def stored_features(self, clips: list[np.ndarray], length: int) -> tuple[Any, Any]:
        """The features speaker means are taken from: those of the speaker-normalised members."""
        return self._lead().stored_features(clips, length)

    def check_speaker(self, speaker: Any) -> np.ndarray | None:
        if speaker is None:
            return None
        if not self.takes_speaker:
            raise ValueError(f"{self.id}: no member is speaker-normalised: it takes no speaker= mean")
        return self._lead().check_speaker(speaker)

    def clip_span_s(self, window_s: float) -> float:
        return self.members[0].clip_span_s(window_s)

    def embedding_dim(self) -> int:
        raise ValueError(f"{self.id} is an ensemble: it has no single clip vector; take embeddings from a member")

    def predict(
        self, clips: list[np.ndarray], length: int, embed: bool = False, speaker: np.ndarray | None = None,
        means: list[np.ndarray | None] | None = None,
    ) -> tuple[np.ndarray, None]:  # fmt: skip
        """((B, n_classes) mean of the members' probabilities, None): each member on its own features."""
        if embed:
            self.embedding_dim()
        if self.takes_speaker and (speaker is not None or (means and any(m is not None for m in means))):
            self._lead()  # a mean fits the speaker-normalised members only when they share the log-mel
        probs = [
            m.predict(clips, length, speaker=speaker, means=means)[0]
            if m.takes_speaker
            else m.predict(clips, length)[0]
            for m in self.members
        ]  # each (B, n_classes)
        return np.mean(np.stack(probs), axis=0, dtype=np.float64).astype(np.float32), None


def ensemble_id(member_ids: Sequence[str]) -> str:
    """``ensemble@<sha256[:12] of the member ids>/<corpus>/<init>`` (the first member's), like a model's id."""
    digest = hashlib.sha256("\n".join(member_ids).encode()).hexdigest()[:12]
    return f"ensemble@{digest}/{member_ids[0].split('/', 1)[1]}"


def open_labeller(
    model: str | os.PathLike | Sequence[str | os.PathLike], device: str, mel_backend: str
) -> Labeller | EnsembleLabeller:
    """A model folder, an ensemble folder or a list of model folders, ready for the engine."""
    from sononet.models.ensemble import member_folders

    folders, ensemble = member_folders(model)
    if ensemble:
        return EnsembleLabeller(folders, device, mel_backend)
    return Labeller(folders[0], device, mel_backend)
