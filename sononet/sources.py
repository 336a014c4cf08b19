"""What a data file may make SonoNet read and write: local regular files, and nothing else.

A manifest, a Hugging Face dataset, a lhotse CutSet or an EmoBox list is downloaded, shared and
mounted like a model folder, so it gets the same rule: it names audio, and SonoNet reads what it
names only when that is a regular file on a mounted filesystem (or audio bytes the data file
holds itself). A URL (``https://``, ``s3://``, ``file://``), a shell command (lhotse's
``command`` sources, Kaldi's ``cmd |``, webdataset's ``pipe:``) or any other kind of source is an
errors-table row with reason ``not_local``: nothing a data file names is ever fetched or run.
FIFOs, devices and sockets are ``not_a_file`` rows, never opened, so they cannot stall a batch.

Every reader (manifest, audiofolder, CREMA-D, RAVDESS, Hugging Face, lhotse, ``sononet label``'s
lists) asks :func:`local_file` or :func:`check_regular_file`; the decoder asks again before it
opens a file. Audio a dataset holds in memory is written to :func:`audio_cache`, inside the
dataset folder when it is writable, else in the user's cache (a read-only mount stays untouched).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tempfile
from pathlib import Path

from sononet.errors import AudioError, ErrorRow, UserError

CACHE_DIR = ".sononet-audio"  # beside the data, when the data's folder is writable
CACHE_ENV = "SONONET_CACHE"  # else here (default $XDG_CACHE_HOME/sononet, ~/.cache/sononet)
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # https://, s3://, hf://, file://...
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}  # fmt: skip


def not_local(text: str) -> str | None:
    """Why ``text`` names no local file ("a URL", "a shell command"), or None for a path."""
    s = text.strip()
    if _URL_RE.match(s):
        return "a URL"
    if s.startswith(("|", "pipe:")) or s.endswith("|"):  # Kaldi's "cmd |", webdataset's "pipe:cmd"
        return "a shell command"
    return None


def describe_mode(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _stat_regular(path: str | Path) -> os.stat_result:
    """``stat`` of a local regular file, else AudioError (not_local, missing, unreadable, not_a_file)."""
    why = not_local(str(path))
    if why is not None:
        raise AudioError(
            "not_local", f"{str(path)!r} is {why}: SonoNet reads local files only, never fetches or runs them"
        )
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise AudioError("missing", str(path)) from e
    except (OSError, ValueError) as e:  # a parent's permission, a link loop, a name too long or with a NUL
        raise AudioError("unreadable", f"{str(path)!r}: {e}") from e
    if not stat.S_ISREG(st.st_mode):
        raise AudioError("not_a_file", f"{path} is {describe_mode(st.st_mode)}")
    return st


def check_regular_file(path: str | Path) -> int:
    """Size of ``path`` when it is a regular file we may read, else AudioError: what the decoder asks.

    FIFOs, devices and sockets (also behind symlinks) are refused from ``stat`` alone, so they
    are never opened: a FIFO would block and ``/dev/zero`` never ends. A non-blocking open then
    proves read permission (``os.access`` says yes to root) and ``fstat`` rechecks what it opened.
    """
    _stat_regular(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise AudioError("missing", str(path)) from e
    except OSError as e:  # PermissionError above all
        raise AudioError("unreadable", str(e)) from e
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):  # replaced between stat and open
        raise AudioError("not_a_file", f"{path} is {describe_mode(st.st_mode)}")
    return st.st_size


def local_file(source: object, *bases: Path) -> Path:
    """The local regular file a data file names, resolved; AudioError with the reason otherwise.

    What every corpus reader asks of a path it lists (``stat`` only: the decoder opens it later,
    through :func:`check_regular_file`). ``source`` is the data file's text (a path cell, a lhotse
    source); a relative path is tried against each of ``bases`` in turn (the first that exists
    wins), or against the current folder when none is given.
    """
    if not isinstance(source, str | os.PathLike) or not str(source).strip():
        raise AudioError("missing", f"no path: the source is {source!r}")
    text = str(source)
    if not_local(text) is not None:
        _stat_regular(text)  # raises not_local
    p = Path(text)
    candidates = [p] if p.is_absolute() or not bases else [b / p for b in bases]
    found = next((c for c in candidates if os.path.lexists(c)), candidates[0])
    _stat_regular(found)
    return found.resolve()


def file_error(path: Path) -> ErrorRow | None:
    """The errors-table row of a folder entry that is no regular file (never opened), else None."""
    try:
        local_file(path)
    except AudioError as e:
        return ErrorRow(str(path), e.reason, e.detail)
    return None


def regular_input(path: str | Path, what: str) -> Path:
    """A file the user named (a manifest, a list, a fold list) that SonoNet is about to read: a
    regular file, else a :class:`UserError` that says what it is (a FIFO would block the read)."""
    p = Path(path)
    try:
        check_regular_file(p)
    except AudioError as e:
        raise UserError(f"the {what} {p} cannot be read: {e.detail or e.reason}; pass a regular file") from None
    return p


def audio_cache(root: str | Path) -> Path:
    """Folder for audio a dataset holds in memory (written once, named by content).

    ``<root>/.sononet-audio`` when ``root`` is writable; else ``$SONONET_CACHE`` (default
    ``$XDG_CACHE_HOME/sononet`` or ``~/.cache/sononet``) ``/audio/<hash of root>``, so a dataset on
    a read-only mount is read without a single write into it.
    """
    root = Path(root).resolve()
    beside = root / CACHE_DIR
    if _writable(beside):
        return beside
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "sononet"
    )
    elsewhere = Path(base) / "audio" / hashlib.sha1(str(root).encode()).hexdigest()[:16]
    if not _writable(elsewhere):
        raise UserError(
            f"{root} is read-only and the audio cache {elsewhere} cannot be written either; "
            f"set {CACHE_ENV} to a writable folder"
        )
    return elsewhere


def _writable(folder: Path) -> bool:
    """True when a file can be created in ``folder`` (made if missing): tried, as root ignores modes."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True
