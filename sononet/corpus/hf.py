"""Hugging Face ``datasets``: an audio dataset saved with ``save_to_disk`` (a Dataset or a DatasetDict).

About the format: ``Dataset.save_to_disk(dir)`` writes ``dir/state.json``,
``dir/dataset_info.json`` and ``data-NNNNN-of-MMMMM.arrow`` shards; a ``DatasetDict`` writes
``dir/dataset_dict.json`` and one such folder per split (``train``, ``test``, ...). An
``Audio`` column holds ``{"bytes", "path"}`` structs; ``save_to_disk`` embeds the audio
bytes in the Arrow shards and keeps only the file name in ``path``. Read with
``pip install 'sononet[interop]'`` (``datasets``; nothing is fetched from the hub, and no
audio is decoded by ``datasets``, so ``torchcodec`` is not needed).

Columns: the first ``Audio`` column is the audio. The label is the ``ClassLabel`` column (its
names are the labels) or a text column named ``label``, ``emotion``, ``emo`` or
``emotion_label``; ``speaker``/``speaker_id``/``actor``/``actor_id``/``spk``/``client_id`` is the
speaker, ``gender``/``sex`` the sex; other text and integer columns are kept as metadata.
A DatasetDict's split name goes into the clip's metadata (``hf_split``); SonoNet still makes
its own speaker-disjoint split (or ``--split emobox:DIR``).

Audio files: SonoNet's prepare decodes files (``sononet.audio.load_audio``), so embedded
bytes are written once to ``<audio cache>/<sha1 of the bytes>.<ext>``, named by content so a
re-saved dataset never reuses a stale file and a rerun writes nothing. The cache is
``<dataset>/.sononet-audio`` when the dataset folder is writable, else the user's cache
(:func:`sononet.sources.audio_cache`): a dataset on a read-only mount is read without a write.
A row without bytes uses its ``path`` when that is a local regular file (absolute, or relative to
the dataset folder); a URL there is a ``not_local`` row, never fetched (:mod:`sononet.sources`).
Labels follow the rule of every reader (:func:`sononet.corpus.clips.label_text`): a text label
``"nan"`` or ``"1.5"``, or a float column, is an ``unknown_label`` row, not a class.
Clip ids are the audio file stems when those are unique (so EmoBox lists match),
``<split>/<row>`` otherwise and for rows without a file name. Rows without audio or label are errors-table rows.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from sononet.corpus.clips import Clip, Corpus, label_text
from sononet.errors import AudioError, ErrorRow, UserError
from sononet.sources import CACHE_DIR, audio_cache, describe_mode, local_file

LABEL_NAMES = ("label", "emotion", "emo", "emotion_label")
SPEAKER_NAMES = ("speaker", "speaker_id", "actor", "actor_id", "spk", "client_id")
SEX_NAMES = ("gender", "sex")
BATCH_ROWS = 64  # rows in memory at once: embedded audio is the bulk of a dataset
_MAGIC = ((b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"), (b"FORM", ".aiff"))


def looks_like_hf(root: str | Path) -> bool:
    """True for a ``save_to_disk`` folder: a Dataset (state.json) or a DatasetDict (dataset_dict.json)."""
    p = Path(root)
    return (p / "dataset_dict.json").is_file() or ((p / "state.json").is_file() and (p / "dataset_info.json").is_file())


def _check_files(root: Path) -> None:
    """Every file of the dataset folder is a regular file: ``datasets`` would open a FIFO and block."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != CACHE_DIR]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                mode = os.stat(path).st_mode
            except OSError as e:
                raise UserError(f"Hugging Face dataset {root}: {path} cannot be read ({e})") from None
            if not stat.S_ISREG(mode):
                raise UserError(
                    f"Hugging Face dataset {root}: {path} is {describe_mode(mode)}; a dataset holds regular files"
                )


def _load(root: Path):
    try:
        import datasets
    except ImportError as e:
        raise UserError(f"{root} is a Hugging Face dataset; reading it needs `pip install 'sononet[interop]'`") from e
    _check_files(root)
    loaded = datasets.load_from_disk(str(root))
    return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"": loaded}


