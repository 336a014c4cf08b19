"""The inputs an exported model (``sononet export``) takes, computed from waveforms as ``sononet label`` does.

::

    info = json.load(open("exported/cnn/export.json"))
    onnx_model = onnxruntime.InferenceSession("exported/cnn/model.onnx")
    probs, logits = onnx_model.run(None, export_inputs([samples], sample_rate, info))

Each step (decode to mono at the model's rate, silence trimming, centre crop or right padding,
log-mel in dB against each clip's own peak, the shards' float16 rounding, valid lengths) is
the one :mod:`sononet.features.frontend` runs for training, labelling and the Python API;
``docs/export.md`` spells them out for implementations without SonoNet.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sononet.audio import AudioConfig
from sononet.features.mel import FeatureConfig
from sononet.jobs import from_dict


def _config(
    config: FeatureConfig | Mapping[str, Any], input_kind: str | None
) -> tuple[FeatureConfig, str, AudioConfig]:
    """export.json's content, a saved model's feature_config dict or a FeatureConfig -> (config, kind, audio).

    The audio config is export.json's ``audio_config`` (the decoder settings the model was trained
    with); without one, the defaults at the features' rate, as for a model saved before it existed.
    """
    if isinstance(config, FeatureConfig):
        return config, input_kind or "mel", AudioConfig.recorded(None, config.sample_rate)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be export.json's content or a FeatureConfig. Found: {type(config).__name__}")
    kind = input_kind or config.get("input_kind", "mel")
    if kind not in ("mel", "wave"):
        raise ValueError(f"input_kind must be 'mel' or 'wave'. Found: {kind!r}")
    fields = config.get("feature_config", config)
    known = {f.name for f in dataclasses.fields(FeatureConfig)}
    if not isinstance(fields, Mapping) or set(fields) - known:
        extra = sorted(set(fields) - known) if isinstance(fields, Mapping) else type(fields).__name__
        raise ValueError(f"feature_config must hold FeatureConfig's fields {sorted(known)}. Found: {extra}")
    fc = FeatureConfig(**fields)
    stored = config.get("audio_config")
    if stored is None:
        return fc, kind, AudioConfig.recorded(None, fc.sample_rate)
    if not isinstance(stored, Mapping):
        raise ValueError(f"audio_config must be a JSON object of AudioConfig's fields. Found: {stored!r}")
    audio = from_dict(AudioConfig, dict(stored), "audio_config")
    if audio.sample_rate != fc.sample_rate:
        raise ValueError(
            f"audio_config.sample_rate must equal feature_config.sample_rate ({fc.sample_rate}). "
            f"Found: {audio.sample_rate}"
        )
    return fc, kind, audio


def _decode(samples: Any, sample_rate: int, audio: AudioConfig) -> np.ndarray:
    """(time,) or (channels, time) at any rate -> (n,) float32 mono at the model's rate; AudioError if unusable."""
    from sononet.audio import decode_array

    return decode_array(np.asarray(samples), sample_rate, audio).samples


def _inputs(clips: list[np.ndarray], fc: FeatureConfig, kind: str, length: int) -> dict[str, np.ndarray]:
    from sononet.features.frontend import stored_features
    from sononet.features.mel import LogMel

    logmel = LogMel(fc, "torchaudio") if kind == "mel" else None
    x, lengths = stored_features(clips, fc, kind, logmel, length)
    return {"features": x.numpy().astype(np.float32), "lengths": lengths.numpy().astype(np.int64)}


def export_inputs(
    clips: Sequence[Any], sample_rate: int, config: FeatureConfig | Mapping[str, Any], input_kind: str | None = None
) -> dict[str, np.ndarray]:
    """One model input per clip, as ``sononet label`` scores a file that fits the model's window.

    Args:
        clips: waveforms, each ``(time,)`` or ``(channels, time)``, float in [-1, 1] or PCM integers.
        sample_rate: their rate; they are mixed to mono and resampled to the model's.
        config: ``export.json``'s content (or a feature config); its ``input_kind`` picks log-mel or waveform.

    Returns:
        ``{"features": (B, n_mels, frames) float32 log-mel dB or (B, samples) float32, "lengths": (B,) int64}``.
        A clip longer than the window loses its ends (centre crop, after silence trimming where the
        model was trained with it); :func:`export_windows` scores a long recording as ``label`` does.

    Raises:
        sononet.AudioError: a clip that cannot become one (silent, too short, non-finite...).
    """
    fc, kind, audio = _config(config, input_kind)
    if isinstance(clips, np.ndarray) and clips.ndim == 1:
        raise TypeError("clips is a list of waveforms: pass [samples] for one clip")
    return _inputs([_decode(c, sample_rate, audio) for c in clips], fc, kind, fc.clip_samples)


def export_windows(
    samples: Any,
    sample_rate: int,
    config: FeatureConfig | Mapping[str, Any],
    window_s: float | None = None,
    hop_s: float | None = None,
    input_kind: str | None = None,
) -> tuple[list[float], dict[str, np.ndarray]]:
    """A recording of any length as ``sononet label`` scores it: its windows' start times (s) and inputs.

    The mean of the model's ``probs`` over the windows is ``label``'s per-file row; each window's is a
    ``window`` row. ``window_s`` [default: the model's clip] and ``hop_s`` [default: the window] as
    ``sononet label --window/--hop``.
    """
    from sononet.features.frontend import check_window, clip_span_s, slice_windows, window_samples

    fc, kind, audio = _config(config, input_kind)
    check_window(window_s, hop_s)  # before the defaults: a given 0 or NaN must not fall back to one
    window_s = fc.clip_samples / fc.sample_rate if window_s is None else window_s
    hop_s = window_s if hop_s is None else hop_s
    length, hop = window_samples(window_s, hop_s, fc.sample_rate)
    mono = _decode(samples, sample_rate, audio)
    if mono.shape[0] <= round(clip_span_s(fc, window_s) * fc.sample_rate):
        windows = [(0, mono)]
    else:
        windows = list(slice_windows(mono, length, hop))
    starts = [start / fc.sample_rate for start, _ in windows]
    return starts, _inputs([clip for _, clip in windows], fc, kind, length)
