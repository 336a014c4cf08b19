"""The errors table: one row for every input that did not make it into the output.

Bad input never stops a batch and never disappears: the invariant every stage keeps is
``inputs == rows written + rows here``. Reasons are a closed set so summaries can count
them and tests can name them.
"""

from __future__ import annotations

import errno
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyarrow loads only when a table is built, so the CLI's --help stays instant
    import pyarrow as pa

REASONS = {
    "zero_byte": "the file is empty (0 bytes)",
    "corrupt": "the decoder could not parse the file (corrupt header or data)",
    "truncated": "the file ends before the length its header declares",
    "unsupported_format": "not an audio format libsndfile or FFmpeg (PyAV) reads",
    "empty_audio": "the file decodes to zero samples",
    "silent": "every sample is zero",
    "non_finite": "NaN or Inf samples",
    "too_short": "shorter than the stated minimum duration",
    "misnamed": "the file name does not follow the corpus naming scheme",
    "unknown_label": "the label is not in the corpus label set",
    "missing": "the file listed in the manifest does not exist",
    "unreadable": "the file could not be opened (permissions or I/O error)",
    "not_a_file": "not a regular file (FIFO, device, socket): never opened, so it cannot stall a batch",
    "not_local": "a URL, a shell command or another non-file source: SonoNet never fetches or runs what data names",
    "duplicate": "the same file is listed again; its first listing is kept",
}

COLUMNS = ("path", "reason", "detail")  # the errors table: all strings


@dataclass(frozen=True)
class ErrorRow:
    path: str
    reason: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown error reason {self.reason!r}; expected one of {sorted(REASONS)}")


class AudioError(Exception):
    """A file that cannot become a clip; carries the errors-table reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown error reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def to_table(rows: list[ErrorRow]) -> pa.Table:
    import pyarrow as pa

    schema = pa.schema([(name, pa.string()) for name in COLUMNS])
    return pa.Table.from_pylist([asdict(r) for r in rows], schema=schema)


def count_by_reason(rows: list[ErrorRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.reason] = counts.get(r.reason, 0) + 1
    return dict(sorted(counts.items()))


class DiskFullError(OSError):
    """No space left while writing ``path``; finished work is kept, so a rerun resumes."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(errno.ENOSPC, "no space left on device", str(path))
        self.message = (
            f"no space left on the device holding {path}; free some space and rerun the same command: "
            "finished work is kept and the rerun resumes from it"
        )

    def __str__(self) -> str:
        return self.message


def is_disk_full(e: BaseException) -> bool:
    """True for ENOSPC/EDQUOT, also when a library (pyarrow) only says so in its message."""
    return isinstance(e, OSError) and (e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(e))


class UserError(Exception):
    """A mistake the user can fix: a bad option, path, config or environment.

    The command line prints it as one ``error: <message>`` line with exit code 2. So does a
    ``ValueError``, the configs' convention for a value out of range; anything else (``KeyError``,
    ``RuntimeError``, ``TypeError``, ``OSError``) is a bug or a failure and keeps its traceback.
    """


class NotFoundError(UserError, FileNotFoundError):
    """A path the user named does not exist, or lacks what it must hold."""


class NotRegularFileError(UserError, OSError):
    """A file SonoNet reads back from a folder (a manifest, a state file, a checkpoint) is a FIFO, a
    device or a folder: never read, so it cannot block a run; an OSError too, for callers that skip it."""


class Interrupted(BaseException):
    """SIGTERM during a run; a BaseException like KeyboardInterrupt, so no stage's ``except Exception``
    swallows it, and ``run.json`` records the run as interrupted."""