def _columns(features, root: Path) -> tuple[str, str, list[str] | None, str | None, str | None]:
    """(audio, label, class names or None, speaker, sex) column names; raise naming what is there."""
    from datasets import Audio, ClassLabel

    names = list(features)
    audio = next((c for c in names if isinstance(features[c], Audio)), None)
    if audio is None:
        raise ValueError(f"Hugging Face dataset {root} has no Audio column. Columns: {names}")
    class_cols = [c for c in names if isinstance(features[c], ClassLabel)]
    if class_cols:  # a ClassLabel is the label; among several, the one with a label-like name
        label: str | None = ([c for c in class_cols if c in LABEL_NAMES] or class_cols)[0]
    else:
        label = next((c for c in LABEL_NAMES if c in names), None)
    if label is None:
        raise ValueError(
            f"Hugging Face dataset {root} has no label column: a ClassLabel or one of {list(LABEL_NAMES)}. "
            f"Columns: {names}"
        )
    classes = list(features[label].names) if label in class_cols else None
    speaker = next((c for c in SPEAKER_NAMES if c in names), None)
    sex = next((c for c in SEX_NAMES if c in names), None)
    return audio, label, classes, speaker, sex


def _text(value: object) -> str | None:
    """A metadata cell (speaker, sex, extra columns) as text; None for blanks and structures."""
    if value is None or isinstance(value, (bytes, dict, list)):
        return None
    s = str(value).strip()
    return s or None


def _suffix(data: bytes, name: str | None) -> str:
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    ext = Path(name or "").suffix.lower()
    return ext if ext and len(ext) <= 6 else ".bin"  # decoders probe the content, not the suffix


def _cache(cache: Path, data: bytes, name: str | None) -> Path:
    """Write embedded audio once, named by content; atomic so a crash never leaves half a file."""
    out = cache / f"{hashlib.sha1(data).hexdigest()}{_suffix(data, name)}"
    if out.is_file() and out.stat().st_size == len(data):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return out


def _audio_names(splits: dict, audio: str) -> list[str | None]:
    """Every row's audio file stem, in reading order (paths only: the bytes stay on disk)."""
    stems: list[str | None] = []
    for ds in splits.values():
        for chunk in ds.data.column(audio).chunks:
            stems += [Path(p).stem if p else None for p in chunk.field("path").to_pylist()]
    return stems


def load_hf(root: str | Path) -> Corpus:
    """Read every row of a saved Dataset or DatasetDict; unusable rows become errors-table rows."""
    root = Path(root).resolve()
    splits = _load(root)
    first = next(iter(splits.values()))
    audio, label_col, classes, speaker_col, sex_col = _columns(first.features, root)
    stems = _audio_names(splits, audio)
    named = [s for s in stems if s]
    by_stem = len(set(named)) == len(named)
    known = {audio, label_col, speaker_col, sex_col}
    cache: Path | None = None  # chosen when the first row embeds audio
    clips: list[Clip] = []
    errors: list[ErrorRow] = []
    i = -1
    for split, ds in splits.items():
        if list(ds.features) != list(first.features):
            raise ValueError(f"Hugging Face dataset {root}: split {split!r} has other columns than the first split")
        row_no = -1
        for batch in ds.with_format("arrow").iter(batch_size=BATCH_ROWS):
            for row in batch.to_pylist():
                i += 1
                row_no += 1
                where = f"{root}:{split + '/' if split else ''}{row_no}"
                cell = row[audio] or {}
                data, name = cell.get("bytes"), cell.get("path")
                if data:
                    cache = cache or audio_cache(root)
                    path = _cache(cache, data, name)
                else:
                    try:
                        path = local_file(name, root)  # a URL is a row, never fetched
                    except AudioError as e:
                        detail = (
                            f"no embedded audio, and {name!r}: {e.detail}" if name else "no embedded audio, no path"
                        )
                        errors.append(ErrorRow(where, e.reason, detail))
                        continue
                raw = row[label_col]
                if classes is not None:
                    named = classes[raw] if isinstance(raw, int) and 0 <= raw < len(classes) else None
                    label, why = label_text(named) if named is not None else (None, "no class")
                else:
                    label, why = label_text(raw)
                if label is None:
                    errors.append(ErrorRow(where, "unknown_label", f"{label_col} = {raw!r}: {why}"))
                    continue
                extra = {k: str(v) for k, v in row.items() if k not in known and _text(v) is not None}
                if split:
                    extra["hf_split"] = split
                clip_id = stems[i] if by_stem and stems[i] else f"{split or 'data'}/{row_no}"
                clips.append(
                    Clip(
                        clip_id=clip_id,  # type: ignore[arg-type]
                        path=str(path),
                        label=label,
                        speaker=_text(row[speaker_col]) if speaker_col else None,
                        sex=_text(row[sex_col]) if sex_col else None,
                        extra=extra,
                    )
                )
    labels = sorted({c.label for c in clips})
    return Corpus(kind="hf", root=str(root), clips=clips, errors=errors, labels=labels)
