"""CREMA-D: Crowd-sourced Emotional Multimodal Actors Dataset.

About the corpus: 7,442 clips from 91 actors (48 male, 43 female, aged 20-74), 12
sentences, six emotions (anger, disgust, fear, happy, neutral, sad); sentence IEO is
spoken at three intensities (LO/MD/HI), the rest at unspecified intensity (XX). Audio is
16 kHz mono 16-bit PCM, mean 2.54 s. File names are
``{actor}_{sentence}_{emotion}_{intensity}.wav``. Each clip was rated by the crowd from
voice only, face only and both; the voice-only majority vote is a human baseline.

Source: https://github.com/CheyneyComputerScience/CREMA-D (audio in Git LFS).
Licence: Open Database License (ODbL 1.0), contents under the Database Contents License;
the tables shipped in ``sononet/corpus/data`` keep that attribution (see LICENSE.txt).
Download with :mod:`sononet.corpus.download`.
"""

from __future__ import annotations

import csv
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

from sononet.corpus.clips import AUDIO_SUFFIXES, Clip, Corpus
from sononet.errors import ErrorRow
from sononet.sources import file_error

EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
INTENSITIES = ("LO", "MD", "HI", "XX")
SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
VOICE_VOTE_LETTERS = {"A": "ANG", "D": "DIS", "F": "FEA", "H": "HAP", "N": "NEU", "S": "SAD"}
N_CLIPS = 7442
SAMPLE_RATE = 16_000  # every CREMA-D file: 16 kHz mono 16-bit PCM
DEMOGRAPHICS_FILE = "VideoDemographics.csv"

# Emotion is validated separately so a typo'd emotion is "unknown_label", not "misnamed".
NAME_RE = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<intensity>LO|MD|HI|XX)$")


def _data_file(name: str):
    return resources.files("sononet.corpus").joinpath("data", name)


def parse_name(stem: str) -> dict[str, str] | None:
    """Split a CREMA-D file stem into its fields, or None if it does not follow the scheme."""
    m = NAME_RE.match(stem)
    return m.groupdict() if m else None


@lru_cache(maxsize=1)
def read_audio_manifest() -> list[dict[str, str]]:
    """The official per-file manifest: file, bytes, sha256, actor, sentence, emotion, intensity."""
    with _data_file("audio_manifest.csv").open("r", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_demographics(path: str | Path | None = None) -> dict[str, dict[str, str]]:
    """Actor id -> {age, sex, race, ethnicity}; the shipped table unless ``path`` is given."""
    source = Path(path) if path else _data_file(DEMOGRAPHICS_FILE)
    with source.open("r", encoding="utf-8") as f:
        return {
            row["ActorID"]: {
                "age": row["Age"],
                "sex": row["Sex"],
                "race": row["Race"],
                "ethnicity": row["Ethnicity"],
            }
            for row in csv.DictReader(f)
        }


@lru_cache(maxsize=1)
def read_voice_votes() -> dict[str, tuple[str, ...]]:
    """Clip id -> the emotion(s) of the crowd's voice-only majority vote, from summaryTable.csv.

    A tie is written as several letters (``"A:N"``, always in alphabetical order) and kept
    as the tied set: scoring a tie as "no majority" reproduces the published 41.6 %
    voice-only accuracy, while keeping the first letter would favour ANG and DIS.
    """
    votes: dict[str, tuple[str, ...]] = {}
    with _data_file("summaryTable.csv").open("r", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            letters = [x.strip() for x in row["VoiceVote"].split(":") if x.strip()]
            votes[row["FileName"]] = tuple(VOICE_VOTE_LETTERS.get(x, x) for x in letters)
    return votes


def looks_like_cremad(root: str | Path, probe: int = 50) -> bool:
    """True when the first audio files of ``root`` mostly follow CREMA-D naming."""
    stems = []
    for p in sorted(Path(root).iterdir()):
        if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES:
            stems.append(p.stem)
            if len(stems) >= probe:
                break
    return bool(stems) and sum(parse_name(s) is not None for s in stems) >= max(1, len(stems) // 2)


def _is_ignored(p: Path) -> bool:
    # Hidden files and in-flight downloads are not inputs.
    return p.name.startswith(".") or p.suffix == ".part"


def load_cremad(root: str | Path) -> Corpus:
    """Read a CREMA-D-named folder (flat) into clips, refusing misnamed files with a reason.

    Demographics come from a ``VideoDemographics.csv`` inside ``root`` when present (the
    demo corpus writes its own), else from the shipped official table.
    """
    root = Path(root).resolve()
    local_demo = root / DEMOGRAPHICS_FILE
    demographics = read_demographics(local_demo if local_demo.exists() else None)
    clips: list[Clip] = []
    errors: list[ErrorRow] = []
    for p in sorted(root.iterdir()):
        if p.is_dir() or _is_ignored(p) or p.name == DEMOGRAPHICS_FILE:
            continue
        if (error := file_error(p)) is not None:  # a FIFO or device is never opened; a dangling link is missing
            errors.append(error)
            continue
        if p.suffix.lower() not in AUDIO_SUFFIXES:
            errors.append(ErrorRow(str(p), "unsupported_format", f"suffix {p.suffix or '(none)'}"))
            continue
        fields = parse_name(p.stem)
        if fields is None:
            errors.append(
                ErrorRow(
                    str(p),
                    "misnamed",
                    "expected {actor}_{sentence}_{emotion}_{intensity}, e.g. 1001_DFA_ANG_XX",
                )
            )
            continue
        if fields["emotion"] not in EMOTIONS:
            errors.append(ErrorRow(str(p), "unknown_label", f"emotion {fields['emotion']!r} not in {EMOTIONS}"))
            continue
        actor = fields["actor"]
        demo = demographics.get(actor, {})
        clips.append(
            Clip(
                clip_id=p.stem,
                path=str(p),
                label=fields["emotion"],
                speaker=actor,
                intensity=fields["intensity"],
                sex=demo.get("sex"),
                sentence=fields["sentence"],
                extra={k: v for k, v in demo.items() if k != "sex"},
            )
        )
    return Corpus(kind="cremad", root=str(root), clips=clips, errors=errors, labels=list(EMOTIONS))
