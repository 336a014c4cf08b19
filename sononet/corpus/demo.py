"""The synthetic demo corpus: CREMA-D-shaped speech, generated in-process, no download.

About the corpus: ``n_actors`` synthetic actors (ids 2001.., so never a real CREMA-D
actor, 1001-1091), half male, half female; CREMA-D's 12 sentences and 6 emotions, sentence
IEO at LO/MD/HI (NEU at XX only) and the rest at XX: 82 clips per actor, 1,312 for the
default 16 actors. 16 kHz mono 16-bit PCM WAV, 1.5-3.5 s, named
``{actor}_{sentence}_{emotion}_{intensity}.wav`` with a ``VideoDemographics.csv`` beside
them, so :func:`sononet.corpus.cremad.load_cremad` reads it exactly like the real thing.

Deterministic: each clip draws from its own seed stream ``(seed, actor, sentence,
emotion, intensity)``, so output is byte-identical for a seed and independent of order.
The synthesiser and :func:`generate_demo` are in :mod:`sononet.corpus.demo_synth`.
Licence: generated data, Apache-2.0 like the code; only the sentence list is CREMA-D's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from sononet.corpus.cremad import DEMOGRAPHICS_FILE, EMOTIONS, SAMPLE_RATE, SENTENCES, parse_name

DEMO_ACTOR_BASE = 2001  # first demo actor id; real CREMA-D uses 1001-1091
MARKER_FILE = ".demo.json"  # hidden, so load_cremad neither reads nor refuses it
GENERATOR_VERSION = 1  # bump when the synthesis changes, so old folders are regenerated
CLIPS_PER_ACTOR = 11 * len(EMOTIONS) + 1 + (len(EMOTIONS) - 1) * 3  # 82, as in CREMA-D


@dataclass
class DemoConfig:
    """Everything that shapes the demo corpus; stored in the marker file to detect changes."""

    seed: int = 0  # one seed, so the corpus is byte-identical on every laptop
    n_actors: int = 16  # 1,312 clips: enough for 12/4 speaker-disjoint splits, ~1 min of CPU training
    sample_rate: int = SAMPLE_RATE  # CREMA-D's rate, so the pipeline never resamples the demo
    noise_dbfs: float = -50.0  # background noise level: audible room tone, SNR ~25 dB like CREMA-D
    clip_spread: float = 1.0  # per-clip prosody variation (x _CLIP_SD); with actor_spread, ~60 % speaker-disjoint
    actor_spread: float = 1.0  # per-actor idiosyncrasy in habits and in how each emotion is acted
    min_duration: float = 1.5  # seconds; CREMA-D clips run ~1.3-5 s, mean 2.5 s
    max_duration: float = 3.5  # seconds; stays under the pipeline's 3 s pad/trim + margin

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0. Found: {self.seed}")
        if not 1 <= self.n_actors <= 999:
            raise ValueError(f"n_actors must be between 1 and 999. Found: {self.n_actors}")
        if self.sample_rate < 8000:
            raise ValueError(f"sample_rate must be at least 8000 Hz. Found: {self.sample_rate}")
        if self.clip_spread < 0 or self.actor_spread < 0:
            raise ValueError(
                f"clip_spread and actor_spread must be >= 0. Found: {self.clip_spread}, {self.actor_spread}"
            )
        if not 0.5 <= self.min_duration < self.max_duration:
            raise ValueError(
                "need 0.5 <= min_duration < max_duration. "
                f"Found: min_duration={self.min_duration}, max_duration={self.max_duration}"
            )


def demo_clip_stems(config: DemoConfig) -> list[str]:
    """The file stems a complete demo of ``config`` holds, in generation order."""
    stems = []
    for a in range(config.n_actors):
        actor = str(DEMO_ACTOR_BASE + a)
        for sentence in SENTENCES:
            for emotion in EMOTIONS:
                levels = ("LO", "MD", "HI") if sentence == "IEO" and emotion != "NEU" else ("XX",)
                stems.extend(f"{actor}_{sentence}_{emotion}_{lv}" for lv in levels)
    return stems


def is_demo_corpus(root: str | Path) -> bool:
    """``root`` is a folder this generator wrote (it holds the marker file)."""
    return (Path(root) / MARKER_FILE).is_file()


def marker(config: DemoConfig) -> dict:
    n_files = config.n_actors * CLIPS_PER_ACTOR
    return {"generator": __name__, "version": GENERATOR_VERSION, "config": asdict(config), "n_files": n_files}


def is_complete(out: Path, config: DemoConfig, stems: list[str]) -> bool:
    from sononet.io import read_json  # here: this module stays light for the profile rule

    try:
        found = read_json(out / MARKER_FILE)
    except (OSError, ValueError):
        return False
    return (
        found == marker(config)
        and (out / DEMOGRAPHICS_FILE).is_file()
        and all((out / f"{s}.wav").is_file() for s in stems)
    )


def is_ours(p: Path) -> bool:
    """Files a demo run writes: demo-actor WAVs, the demographics, the marker, temp files."""
    if p.name in (DEMOGRAPHICS_FILE, MARKER_FILE) or (p.name.startswith(".") and ".tmp-" in p.name):
        return True
    fields = parse_name(p.stem) if p.suffix == ".wav" else None
    return fields is not None and int(fields["actor"]) >= DEMO_ACTOR_BASE
