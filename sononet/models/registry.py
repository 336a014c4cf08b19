"""Model names -> how to build them, so the trainer, CLI and loader treat every model alike.

Every model is an ``nn.Module`` with ``forward(x, lengths=None, labels=None, intensity=None)
-> (logits, loss | None)``, a ``config`` dataclass attribute and ``describe()``. The spec's
``input_kind`` says which batch column feeds it: ``"mel"`` (B, n_mels, T) or ``"wave"`` (B, S).

    model = build_model("bigru", n_classes=6, hidden=64)
    logits, loss = model(mel, lengths, labels)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from sononet.features.mel import FeatureConfig
from sononet.models.bigru import BiGRUConfig, EmotionBiGRU
from sononet.models.cnn import CNNConfig, EmotionCNN
from sononet.models.wav2vec2 import EmotionWav2Vec2, Wav2Vec2Config


@dataclass(frozen=True)
class ModelSpec:
    config_cls: type
    model_cls: type[nn.Module]
    input_kind: Literal["mel", "wave"]
    description: str


MODELS: dict[str, ModelSpec] = {
    "cnn": ModelSpec(CNNConfig, EmotionCNN, "mel", "4-block 2-D CNN over log-mel, masked mean pooling"),
    "bigru": ModelSpec(BiGRUConfig, EmotionBiGRU, "mel", "3-layer BiGRU over mel frames, attention pooling"),
    "wav2vec2": ModelSpec(
        Wav2Vec2Config, EmotionWav2Vec2, "wave", "pretrained speech encoder (wav2vec2/HuBERT/WavLM/Whisper)"
    ),
}


def model_names() -> list[str]:
    return sorted(MODELS)


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}. Valid names: {', '.join(model_names())}")
    return MODELS[name]


def make_config(name: str, n_classes: int, n_mels: int = FeatureConfig.n_mels, **overrides: Any) -> Any:
    """The model's config dataclass with ``overrides`` applied; unknown keys are an error, not ignored."""
    spec = get_spec(name)
    valid = {f.name for f in dataclasses.fields(spec.config_cls)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for model {name!r}. Valid: {sorted(valid)}")
    if spec.input_kind == "mel":
        overrides.setdefault("n_mels", n_mels)
    return spec.config_cls(n_classes=n_classes, **overrides)


def build_model(name: str, n_classes: int, n_mels: int = FeatureConfig.n_mels, **overrides: Any) -> nn.Module:
    """Build model ``name`` for ``n_classes`` labels. ``n_mels`` is ignored by waveform models."""
    return get_spec(name).model_cls(make_config(name, n_classes, n_mels, **overrides))
