"""Advisory locks on output folders, so two runs never write one folder at once.

Both runs of a pair would pass the folder's fingerprint check (neither has written yet) and
then interleave their shards or parts; an ``fcntl.flock`` on ``<folder>/.lock`` makes the
second one stop at once with a clear error instead. The kernel drops the lock when the
process dies (``kill -9`` included), so a crashed run never leaves a stale lock behind::

    with folder_lock(out, "prepare"):
        ...  # write shards

``shared=True`` lets many holders in together (the shards of one sharded ``label`` run) while
keeping an exclusive holder (``label --merge``) out. Advisory only: it guards SonoNet against
itself, and needs a filesystem with working ``flock`` (local disks, NFSv4).

Every writer of an output folder takes it first, so it is also where a bad ``--out`` is refused
in one line: a path that is a file (or lies under one), and a lock file that is a symbolic link,
a FIFO or a folder (never followed, never opened for writing through).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sononet.errors import UserError
from sononet.io import output_dir

LOCK_FILE = ".lock"


class FolderLockedError(UserError):
    """Another process holds the folder's lock."""


@contextmanager
def folder_lock(folder: str | Path, what: str, name: str = LOCK_FILE, shared: bool = False) -> Iterator[Path]:
    """Hold an advisory lock on ``folder/name`` (created with the folder) for the ``with`` block."""
    folder = output_dir(folder, f"the {what} folder")
    path = folder / name
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise
        raise UserError(f"{path} is not a regular file (a symbolic link?); remove it and rerun this {what}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO someone reads from: never written through
        os.close(fd)
        raise UserError(f"{path} is not a regular file; remove it and rerun this {what}")
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise FolderLockedError(
                f"{folder} is in use: {holder} holds {path}; wait for it to finish, or use another output "
                f"folder for this {what}"
            ) from None
        if not shared:  # say who holds it, for the error above; shared holders would overwrite each other
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{what} (pid {os.getpid()})\n".encode(), 0)
        try:
            yield path
        finally:
            if not shared:
                os.ftruncate(fd, 0)  # a later shared holder must not be named by our stale line
    finally:
        os.close(fd)  # releases the lock
