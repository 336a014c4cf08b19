"""Corpora: where clips come from, their labels, speakers and metadata.

Every corpus reads the same way: ``load_corpus(path)`` returns a :class:`Corpus` holding
one :class:`Clip` per usable file and an errors-table row per file it had to refuse
(misnamed, unknown label, missing). These kinds are detected automatically:

- ``cremad``: a folder of ``{actor}_{sentence}_{emotion}_{intensity}.wav`` files
  (CREMA-D's AudioWAV, or the demo corpus, which uses the same naming);
- ``manifest``: a CSV or Parquet file with columns ``path,label[,speaker][,...]``,
  paths relative to the manifest, or a folder holding one (``manifest.csv``, or a Hugging Face
  audiofolder's ``metadata.csv`` with a label column), which is read as that manifest;
- ``ravdess``: RAVDESS speech, ``MM-VV-EE-II-SS-RR-AA`` names at any depth;
- ``audiofolder``: ``root/<label>/<file>`` (speaker unknown);
- ``hf``: a Hugging Face ``datasets`` Dataset or DatasetDict saved with ``save_to_disk``;
- ``lhotse``: a lhotse CutSet manifest (``cuts.jsonl[.gz]``).

:func:`select_labels` then maps labels (``CAL=NEU``) and keeps a chosen class set; clips of
other classes are counted as excluded, not as errors: they are fine audio, just not this task.
"""

from __future__ import annotations

from pathlib import Path

from sononet.corpus.clips import AUDIO_SUFFIXES as AUDIO_SUFFIXES
from sononet.corpus.clips import Clip as Clip
from sononet.corpus.clips import Corpus as Corpus
from sononet.corpus.clips import parse_label_map as parse_label_map
from sononet.corpus.clips import select_labels as select_labels
from sononet.corpus.cremad import load_cremad, looks_like_cremad, read_audio_manifest
from sononet.corpus.demo import is_demo_corpus
from sononet.corpus.hf import load_hf, looks_like_hf
from sononet.corpus.lhotse import load_lhotse, manifest_kind
from sononet.corpus.ravdess import load_ravdess, looks_like_ravdess
from sononet.errors import NotFoundError
from sononet.sources import regular_input


def detect_kind(path: str | Path) -> str:
    """Say which corpus convention ``path`` follows, or raise with what to do."""
    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"data path does not exist: {p}")
    if not p.is_dir():
        regular_input(p, "data path")  # a FIFO or a device would block or never end
    if p.is_file():
        if p.suffix.lower() in (".csv", ".parquet", ".tsv"):
            return "manifest"
        if manifest_kind(p):
            return "lhotse"
        raise ValueError(f"{p} is a file but not a manifest (.csv/.tsv/.parquet) nor a lhotse CutSet (.jsonl[.gz])")

    from sononet.corpus.folder import folder_manifest

    # A named corpus's file names carry its own metadata and protocol (RAVDESS's shared folder also
    # holds a manifest.csv); otherwise the user's own list wins over guessing from sub-folders.
    if looks_like_cremad(p):
        return "cremad"
    if looks_like_ravdess(p):
        return "ravdess"
    if folder_manifest(p):
        return "manifest"
    if looks_like_hf(p):
        return "hf"
    if any(d.is_dir() for d in p.iterdir()):
        return "audiofolder"
    raise ValueError(
        f"{p} holds no CREMA-D- or RAVDESS-named files and no label sub-folders; pass a CREMA-D AudioWAV folder, "
        "a manifest CSV/Parquet (path,label[,speaker]), an audiofolder root/<label>/<file>, a Hugging Face "
        "save_to_disk folder or a lhotse cuts.jsonl.gz"
    )


def load_corpus(path: str | Path, kind: str = "auto") -> Corpus:
    """Load any supported corpus; ``kind='auto'`` detects the convention."""
    kind = detect_kind(path) if kind == "auto" else kind
    if kind == "cremad":
        return load_cremad(path)
    if kind == "ravdess":
        return load_ravdess(path)
    if kind == "manifest":
        from sononet.corpus.folder import folder_manifest, load_manifest

        if Path(path).is_dir():
            manifest = folder_manifest(Path(path))
            if manifest is None:
                raise ValueError(f"{path} is a folder without a manifest.csv; pass the manifest file itself")
            path = manifest
        return load_manifest(path)
    if kind == "audiofolder":
        from sononet.corpus.folder import load_audiofolder

        return load_audiofolder(path)
    if kind == "hf":
        return load_hf(path)
    if kind == "lhotse":
        return load_lhotse(path)
    raise ValueError(
        f"unknown corpus kind {kind!r}; expected auto, cremad, ravdess, manifest, audiofolder, hf or lhotse"
    )


def corpus_label(manifest: dict, clip_ids: list[str]) -> str:
    """Name the corpus for every table: real CREMA-D only when every clip is an official one."""

    corpus = manifest["corpus"]
    if corpus["kind"] == "cremad":
        if is_synthetic(manifest):
            return "demo (synthetic)"
        official = {Path(r["file"]).stem for r in read_audio_manifest()}
        if set(clip_ids) <= official:
            return "cremad"
        return f"cremad-named folder:{corpus['root']}"
    if corpus["kind"] == "ravdess":  # names are validated on load; the class set is in every table
        return "ravdess"
    return f"{corpus['kind']}:{corpus['root']}"


def is_synthetic(manifest: dict) -> bool:
    """The shards hold the generated demo corpus (its folder carries the generator's marker file)."""
    corpus = manifest["corpus"]
    return corpus["kind"] == "cremad" and is_demo_corpus(corpus["root"])
