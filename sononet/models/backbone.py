"""Pretrained speech encoders from ``transformers`` behind one interface: waveform + lengths -> frames.

Two families are supported:

* the wav2vec2 family (wav2vec2, HuBERT, WavLM, data2vec-audio, UniSpeech...): raw 16 kHz waveform
  plus an attention mask; frame counts come from the model's own conv arithmetic. Checkpoints
  with ``feat_extract_norm="group"`` (wav2vec2-base, HuBERT-base) normalise the first conv over
  the whole padded clip, so for them the amount of padding changes valid frames noticeably:
  keep one fixed padded length (3 s) for training and inference, as the pipeline does. "layer"
  checkpoints (wav2vec2-large-lv60, WavLM-large, the tiny test model) are exactly padding-free.
* Whisper encoders: log-mel ``input_features`` computed inside :meth:`SpeechEncoder.forward` with
  the checkpoint's own ``WhisperFeatureExtractor`` (per clip, trimmed to its valid length, padded
  to Whisper's fixed 30 s window). Only the encoder is kept; the decoder is dropped at load.

``transformers`` is imported inside functions so that ``sononet --help`` stays instant.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor, nn

from sononet.errors import UserError
from sononet.models.pooling import length_mask

if TYPE_CHECKING:
    from transformers import PreTrainedModel, Wav2Vec2Config, WhisperFeatureExtractor

_TRUE = {"1", "on", "yes", "true"}


class BackboneNotFoundError(UserError, OSError):
    """The encoder's weights are neither a local directory nor reachable on the hub."""


class UnsupportedBackboneError(UserError):
    """A checkpoint of an architecture SonoNet cannot use as its speech encoder."""


def is_offline() -> bool:
    """Read the offline switches at call time (huggingface_hub reads them once, at import)."""
    from huggingface_hub import constants

    env = (os.environ.get(k, "").lower() for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE or any(v in _TRUE for v in env)


def tiny_wav2vec2_config() -> Wav2Vec2Config:
    """A random-init wav2vec2 small enough for unit tests and the offline demo; never pretrained.

    Standard conv kernels/strides (20 ms frames), 16 channels: the conv front end on raw samples
    is nearly all of its cost, and 16 channels train 2.5x faster than 32 on one thread (0.53 s
    against 1.3 s per batch of 32 3-s clips). ``feat_extract_norm="layer"`` normalises each
    frame on its own, unlike wav2vec2-base's group norm over the whole clip, so padding cannot
    leak into valid frames.
    """
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        vocab_size=32,
    )


def _how_to_fix(source: str) -> str:
    return (
        f"Download it on a machine with internet (`hf download {source} --local-dir DIR`, or "
        f"`huggingface-cli download {source} --local-dir DIR` with older huggingface_hub), copy DIR "
        "here and pass it as the backbone (CLI: --w2v2 DIR; Python: Wav2Vec2Config(backbone=DIR))."
    )


def _resolve(source: str) -> tuple[str, bool]:
    """Return (where to load from, local files only). Missing local paths fail fast, without the hub."""
    path = Path(source).expanduser()
    if path.is_dir():
        return str(path), True
    if source.startswith(("/", ".", "~")) or source.count("/") > 1 or path.exists():
        raise BackboneNotFoundError(
            f"could not load backbone {source!r}: no such directory. It must be a hub id "
            f"('owner/name') or a local directory holding config.json and the weights. {_how_to_fix(source)}"
        )
    return source, is_offline()


