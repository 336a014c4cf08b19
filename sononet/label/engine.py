"""The one inference path: sources -> windows -> batched forward passes -> per-window and per-file scores.

``sononet label`` and :class:`sononet.EmotionClassifier` both run :func:`score_sources`, so a file
gets the same probabilities from either, bit for bit when the batches are composed alike.
Memory: one batch of windows plus the sources whose windows are still in it; a long file is
streamed (files) or sliced (arrays) one window at a time.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from sononet.audio import MAX_CLIP_S
from sononet.label.windows import Source, stream_windows

if TYPE_CHECKING:
    from sononet.audio import AudioConfig
    from sononet.label.labeller import Labeller

MIN_WINDOW_S = 1.0  # under 1 s a window holds too little prosody (and too few frames for the CNN)
MAX_WINDOW_S = MAX_CLIP_S  # one emotional state at most; every shorter input is padded to the window in memory
# A finer hop than 10 ms only repeats windows (the log-mel frame step is 32 ms) at a cost of one
# forward pass per hop; it also keeps every hop >= 40 samples at the lowest accepted rate (4 kHz).
MIN_HOP_S = 0.01


def check_window(window_s: object, hop_s: object) -> None:
    """The one check of window and hop, in seconds, for ``label``, its config and the API.

    None leaves a value to its default (checked by :func:`window_samples` once it is known). Bools,
    NaN and inf are no durations; a hop finer than ``MIN_HOP_S`` or a window outside
    ``MIN_WINDOW_S``-``MAX_WINDOW_S`` is refused.
    """
    seconds = {}
    for name, value in (("window_s", window_s), ("hop_s", hop_s)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number of seconds. Found: {value!r}")
        seconds[name] = float(value)
    window, hop = seconds.get("window_s"), seconds.get("hop_s")
    if window is not None and not window >= MIN_WINDOW_S:
        raise ValueError(f"need window_s >= {MIN_WINDOW_S} (seconds). Found: {window_s}")
    if window is not None and not window <= MAX_WINDOW_S:
        raise ValueError(f"need window_s <= {MAX_WINDOW_S} (seconds), one emotional state. Found: {window_s}")
    if hop is not None and not MIN_HOP_S <= hop <= (MAX_WINDOW_S if window is None else window):
        raise ValueError(f"need 0 < hop_s <= window_s (seconds), hop_s >= {MIN_HOP_S}. Found: {hop_s}, {window_s}")


def window_samples(window_s: float, hop_s: float, sample_rate: int) -> tuple[int, int]:
    """(window, hop) in samples at ``sample_rate``, each at least one: the windowing loops step in
    samples, so a hop that rounds to 0 would never end, whatever the seconds said."""
    check_window(window_s, hop_s)
    length, step = round(window_s * sample_rate), round(hop_s * sample_rate)
    if length < 1 or not 1 <= step <= length:
        raise ValueError(f"window and hop must be at least one sample at {sample_rate} Hz. Found: {length}, {step}")
    return length, step


def resolve_window(lab: Labeller, window_s: float | None, hop_s: float | None) -> tuple[float, float, tuple[int, int]]:
    """(window_s, hop_s, (window, hop) in samples); None = the model's clip length and no overlap."""
    sr = lab.features.sample_rate
    check_window(window_s, hop_s)  # before the defaults: a given 0 or NaN must not fall back to one
    window_s = window_s if window_s is not None else lab.features.clip_samples / sr
    hop_s = hop_s if hop_s is not None else window_s
    return window_s, hop_s, window_samples(window_s, hop_s, sr)


def slice_windows(samples: np.ndarray, length: int, hop: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, clip) windows of an in-memory signal, placed exactly as :func:`stream_windows` places them.

    Starts 0, hop, 2 hop... while a whole window fits; then one window aligned to the end when
    audio is left over, so every window is real audio. A signal shorter than ``length`` is one clip.
    """
    total, start, end = samples.shape[0], 0, 0
    while start + length <= total:
        yield start, samples[start : start + length]
        end, start = start + length, start + hop
    if end == 0:
        yield 0, samples
    elif end < total:
        yield total - length, samples[total - length :]


def windows_of(
    src: Source, length: int, hop: int, audio: AudioConfig, whole_s: float | None = None
) -> Iterable[tuple[int, np.ndarray]]:
    """A source's windows: one clip up to ``whole_s`` (default: the window), else ``length`` every ``hop``."""
    whole_s = whole_s or length / audio.sample_rate
    if src.samples is not None:
        if src.duration_s is None or src.duration_s <= whole_s:
            return [(0, src.samples)]
        return slice_windows(src.samples, length, hop)
    return stream_windows(src, length, hop, audio)


def score_sources(
    sources: Iterable[Source], lab: Labeller, length: int, hop: int, batch_size: int, audio: AudioConfig,
    embed: bool = False, speaker: np.ndarray | None = None,
) -> Iterator[Source]:  # fmt: skip
    """Fill each source's ``windows``, ``probs`` (and ``embeddings``); yield sources in input order once scored.

    A source whose stream fails part-way keeps ``error`` set and its scored windows are ignored.
    ``speaker``: the speaker's mean log-mel for every window (see ``Labeller.predict``); None: each
    source's own ``speaker_mean`` (its speaker group's), else the training speakers' default.
    """
    from sononet.errors import AudioError

    whole_s = lab.clip_span_s(length / audio.sample_rate)  # longest input scored as one clip
    pending: list[tuple[Source, np.ndarray]] = []
    waiting: deque[Source] = deque()  # sources with windows still in `pending`, in input order

    def flush() -> None:
        if pending:
            offsets = speaker if speaker is not None else offsets_for([s.speaker_mean for s, _ in pending], lab)
            probs, emb = lab.predict([c for _, c in pending], length, embed=embed, speaker=offsets)
            for i, (src, _) in enumerate(pending):
                src.probs.append(probs[i])
                if emb is not None:
                    src.embeddings.append(emb[i])
            pending.clear()

    for src in sources:
        waiting.append(src)
        if src.error is None:
            clips = windows_of(src, length, hop, audio, whole_s)
            src.samples = None  # the pending batch holds it now; finished sources must not keep audio
            try:
                for start, clip in clips:
                    src.windows.append((start, min(clip.shape[0], length)))
                    pending.append((src, clip))
                    if len(pending) >= batch_size:
                        flush()
            except AudioError as e:
                src.error = e
        oldest = pending[0][0] if pending else None  # pending sources are a suffix of `waiting`
        while waiting and waiting[0] is not oldest:
            yield waiting.popleft()
    flush()
    while waiting:
        yield waiting.popleft()


def file_probs(src: Source) -> np.ndarray:
    """(n_classes,) float32: the mean of the file's window probabilities (one window: that window's)."""
    return np.stack(src.probs).mean(axis=0)


def file_embedding(src: Source) -> np.ndarray:
    """(D,) float32: the mean of the file's window embeddings."""
    return np.stack(src.embeddings).mean(axis=0)


def offsets_for(means: list[np.ndarray | None], lab: Labeller) -> np.ndarray | None:
    """(B, n_mels) offsets for a batch: each window's group mean, the training default where it has none;
    None when no window has one (the model then uses its default itself)."""
    if all(m is None for m in means):
        return None
    default = lab.norm["speaker_default"].numpy()
    return np.stack([default if m is None else m for m in means]).astype(np.float32)
