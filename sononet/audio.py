"""Decode, mix to mono, resample and validate audio files.

Every file becomes either a :class:`Decoded` clip or an :class:`~sononet.errors.AudioError`
with an errors-table reason; nothing here stops a batch. Recoverable oddities (stereo,
another sample rate, clipping, very long files) are converted and *flagged* so later
stages and reports can see them.

soundfile (libsndfile) decodes WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF and more; PyAV (FFmpeg)
decodes what it does not recognise (m4a/AAC, WebM, MP4 audio, WMA...); soxr does the
resampling (high quality, and it releases the GIL, so a thread pool scales).
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf
import soxr

from sononet.errors import AudioError
from sononet.sources import check_regular_file as check_regular_file  # the one rule of what may be opened

if TYPE_CHECKING:
    from sononet.audio_av import AvInfo

# libsndfile reports a truncated WAV as "data : <declared> (should be <actual>)".
_TRUNCATED_RE = re.compile(r"data\s*:\s*(\d+)\s*\(should be (\d+)\)")
CLIP_LEVEL = 0.999  # |x| at or above this counts as a clipped sample (full scale is 1.0)
CLIP_FRACTION = 1e-3  # flag a file as clipped when more than 0.1 % of samples sit at full scale
# Below 4 kHz no speech band survives (telephone audio is 8 kHz), and the bound caps resampling
# to 16 kHz at 4x: a lying 1 Hz header would otherwise expand 16,000x into hours of windows.
MIN_SAMPLE_RATE = 4_000
# No recorder samples faster (768 kHz is the top of studio converters): a higher rate in a header or
# an argument is a lie, and resampling it would turn a few bytes into almost nothing, or the reverse.
MAX_SAMPLE_RATE = 768_000
# The longest stretch a model sees at once (a clip, a labelling window): a minute is one emotional
# state at most, and memory is batch x this many samples.
MAX_CLIP_S = 60.0
SF_ERR_SYSTEM = 2  # libsndfile's error code for a failed OS call (open, read), not a bad file


@dataclass
class AudioConfig:
    sample_rate: int = 16_000  # CREMA-D's rate; what wav2vec2 and the other encoders were pretrained on
    min_duration_s: float = 0.3  # below this there is too little speech to classify (CREMA-D's shortest: 1.27 s)
    long_duration_s: float = 60.0  # longer files are flagged "long"; only the needed part is decoded
    resample_quality: str = "HQ"  # soxr quality: HQ is transparent for speech and fast

    def __post_init__(self) -> None:
        check_sample_rate(self.sample_rate)
        if not 0 <= self.min_duration_s < self.long_duration_s:
            raise ValueError(
                f"need 0 <= min_duration_s < long_duration_s. Found: {self.min_duration_s}, {self.long_duration_s}"
            )
        if self.resample_quality not in ("QQ", "LQ", "MQ", "HQ", "VHQ"):
            raise ValueError(f"resample_quality must be QQ, LQ, MQ, HQ or VHQ. Found: {self.resample_quality!r}")

    def to_dict(self) -> dict[str, Any]:
        """As a model folder (``meta.audio_config``), a shard manifest and export.json record it."""
        return asdict(self)

    @classmethod
    def recorded(cls, values: Mapping[str, Any] | None, sample_rate: int) -> AudioConfig:
        """A recorded audio config; None, for a model or shards saved before it was recorded: the
        defaults at ``sample_rate``, what labelling decoded with then."""
        return cls(**values) if values is not None else cls(sample_rate=sample_rate)


@dataclass
class Decoded:
    samples: np.ndarray  # (n,) float32 mono at the target rate; for long files only the part asked for
    orig_sr: int
    orig_channels: int
    duration_s: float  # of the whole file, before any trimming
    flags: tuple[str, ...]


_SF_OPEN = threading.Lock()


def _sf_open(path: Path) -> sf.SoundFile:
    """``sf.SoundFile`` with opens serialised.

    libsndfile reports a failed open through one process-wide error slot, so under parallel
    decoding a thread can read another's error: measured here, 2 threads probing a text file
    and a corrupt WAV 2,000 times each swapped their reasons (unsupported_format vs corrupt)
    about 17 % of the time. Opening a header takes microseconds; decoding stays parallel.
    """
    with _SF_OPEN:
        return sf.SoundFile(str(path))


def _open(path: Path) -> sf.SoundFile | AvInfo:
    """Open a file for decoding, its header checked, or raise AudioError with the reason.

    libsndfile opens each file once: the header checks read the handle that then decodes (a
    separate ``sf.info`` opened and parsed every file twice, 28 % of prepare's decode threads).
    Formats libsndfile does not recognise go to PyAV (:mod:`sononet.audio_av`), which opens
    them again to decode.
    """
    if check_regular_file(path) == 0:
        raise AudioError("zero_byte")
    try:
        f = _sf_open(path)
    except sf.LibsndfileError as e:
        msg = str(e)
        if "Format not recognised" in msg or "not supported" in msg.lower():
            from sononet.audio_av import probe_av  # m4a/AAC, WebM, MP4 audio...: FFmpeg via PyAV

            return _check_rate(probe_av(path))
        if e.code == SF_ERR_SYSTEM:  # the OS refused: permissions or an I/O error
            raise AudioError("unreadable", msg) from e
        raise AudioError("corrupt", msg) from e
    except OSError as e:
        raise AudioError("unreadable", str(e)) from e
    try:
        m = _TRUNCATED_RE.search(f.extra_info or "")
        if m and int(m.group(1)) > int(m.group(2)):
            raise AudioError("truncated", f"header declares {m.group(1)} data bytes, file holds {m.group(2)}")
        _check_rate(f)
    except AudioError:
        f.close()
        raise
    return f


@contextlib.contextmanager
def open_audio(path: str | Path) -> Iterator[sf.SoundFile | AvInfo]:
    """A file's checked header, open for :func:`decode_open` and closed on exit; AudioError with
    the reason (see :func:`probe`). For a caller that decides from the header whether to decode."""
    header = _open(Path(path))
    try:
        yield header
    finally:
        if isinstance(header, sf.SoundFile):
            header.close()


def probe(path: str | Path) -> sf.SoundFile | AvInfo:
    """A file's header (no samples decoded), or AudioError with the reason.

    Catches what the header alone shows: missing, not a regular file, zero-byte, unreadable,
    unsupported, corrupt (including an implausible sample rate) and truncated files. A file
    libsndfile reads comes back as its closed ``SoundFile``, whose ``samplerate``, ``channels``
    and ``frames`` stay readable; one PyAV reads, as an :class:`~sononet.audio_av.AvInfo`.
    """
    with open_audio(path) as header:
        return header


def rate_problem(value: object) -> str | None:
    """Why ``value`` is no usable sample rate ("must be at least 4000 Hz"), or None: the one rule for
    file headers, in-memory arrays and configs.

    An integer (a float only when whole: 44100.0) from MIN_SAMPLE_RATE to MAX_SAMPLE_RATE Hz; a bool
    is no rate (``True`` would be 1 Hz), nor NaN, inf or a fraction.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        return f"must be a whole number of Hz, not {type(value).__name__}"
    if not math.isfinite(value) or value != int(value):
        return "must be a whole number of Hz"
    if value < MIN_SAMPLE_RATE:
        return f"must be at least {MIN_SAMPLE_RATE} Hz"
    if value > MAX_SAMPLE_RATE:
        return f"must be at most {MAX_SAMPLE_RATE} Hz"
    return None


def check_sample_rate(value: object, name: str = "sample_rate") -> int:
    """``value`` as an int rate; ValueError naming ``name`` when :func:`rate_problem` refuses it."""
    why = rate_problem(value)
    if why is not None:
        raise ValueError(f"{name} {why}. Found: {value!r}")
    return int(value)  # type: ignore[call-overload]


def _check_rate(info: sf.SoundFile | AvInfo) -> sf.SoundFile | AvInfo:
    """A header rate outside the rule is a lie or no speech; refused before any decoding."""
    why = rate_problem(info.samplerate)
    if why is not None:
        low = isinstance(info.samplerate, int) and info.samplerate < MIN_SAMPLE_RATE
        detail = f"is below the {MIN_SAMPLE_RATE} Hz minimum" if low else f"is refused: a rate {why}"
        raise AudioError("corrupt", f"sample rate {info.samplerate} Hz {detail}")
    return info


def load_audio(
    path: str | Path,
    cfg: AudioConfig = AudioConfig(),
    max_samples: int | None = None,
    keep: str = "center",
) -> Decoded:
    """Decode one file to validated mono float32 at ``cfg.sample_rate``.

    Args:
        max_samples: decode only about this many output samples (plus resampler context), so a
            one-hour file costs only the window training keeps; the pad/trim kernel cuts exactly.
        keep: which part a long file keeps when ``max_samples`` applies: ``center`` or ``start``
            (the same choice as the pad/trim kernel's trim mode).

    Raises:
        AudioError: with an errors-table reason when the file cannot become a clip.
    """
    with open_audio(path) as header:
        return decode_open(path, header, cfg, max_samples, keep)


def decode_open(
    path: str | Path,
    header: sf.SoundFile | AvInfo,
    cfg: AudioConfig = AudioConfig(),
    max_samples: int | None = None,
    keep: str = "center",
) -> Decoded:
    """:func:`load_audio` on a header :func:`open_audio` opened: the file is not opened again."""
    flags: list[str] = []
    if header.frames <= 0:
        raise AudioError("empty_audio", "0 frames")
    duration = header.frames / header.samplerate
    if duration < cfg.min_duration_s:
        raise AudioError("too_short", f"{duration:.3f} s < minimum {cfg.min_duration_s} s")
    if duration > cfg.long_duration_s:
        flags.append("long")

    start, frames = 0, header.frames
    if max_samples is not None:
        # One hop of resampler context on each side keeps the kept window's edges exact enough.
        need = int(math.ceil(max_samples * header.samplerate / cfg.sample_rate)) + 64
        if need < header.frames:
            start = (header.frames - need) // 2 if keep == "center" else 0
            frames = need
    try:
        if isinstance(header, sf.SoundFile):
            header.seek(start)
            data, sr = header.read(frames, dtype="float32", always_2d=True), header.samplerate
        else:  # libsndfile handed it to PyAV
            from sononet.audio_av import read_av

            data, sr = read_av(path, start, frames)
    except sf.LibsndfileError as e:
        raise AudioError("unreadable" if e.code == SF_ERR_SYSTEM else "corrupt", str(e)) from e
    except (OSError, RuntimeError) as e:
        raise AudioError("unreadable", str(e)) from e
    if data.shape[0] == 0:
        raise AudioError("empty_audio", "decoded 0 samples")
    return _to_clip(data, int(sr), duration, flags, cfg)


def _to_clip(data: np.ndarray, sr: int, duration: float, flags: list[str], cfg: AudioConfig) -> Decoded:
    """Decoded samples (time, channels) -> a validated mono clip at ``cfg.sample_rate``, flagged.

    The one place files and in-memory arrays are checked and converted, so both give the same
    errors-table reasons and the same samples.
    """
    if not np.isfinite(data).all():
        raise AudioError("non_finite", f"{int((~np.isfinite(data)).sum())} NaN/Inf samples")
    if not data.any():
        raise AudioError("silent", "every sample is zero")
    if np.mean(np.abs(data) >= CLIP_LEVEL) > CLIP_FRACTION:
        flags.append("clipped")
    if data.shape[1] > 1:
        flags.append("downmixed")
        mono = data.mean(axis=1)
    else:
        mono = data[:, 0]
    if sr != cfg.sample_rate:
        flags.append("resampled")
        mono = soxr.resample(mono, sr, cfg.sample_rate, quality=cfg.resample_quality)
    return Decoded(
        samples=np.ascontiguousarray(mono, dtype=np.float32),
        orig_sr=int(sr),
        orig_channels=int(data.shape[1]),
        duration_s=float(duration),
        flags=tuple(flags),
    )


def pcm_to_float(data: np.ndarray) -> np.ndarray:
    """Samples of any real numeric dtype -> floats in [-1, 1), as soundfile reads PCM files.

    Signed integers are two's-complement PCM (x / 2^(bits-1)); unsigned integers are offset-binary
    PCM, as 8-bit WAV stores it ((x - 2^(bits-1)) / 2^(bits-1)), so silence is 128, not 0. Complex,
    boolean and object arrays are refused: no rule turns them into a waveform without a guess.
    """
    kind = data.dtype.kind
    if kind in "iu":
        half = float(2 ** (8 * data.dtype.itemsize - 1))
        return (data.astype(np.float64) - (half if kind == "u" else 0.0)) / half
    if kind == "f":
        return data
    what = {"c": "complex (pass x.real, or abs(x), explicitly)", "b": "boolean"}.get(kind, str(data.dtype))
    raise AudioError("unsupported_format", f"expected real numeric samples. Found dtype: {data.dtype}, {what}")


def decode_array(samples: np.ndarray, sample_rate: int, cfg: AudioConfig = AudioConfig()) -> Decoded:
    """An in-memory signal, ``(time,)`` or ``(channels, time)``, through the checks and conversions
    :func:`load_audio` applies to files: validated, mixed to mono, resampled to ``cfg.sample_rate``.

    Raises:
        AudioError: with an errors-table reason when the signal cannot become a clip.
        ValueError: ``sample_rate`` breaks the rule file headers follow (:func:`rate_problem`).
    """
    data = np.asarray(samples)
    if data.ndim not in (1, 2):
        raise AudioError("unsupported_format", f"expected shape (time,) or (channels, time). Found: {data.shape}")
    if data.size == 0:
        raise AudioError("empty_audio", f"0 samples. Found shape: {data.shape}")
    if data.ndim == 2 and data.shape[0] > data.shape[1]:
        raise AudioError(
            "unsupported_format",
            f"expected (channels, time), got more channels than samples: {data.shape}; pass x.T for (time, channels)",
        )
    sample_rate = check_sample_rate(sample_rate)
    data = pcm_to_float(data)
    with np.errstate(over="ignore"):  # beyond float32 becomes inf: refused below as non_finite
        data = np.atleast_2d(data).astype(np.float32, copy=False)  # (channels, time)
    flags: list[str] = []
    duration = data.shape[1] / sample_rate
    if duration < cfg.min_duration_s:
        raise AudioError("too_short", f"{duration:.3f} s < minimum {cfg.min_duration_s} s")
    if duration > cfg.long_duration_s:
        flags.append("long")
    return _to_clip(data.T, int(sample_rate), duration, flags, cfg)
