"""Reading one input file: probe it, decode short files whole, stream long ones as windows."""

from __future__ import annotations

import contextlib
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sononet.audio import AudioConfig
    from sononet.errors import AudioError

BLOCK_S = 10  # seconds of source audio decoded per read when streaming a long file


@dataclass
class Source:
    """One input file after probing: short files decoded whole, long ones streamed later."""

    path: str
    sha256: str | None = None
    duration_s: float | None = None
    orig_sr: int | None = None
    orig_channels: int | None = None
    samples: np.ndarray | None = None  # (n,) mono at the model rate when the file fits one window
    info: Any = None  # header of a long file (closed SoundFile or AvInfo), streamed by `stream_windows`
    error: AudioError | None = None
    windows: list[tuple[int, int]] = field(default_factory=list)  # (start, valid samples) per window
    probs: list[np.ndarray] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)  # (D,) per window, only when asked for
    speaker_group: str | None = None  # its speaker group (--speaker-from), None without one
    speaker_mean: np.ndarray | None = None  # (n_mels,) the group's mean it loses; None: the training default
    speaker_files: int = 0  # files that formed speaker_mean (0: the training default)


def open_source(path: str, audio: AudioConfig, window_s: float) -> Source:
    """Hash and probe a file; decode it whole only when it fits one window.

    Only regular files are opened: a FIFO or a link to ``/dev/zero`` becomes a ``not_a_file``
    row at once instead of blocking (or hashing forever) in a decode thread.
    """
    from sononet.audio import check_regular_file, decode_open, open_audio
    from sononet.errors import AudioError
    from sononet.io import sha256_file

    src = Source(path)
    try:
        check_regular_file(path)
        with contextlib.suppress(OSError):  # vanished since: the probe below names the reason
            src.sha256 = sha256_file(path)
        with open_audio(path) as header:  # one open: a short file decodes from the handle its header came from
            src.orig_sr, src.orig_channels = header.samplerate, header.channels
            src.duration_s = header.frames / header.samplerate
            if src.duration_s <= window_s:
                src.samples = decode_open(path, header, audio).samples
            else:
                src.info = header  # closed on exit; stream_windows reopens it block by block
    except AudioError as e:
        src.error = e
    return src


def stream_windows(src: Source, length: int, hop: int, audio: AudioConfig) -> Iterator[tuple[int, np.ndarray]]:
    """(start sample, clip) windows of a long file, decoded ``BLOCK_S`` at a time.

    Holds at most one window plus one block. Raises AudioError (non_finite, silent, corrupt) when
    the stream shows it, possibly after some windows were yielded: the caller drops those.
    """
    import soundfile as sf
    import soxr

    from sononet.errors import AudioError

    sr = src.info.samplerate
    rs = None
    if sr != audio.sample_rate:
        rs = soxr.ResampleStream(sr, audio.sample_rate, 1, dtype="float32", quality=audio.resample_quality)
    buf, pos, nxt, end, read, sound = np.zeros(0, np.float32), 0, 0, 0, 0, False
    try:
        with _blocks(src, sr * BLOCK_S) as blocks:
            for data in itertools.chain(blocks, [None]):
                if data is None:  # flush the resampler's delay line
                    chunk = rs.resample_chunk(np.zeros(0, np.float32), last=True) if rs else buf[:0]
                else:
                    read += data.shape[0]
                    if not np.isfinite(data).all():
                        span = f"{(read - data.shape[0]) / sr:.1f}-{read / sr:.1f} s"
                        raise AudioError("non_finite", f"NaN/Inf samples within {span}")
                    sound = sound or bool(data.any())
                    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
                    chunk = rs.resample_chunk(mono) if rs else mono
                buf = np.concatenate([buf, chunk])
                while nxt + length <= pos + buf.size:
                    yield nxt, buf[nxt - pos : nxt - pos + length].copy()
                    end, nxt = nxt + length, nxt + hop
                keep = max(pos, min(nxt, pos + buf.size - length))  # next window, or the last `length`
                buf, pos = buf[keep - pos :], keep
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError("corrupt", str(e)) from e
    if not sound:
        raise AudioError("silent", "every sample is zero")
    total = pos + buf.size
    if end == 0:  # resampling rounded it down to one window
        yield 0, buf.copy()
    elif end < total:  # align the last window to the end so the tail is labelled with real audio
        yield total - length, buf[-length:].copy()


@contextlib.contextmanager
def _blocks(src: Source, blocksize: int) -> Iterator[Iterator[np.ndarray]]:
    """Float32 (n, channels) blocks from libsndfile, or from PyAV when the probe handed the file to it."""
    import soundfile as sf

    from sononet.audio_av import AvInfo, read_blocks_av

    if isinstance(src.info, AvInfo):
        yield read_blocks_av(src.path, blocksize)
        return
    with sf.SoundFile(src.path) as f:
        yield f.blocks(blocksize=blocksize, dtype="float32", always_2d=True)


def prefetch(
    fn: Callable[[str], Source], items: Iterable[str], pool: ThreadPoolExecutor, depth: int
) -> Iterator[Source]:
    """``fn`` over ``items`` in order, ``depth`` calls ahead in ``pool``."""
    futures: deque = deque()
    for item in items:
        futures.append(pool.submit(fn, item))
        if len(futures) >= depth:
            yield futures.popleft().result()
    while futures:
        yield futures.popleft().result()
