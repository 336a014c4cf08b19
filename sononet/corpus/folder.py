"""Generic corpora: any folder of labelled audio, in the two conventions users already have.

- Manifest: a CSV/TSV/Parquet table with columns ``path,label`` and optionally ``speaker``,
  ``sex``, ``intensity`` and anything else (kept as extra metadata). Paths are relative to
  the manifest's folder (absolute paths are accepted too). This is Hugging Face's
  ``metadata.csv`` and most in-house corpora.
- Audiofolder: ``root/<label>/<file>``, nested folders allowed below the label; speaker
  unknown, so splits fall back to what the caller allows (see ``sononet.corpus.splits``).

The label set comes from the data, never from CREMA-D's six.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sononet.corpus import AUDIO_SUFFIXES, Clip, Corpus
from sononet.errors import ErrorRow

REQUIRED_COLUMNS = ("path", "label")
KNOWN_COLUMNS = ("path", "label", "speaker", "sex", "intensity", "sentence")


def _read_table(path: Path) -> list[dict]:
    if path.suffix.lower() == ".parquet":
        table = pq.read_table(path)
    else:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        table = pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True, column_types={"speaker": "string"}),
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(
            f"manifest {path} lacks column(s) {missing}; it needs path,label[,speaker]. Found: {table.column_names}"
        )
    return table.to_pylist()


def _text(value: object) -> str | None:
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
    for row in _read_table(path):
        rel = _text(row["path"])
        if rel is None:
            errors.append(ErrorRow(f"{path}:row", "missing", "empty path cell"))
            continue
        audio = (base / rel).resolve()
        label = _text(row["label"])
        if not audio.is_file():
            errors.append(ErrorRow(str(audio), "missing", f"listed in {path.name} but not on disk"))
            continue
        if label is None:
            errors.append(ErrorRow(str(audio), "unknown_label", "empty label cell"))
            continue
        clip_id = str(Path(rel).with_suffix(""))
        if clip_id in seen:
            clip_id = str(Path(rel))
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
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        rel = p.relative_to(root)
        if len(rel.parts) < 2:
            errors.append(ErrorRow(str(p), "unknown_label", "file sits directly under the root, not in a label folder"))
            continue
        if p.suffix.lower() not in AUDIO_SUFFIXES:
            errors.append(ErrorRow(str(p), "unsupported_format", f"suffix {p.suffix or '(none)'}"))
            continue
        clips.append(Clip(clip_id=str(rel.with_suffix("")), path=str(p), label=rel.parts[0]))
    labels = sorted({c.label for c in clips})
    return Corpus(kind="audiofolder", root=str(root), clips=clips, errors=errors, labels=labels)
