"""How the demo corpus sounds, and :func:`generate_demo`, which writes it (see :mod:`sononet.corpus.demo`).

How it sounds: a source-filter vowel synthesiser. A Rosenberg glottal pulse train with
jitter, shimmer and aspiration noise goes through a cascade of four formant resonators
whose targets follow each sentence's syllables (a rough phonetic transcription of the
CREMA-D sentence), with noise bursts for fricatives and stops and background noise around.
Actors differ in F0, vocal-tract length (formant scale), voice quality and habits.
Emotion lives in prosody, as in the literature (Banse & Scherer 1996; Juslin & Laukka
2003): F0 level and range, speaking rate, energy, spectral tilt, jitter and breathiness;
intensity scales the deviation from neutral. Every actor expresses each emotion in their
own way and every clip varies, so speaker-disjoint accuracy stays well below 100 %.
"""

from __future__ import annotations

import csv
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, lfilter, sosfilt

from sononet.corpus.cremad import DEMOGRAPHICS_FILE, EMOTIONS, INTENSITIES, SENTENCES, parse_name
from sononet.corpus.demo import DEMO_ACTOR_BASE, MARKER_FILE, DemoConfig, demo_clip_stems, is_complete, is_ours, marker
from sononet.device import decode_workers
from sononet.io import atomic_write

log = logging.getLogger(__name__)

# Adult male vowel formants F1-F4 in Hz (Peterson & Barney 1952, Hillenbrand 1995);
# diphthongs are held at their first target.
_VOWELS: dict[str, tuple[float, float, float, float]] = {
    "iy": (270, 2290, 3010, 3600),
    "ih": (390, 1990, 2550, 3500),
    "ey": (480, 1900, 2500, 3500),
    "eh": (530, 1840, 2480, 3500),
    "ae": (660, 1720, 2410, 3500),
    "ah": (620, 1200, 2390, 3400),
    "aa": (730, 1090, 2440, 3400),
    "ay": (700, 1250, 2450, 3400),
    "ao": (570, 840, 2410, 3300),
    "ow": (500, 900, 2350, 3300),
    "uh": (440, 1020, 2240, 3300),
    "uw": (300, 870, 2240, 3300),
    "er": (490, 1350, 1690, 3300),
    "ax": (500, 1500, 2500, 3400),
}

# Onset consonants: (kind, duration s, voicing amp, noise amp, noise band Hz, formants or None).
# kind: son(orant, voiced, own formants), fric(ative), stop (closure + burst), asp(iration).
_ONSETS: dict[str, tuple[str, float, float, float, tuple[float, float], tuple[float, ...] | None]] = {
    "m": ("son", 0.07, 0.35, 0.0, (0, 0), (280, 1300, 2500, 3300)),
    "n": ("son", 0.06, 0.35, 0.0, (0, 0), (280, 1600, 2600, 3300)),
    "l": ("son", 0.06, 0.45, 0.0, (0, 0), (360, 1300, 2700, 3300)),
    "r": ("son", 0.06, 0.45, 0.0, (0, 0), (350, 1100, 1600, 3300)),
    "w": ("son", 0.06, 0.45, 0.0, (0, 0), (300, 700, 2200, 3300)),
    "s": ("fric", 0.10, 0.0, 0.35, (4000, 7500), None),
    "z": ("fric", 0.08, 0.15, 0.25, (4000, 7500), None),
    "sh": ("fric", 0.10, 0.0, 0.40, (2000, 5000), None),
    "f": ("fric", 0.09, 0.0, 0.12, (1000, 7500), None),
    "th": ("fric", 0.08, 0.0, 0.10, (1500, 7500), None),
    "v": ("fric", 0.07, 0.20, 0.08, (1000, 7500), None),
    "h": ("asp", 0.07, 0.0, 0.25, (0, 0), None),
    "p": ("stop", 0.08, 0.0, 0.25, (500, 2500), None),
    "t": ("stop", 0.08, 0.0, 0.35, (3000, 7000), None),
    "k": ("stop", 0.08, 0.0, 0.30, (1500, 3500), None),
    "b": ("stop", 0.07, 0.08, 0.15, (500, 2500), None),
    "d": ("stop", 0.07, 0.08, 0.20, (3000, 7000), None),
    "g": ("stop", 0.07, 0.08, 0.20, (1500, 3500), None),
}

