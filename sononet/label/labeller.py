"""The saved model and the exact feature path it was trained on, rebuilt for inference."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def model_id(model_dir: str | Path) -> str:
    """``<name>@<sha256[:12]>`` of every weights file, so rows say exactly which weights made them."""
    from sononet.features.shards import sha256_file

    directory = Path(model_dir)
    name = directory.parent.name if directory.name == "model" else directory.name
    h = hashlib.sha256()
    for p in sorted(directory.rglob("*.safetensors")):
        h.update(sha256_file(p).encode())
    return f"{name}@{h.hexdigest()[:12]}"


class Labeller:
    """A saved model plus the exact feature path it was trained on: clips -> class probabilities."""

    def __init__(self, model_dir: str | Path, device: str, mel_backend: str) -> None:
        import torch

        from sononet.features.mel import FeatureConfig, LogMel, pick_backend
        from sononet.models.saving import load_model
        from sononet.prepare import resolve_device

        self.device = resolve_device(device)
        model, doc = load_model(model_dir, map_location=self.device)
        meta = doc.get("meta") or {}
        missing = [k for k in ("labels", "feature_config", "input_kind") if k not in meta]
        if missing:
            raise ValueError(f"{model_dir}: saved meta lacks {missing}; cannot rebuild the training features")
        self.model, self.labels, self.kind = model, list(meta["labels"]), meta["input_kind"]
        self.features = FeatureConfig(**meta["feature_config"])
        self.norm = {k: torch.tensor(v, dtype=torch.float32) for k, v in (meta.get("norm") or {}).items()}
        self.mel_backend = None
        if self.kind == "mel":
            self.mel_backend, _ = pick_backend(mel_backend, self.device, self.features)
            self.logmel = LogMel(self.features, self.mel_backend).to(self.device)
        self.id = model_id(model_dir)

    def predict(self, clips: list[np.ndarray], length: int) -> np.ndarray:
        """Clips (each at most ``length`` samples) -> (B, n_classes) probabilities."""
        import torch

        from sononet.features.frontend import fixed_length, frame_lengths
        from sononet.features.normalize import model_inputs

        fc = self.features
        waves_np, n_valid_np = fixed_length(clips, fc, length)
        waves = torch.from_numpy(waves_np)  # (B, length)
        n_valid = torch.from_numpy(n_valid_np.astype(np.int64))
        with torch.no_grad():
            if self.kind == "mel":
                mel = self.logmel(waves.to(self.device))  # (B, n_mels, T)
                x = mel.to(getattr(torch, fc.mel_dtype)).float()  # the shards' storage rounding
                lengths = torch.from_numpy(frame_lengths(n_valid_np, fc, x.shape[-1]))
            else:
                x, lengths = waves, n_valid
            x = model_inputs(x, lengths, self.kind, self.norm, self.device)
            logits, _ = self.model(x, lengths.to(self.device))
            return torch.softmax(logits.float(), dim=-1).cpu().numpy()
