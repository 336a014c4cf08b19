"""Decoding what libsndfile cannot read (m4a/AAC, WebM, the audio track of MP4, ...) with PyAV.

The ``av`` wheel ships its own FFmpeg libraries, so nothing is needed from the system.
:mod:`sononet.audio` tries libsndfile first (exact frame counts, seekable) and comes here only
when libsndfile does not recognise the format. FFmpeg containers often state their length only
approximately (AAC priming samples, WebM without a duration), so :func:`probe_av` reports the
container's estimate and the decoders return what is really there.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sononet.errors import AudioError


@dataclass
class AvInfo:
    """The fields of soundfile's info that the pipeline reads, for a file PyAV decodes."""

    samplerate: int
    channels: int
    frames: int  # the container's estimate; decoding may give a few more or fewer
    format: str
    extra_info: str = ""


def _open(path: str | Path):  # -> av.container.InputContainer (av is imported lazily)
    import av

    try:
        container = av.open(str(path))
    except (av.error.InvalidDataError, ValueError) as e:
        raise AudioError("unsupported_format", f"neither libsndfile nor FFmpeg reads it: {e}") from e
    except av.error.FFmpegError as e:
        raise AudioError("corrupt", str(e)) from e
    if not container.streams.audio:
        container.close()
        raise AudioError("unsupported_format", f"no audio stream (format {container.format.name})")
    return container


def probe_av(path: str | Path) -> AvInfo:
    """Header only: rate, channels and the estimated frame count of the first audio stream."""
    with _open(path) as container:
        stream = container.streams.audio[0]
        rate, channels = stream.codec_context.sample_rate or stream.rate, stream.codec_context.channels
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000  # AV_TIME_BASE: microseconds
        else:
            seconds = None
        name = container.format.name
    if not rate or not channels:
        raise AudioError("corrupt", f"audio stream without a sample rate or channels ({rate} Hz, {channels} ch)")
    if seconds is None:  # no length in the header (some WebM): count by decoding
        frames = sum(block.shape[0] for block in read_blocks_av(path, rate * 10))
    else:
        frames = math.floor(seconds * rate)
    return AvInfo(samplerate=int(rate), channels=int(channels), frames=int(frames), format=name)


def read_blocks_av(path: str | Path, blocksize: int) -> Iterator[np.ndarray]:
    """Float32 blocks ``(n, channels)`` of about ``blocksize`` frames (the last may be shorter)."""
    import av

    with _open(path) as container:
        stream = container.streams.audio[0]
        channels = stream.codec_context.channels
        resampler = av.AudioResampler(format="flt", layout=stream.codec_context.layout, rate=None)
        buf: list[np.ndarray] = []
        held = 0
        try:
            frames = container.decode(stream)
            for frame in frames:
                for out in resampler.resample(frame):
                    data = out.to_ndarray().reshape(-1, channels)  # packed float: (1, n * ch) -> (n, ch)
                    buf.append(data)
                    held += data.shape[0]
                    while held >= blocksize:
                        block = np.concatenate(buf)
                        yield block[:blocksize]
                        buf, held = [block[blocksize:]], block.shape[0] - blocksize
        except av.error.FFmpegError as e:
            raise AudioError("corrupt", f"FFmpeg could not decode it: {e}") from e
        if held:
            yield np.concatenate(buf)


def read_av(path: str | Path, start: int = 0, frames: int | None = None) -> tuple[np.ndarray, int]:
    """``(frames, channels)`` float32 from frame ``start`` (decoded from the beginning and skipped), and the rate."""
    info = probe_av(path)
    want = math.inf if frames is None else frames
    parts, pos, got = [], 0, 0
    for block in read_blocks_av(path, info.samplerate * 10):
        lo = max(start - pos, 0)
        pos += block.shape[0]
        if lo >= block.shape[0]:
            continue
        take = block[lo : lo + int(min(want - got, block.shape[0] - lo))]
        parts.append(take)
        got += take.shape[0]
        if got >= want:
            break
    data = np.concatenate(parts) if parts else np.zeros((0, info.channels), np.float32)
    return data, info.samplerate