# One token per syllable, "onset-vowel", "*" marks stress; transcriptions are rough on purpose.
_SENTENCE_SYLLABLES: dict[str, str] = {
    "IEO": "-ih s-ih l-eh* v-ax -ow k-aa*",  # It's eleven o'clock
    "TIE": "d-ae* -ih z-ih z-ae* k-iy w-ah h-ae* p-ax",  # That is exactly what happened
    "IOM": "-ay* m-aa m-ay w-ey* t-ax d-ax m-iy* t-ih",  # I'm on my way to the meeting
    "IWW": "-ay w-ah* n-er w-ah d-ih* s-ih -ax b-ay*",  # I wonder what this is about
    "TAI": "d-ax -eh* p-ey z-ih -ao* m-ow f-uh*",  # The airplane is almost full
    "MTI": "m-ey* b-iy t-ax m-aa* r-ow -ih w-ih b-iy k-ow*",  # Maybe tomorrow it will be cold
    "IWL": "-ay w-uh l-ay* -ax n-uw* -ax l-aa* k-aa",  # I would like a new alarm clock
    "ITH": "-ay th-ih* -ay h-ae -ax d-aa* t-er -ax p-ao* n-ax",  # I think I have a doctor's appt.
    "DFA": "d-ow* f-er g-eh* -ax d-ae* k-ih",  # Don't forget a jacket
    "ITS": "-ay th-ih* -ay s-iy* d-ih b-ih f-ao*",  # I think I've seen this before
    "TSI": "d-ax s-er* f-ih -ih s-ih*",  # The surface is slick
    "WSI": "w-iy s-aa* -ih -ax k-ah* p-ax -ax m-ih* n-ih",  # We'll stop in a couple of minutes
}

# Prosody vector, one entry per parameter: F0 shift (semitones), F0 range (log2 factor),
# speaking rate (log2 factor), energy (dB), spectral tilt (-1 dark .. +1 bright),
# jitter (fraction of period), breathiness (aspiration share).
_P_F0, _P_RANGE, _P_RATE, _P_ENERGY, _P_TILT, _P_JITTER, _P_BREATH = range(7)
# Deviation from neutral at medium intensity (Banse & Scherer 1996; Juslin & Laukka 2003).
_EMOTION_PROSODY: dict[str, tuple[float, ...]] = {
    "ANG": (3.0, 0.4, 0.20, 7.0, 0.60, 0.004, -0.04),  # high, wide, fast, loud, bright (pressed)
    "DIS": (-1.0, 0.2, -0.25, 0.5, -0.25, 0.004, 0.12),  # low, slow, dark, breathy
    "FEA": (4.5, 0.1, 0.25, 1.0, 0.10, 0.015, 0.10),  # highest, fast, very jittery, breathy
    "HAP": (4.0, 0.7, 0.05, 2.5, 0.25, 0.002, 0.0),  # high, widest range, bright
    "NEU": (0.0, 0.0, 0.00, 0.0, 0.00, 0.000, 0.0),  # the reference
    "SAD": (-2.0, -0.6, -0.30, -5.0, -0.50, 0.003, 0.16),  # low, flat, slow, soft, dark, breathy
}
# Per-clip spread of each parameter (one standard deviation at clip_spread=1).
_CLIP_SD = np.array([1.2, 0.25, 0.10, 2.0, 0.18, 0.003, 0.05])
_INTENSITY_SCALE = {"LO": 0.5, "MD": 1.0, "HI": 1.5}


@dataclass
class _Actor:
    """One synthetic speaker: anatomy, voice quality, habits and acting style."""

    actor_id: str
    sex: str
    age: int
    f0: float  # Hz, habitual pitch
    vtl: float  # formant scale: >1 is a shorter vocal tract
    oq: float  # glottal open quotient: higher is breathier and darker
    shimmer: float  # cycle-to-cycle amplitude variation
    bw_scale: float  # formant bandwidth scale
    habit: np.ndarray  # (7,) personal offset of the prosody vector, in every emotion
    expression: dict[str, np.ndarray]  # emotion -> (7,) this actor's version of it


