"""Perturbations a user's recordings meet: another gain, peak normalisation, noise, a telephone line, a codec.

Each one takes a decoded clip, ``(n,)`` float32 mono at the model's rate (what ``sononet label``
holds after decoding and resampling), and returns ``(n,)`` float32 at the same rate, as if the
file had been recorded that way; the front end (silence trimming, pad/trim to the window,
log-mel) runs after it, so a noisy clip's silence is no longer trimmed away. The robustness
suite (:mod:`sononet.evaluate.robustness`) scores every evaluation's test clips under them.

================  ==========================================================================
gain-30/-20/+10   every sample times 10^(dB/20), in float: +10 dB may pass full scale and is
                  not clipped (a float WAV holds it; an integer file would clip)
peak              each clip scaled so that its largest |sample| is 1.0 (0 dBFS)
noise20/noise10   pink (1/f) Gaussian noise at 20 / 10 dB SNR over the whole clip, seeded per
                  clip (``colorednoise``; the SNR by ``torchaudio.functional.add_noise``)
telephone         resampled to 8 kHz (soxr), 300-3400 Hz band-pass (4th-order Butterworth,
                  scipy), resampled back: the band of a narrowband phone call
mp3               MP3 at 32 kbit/s, encoded and decoded by FFmpeg through PyAV
opus              Opus at 16 kbit/s (a voice message), by PyAV; selectable, not in the default set
================  ==========================================================================

Pink rather than white noise: most everyday noise (rooms, traffic, fans, babble) falls off with
frequency roughly as speech does, where white noise at the same SNR would mostly mask the top
octaves. Noise for a clip comes from ``numpy.random.default_rng([seed, crc32(key)])``, so the
same clip gets the same noise in every run and every process.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

# Groups `--perturb` selects by name, in the order the table shows them.
GROUPS = ("gain", "peak", "noise", "telephone", "codec")


@dataclass(frozen=True)
class Perturbation:
    """One named way of changing a recording, with the parameter it was built from."""

    name: str  # the table's row and the --perturb name, e.g. "gain-20"
    group: str  # one of GROUPS
    description: str  # one line for the table's note
    fn: Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
    default: bool = True  # in the set a plain `--perturb` (and every report) runs

    def __call__(self, x: np.ndarray, sample_rate: int, key: str = "", seed: int = 0) -> np.ndarray:
        """``(n,)`` float32 -> ``(n,)`` float32 at ``sample_rate``; ``key`` (the clip id) seeds its noise."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 1 or x.size == 0:
            raise ValueError(f"a perturbation takes one non-empty mono clip (n,). Found shape {x.shape}")
        y = self.fn(x, sample_rate, clip_rng(key, seed))
        return np.ascontiguousarray(y, dtype=np.float32)


