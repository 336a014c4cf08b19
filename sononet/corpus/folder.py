"""Generic corpora: any folder of labelled audio, in the two conventions users already have.

- Manifest: a CSV/TSV/Parquet table with columns ``path,label`` and optionally ``speaker``,
  ``sex``, ``intensity`` and anything else (kept as extra metadata). Paths are relative to
  the manifest's folder (absolute paths are accepted too); a URL or a command in a ``path`` cell is
  a ``not_local`` row, a FIFO ``not_a_file`` (:mod:`sononet.sources`). This is most in-house
  corpora, and Hugging Face's audiofolder ``metadata.csv`` (its ``file_name`` column is the path).
  A folder holding ``manifest.csv`` (or a ``metadata.csv`` with a label column) is read as that
  manifest, not as label folders: :func:`folder_manifest`.
- Audiofolder: ``root/<label>/<file>``, nested folders allowed below the label; speaker
  unknown, so splits fall back to what the caller allows (see ``sononet.corpus.splits``).

The label set comes from the data, never from CREMA-D's six.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sononet.corpus.clips import AUDIO_SUFFIXES, Clip, Corpus, label_text
from sononet.errors import AudioError, ErrorRow
from sononet.sources import file_error, local_file, regular_input

REQUIRED_COLUMNS = ("path", "label")
KNOWN_COLUMNS = ("path", "label", "speaker", "sex", "intensity", "sentence")
PATH_ALIASES = ("file_name",)  # Hugging Face audiofolder's metadata.csv names the path column so
MANIFEST_NAMES = ("manifest.csv", "manifest.tsv", "manifest.parquet")  # a folder's own manifest
HF_METADATA = "metadata.csv"  # a Hugging Face audiofolder's; a manifest when it has a label column


def manifest_rows(path: Path, required: tuple[str, ...] = REQUIRED_COLUMNS) -> list[dict]:
    """Rows of a CSV/TSV/Parquet manifest, the one reader for corpora and ``sononet label``.

    Known columns must be text (or integers), never floats, lists or twice, and ``required`` present.
    A file pyarrow cannot parse (a cell larger than its 1 MB block, broken quoting, a corrupt Parquet
    footer) is a ValueError naming the file.
    """
    regular_input(path, "manifest")  # a FIFO would block the read
    try:
        if path.suffix.lower() == ".parquet":
            table = pq.read_table(path)
        else:
            delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
            table = pacsv.read_csv(  # the known columns as written: "2" stays "2", never 2.0
                path,
                parse_options=pacsv.ParseOptions(delimiter=delimiter),
                convert_options=pacsv.ConvertOptions(
                    strings_can_be_null=True, column_types=dict.fromkeys((*KNOWN_COLUMNS, *PATH_ALIASES), pa.string())
                ),
            )
    except (pa.ArrowException, OSError) as e:  # ArrowInvalid, ArrowIOError...: pyarrow names no file
        raise ValueError(f"manifest {path} cannot be read as {path.suffix.lstrip('.').upper()}: {e}") from None
    names = table.column_names
    alias = next((a for a in PATH_ALIASES if a in names), None)
    if "path" not in names and alias:
        table = table.rename_columns(["path" if c == alias else c for c in names])
        names = table.column_names
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise ValueError(f"manifest {path} has duplicate column name(s) {twice}; keep one of each")
    missing = [c for c in required if c not in names]
    if missing:
        need = "path,label[,speaker]" if required == REQUIRED_COLUMNS else ",".join(required)
        raise ValueError(f"manifest {path} lacks column(s) {missing}; it needs {need}. Found: {names}")
    for name in KNOWN_COLUMNS:
        if name not in names:
            continue
        tp = table.schema.field(name).type
        text = pa.types.is_string(tp) or pa.types.is_large_string(tp) or pa.types.is_null(tp)
        if not (text or (name != "path" and pa.types.is_integer(tp))):
            allowed = "text" if name == "path" else "text or integers"
            raise ValueError(f"manifest {path}: column {name!r} must hold {allowed}. Found type: {tp}")
    return table.to_pylist()


def folder_manifest(folder: Path) -> Path | None:
    """The manifest a corpus folder carries: ``manifest.csv`` (.tsv, .parquet), else a Hugging Face
    ``metadata.csv`` that has a ``label`` column (without one, its labels are the folder names)."""
    for name in MANIFEST_NAMES:
        if (folder / name).is_file():
            return folder / name
    metadata = folder / HF_METADATA
    if metadata.is_file():
        try:
            header = pacsv.open_csv(metadata).schema.names  # reads the first block only
        except pa.ArrowInvalid:  # not a table: then it is not this corpus's manifest either
            return None
        if "label" in header and ("path" in header or any(a in header for a in PATH_ALIASES)):
            return metadata
    return None


def _text(value: object) -> str | None:
    """A cell as text: integers as written, strings stripped; None and blank are None."""
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def load_manifest(path: str | Path) -> Corpus:
    """Read a manifest table; rows with a missing file or no label become errors-table rows."""
    path = Path(path).resolve()
    base = path.parent
    clips: list[Clip] = []
    errors: list[ErrorRow] = []
    seen: set[str] = set()
    seen_files: dict[Path, int] = {}
    for i, row in enumerate(manifest_rows(path)):
        rel = _text(row["path"])
        try:
            audio = local_file(rel, base)  # only local regular files: a URL, a command or a FIFO is a row
        except AudioError as e:
            shown = os.path.normpath(base / rel) if e.reason in ("missing", "not_a_file", "unreadable") and rel else rel
            errors.append(ErrorRow(shown or f"{path}:row {i}", e.reason, f"row {i} of {path.name}: {e.detail}"))
            continue
        if audio in seen_files:  # one file, one clip: a second listing would be a second, conflicting label
            errors.append(ErrorRow(str(audio), "duplicate", f"row {i} repeats row {seen_files[audio]}; kept the first"))
            continue
        seen_files[audio] = i
        label, why = label_text(_text(row["label"]))
        if label is None:
            errors.append(ErrorRow(str(audio), "unknown_label", why))
            continue
        clip_id = str(Path(rel).with_suffix(""))
        if clip_id in seen:
            clip_id = str(Path(rel))
        if clip_id in seen:
            errors.append(ErrorRow(str(audio), "duplicate", f"row {i}: clip id {clip_id!r} is already taken"))
            continue
        seen.add(clip_id)
        clips.append(
            Clip(
                clip_id=clip_id,
                path=str(audio),
                label=label,
                speaker=_text(row.get("speaker")),
                intensity=_text(row.get("intensity")),
                sex=_text(row.get("sex")),
                sentence=_text(row.get("sentence")),
                extra={k: str(v) for k, v in row.items() if k not in KNOWN_COLUMNS and v is not None},
            )
        )
    labels = sorted({c.label for c in clips})
    return Corpus(kind="manifest", root=str(path), clips=clips, errors=errors, labels=labels)


def load_audiofolder(root: str | Path) -> Corpus:
    """Read ``root/<label>/**/<file>``; files directly under root have no label and are refused."""
    root = Path(root).resolve()
    clips: list[Clip] = []
    errors: list[ErrorRow] = []
    for p in sorted(root.rglob("*")):
        if p.is_dir() or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        rel = p.relative_to(root)
        if (error := file_error(p)) is not None:  # a FIFO or device is never opened; a dangling link is missing
            errors.append(error)
            continue
        if len(rel.parts) < 2:
            errors.append(ErrorRow(str(p), "unknown_label", "file sits directly under the root, not in a label folder"))
            continue
        if p.suffix.lower() not in AUDIO_SUFFIXES:
            errors.append(ErrorRow(str(p), "unsupported_format", f"suffix {p.suffix or '(none)'}"))
            continue
        clips.append(Clip(clip_id=str(rel.with_suffix("")), path=str(p), label=rel.parts[0]))
    labels = sorted({c.label for c in clips})
    return Corpus(kind="audiofolder", root=str(root), clips=clips, errors=errors, labels=labels)