def _make_actor(config: DemoConfig, index: int) -> _Actor:
    rng = np.random.default_rng([config.seed, index, 0xAC7])
    male = index % 2 == 0
    s = config.actor_spread
    habit = rng.standard_normal(7) * _CLIP_SD * 0.6 * s
    habit[_P_F0] = 0.0  # pitch habit is carried by f0 itself
    expression = {}
    for emotion in EMOTIONS:
        base = np.array(_EMOTION_PROSODY[emotion])
        gain = np.exp(rng.standard_normal(7) * 0.35 * s)  # some actors overplay, some underplay
        offset = rng.standard_normal(7) * _CLIP_SD * 0.5 * s
        expression[emotion] = base * gain + (offset if emotion != "NEU" else 0.0)
    return _Actor(
        actor_id=str(DEMO_ACTOR_BASE + index),
        sex="Male" if male else "Female",
        age=int(rng.integers(20, 70)),
        f0=float(rng.uniform(100, 140) if male else rng.uniform(180, 240)),
        vtl=float(rng.uniform(0.95, 1.05) * (1.0 if male else 1.17)),
        oq=float(rng.uniform(0.45, 0.65) + (0.0 if male else 0.08)),
        shimmer=float(rng.uniform(0.02, 0.06)),
        bw_scale=float(rng.uniform(0.8, 1.3)),
        habit=habit,
        expression=expression,
    )


@lru_cache(maxsize=32)
def _band_sos(low: float, high: float, sr: int) -> np.ndarray:
    return butter(2, [low / (sr / 2), min(high, 0.45 * sr) / (sr / 2)], btype="band", output="sos")


def _segments(
    syllables: list[tuple[str, str, bool]], prosody: np.ndarray, config: DemoConfig, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple]]:
    """Lay out the clip: lengths in samples of silence, (onset, vowel) per syllable, silence."""
    sr = config.sample_rate
    speed = 2.0 ** prosody[_P_RATE]
    vowel_s = np.array([0.24 if st else 0.15 for _, _, st in syllables]) * np.exp(
        0.15 * rng.standard_normal(len(syllables))
    )
    onset_s = np.array([_ONSETS[o][1] if o else 0.0 for o, _, _ in syllables])
    speech = np.stack([onset_s, vowel_s], axis=1) / speed  # (n_syll, 2)
    lead, trail = rng.uniform(0.2, 0.5, size=2)
    total = speech.sum() + lead + trail
    if total > config.max_duration:  # talk faster, keep a short silence either side
        lead, trail = min(lead, 0.15), min(trail, 0.15)
        speech *= (config.max_duration - lead - trail) / speech.sum()
    elif total < config.min_duration:  # pad with silence, as CREMA-D's recordings do
        extra = config.min_duration - total
        lead, trail = lead + extra / 2, trail + extra / 2
    secs = np.concatenate([[lead], speech.ravel(), [trail]])
    lengths = np.maximum(np.round(secs * sr).astype(np.int64), 1)
    total_n = int(np.clip(lengths.sum(), np.ceil(config.min_duration * sr), np.floor(config.max_duration * sr)))
    lengths[-1] += total_n - lengths.sum()  # rounding must not break the duration bounds
    kinds: list[tuple] = [("sil",)]
    for onset, vowel, stressed in syllables:
        kinds.append(("onset", onset, vowel))
        kinds.append(("vowel", vowel, stressed))
    kinds.append(("sil",))
    return lengths, kinds


def _synthesize(config: DemoConfig, actor: _Actor, sentence: str, emotion: str, intensity: str) -> np.ndarray:
    """One clip as float32 in [-1, 1]: source-filter speech, one seeded RNG drawn in a fixed order."""
    a_idx = int(actor.actor_id) - DEMO_ACTOR_BASE
    key = [
        config.seed,
        a_idx,
        SENTENCES.index(sentence),
        EMOTIONS.index(emotion),
        INTENSITIES.index(intensity),
    ]
    rng = np.random.default_rng(key)
    sr = config.sample_rate
    scale = _INTENSITY_SCALE.get(intensity) or rng.uniform(0.7, 1.3)  # XX: unspecified, near MD
    prosody = actor.habit + actor.expression[emotion] * scale + rng.standard_normal(7) * _CLIP_SD * (config.clip_spread)
    syllables = [
        (tok.split("-")[0], tok.split("-")[1].rstrip("*"), tok.endswith("*"))
        for tok in _SENTENCE_SYLLABLES[sentence].split()
    ]
    lengths, kinds = _segments(syllables, prosody, config, rng)
    track = _targets(lengths, kinds, sr, rng)
    f0 = _f0_contour(track, kinds, prosody, actor, rng)
    excitation, breath = _excitation(track, kinds, f0, prosody, actor, rng)
    voiced = _vocal_tract(excitation, track, actor, breath)
    return _levels(voiced, track, prosody, config, rng)


