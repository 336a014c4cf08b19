"""SonoNet from Python: a saved model as a classifier, on exactly the inference path of ``sononet label``.

::

    from sononet import EmotionClassifier

    clf = EmotionClassifier.load("runs/demo/cnn/model", device="auto")
    clf.predict("clip.wav")                      # [{"label": "ANG", "score": 0.71}, ...], best first
    clf.predict(["a.wav", "b.flac"])             # one list per input
    clf.predict(x, sample_rate=44_100)           # ndarray/tensor (time,) or (channels, time), any rate
    clf.predict_windows("long.wav", window_s=3, hop_s=1.5)  # DataFrame: start_s, end_s, pred, prob_<label>
    clf.embed(["a.wav", "b.flac"])               # (N, D) pooled clip vectors

Files and arrays go through :mod:`sononet.label.engine`, the code ``sononet label`` runs: the same
decode, resampling, pad/trim, log-mel, normalisation and windowing (a file longer than the window
is the mean of its windows), in batches of ``batch_size`` windows, so memory does not grow with the
number or length of inputs. Input that cannot become a clip raises :class:`sononet.AudioError`,
whose ``reason`` is the errors-table reason ``sononet label`` would record. Arguments follow the
rules ``sononet label`` and file headers follow (one check each: ``sample_rate`` an integer from
4 kHz to 768 kHz, windows and hops in :func:`sononet.label.engine.check_window`), else ValueError;
a model output that is no finite probability distribution raises
:class:`~sononet.models.outputs.NonFiniteOutputError` instead of returning NaN.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from sononet.audio import AudioConfig
    from sononet.label.ensemble import EnsembleLabeller
    from sononet.label.labeller import Labeller
    from sononet.label.windows import Source


class SyntheticModelWarning(UserWarning):
    """The model learned from the synthetic demo corpus: its labels on real speech mean nothing."""


def _is_single(inputs: Any) -> bool:
    if isinstance(inputs, str | os.PathLike | np.ndarray):
        return True
    return type(inputs).__module__.startswith("torch") and hasattr(inputs, "detach")


class EmotionClassifier:
    """A saved SonoNet model or ensemble (as ``train-all`` writes them) ready to classify audio."""

    def __init__(self, labeller: Labeller | EnsembleLabeller, batch_size: int = 64, workers: int = 2) -> None:
        if batch_size < 1 or workers < 1:
            raise ValueError(f"batch_size and workers must be positive. Found: {batch_size}, {workers}")
        self._lab = labeller
        self.batch_size = batch_size  # windows per forward pass: the memory bound (label's default too)
        self.workers = workers  # decode threads

    @classmethod
    def load(
        cls, model_dir: str | os.PathLike | Sequence[str | os.PathLike], device: str = "auto", batch_size: int = 64,
        workers: int = 2, mel_backend: str = "auto",
    ) -> EmotionClassifier:  # fmt: skip
        """Rebuild the model and its training feature path; warns when it was trained on the demo corpus.

        ``model_dir``: a saved model folder, an ensemble folder (``ensemble.json``, as ``train-all``
        writes in ``<fold>/ensemble``) or a list of model folders. An ensemble's probabilities are
        the mean of its members', each scoring with its own features (see :mod:`sononet.label.ensemble`).
        """
        from sononet.label.ensemble import open_labeller
        from sononet.openmp import warn_if_too_late

        warn_if_too_late()
        lab = open_labeller(model_dir, device, mel_backend)
        if lab.warning:
            warnings.warn(lab.warning, SyntheticModelWarning, stacklevel=2)
        return cls(lab, batch_size, workers)

    @property
    def labels(self) -> list[str]:
        return list(self._lab.labels)

    @property
    def model_id(self) -> str:
        """``<name>@<weights hash>/<corpus>/<init>``, the value of ``model_id`` in labels.parquet."""
        return self._lab.id

    @property
    def provenance(self) -> dict[str, Any]:
        """Training corpus, split protocol, init (scratch / pretrained / random-init)."""
        return dict(self._lab.provenance)

    @property
    def sample_rate(self) -> int:
        """The model's rate; inputs at any other rate are resampled to it."""
        return self._lab.features.sample_rate

    def __repr__(self) -> str:
        return f"EmotionClassifier({self.model_id}, labels={self.labels}, device={self._lab.device})"

    def predict(
        self, inputs: Any, sample_rate: int | None = None, top_k: int | None = None, speaker: np.ndarray | None = None,
        speakers: str | Sequence[str | None] | None = None, min_speaker_files: int | None = None,
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:  # fmt: skip
        """Labels with scores, best first: one list for one input, a list of lists for a list of inputs.

        Args:
            inputs: a path, an array or tensor ``(time,)`` / ``(channels, time)``, or a list of these.
            sample_rate: the rate of array inputs (required for them; files carry their own).
            top_k: keep the k best labels; None keeps all.
            speaker: :meth:`speaker_mean` of the one speaker of ``inputs``; scores them as
                cross-validation did. None: the training speakers' average voice (less accurate).
            speakers: who speaks in each input, to score each speaker's inputs with their own mean
                (as ``sononet label --speaker-from``): one name (or None) per input, or a rule for
                paths, ``"parent"`` or ``"regex:PATTERN"``. A speaker with fewer than
                ``min_speaker_files`` inputs (None: ``label.speakers.MIN_GROUP_FILES``) keeps the
                training default.
        """
        probs = self.predict_proba(inputs, sample_rate, speaker, speakers, min_speaker_files)
        ranked = [
            [{"label": self._lab.labels[i], "score": float(p[i])} for i in np.argsort(-p, kind="stable")[:top_k]]
            for p in probs
        ]
        return ranked[0] if _is_single(inputs) else ranked

    def predict_proba(
        self, inputs: Any, sample_rate: int | None = None, speaker: np.ndarray | None = None,
        speakers: str | Sequence[str | None] | None = None, min_speaker_files: int | None = None,
    ) -> np.ndarray:  # fmt: skip
        """(N, n_classes) float32 probabilities in :attr:`labels` order; equal to label's ``prob_<label>``
        (and, with ``speakers``, to ``label --speaker-from``'s). Arguments as :meth:`predict`."""
        from sononet.label.engine import file_probs
        from sononet.models.outputs import check_distribution

        groups = None
        if speakers is not None:
            if speaker is not None:
                raise ValueError("pass speaker= (one mean for every input) or speakers= (groups), not both")
            inputs = [inputs] if _is_single(inputs) else list(_check_items(inputs))
            groups = self._speaker_groups(inputs, sample_rate, speakers, min_speaker_files)
        scored = self._score(inputs, sample_rate, speaker=speaker, groups=groups)
        rows = [check_distribution(file_probs(s), s.path) for s in scored]
        return np.stack(rows) if rows else np.zeros((0, len(self._lab.labels)), np.float32)

    def speaker_mean(self, inputs: Any, sample_rate: int | None = None) -> np.ndarray:
        """(n_mels,) float32: one speaker's mean log-mel over the valid frames of ``inputs``, their recordings.

        For a speaker-normalised model (the default) pass it as ``speaker=`` to the predict
        methods: that is how cross-validation scored each test actor, from all of the actor's
        clips. Several recordings in several moods make a good mean; one angry clip alone makes
        the model hear that anger as the speaker's normal voice.
        """
        from sononet.label.engine import resolve_window
        from sononet.label.speakers import MeanAccumulator

        if not self._lab.takes_speaker:
            raise ValueError(f"{self.model_id} is not speaker-normalised: it takes no speaker mean")
        window_s, _, (length, _) = resolve_window(self._lab, None, None)
        acc = MeanAccumulator(self._lab, length, self.batch_size)
        for src in self._opened(inputs, sample_rate, window_s):
            _raise_failed(src)
            acc.add("", self._clips(src))
        means = acc.means()
        if not means:
            raise ValueError("no audio to take a speaker mean from")
        return means[""].mean

    def _clips(self, src: Source) -> Iterator[np.ndarray]:
        """A source's window clips, as :func:`sononet.label.engine.score_sources` cuts them."""
        from sononet.label.engine import resolve_window, windows_of

        window_s, _, (length, hop) = resolve_window(self._lab, None, None)
        for _, clip in windows_of(src, length, hop, self._audio, self._lab.clip_span_s(window_s)):
            yield clip

    def _speaker_groups(
        self, items: list[Any], sample_rate: int | None, speakers: str | Sequence[str | None], min_files: int | None
    ) -> list[tuple[str | None, Any]]:
        """Each input's (speaker, GroupMean or None for the training default): the first pass of ``speakers=``."""
        from sononet.label.engine import resolve_window
        from sononet.label.speakers import MIN_GROUP_FILES, MeanAccumulator, SpeakerRule, check_model

        check_model(self._lab)
        min_files = MIN_GROUP_FILES if min_files is None else min_files
        if min_files < 1:
            raise ValueError(f"min_speaker_files must be at least 1. Found: {min_files}")
        if isinstance(speakers, str):
            rule = SpeakerRule.parse(speakers)
            paths = [str(Path(i).resolve()) for i in items if isinstance(i, str | os.PathLike)]
            if rule.kind == "column" or len(paths) != len(items):
                raise ValueError(
                    f"speakers={speakers!r} reads file paths; for arrays (or a manifest's column) pass one "
                    "speaker per input, e.g. speakers=['ann', 'ann', 'bob']"
                )
            keys = rule.keys(paths)
        else:
            keys = list(speakers) if not isinstance(speakers, bytes | dict) else []
            if len(keys) != len(items) or not all(k is None or isinstance(k, str) for k in keys):
                found = repr(speakers)[:200]
                raise ValueError(f"speakers must give one name (str or None) per input ({len(items)}). Found: {found}")
        window_s, _, (length, _) = resolve_window(self._lab, None, None)
        acc = MeanAccumulator(self._lab, length, self.batch_size)
        for src, key in zip(self._opened(items, sample_rate, window_s), keys, strict=True):
            _raise_failed(src)
            if key is not None:
                acc.add(key, self._clips(src))
        means = acc.means()
        return [(k, means[k] if k in means and means[k].files >= min_files else None) for k in keys]

    def embed(self, inputs: Any, sample_rate: int | None = None) -> np.ndarray:
        """(N, D) float32 pooled clip vectors (the head's input; a long file: the mean over its windows)."""
        from sononet.label.engine import file_embedding
        from sononet.models.outputs import NonFiniteOutputError

        dim = self._lab.embedding_dim()  # an ensemble has none: refused before any input is read
        rows = []
        for src in self._score(inputs, sample_rate, embed=True):
            rows.append(file_embedding(src))
            if not np.isfinite(rows[-1]).all():
                raise NonFiniteOutputError(src.path)
        return np.stack(rows) if rows else np.zeros((0, dim), np.float32)

    def predict_windows(
        self, input: Any, window_s: float | None = None, hop_s: float | None = None, sample_rate: int | None = None,
        speaker: np.ndarray | None = None,
    ) -> pd.DataFrame:  # fmt: skip
        """One row per window of one input: ``start_s, end_s, pred, confidence, prob_<label>``.

        Windows are ``window_s`` long every ``hop_s`` (defaults: the model's 3 s clip, no overlap),
        the last aligned to the end; an input no longer than the window is one row.
        """
        import pandas as pd

        if not _is_single(input):
            raise ValueError(f"predict_windows takes one input (a path, array or tensor). Found: {type(input)}")
        from sononet.models.outputs import check_distribution

        (src,) = self._score(input, sample_rate, window_s=window_s, hop_s=hop_s, speaker=speaker)
        sr, labels = self.sample_rate, self._lab.labels
        probs = check_distribution(np.stack(src.probs), src.path)  # (n_windows, n_classes)
        starts, ends = [s / sr for s, _ in src.windows], [(s + n) / sr for s, n in src.windows]
        df = pd.DataFrame({"start_s": starts, "end_s": ends})
        df["pred"] = [labels[i] for i in probs.argmax(axis=1)]
        df["confidence"] = probs.max(axis=1)
        for i, lab in enumerate(labels):
            df[f"prob_{lab}"] = probs[:, i]
        return df

    @property
    def _audio(self) -> AudioConfig:
        """The decoder settings the model was trained with (saved in its folder)."""
        return self._lab.audio

    def _opened(self, inputs: Any, sample_rate: int | None, window_s: float) -> Iterator[Source]:
        """Opened sources in input order, decoded ahead on ``workers`` threads; failures stay on ``src.error``."""
        from sononet.audio import check_sample_rate
        from sononet.label.windows import prefetch

        if sample_rate is not None:  # checked once, before any input is opened
            check_sample_rate(sample_rate)
        items = [inputs] if _is_single(inputs) else list(_check_items(inputs))
        audio, whole_s = self._audio, self._lab.clip_span_s(window_s)

        def open_item(item: tuple[int, Any]) -> Source:
            return _open(item[0], item[1], sample_rate, audio, whole_s)

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            yield from prefetch(open_item, enumerate(items), pool, 2 * self.batch_size)

    def _score(
        self, inputs: Any, sample_rate: int | None, embed: bool = False, window_s: float | None = None,
        hop_s: float | None = None, speaker: np.ndarray | None = None, groups: list | None = None,
    ) -> Iterator[Source]:  # fmt: skip
        """Scored sources in input order; raises AudioError (with the input named) at the first bad one.
        ``groups``: each input's (speaker, GroupMean or None), from :meth:`_speaker_groups`."""
        from sononet.label.engine import resolve_window, score_sources

        window_s, hop_s, (length, hop) = resolve_window(self._lab, window_s, hop_s)
        speaker = self._lab.check_speaker(speaker)
        opened = self._opened(inputs, sample_rate, window_s)
        if groups is not None:
            opened = _grouped(opened, groups)
        for src in score_sources(opened, self._lab, length, hop, self.batch_size, self._audio, embed, speaker):
            _raise_failed(src)
            yield src


def _grouped(sources: Iterator[Source], groups: list) -> Iterator[Source]:
    for src, (key, group) in zip(sources, groups, strict=True):
        src.speaker_group = key
        if group is not None:
            src.speaker_mean, src.speaker_files = group.mean, group.files
        yield src


def _raise_failed(src: Source) -> None:
    """A source that could not be decoded, as the AudioError the API raises (the input named)."""
    from sononet.errors import AudioError

    if src.error is not None:
        raise AudioError(src.error.reason, f"{src.path}: {src.error.detail}") from src.error


def _check_items(inputs: Iterable[Any]) -> Iterator[Any]:
    if isinstance(inputs, bytes | dict) or not isinstance(inputs, Iterable):
        raise TypeError(f"expected a path, an array, a tensor or a list of them. Found: {type(inputs).__name__}")
    yield from inputs


def _open(index: int, item: Any, sample_rate: int | None, audio: Any, window_s: float) -> Source:
    """A path is probed like ``sononet label`` does; an array is validated, downmixed and resampled."""
    from sononet.audio import decode_array
    from sononet.errors import AudioError
    from sononet.label.windows import Source, open_source

    if isinstance(item, str | os.PathLike):
        from sononet.sources import not_local

        text = str(item)  # a URL or a command stays as given, so its error says so (not_local)
        return open_source(text if not_local(text) else str(Path(text).resolve()), audio, window_s)
    if not _is_single(item):
        raise TypeError(f"input {index}: expected a path, array or tensor. Found: {type(item).__name__}")
    if sample_rate is None:
        raise ValueError(f"input {index} is an array: pass sample_rate= (e.g. sample_rate=16000)")
    x = item.detach().cpu().numpy() if hasattr(item, "detach") else item
    src = Source(f"<array {index}>")
    try:
        dec = decode_array(x, sample_rate, audio)
        src.samples, src.duration_s = dec.samples, dec.duration_s
        src.orig_sr, src.orig_channels = dec.orig_sr, dec.orig_channels
    except AudioError as e:
        src.error = e
    return src
