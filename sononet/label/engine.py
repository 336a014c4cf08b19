"""The one inference path: sources -> windows -> batched forward passes -> per-window and per-file scores.

``sononet label`` and :class:`sononet.EmotionClassifier` both run :func:`score_sources`, so a file
gets the same probabilities from either, bit for bit when the batches are composed alike.
Memory: one batch of windows plus the sources whose windows are still in it; a long file is
streamed (files) or sliced (arrays) one window at a time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

# The window rules live beside the front end they feed; label, its config and the API use them from here.
from sononet.features.frontend import MIN_WINDOW_S as MIN_WINDOW_S
from sononet.features.frontend import check_window as check_window
from sononet.features.frontend import slice_windows, window_samples
from sononet.label.windows import Source, stream_windows

if TYPE_CHECKING:
    from sononet.audio import AudioConfig
    from sononet.label.labeller import Labeller


def resolve_window(lab: Labeller, window_s: float | None, hop_s: float | None) -> tuple[float, float, tuple[int, int]]:
    """(window_s, hop_s, (window, hop) in samples); None = the model's clip length and no overlap."""
    sr = lab.features.sample_rate
    check_window(window_s, hop_s)  # before the defaults: a given 0 or NaN must not fall back to one
    window_s = window_s if window_s is not None else lab.features.clip_samples / sr
    hop_s = hop_s if hop_s is not None else window_s
    return window_s, hop_s, window_samples(window_s, hop_s, sr)


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
            means = [s.speaker_mean for s, _ in pending]
            probs, emb = lab.predict([c for _, c in pending], length, embed=embed, speaker=speaker, means=means)
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