@dataclass
class _Track:
    """A clip's segment timing and the targets the source and filter follow."""

    sr: int
    lengths: np.ndarray  # samples per segment
    starts: np.ndarray  # first sample of each segment
    ends: np.ndarray
    t: np.ndarray  # (n,) sample times in seconds
    voicing: np.ndarray  # (n,) voicing amplitude
    f_t: list[float]  # formant target times
    f_v: list  # formant targets (F1-F4) at those times
    noise: np.ndarray  # (n,) frication and stop bursts


def _targets(lengths: np.ndarray, kinds: list, sr: int, rng: np.random.Generator) -> _Track:
    """Amplitude and formant targets as breakpoints, interpolated per sample; consonant noise."""
    n = int(lengths.sum())
    ends = np.cumsum(lengths)
    starts = ends - lengths
    t = np.arange(n) / sr
    v_t, v_a, f_t, f_v = [0.0], [0.0], [], []
    noise = np.zeros(n)
    for i, kind in enumerate(kinds):
        t0, t1 = starts[i] / sr, ends[i] / sr
        dur = t1 - t0
        if kind[0] == "vowel":
            amp = (1.0 if kind[2] else 0.65) * np.exp(0.15 * rng.standard_normal())
            v_t += [t0, t0 + 0.3 * dur, t0 + 0.7 * dur, t1]
            v_a += [0.25 * amp, amp, amp, 0.2 * amp]
            f_t += [t0 + 0.25 * dur, t0 + 0.75 * dur]
            f_v += [_VOWELS[kind[1]]] * 2
        elif kind[0] == "onset" and kind[1]:
            okind, _, voice, namp, band, formants = _ONSETS[kind[1]]
            v_t += [t0, t1]
            v_a += [voice, voice]
            if formants is not None:
                f_t.append(t0 + 0.5 * dur)
                f_v.append(formants)
            m = int(lengths[i])
            if namp > 0 and okind != "asp":  # /h/ is aspiration, added to the excitation later
                u = np.arange(m) / m
                if okind == "fric":
                    noise_env = np.clip(np.minimum(u / 0.2, (1 - u) / 0.2), 0, 1)
                else:  # stop: closure, then a burst that decays into the vowel
                    noise_env = np.where(u < 0.7, 0.0, np.exp(-(u - 0.7) / 0.1))
                burst = sosfilt(_band_sos(band[0], band[1], sr), rng.standard_normal(m))
                noise[starts[i] : ends[i]] += namp * noise_env * burst / (burst.std() + 1e-9)
    v_t.append(n / sr)
    v_a.append(0.0)
    return _Track(sr, lengths, starts, ends, t, np.interp(t, v_t, v_a), f_t, f_v, noise)


def _f0_contour(track: _Track, kinds: list, prosody: np.ndarray, actor: _Actor, rng: np.random.Generator) -> np.ndarray:
    """(n,) F0 in Hz: level + accents on stressed syllables + declination + final fall, in semitones."""
    sr = track.sr
    vowel_idx = [i for i, k in enumerate(kinds) if k[0] == "vowel"]
    centres = (track.starts[vowel_idx] + track.lengths[vowel_idx] / 2) / sr
    stressed = np.array([kinds[i][2] for i in vowel_idx], dtype=float)
    span = 2.0 ** prosody[_P_RANGE]
    st = prosody[_P_F0] + span * (
        2.5 * stressed - 2.0 * centres / centres[-1] + 0.8 * rng.standard_normal(len(centres))
    )
    st[-1] -= 1.5 * span
    return actor.f0 * 2.0 ** (np.interp(track.t, centres, st) / 12.0)


