"""RAVDESS: the Ryerson Audio-Visual Database of Emotional Speech and Song (speech, audio only).

About the corpus: 1,440 clips from 24 professional actors (12 female, 12 male; odd actor
numbers are male), North American English, two fixed sentences ("Kids are talking by the
door", "Dogs are sitting by the door"), eight emotions (neutral, calm, happy, sad, angry,
fearful, disgust, surprised), every emotion but neutral at two intensities (normal,
strong), each recorded twice. 48 kHz originals, about 1 s of near-silence at each end
(trim it: ``FeatureConfig.trim_db``). File names are seven two-digit fields
``MM-VV-EE-II-SS-RR-AA`` (modality, vocal channel, emotion, intensity, statement,
repetition, actor), e.g. ``03-01-05-02-01-01-12``.

Emotions map onto CREMA-D's codes where they correspond (ANG, DIS, FEA, HAP, NEU, SAD);
calm and surprised keep codes of their own (CAL, SUR). The CREMA-D 6-class task is
``--labels ANG,DIS,FEA,HAP,NEU,SAD``; ``--label-map CAL=NEU`` folds calm into neutral.

Source: https://zenodo.org/record/1188976 (Livingstone & Russo 2018, PLoS ONE 13(5):
e0196391). Licence: CC BY-NC-SA 4.0, non-commercial use only: never ship its audio.
"""

from __future__ import annotations

import re
from pathlib import Path

from sononet.corpus.clips import AUDIO_SUFFIXES, Clip, Corpus
from sononet.errors import ErrorRow
from sononet.sources import file_error

EMOTIONS = {"01": "NEU", "02": "CAL", "03": "HAP", "04": "SAD", "05": "ANG", "06": "FEA", "07": "DIS", "08": "SUR"}
INTENSITIES = {"01": "normal", "02": "strong"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
LICENSE = "CC BY-NC-SA 4.0 (Livingstone & Russo 2018, doi:10.5281/zenodo.1188976)"

NAME_RE = re.compile(
    r"^(?P<modality>\d{2})-(?P<channel>\d{2})-(?P<emotion>\d{2})-(?P<intensity>\d{2})-"
    r"(?P<statement>\d{2})-(?P<repetition>\d{2})-(?P<actor>\d{2})$"
)


def parse_name(stem: str) -> dict[str, str] | None:
    """Split a RAVDESS file stem into its seven fields, or None if it does not follow the scheme."""
    m = NAME_RE.match(stem)
    return m.groupdict() if m else None


def _audio_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in AUDIO_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def looks_like_ravdess(root: str | Path, probe: int = 50) -> bool:
    """True when most of the first audio files under ``root`` follow RAVDESS naming."""
    stems = [p.stem for p in _audio_files(Path(root))[:probe]]
    return bool(stems) and sum(parse_name(s) is not None for s in stems) >= max(1, len(stems) // 2)


def load_ravdess(root: str | Path) -> Corpus:
    """Read every RAVDESS-named speech clip under ``root`` (any depth: ``Actor_XX/`` folders or flat).

    Song clips (vocal channel 02) and video files are refused as ``unknown_label`` and
    ``unsupported_format`` rows, misnamed audio as ``misnamed``, so the errors table accounts
    for every file.
    """
    root = Path(root).resolve()
    clips: list[Clip] = []
    errors: list[ErrorRow] = []
    seen: dict[str, str] = {}
    for p in _audio_files(root):
        if p.is_dir():
            continue
        if (error := file_error(p)) is not None:  # a FIFO or device is never opened; a dangling link is missing
            errors.append(error)
            continue
        fields = parse_name(p.stem)
        if fields is None:
            errors.append(ErrorRow(str(p), "misnamed", "expected MM-VV-EE-II-SS-RR-AA, e.g. 03-01-05-02-01-01-12"))
            continue
        if fields["modality"] not in ("01", "03") or fields["channel"] != "01":
            detail = f"modality {fields['modality']}, vocal channel {fields['channel']}: only speech audio is read"
            errors.append(ErrorRow(str(p), "unknown_label", detail))
            continue
        label = EMOTIONS.get(fields["emotion"])
        intensity = INTENSITIES.get(fields["intensity"])
        sentence = STATEMENTS.get(fields["statement"])
        if label is None or intensity is None or sentence is None:
            errors.append(
                ErrorRow(str(p), "unknown_label", f"emotion/intensity/statement codes out of range in {p.stem}")
            )
            continue
        if p.stem in seen:  # one clip id, one clip: the same recording twice (flat and in Actor_XX/)
            detail = f"clip id {p.stem!r} is already {seen[p.stem]}; kept the first"
            errors.append(ErrorRow(str(p), "duplicate", detail))
            continue
        seen[p.stem] = str(p)
        actor = int(fields["actor"])
        clips.append(
            Clip(
                clip_id=p.stem,
                path=str(p),
                label=label,
                speaker=f"Actor_{actor:02d}",
                intensity=intensity,
                sex="Male" if actor % 2 else "Female",
                sentence=sentence,
                extra={"statement": fields["statement"], "repetition": fields["repetition"]},
            )
        )
    labels = sorted({c.label for c in clips})
    return Corpus(kind="ravdess", root=str(root), clips=clips, errors=errors, labels=labels)
