"""Corpora: where clips come from, their labels, speakers and metadata.

Every corpus reads the same way: ``load_corpus(path)`` returns a :class:`Corpus` holding
one :class:`Clip` per usable file and an errors-table row per file it had to refuse
(misnamed, unknown label, missing). Three kinds are detected automatically:

- ``cremad``: a folder of ``{actor}_{sentence}_{emotion}_{intensity}.wav`` files
  (CREMA-D's AudioWAV, or the demo corpus, which uses the same naming);
- ``manifest``: a CSV or Parquet file with columns ``path,label[,speaker][,...]``,
  paths relative to the manifest;
- ``audiofolder``: ``root/<label>/<file>`` (speaker unknown).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sononet.errors import ErrorRow

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus")
AUDIO_SUFFIXES += (".m4a", ".aac", ".mp4", ".m4b", ".webm", ".mka", ".mkv", ".mov", ".wma", ".amr", ".3gp")  # PyAV


@dataclass(frozen=True)
class Clip:
    """One labelled audio file; metadata fields are None where the corpus does not know them."""

    clip_id: str  # unique within the corpus, stable across runs
    path: str  # absolute path of the audio file
    label: str
    speaker: str | None = None
    intensity: str | None = None  # CREMA-D: LO/MD/HI/XX
    sex: str | None = None
    sentence: str | None = None
    extra: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Corpus:
    kind: str  # cremad | manifest | audiofolder
    root: str
    clips: list[Clip]
    errors: list[ErrorRow]
    labels: list[str]  # sorted label set, from the data

    @property
    def n_files(self) -> int:
        return len(self.clips) + len(self.errors)

    def summary(self) -> str:
        speakers = {c.speaker for c in self.clips if c.speaker is not None}
        return (
            f"{self.kind} corpus at {self.root}: {len(self.clips)} clips, "
            f"{len(speakers) if speakers else 'unknown'} speakers, labels {','.join(self.labels)}, "
            f"{len(self.errors)} refused"
        )


def detect_kind(path: str | Path) -> str:
    """Say which corpus convention ``path`` follows, or raise with what to do."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"data path does not exist: {p}")
    if p.is_file():
        if p.suffix.lower() in (".csv", ".parquet", ".tsv"):
            return "manifest"
        raise ValueError(f"{p} is a file but not a manifest (.csv/.tsv/.parquet)")
    from sononet.corpus.cremad import looks_like_cremad

    if looks_like_cremad(p):
        return "cremad"
    if any(d.is_dir() for d in p.iterdir()):
        return "audiofolder"
    raise ValueError(
        f"{p} holds no CREMA-D-named files and no label sub-folders; pass a CREMA-D AudioWAV folder, "
        "a manifest CSV/Parquet (path,label[,speaker]) or an audiofolder root/<label>/<file>"
    )


def load_corpus(path: str | Path, kind: str = "auto") -> Corpus:
    """Load any supported corpus; ``kind='auto'`` detects the convention."""
    kind = detect_kind(path) if kind == "auto" else kind
    if kind == "cremad":
        from sononet.corpus.cremad import load_cremad

        return load_cremad(path)
    if kind == "manifest":
        from sononet.corpus.folder import load_manifest

        return load_manifest(path)
    if kind == "audiofolder":
        from sononet.corpus.folder import load_audiofolder

        return load_audiofolder(path)
    raise ValueError(f"unknown corpus kind {kind!r}; expected auto, cremad, manifest or audiofolder")