def clip_rng(key: str, seed: int = 0) -> np.random.Generator:
    """The generator for clip ``key``: the same numbers in every process (``hash()`` is salted per process)."""
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def gain(db: float) -> Callable[[np.ndarray, int, np.random.Generator], np.ndarray]:
    def apply(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        import torch
        import torchaudio.functional as AF

        return AF.gain(torch.from_numpy(x), db).numpy()

    return apply


def peak_normalize(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    peak = float(np.abs(x).max())
    return x / peak if peak > 0 else x


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) float32 Gaussian noise with a 1/f power spectrum, unit variance."""
    import colorednoise

    return colorednoise.powerlaw_psd_gaussian(1.0, n, random_state=rng).astype(np.float32)


def noise(snr_db: float) -> Callable[[np.ndarray, int, np.random.Generator], np.ndarray]:
    def apply(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        import torch
        import torchaudio.functional as AF

        if not x.any():  # a silent clip has no level to set the noise against
            return x
        n = torch.from_numpy(pink_noise(x.size, rng))
        return AF.add_noise(torch.from_numpy(x), n, torch.tensor(float(snr_db))).numpy()

    return apply


TELEPHONE_RATE = 8_000  # narrowband telephony (G.711, AMR-NB)
TELEPHONE_BAND = (300.0, 3400.0)  # Hz: the ITU-T voice channel
TELEPHONE_ORDER = 4  # Butterworth order: 24 dB/octave outside the band


def fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad or cut ``y`` to ``n`` samples: a resampling round trip can land a sample off."""
    return y[:n] if y.size >= n else np.concatenate([y, np.zeros(n - y.size, y.dtype)])


def telephone(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    import soxr
    from scipy.signal import butter, sosfilt

    narrow = soxr.resample(x, sr, TELEPHONE_RATE, quality="HQ") if sr != TELEPHONE_RATE else x
    sos = butter(TELEPHONE_ORDER, TELEPHONE_BAND, btype="bandpass", fs=TELEPHONE_RATE, output="sos")
    band = sosfilt(sos, narrow).astype(np.float32)  # causal, as a real line is
    back = soxr.resample(band, TELEPHONE_RATE, sr, quality="HQ") if sr != TELEPHONE_RATE else band
    return fit_length(back, x.size)


def codec(container: str, encoder: str, bit_rate: int) -> Callable[[np.ndarray, int, np.random.Generator], np.ndarray]:
    """A lossy round trip through FFmpeg (PyAV), in memory."""

    def apply(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        return fit_length(codec_round_trip(x, sr, container, encoder, bit_rate), x.size)

    return apply


def codec_round_trip(x: np.ndarray, sr: int, container: str, encoder: str, bit_rate: int) -> np.ndarray:
    """(n,) float32 -> encoded with ``encoder`` at ``bit_rate`` bit/s -> decoded (n', ) float32 at ``sr``.

    The container's header tells the decoder the encoder's delay and padding (LAME's Info tag,
    Ogg's pre-skip), so n' == n in practice; :func:`fit_length` settles any remainder.
    """
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(encoder, rate=sr if encoder != "libopus" else 48_000)  # Opus runs at 48 kHz
        stream.bit_rate, stream.layout = bit_rate, "mono"
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = sr
        for packet in (*stream.encode(frame), *stream.encode(None)):
            out.mux(packet)
    buf.seek(0)
    parts = []
    with av.open(buf, "r") as inp:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        for decoded in inp.decode(inp.streams.audio[0]):
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(decoded)]
        parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


CATALOGUE: dict[str, Perturbation] = {
    p.name: p
    for p in (
        Perturbation("gain-30", "gain", "gain -30 dB (x 0.032), float, no clipping", gain(-30.0)),
        Perturbation("gain-20", "gain", "gain -20 dB (x 0.1), float, no clipping", gain(-20.0)),
        Perturbation("gain+10", "gain", "gain +10 dB (x 3.16), float, not clipped past full scale", gain(10.0)),
        Perturbation("peak", "peak", "each clip scaled to peak 1.0 (0 dBFS)", peak_normalize),
        Perturbation("noise20", "noise", "pink Gaussian noise at 20 dB SNR, seeded per clip", noise(20.0)),
        Perturbation("noise10", "noise", "pink Gaussian noise at 10 dB SNR, seeded per clip", noise(10.0)),
        Perturbation("telephone", "telephone", "8 kHz and back, 300-3400 Hz band-pass", telephone),
        Perturbation("mp3", "codec", "MP3 32 kbit/s round trip (FFmpeg via PyAV)", codec("mp3", "libmp3lame", 32_000)),
        Perturbation(
            "opus", "codec", "Opus 16 kbit/s round trip (FFmpeg via PyAV)", codec("ogg", "libopus", 16_000), False
        ),
    )
}


def select(names: Iterable[str]) -> list[Perturbation]:
    """Perturbations by name or group (``gain`` = its three gains), in catalogue order, each once.

    A group brings its default members (``codec``: mp3); a member is always available by name.
    """
    wanted: set[str] = set()
    for raw in names:
        name = raw.strip()
        if name in CATALOGUE:
            wanted.add(name)
        elif name in GROUPS:
            wanted |= {p.name for p in CATALOGUE.values() if p.group == name and p.default}
        elif name:
            known = ", ".join([*GROUPS, *CATALOGUE])
            raise ValueError(f"unknown perturbation {name!r}; choose from {known}")
    return [p for p in CATALOGUE.values() if p.name in wanted]


def parse(text: str) -> tuple[str, ...]:
    """``"gain,noise20"`` -> ("gain", "noise20"), each checked against the catalogue."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    select(names)
    return names