def _excitation(
    track: _Track, kinds: list, f0: np.ndarray, prosody: np.ndarray, actor: _Actor, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """(excitation (n,), breathiness): jittered Rosenberg pulses, lip radiation, shimmer, aspiration, tilt."""
    sr, n = track.sr, len(track.t)
    jitter = max(0.004 + prosody[_P_JITTER], 0.0)
    period0 = np.floor(np.cumsum(f0) / sr).astype(np.int64)
    f0 = f0 * (1.0 + jitter * rng.standard_normal(period0[-1] + 2)[period0])
    phase = np.cumsum(f0) / sr
    period = np.floor(phase).astype(np.int64)
    frac = phase - period
    tilt = float(np.clip(prosody[_P_TILT], -1.0, 1.0))
    breath = float(np.clip(0.08 + prosody[_P_BREATH], 0.0, 0.6))
    oq = float(np.clip(actor.oq - 0.12 * tilt + 0.3 * breath, 0.3, 0.9))
    tp, tn = 0.66 * oq, 0.34 * oq
    flow = np.where(
        frac < tp,
        0.5 * (1.0 - np.cos(np.pi * frac / tp)),
        np.where(frac < tp + tn, np.cos(0.5 * np.pi * np.clip(frac - tp, 0, tn) / tn), 0.0),
    )
    source = np.diff(flow, prepend=0.0)
    source *= 1.0 + actor.shimmer * rng.standard_normal(period[-1] + 1)[period]
    source /= source.std() + 1e-12
    aspiration = rng.standard_normal(n) * np.where(frac < oq, 1.0, 0.4)
    excitation = track.voicing * ((1.0 - breath) * source + 2.0 * breath * aspiration)
    for i, kind in enumerate(kinds):  # /h/ onsets: aspiration only
        if kind[0] == "onset" and kind[1] == "h":
            s, e = track.starts[i], track.ends[i]
            m = int(track.lengths[i])
            excitation[s:e] += 0.5 * np.sin(np.pi * np.arange(m) / m) * aspiration[s:e]
    # Spectral tilt: pre-emphasis when bright, one-pole low-pass when dark.
    b_tilt, a_tilt = 0.7 * max(tilt, 0.0), 0.8 * max(-tilt, 0.0)
    return lfilter([1.0, -b_tilt], [1.0, -a_tilt], excitation), breath


def _vocal_tract(excitation: np.ndarray, track: _Track, actor: _Actor, breath: float) -> np.ndarray:
    """Formant cascade, coefficients updated every 16 ms block (state carried across blocks)."""
    sr, n = track.sr, len(excitation)
    block = sr // 64
    n_blocks = -(-n // block)
    tb = (np.arange(n_blocks) + 0.5) * block / sr
    f_v_arr = np.array(track.f_v) * actor.vtl  # (n_targets, 4)
    freqs = np.stack([np.interp(tb, track.f_t, f_v_arr[:, j]) for j in range(4)], axis=1)  # (n_blocks, 4)
    bws = np.array([60.0, 90.0, 150.0, 200.0]) * actor.bw_scale * (1.0 + 2.0 * breath)
    r = np.exp(-np.pi * bws / sr)
    freqs = np.minimum(freqs, 0.45 * sr)
    c1 = -2.0 * r * np.cos(2.0 * np.pi * freqs / sr)  # (n_blocks, 4)
    c2 = np.broadcast_to(r**2, c1.shape)
    den = np.ones((n_blocks, 1))
    for j in range(4):  # multiply the four 2-pole sections into one 8th-order polynomial
        q = np.stack([np.ones(n_blocks), c1[:, j], c2[:, j]], axis=1)
        new = np.zeros((n_blocks, den.shape[1] + 2))
        for k in range(3):
            new[:, k : k + den.shape[1]] += q[:, k : k + 1] * den
        den = new
    gain = den.sum(axis=1)  # unity gain at DC, as in Klatt's cascade
    voiced = np.empty(n)
    zi = np.zeros(8)
    # Steady vowels and silences repeat a block's coefficients: filter each run in one call.
    run_starts = np.flatnonzero(np.r_[True, np.any(np.diff(freqs, axis=0) != 0, axis=1)])
    for b, b_end in zip(run_starts, np.r_[run_starts[1:], n_blocks]):
        sl = slice(b * block, min(b_end * block, n))
        voiced[sl], zi = lfilter([gain[b]], den[b], excitation[sl], zi=zi)
    return voiced


def _levels(
    voiced: np.ndarray, track: _Track, prosody: np.ndarray, config: DemoConfig, rng: np.random.Generator
) -> np.ndarray:
    """Speech RMS set by actor and emotion; frication rides on it; room noise at a fixed level."""
    n = len(voiced)
    speech = voiced / (voiced[track.voicing > 0.3].std() + 1e-12) + track.noise
    active = (track.voicing > 0.3) | (track.noise != 0)
    level_db = -26.0 + prosody[_P_ENERGY]
    speech *= 10.0 ** (level_db / 20.0) / (speech[active].std() + 1e-12)
    room = lfilter([1.0], [1.0, -0.9], rng.standard_normal(n))
    room *= 10.0 ** ((config.noise_dbfs + rng.uniform(-3, 3)) / 20.0) / room.std()
    return np.clip(speech + room, -1.0, 1.0).astype(np.float32)


def _write_demographics(path: Path, actors: list[_Actor]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
        w.writerow(["ActorID", "Age", "Sex", "Race", "Ethnicity"])
        for a in actors:
            w.writerow([int(a.actor_id), a.age, a.sex, "Unknown", "Unknown"])


def generate_demo(out_dir: str | Path, config: DemoConfig | None = None, progress: bool = False) -> Path:
    """Write the demo corpus to ``out_dir`` (created if needed) and return its path.

    A no-op when ``out_dir`` already holds a complete demo of the same config and generator
    version (the marker file is written last, so an interrupted run is redone). Otherwise
    stale demo files are removed and everything is rewritten. Refuses a folder that holds
    anything else, so a real corpus is never mixed with synthetic clips.

    >>> root = generate_demo("data/demo")            # doctest: +SKIP
    >>> load_corpus(root).summary()                  # doctest: +SKIP
    'cremad corpus at .../data/demo: 1312 clips, 16 speakers, labels ANG,DIS,FEA,HAP,NEU,SAD, 0 refused'
    """
    config = config or DemoConfig()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out_dir must be a directory. Found a file: {out}")
    out.mkdir(parents=True, exist_ok=True)
    stems = demo_clip_stems(config)
    if is_complete(out, config, stems):
        log.info("demo corpus already complete at %s (%d clips)", out, len(stems))
        return out
    foreign = sorted(p.name for p in out.iterdir() if not is_ours(p))
    if foreign:
        raise ValueError(
            f"out_dir must be empty or hold only a demo corpus; {out} also holds {len(foreign)} other "
            f"entries, e.g. {foreign[:3]}"
        )
    (out / MARKER_FILE).unlink(missing_ok=True)
    wanted = {f"{s}.wav" for s in stems}
    for p in out.iterdir():
        if p.name not in wanted and p.name != DEMOGRAPHICS_FILE:
            p.unlink()

    actors = [_make_actor(config, i) for i in range(config.n_actors)]
    atomic_write(out / DEMOGRAPHICS_FILE, lambda p: _write_demographics(p, actors))
    from tqdm import tqdm

    # disable=None: a bar on a terminal only; in a container's log every redraw would be a line
    def write(stem: str) -> None:
        f = parse_name(stem)
        actor = actors[int(f["actor"]) - DEMO_ACTOR_BASE]
        audio = _synthesize(config, actor, *(f[k] for k in ("sentence", "emotion", "intensity")))
        atomic_write(
            out / f"{stem}.wav", lambda p: sf.write(p, audio, config.sample_rate, subtype="PCM_16", format="WAV")
        )

    # Each clip draws from its own seed stream, so clips are independent of order and can be made
    # side by side; NumPy and libsndfile release the GIL for most of each clip.
    with (
        tqdm(total=len(stems), desc="demo corpus", unit="clip", disable=None if progress else True) as bar,
        ThreadPoolExecutor(max_workers=decode_workers()) as pool,
    ):
        for _ in pool.map(write, stems):
            bar.update()
    atomic_write(out / MARKER_FILE, lambda p: p.write_text(json.dumps(marker(config), indent=2) + "\n"))
    log.info("demo corpus written to %s (%d clips)", out, len(stems))
    return out
