"""Which files to label and which share of them is this process's: input lists and shards."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from sononet.errors import NotFoundError
from sononet.sources import not_local, regular_input


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n)."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/n, e.g. 0/4. Found: {text!r}") from None
    return resolve_shard(i, n)


def resolve_shard(index: int | None, count: int | None, env: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """(i, n): explicit values, else an Indexed Job's or torchrun's variables, else (0, 1)."""
    if index is None and count is None:
        index, count = 0, 1
        for i_key, n_key in (("JOB_COMPLETION_INDEX", "JOB_COMPLETIONS"), ("RANK", "WORLD_SIZE")):
            if i_key in env:
                if n_key not in env:
                    raise ValueError(f"{i_key} is set but {n_key} is not; set it to the number of shards")
                index, count = int(env[i_key]), int(env[n_key])
                break
    elif index is None or count is None:
        raise ValueError(f"shard_index and shard_count go together. Found: {index}, {count}")
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard index must be in [0, count) with count >= 1. Found: {index}/{count}")
    return index, count


def audio_suffixes() -> set[str]:
    import soundfile as sf

    from sononet.corpus import AUDIO_SUFFIXES

    known = {f".{k.lower()}" for k in sf.available_formats() if k != "RAW"}  # RAW needs rate flags
    return known | set(AUDIO_SUFFIXES) | {".oga", ".wave"}


def list_inputs(source: str | Path) -> tuple[list[str], int]:
    """(sorted resolved absolute paths, files ignored in a folder). Listed paths are never ignored.

    A folder's hidden files and ``*.part`` downloads are no inputs (macOS ``._x.wav`` forks,
    transfers in flight), so they get no row; they are counted as ignored, with unknown
    extensions. A path listed twice (after resolving) stays twice: the labeller gives the
    repeat a ``duplicate`` row.
    """
    src = Path(source)
    if not src.exists():
        raise NotFoundError(f"input does not exist: {src}")
    ignored = 0
    if src.is_dir():
        # Walked from the resolved folder: os.walk does not descend into linked folders, so every
        # path below is already real but for a linked file; resolving only those (an lstat each)
        # instead of every path (an lstat per component) took 10,000 files from 0.31 to 0.1 s.
        suffixes, real = audio_suffixes(), []
        for dirpath, dirnames, filenames in os.walk(os.path.realpath(src)):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith(".") or name.endswith(".part"):
                    ignored += 1
                elif os.path.splitext(name)[1].lower() in suffixes:
                    path = os.path.join(dirpath, name)
                    real.append(_resolved(path) if os.path.islink(path) else path)
                else:
                    ignored += 1
        return sorted(real), ignored
    elif src.suffix.lower() in (".txt", ".lst"):
        # Strip only the line ending: " lead.wav" is a real (if unlucky) file name.
        try:
            text = regular_input(src, "input list").read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"input list {src} is not UTF-8 text ({e}); pass one path per line") from None
        lines = (ln.removesuffix("\r") for ln in text.split("\n"))
        paths = [_listed(src, ln) for ln in lines if ln.strip() and not ln.startswith("#")]
    elif src.suffix.lower() in (".csv", ".tsv", ".parquet"):
        from sononet.corpus.folder import manifest_rows

        cells = (str(r["path"]).strip() for r in manifest_rows(src, required=("path",)) if r["path"] is not None)
        paths = [_listed(src, v) for v in cells if v]
    else:
        paths = [str(src.absolute())]
    return sorted(p if not_local(p) else _resolved(p) for p in paths), ignored


def _listed(src: Path, entry: str) -> str:
    """A list's entry as an absolute path; a URL or a command stays as written, so its row says so
    (``not_local``) instead of naming a path it never was."""
    return entry if not_local(entry) else _absolute(src.parent / entry)


def manifest_column(source: str | Path, column: str) -> dict[str, str]:
    """Resolved path -> the text in ``column`` of a CSV/TSV/Parquet manifest, as :func:`list_inputs`
    resolves its paths; blank cells are left out, and a path listed twice keeps its first value."""
    from sononet.corpus.folder import manifest_rows

    src = Path(source)
    if src.suffix.lower() not in (".csv", ".tsv", ".parquet"):
        raise ValueError(f"a manifest column needs a CSV/TSV/Parquet manifest as input. Found: {src.name}")
    values: dict[str, str] = {}
    for row in manifest_rows(src, required=("path", column)):
        cell, value = str(row["path"] or "").strip(), row[column]
        text = "" if value is None or value != value else str(value).strip()  # value != value: NaN
        if cell and text:
            values.setdefault(_resolved(_absolute(src.parent / cell)), text)
    return values


def _absolute(path: Path) -> str:
    # pathlib drops "." parts (so "./a.wav" repeats "a.wav"); _resolved then settles ".." and links
    return str(path.absolute())


def _resolved(path: str) -> str:
    """The real path; a symlink loop (RuntimeError on Python < 3.13) keeps its absolute path for its row."""
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):
        return str(Path(path).absolute())


def duplicates(paths: list[str]) -> set[int]:
    """Positions of paths already listed earlier: the first listing is kept, each repeat is an error row."""
    seen: set[str] = set()
    repeats = set()
    for i, p in enumerate(paths):
        if p in seen:
            repeats.add(i)
        seen.add(p)
    return repeats
