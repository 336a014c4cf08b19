"""A saved model folder read once, into typed fields: the one reader of ``config.json``'s ``meta``.

Labelling, the Python API, export, evaluation and prediction all take a :class:`SavedModel`,
so what a folder means (its labels, input kind, features, decoder settings, normalisation) is
decided here and nowhere else. :func:`~sononet.models.saving.load_model` has already checked
every field's type and range (``config_check``); this adds the fields inference cannot do without.
The :class:`~sononet.features.normalize.Normalizer` lives beside the steps it applies, since
training builds one from its statistics before any folder exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sononet.audio import AudioConfig
from sononet.features.mel import FeatureConfig
from sononet.features.normalize import Normalizer
from sononet.models.card import provenance
from sononet.models.saving import load_model

REQUIRED_META = ("labels", "feature_config", "input_kind")  # what rebuilding the inputs needs


@dataclass
class SavedModel:
    """A saved model in eval mode and what its folder says about its inputs and origin."""

    folder: Path
    model: nn.Module
    doc: dict[str, Any]  # config.json as read
    labels: list[str]
    kind: str  # input kind: "mel" or "wave"
    features: FeatureConfig
    audio: AudioConfig
    normalizer: Normalizer | None  # a log-mel model's statistics; None for waveform models
    protocol: dict[str, Any] | None  # how it was trained and split (corpus.protocol.Protocol's dict)
    provenance: dict[str, Any]  # corpus, split, init (models.card.provenance)

    @property
    def meta(self) -> dict[str, Any]:
        return self.doc.get("meta") or {}

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> SavedModel:
        """Read ``folder`` (``load_model``'s checks first), with the weights on ``device``."""
        model, doc = load_model(folder, map_location=device)
        meta = doc.get("meta") or {}
        missing = [k for k in REQUIRED_META if k not in meta]
        if missing:
            raise ValueError(f"{folder}: saved meta lacks {missing}; cannot rebuild the training features")
        kind = meta["input_kind"]
        features = FeatureConfig(**meta["feature_config"])
        return cls(
            folder=Path(folder),
            model=model,
            doc=doc,
            labels=list(meta["labels"]),
            kind=kind,
            features=features,
            audio=AudioConfig.recorded(meta.get("audio_config"), features.sample_rate),
            normalizer=Normalizer.from_meta(meta.get("norm") or {}) if kind == "mel" else None,
            protocol=meta.get("protocol"),
            provenance=provenance(doc),
        )