class SpeechEncoder(nn.Module):
    """A transformers speech encoder returning every layer's frames and a valid-frame mask."""

    def __init__(self, model: PreTrainedModel, whisper_features: WhisperFeatureExtractor | None = None) -> None:
        super().__init__()
        self.model = model
        self.whisper_features = whisper_features  # only for Whisper: its log-mel front end
        self.is_whisper = whisper_features is not None
        if not self.is_whisper and not hasattr(model, "_get_feat_extract_output_lengths"):
            raise UnsupportedBackboneError(
                f"backbone type {model.config.model_type!r} is not supported: expected a wav2vec2-family "
                "encoder (wav2vec2, hubert, wavlm, data2vec-audio, unispeech) or a Whisper checkpoint."
            )

    @classmethod
    def load(cls, source: str | Path | None, layerdrop: float = 0.0) -> SpeechEncoder:
        """Pretrained weights from a hub id or local directory; None builds the tiny random-init model."""
        from huggingface_hub.errors import HFValidationError
        from transformers import AutoConfig, AutoModel, Wav2Vec2Model, WhisperFeatureExtractor, WhisperModel
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        if source is None:
            return cls(Wav2Vec2Model(tiny_wav2vec2_config()))
        source = str(source)
        where, local_only = _resolve(source)
        # Never run a model folder's own Python (auto_map): not even after an interactive prompt.
        opts = {"local_files_only": local_only, "trust_remote_code": False}
        try:
            config = AutoConfig.from_pretrained(where, **opts)
            if config.model_type == "whisper":
                config.encoder_layerdrop = layerdrop
                features = WhisperFeatureExtractor.from_pretrained(where, **opts)
                if "WhisperEncoder" in (config.architectures or []):  # saved by us: encoder only
                    model = WhisperEncoder.from_pretrained(where, config=config, **opts)
                else:
                    full = WhisperModel.from_pretrained(where, config=config, **opts)
                    model = full.get_encoder()
                return cls(model, features)
            config.layerdrop = layerdrop
            model = AutoModel.from_pretrained(where, config=config, **opts)
        except (OSError, HFValidationError) as e:
            hint = "incomplete directory?" if Path(where).is_dir() else "offline?"
            raise BackboneNotFoundError(f"could not load {source!r} ({hint}). {_how_to_fix(source)}") from e
        except ValueError as e:  # after HFValidationError, a ValueError too
            if "custom code" not in str(e):
                raise
            raise ValueError(
                f"{source!r} needs its own Python code to load (transformers' trust_remote_code); SonoNet never "
                "runs code from a model folder. Use a checkpoint of a standard transformers architecture"
            ) from None
        return cls(model)

    @property
    def hidden_size(self) -> int:
        c = self.model.config
        return c.d_model if self.is_whisper else c.hidden_size

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.layers if self.is_whisper else self.model.encoder.layers

    def freeze_feature_encoder(self) -> None:
        """Freeze the convolutional front end (waveform or mel -> frames)."""
        if self.is_whisper:
            self.model.conv1.requires_grad_(False)
            self.model.conv2.requires_grad_(False)
            return
        fe = self.model.feature_extractor
        if hasattr(fe, "_freeze_parameters"):  # also stops it marking its input as requiring grad
            fe._freeze_parameters()
        else:
            fe.requires_grad_(False)

    def freeze_below(self, k: int) -> None:
        """Freeze the first ``k`` transformer layers and everything feeding them (front end, embeddings)."""
        self.freeze_feature_encoder()
        self.model.requires_grad_(False)
        for layer in self.layers[k:]:
            layer.requires_grad_(True)
        # The final layer norm sits above the layers in Whisper and in "stable layer norm" wav2vec2s.
        if self.is_whisper:
            self.model.layer_norm.requires_grad_(True)
        elif getattr(self.model.config, "do_stable_layer_norm", False):
            self.model.encoder.layer_norm.requires_grad_(True)

    def frame_lengths(self, lengths: Tensor, n_frames: int) -> Tensor:
        """Valid samples (B,) -> valid encoder frames (B,), each in [1, n_frames]."""
        if self.is_whisper:  # mel hop, then conv2's stride 2
            per_frame = self.whisper_features.hop_length * self.model.conv2.stride[0]
            out = (lengths + per_frame - 1) // per_frame
        else:
            out = self.model._get_feat_extract_output_lengths(lengths)
        return out.clamp(min=1, max=n_frames)

    def forward(self, wave: Tensor, lengths: Tensor, all_layers: bool = False) -> tuple[tuple[Tensor, ...], Tensor]:
        """Waveform (B, S) and valid samples (B,) -> (frames per layer, each (B, F, H); mask (B, F)).

        With ``all_layers`` the tuple holds the embedding output and every layer (n_layers + 1),
        otherwise only the last layer.
        """
        if self.is_whisper:
            clips = [w[:n].detach().float().cpu().numpy() for w, n in zip(wave, lengths.tolist())]
            feats = self.whisper_features(
                clips, sampling_rate=self.whisper_features.sampling_rate, return_tensors="pt", device=str(wave.device)
            )
            mel = feats["input_features"].to(device=wave.device, dtype=wave.dtype)  # (B, n_mels, 3000)
            out = self.model(mel, output_hidden_states=all_layers)
        else:
            if int(self.model._get_feat_extract_output_lengths(wave.shape[1])) < 1:
                raise ValueError(f"waveform too short for the conv front end. Found {wave.shape[1]} samples")
            sample_mask = length_mask(lengths, wave.shape[1]).long()  # (B, S)
            out = self.model(wave, attention_mask=sample_mask, output_hidden_states=all_layers)
        hidden = tuple(out.hidden_states) if all_layers else (out.last_hidden_state,)  # each (B, F, H)
        n_frames = hidden[-1].shape[1]
        return hidden, length_mask(self.frame_lengths(lengths, n_frames), n_frames)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the encoder so ``from_pretrained(directory)`` (ours or transformers') rebuilds it offline."""
        self.model.save_pretrained(directory)
        if self.whisper_features is not None:
            self.whisper_features.save_pretrained(directory)
