"""CREMA-D-shaped WAV folders for the benchmarks: real file names and durations, synthetic sound.

Durations come from the official manifest's byte counts (16-bit mono PCM at 16 kHz behind a
44-byte header: ``(bytes - 44) / 32000`` s), so decode, pad/trim and shard sizes see the real
corpus's distribution. The sound is a gliding harmonic tone plus noise, sliced from one
pre-rendered buffer, so writing 30,000 files costs little more than the disk writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sononet.corpus.cremad import SAMPLE_RATE

WAV_HEADER_BYTES = 44
ACTOR_STRIDE = 2000  # copy k of the corpus uses actor ids 1001 + 2000 k: 3001+, 5001+, ...
MAX_COPIES = 5  # actor ids stay four digits (CREMA-D's naming): 9091 is the highest


@dataclass(frozen=True)
class FileSpec:
    name: str  # CREMA-D file name, actor id remapped for copies beyond the first
    seconds: float


def cremad_like(n: int) -> list[FileSpec]:
    """``n`` CREMA-D file names and durations.

    Up to 7,442 an evenly spaced subset of the manifest (so durations stay representative);
    beyond, whole copies of the corpus with new actor ids (3001+, 5001+, ...) plus a subset.
    """
    from sononet.corpus.cremad import read_audio_manifest

    rows = read_audio_manifest()
    base = len(rows)
    if n < 1 or n > MAX_COPIES * base:
        raise ValueError(f"clips must be in [1, {MAX_COPIES * base}] (4-digit actor ids). Found: {n}")
    specs: list[FileSpec] = []
    copies, rest = divmod(n, base)
    picks = [(c, i) for c in range(copies) for i in range(base)]
    picks += [(copies, (k * base) // rest) for k in range(rest)]
    for copy, i in picks:
        row = rows[i]
        actor = int(row["actor"]) + ACTOR_STRIDE * copy
        name = f"{actor}_{row['sentence']}_{row['emotion']}_{row['intensity']}.wav"
        seconds = (int(row["bytes"]) - WAV_HEADER_BYTES) / (2 * SAMPLE_RATE)
        specs.append(FileSpec(name, seconds))
    return specs


def source_signal(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """(n, channels) int16: a harmonic tone gliding 110-260 Hz plus noise, about -12 dBFS peak."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0 = 185.0 + 75.0 * np.sin(2 * np.pi * 0.3 * t)  # slow glide, like intonation
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.12
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 2.5 * t) ** 2)  # syllable-rate envelope
    out = np.empty((n, channels), np.int16)
    for c in range(channels):
        y = x + 0.01 * rng.standard_normal(n)
        out[:, c] = np.round(y * 32767).astype(np.int16)
    return out


def write_wavs(
    root: str | Path, specs: list[FileSpec], sr: int = SAMPLE_RATE, channels: int = 1, seed: int = 0
) -> list[Path]:
    """Write one PCM-16 WAV per spec at ``sr``/``channels``, each a different slice of one buffer.

    Ends with ``os.sync()``: the next timed run reads a corpus at rest, as a user's is, instead of
    sharing the 2 cores with the kernel writing back these hundreds of MB (prepare's wall time
    on 7,442 clips spread over 14-19 s without it).
    """
    import soundfile as sf

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    longest = max((s.seconds for s in specs), default=0.0)
    buf = source_signal(longest + 10.0, sr, channels, seed)  # (n, channels)
    rng = np.random.default_rng(seed + 1)
    paths = []
    for spec in specs:
        n = int(round(spec.seconds * sr))
        start = int(rng.integers(0, buf.shape[0] - n + 1))
        path = root / spec.name
        sf.write(path, buf[start : start + n], sr, subtype="PCM_16")
        paths.append(path)
    os.sync()
    return paths


def folder_bytes(root: str | Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in Path(root).glob(pattern) if p.is_file())
