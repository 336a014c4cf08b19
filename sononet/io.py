"""Files written whole or not at all, and their checksums: what every resumable stage relies on.

A writer puts its bytes in a temporary sibling, fsyncs and renames it over the target, so a
file with the final name is always complete, and a crash leaves only a temporary file, which a
rerun of prepare removes (:func:`remove_stale_temps`) and no reader ever opens. A full disk
becomes one :class:`~sononet.errors.DiskFullError` naming the path (a rerun resumes), and the
partial temporary file is deleted so it stops holding the space that ran out. Resume checks
compare :func:`sha256_file` with the checksum a manifest or state file recorded when the file
was written.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from sononet.errors import DiskFullError, NotRegularFileError, UserError, is_disk_full


@contextmanager
def open_regular(path: str | Path) -> Iterator[BinaryIO]:
    """``path`` open for reading when it is a regular file; a FIFO, a device or a folder is a
    :class:`NotRegularFileError` naming it, decided before a byte is read (the open does not block)."""
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise NotRegularFileError(f"{path} is not a regular file (a FIFO? a device?); remove it and rerun")
        yield f


def read_json(path: str | Path) -> Any:
    """A JSON file SonoNet wrote (a manifest, a state file, a history), read back through :func:`open_regular`:
    one planted FIFO must not hang a resumed run, and a damaged file is a ValueError naming it."""
    with open_regular(path) as f:
        data = f.read()
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it to start that stage over") from None


def output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` with its parents and check a file can be made in it.

    A folder the process may not write (permissions, a read-only mount) or a file in the way is
    a :class:`UserError` naming the path, raised before any work, rather than a traceback from
    deep inside the first writer.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except (FileExistsError, NotADirectoryError) as e:
        raise UserError(f"{what} {path} is not a folder: {e.filename or path} is a file") from e
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise UserError(f"cannot write to {what} {path}: {e.strerror} ({e.filename or path})") from e
        raise
    return path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a regular file; anything else (a FIFO, /dev/zero) is an OSError, never read."""
    h = hashlib.sha256()
    with open_regular(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextmanager
def temp_beside(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path``, removed whatever happens unless the caller renamed it.

    A full disk becomes :class:`DiskFullError` naming ``path``, and the partial temporary file
    is deleted so it does not keep holding the space that ran out.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(path) from e
        raise
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary siblings a killed writer left in ``folder``; returns them.

    Only for a folder whose writer holds its exclusive lock (no live writer can own one then).
    """
    stale = [p for p in Path(folder).glob(".*.tmp-*") if p.is_file() and p.name.rsplit("-", 1)[1].isdigit()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)``, then rename it over ``path``: for writers that want a file name (soundfile, torch.save)."""
    with temp_beside(path) as tmp:
        write(tmp)
        os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with temp_beside(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_write_table(path: Path, table: pa.Table, row_group_size: int | None = None) -> None:
    with temp_beside(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
