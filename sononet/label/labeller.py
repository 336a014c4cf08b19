"""The saved model and the exact feature path it was trained on, rebuilt for inference."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

DEMO_WARNING = (
    "model {id} was trained on the synthetic demo corpus: its labels on real speech are not meaningful "
    "(train on real data first, e.g. `sononet train-all --data data/cremad`)"
)


def _slug(text: str) -> str:
    if ":" in text:  # "manifest:/data/x/meta.csv" -> "manifest-meta"
        kind, _, where = text.partition(":")
        text = f"{kind}-{Path(where).stem}"
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def model_id(model_dir: str | Path, doc: dict[str, Any]) -> str:
    """``<kind>@<sha256[:12]>/<corpus>/<init>``: which weights made a row, and what they learned from.

    The kind is the saved config's model (``cnn`` for a refit model in ``cnn/refit/model`` too),
    the hash covers every weights file, corpus and init come from the saved protocol, e.g.
    ``cnn@1f0c2a9b3d4e/demo-synthetic/scratch`` or ``wav2vec2@.../cremad/pretrained``.
    """
    from sononet.io import sha256_file
    from sononet.models.card import provenance

    h = hashlib.sha256()
    for p in sorted(Path(model_dir).rglob("*.safetensors")):
        h.update(sha256_file(p).encode())
    prov = provenance(doc)
    return f"{doc['model']}@{h.hexdigest()[:12]}/{_slug(prov['corpus'])}/{prov['init']}"


class Labeller:
    """A saved model plus the exact feature path it was trained on: clips -> class probabilities."""

    def __init__(self, model_dir: str | Path, device: str, mel_backend: str) -> None:
        from sononet.device import resolve_device
        from sononet.features.mel import LogMel, pick_backend
        from sononet.models.card import is_demo
        from sononet.models.saved import SavedModel

        self.device = resolve_device(device)
        self.saved = saved = SavedModel.load(model_dir, self.device)
        self.model, self.labels, self.kind = saved.model, saved.labels, saved.kind
        self.doc, self.provenance = saved.doc, saved.provenance
        self.features, self.audio, self.normalizer = saved.features, saved.audio, saved.normalizer
        self.mel_backend = None
        if self.kind == "mel":
            self.mel_backend, _ = pick_backend(mel_backend, self.device, self.features)
            self.logmel = LogMel(self.features, self.mel_backend).to(self.device)
        self.id = model_id(model_dir, saved.doc)
        self.warning = DEMO_WARNING.format(id=self.id) if is_demo(self.provenance) else None

    @property
    def takes_speaker(self) -> bool:
        """A speaker-normalised log-mel model: it removes a speaker's mean (a group's, or the training default)."""
        return self.normalizer is not None and self.normalizer.speaker

    @property
    def level(self) -> bool:
        """Each clip's level is removed before anything else: a speaker mean must be taken the same way."""
        return self.normalizer is not None and self.normalizer.level

    def embedding_dim(self) -> int:
        """D of the clip vectors: the input width of the model's emotion head."""
        from torch import nn

        return next(m.in_features for m in self.model.head.emotion.modules() if isinstance(m, nn.Linear))

    def clip_span_s(self, window_s: float) -> float:
        """Longest input scored as one clip (see :func:`sononet.features.frontend.clip_span_s`)."""
        from sononet.features.frontend import clip_span_s

        return clip_span_s(self.features, window_s)

    def check_speaker(self, speaker: Any) -> np.ndarray | None:
        """A speaker mean for :meth:`predict`: (n_mels,) finite numbers, for a speaker-normalised model only."""
        if speaker is None:
            return None
        if not self.takes_speaker:
            raise ValueError(f"{self.id} is not speaker-normalised: it takes no speaker= mean")
        x = speaker.detach().cpu().numpy() if hasattr(speaker, "detach") else np.asarray(speaker)
        if x.dtype.kind not in "iuf" or x.shape != (self.features.n_mels,) or not np.isfinite(x).all():
            raise ValueError(
                f"speaker= must be {self.features.n_mels} finite numbers (speaker_mean's result). "
                f"Found: shape {x.shape}, dtype {x.dtype}"
                + ("" if x.dtype.kind not in "iuf" or np.isfinite(x).all() else ", with NaN/Inf")
            )
        return x.astype(np.float32)

    def stored_features(self, clips: list[np.ndarray], length: int) -> tuple[Any, Any]:
        """Clips (each at most ``length`` samples) -> (stored features, valid lengths), as prepare makes them."""
        from sononet.features.frontend import stored_features

        return stored_features(clips, self.features, self.kind, getattr(self, "logmel", None), length)

    def predict(
        self, clips: list[np.ndarray], length: int, embed: bool = False, speaker: np.ndarray | None = None,
        means: list[np.ndarray | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
        """Clips (each at most ``length`` samples) -> ((B, n_classes) probabilities, (B, D) clip vectors or None).

        The clip vector is what the model's head sees: the pooled representation after the encoder.
        ``speaker``: the speaker's mean log-mel for a speaker-normalised model, (n_mels,) for every
        clip or (B, n_mels) one per clip; None: ``means``, each clip's own speaker mean or None for
        the training speakers' average (filled in here, so each model of an ensemble uses its own).
        """
        if speaker is None and means is not None:
            speaker = self.speaker_offsets(means)
        x, lengths = self.stored_features(clips, length)
        return self.forward(x, lengths, speaker, embed)

    def speaker_offsets(self, means: list[np.ndarray | None]) -> np.ndarray | None:
        """(B, n_mels) offsets for a batch: each clip's mean, the training default where it has none;
        None when no clip has one (the model then uses its default itself)."""
        if all(m is None for m in means):
            return None
        default = self.normalizer.speaker_default.numpy()
        return np.stack([default if m is None else m for m in means]).astype(np.float32)

    def forward(
        self, x: Any, lengths: Any, speaker: np.ndarray | None = None, embed: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`stored_features` output -> what :meth:`predict` returns; features computed once can
        be scored with several speaker offsets (the robustness suite does)."""
        import torch

        from sononet.features.normalize import model_inputs

        n = x.shape[0]
        offsets = None if speaker is None else torch.as_tensor(speaker, dtype=torch.float32).expand(n, -1)
        with torch.no_grad():
            x = model_inputs(x, lengths, self.kind, self.normalizer, self.device, offsets)
            pooled: list[torch.Tensor] = []
            hook = self.model.head.register_forward_pre_hook(lambda _m, args: pooled.append(args[0])) if embed else None
            try:
                logits, _ = self.model(x, lengths.to(self.device))
            finally:
                if hook is not None:
                    hook.remove()
            probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            return probs, pooled[0].float().cpu().numpy() if embed else None
