"""Fetch the CREMA-D audio (7,442 WAV files, 606 MB) and verify every byte against the manifest.

Why a recipe (lhotse's ``download_x`` / ``prepare_x`` pair): :mod:`sononet.corpus.cremad` says
what the corpus is, this module gets it onto a bare machine reproducibly, so
``sononet download --to data/cremad`` then ``sononet train-all --data data/cremad`` just works.
The audio lives in Git LFS: a plain ``git clone`` yields 130-byte pointer files and an LFS clone
also pulls the videos and MP3s, so we fetch the WAVs one by one from the LFS media endpoint.

Why so careful: that endpoint rate-limits (429), drops connections and can cut bodies short,
and a mirror can serve stale bytes. So a file gets its final name only after its size and
sha256 match the shipped manifest (a file already there is re-hashed, not trusted). Bytes
arrive in ``<name>.part``, resumed with an HTTP ``Range`` request by the next attempt and by
the next run (Ctrl-C, network down): a file that fails at the transport level (drops,
timeouts, 5xx, 429) keeps its ``.part``; a 4xx answer or a checksum mismatch deletes it. The
corpus loader ignores ``.part`` files. An attempt also has a wall-clock deadline
(``file_timeout_s``, ``--timeout``), so a mirror trickling a byte a second counts as a drop,
and a ``.part`` that is not a regular file (a planted symlink) is refused, never written through.
The deadline covers the whole attempt, connecting and the response headers included: a server that
trickles its headers has its connection shut at the deadline (socket timeouts alone only bound
the gap between two bytes).
Rerunning is the resume loop: verified files are skipped without a request, the rest are
fetched or completed::

    summary = download_cremad("data/cremad", jobs=8)
    if not summary.ok:
        summary = download_cremad("data/cremad", files=[name for name, _ in summary.failed])
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from http.client import HTTPException
from pathlib import Path
from typing import BinaryIO, NamedTuple

from tqdm import tqdm

from sononet.corpus.cremad import read_audio_manifest
from sononet.corpus.deadline_http import attempt_deadline, deadline_opener

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://media.githubusercontent.com/media/CheyneyComputerScience/CREMA-D/master/AudioWAV/"
URL_ENV = "SONONET_CREMAD_URL"  # overrides DEFAULT_BASE_URL, e.g. for a lab mirror
PART_SUFFIX = ".part"
_USER_AGENT = "sononet-cremad-download/1"
_LFS_POINTER = b"version https://git-lfs"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_MAX_FAILED_SHOWN = 20


@dataclass(frozen=True)
class DownloadConfig:
    """Knobs of one download run; the CLI sets ``jobs`` and ``base_url``, tests shrink the delays."""

    jobs: int = 8  # parallel connections; files are ~80 kB, so latency, not bandwidth, bounds speed
    base_url: str | None = None  # None: $SONONET_CREMAD_URL if set, else the GitHub LFS media endpoint
    attempts: int = 5  # tries per file, first included; with backoff_s=1 that rides out ~15 s of trouble
    backoff_s: float = 1.0  # delay before the first retry, doubled for each further one
    max_backoff_s: float = 60.0  # cap on one delay and on a server's Retry-After
    timeout_s: float = 60.0  # per socket operation (connect, each read): a stalled server errors, not hangs
    # One attempt at one file, in all: a mirror trickling a byte a second never trips timeout_s but
    # trips this; the .part is kept and resumed. CREMA-D's largest file is 0.5 MB, 120 s is 4 kB/s.
    file_timeout_s: float = 120.0
    chunk_bytes: int = 64 * 1024  # read size; a drop loses at most one chunk in flight
    progress: bool = True  # tqdm byte bar on stderr; off for tests and batch logs

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.jobs < 1:
            raise ValueError(f"jobs must be at least 1. Found: {self.jobs}")
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1. Found: {self.attempts}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(f"backoff delays must be >= 0. Found: {self.backoff_s}, {self.max_backoff_s}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive. Found: {self.timeout_s}")
        if not self.file_timeout_s > 0:
            raise ValueError(f"file_timeout_s (--timeout) must be positive. Found: {self.file_timeout_s}")
        if self.chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be at least 1. Found: {self.chunk_bytes}")


@dataclass
class DownloadSummary:
    """What one run achieved; ``str()`` is the human report, ``ok`` the exit status."""

    verified: int = 0  # files now on disk with the manifest's size and sha256 (skipped + downloaded)
    downloaded: int = 0  # fetched (or completed from a .part) in this run
    skipped: int = 0  # already present and verified, no request made
    retried: int = 0  # files that needed more than one attempt, whether they succeeded or not
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason), manifest order
    bytes: int = 0  # bytes received from the network, including discarded ones
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def format(self) -> str:
        lines = [
            f"{self.verified} files verified ({self.skipped} already present, {self.downloaded} downloaded), "
            f"{self.retried} needed retries, {len(self.failed)} failed; "
            f"{self.bytes / 1e6:.1f} MB in {self.seconds:.1f} s"
        ]
        lines += [f"  failed {name}: {reason}" for name, reason in self.failed[:_MAX_FAILED_SHOWN]]
        if len(self.failed) > _MAX_FAILED_SHOWN:
            lines.append(f"  ... and {len(self.failed) - _MAX_FAILED_SHOWN} more")
        return "\n".join(lines)

    __str__ = format


def download_cremad(
    to: str | Path,
    *,
    jobs: int | None = None,
    base_url: str | None = None,
    files: Sequence[str] | int | None = None,
    manifest: Sequence[Mapping[str, str]] | None = None,
    config: DownloadConfig | None = None,
) -> DownloadSummary:
    """Download (or complete, or just verify) CREMA-D's AudioWAV into the flat folder ``to``.

    Args:
        to: target folder, created if missing; files keep their CREMA-D names.
        jobs, base_url: shortcuts that override the same fields of ``config``.
        files: a subset: file names (``1001_DFA_ANG_XX.wav``, the ``.wav`` may be omitted) or
            an int N for the first N manifest rows. Default: all 7,442.
        manifest: rows with ``file, bytes, sha256``; default the shipped official manifest.
        config: retries, backoff, timeouts, progress bar (see :class:`DownloadConfig`).

    Returns a :class:`DownloadSummary`; failures are reported there, never raised. Raises
    ValueError for bad arguments. Only the progress bar (stderr) is printed.
    """
    cfg = config or DownloadConfig()
    if jobs is not None:
        cfg = replace(cfg, jobs=jobs)
    if base_url is not None:
        cfg = replace(cfg, base_url=base_url)
    cfg.validate()
    url = resolve_base_url(cfg.base_url)
    rows = select_rows(manifest, files)
    root = Path(to)
    root.mkdir(parents=True, exist_ok=True)

    start = time.monotonic()
    summary = DownloadSummary()
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=cfg.jobs, thread_name_prefix="cremad-download")
    try:
        present = list(pool.map(lambda row: _is_verified(root, row), rows))
        todo = [row for row, ok in zip(rows, present, strict=True) if not ok]
        summary.skipped = len(rows) - len(todo)
        total = sum(row.size for row in todo)
        with tqdm(total=total, unit="B", unit_scale=True, desc="CREMA-D", disable=not cfg.progress) as bar:
            fetcher = _Fetcher(root, url, cfg, bar, stop)
            for outcome in pool.map(fetcher.fetch, todo):
                summary.retried += int(outcome.attempts > 1)
                if outcome.reason:
                    summary.failed.append((outcome.file, outcome.reason))
                else:
                    summary.downloaded += 1
        summary.bytes = fetcher.received
    except BaseException:
        stop.set()  # Ctrl-C: workers stop at the next chunk, .part files stay for the next run
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    summary.verified = summary.skipped + summary.downloaded
    summary.seconds = time.monotonic() - start
    return summary


def resolve_base_url(base_url: str | None = None) -> str:
    """The mirror to use: ``base_url``, else ``$SONONET_CREMAD_URL``, else GitHub's LFS endpoint."""
    url = (base_url or os.environ.get(URL_ENV) or DEFAULT_BASE_URL).strip()
    if urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        raise ValueError(f"base_url must be an http(s):// or file:// URL. Found: {url!r}")
    return url if url.endswith("/") else url + "/"


class ManifestRow(NamedTuple):
    file: str
    size: int
    sha256: str


def select_rows(
    manifest: Sequence[Mapping[str, str]] | None = None, files: Sequence[str] | int | None = None
) -> list[ManifestRow]:
    """Validate the manifest and pick the requested subset, in manifest order for names given as a list."""
    rows = [_parse_row(i, r) for i, r in enumerate(read_audio_manifest() if manifest is None else manifest)]
    by_name = {row.file: row for row in rows}
    if len(by_name) != len(rows):
        raise ValueError(f"manifest lists a file more than once ({len(rows) - len(by_name)} duplicates)")
    if files is None:
        return rows
    if isinstance(files, int):
        if isinstance(files, bool) or files < 0:
            raise ValueError(f"files limit must be a non-negative int. Found: {files!r}")
        return rows[:files]
    names = [files] if isinstance(files, str) else list(files)
    resolved = [n if n in by_name else f"{n}.wav" for n in names]
    unknown = [n for n, r in zip(names, resolved, strict=True) if r not in by_name]
    if unknown:
        raise ValueError(f"{len(unknown)} requested file(s) are not in the manifest. Found: {unknown[:5]}")
    return [by_name[n] for n in dict.fromkeys(resolved)]


def _parse_row(index: int, row: Mapping[str, str]) -> ManifestRow:
    try:
        name, size, digest = str(row["file"]), int(row["bytes"]), str(row["sha256"]).lower()
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"manifest row {index} needs file, bytes (int), sha256. Found: {dict(row)!r}") from e
    if not name or name != Path(name).name or name in (".", "..") or "\\" in name:
        raise ValueError(f"manifest file must be a plain file name. Found: {name!r} (row {index})")
    if size < 0 or not _SHA256_RE.match(digest):
        raise ValueError(f"manifest row {index} has a bad size or sha256. Found: {size}, {digest!r}")
    return ManifestRow(name, size, digest)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _is_verified(root: Path, row: ManifestRow) -> bool:
    """True when the final file matches; an unverified final file is deleted (never left named)."""
    final = root / row.file
    if not final.is_file():
        return False
    if final.stat().st_size == row.size and _sha256(final) == row.sha256:
        (root / (row.file + PART_SUFFIX)).unlink(missing_ok=True)  # stale leftover of an old run
        return True
    logger.warning("%s does not match the manifest's size/sha256; fetching it again", final)
    final.unlink()
    return False


class _TransientError(Exception):
    """A transient failure: back off and try again."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class _FinalError(Exception):
    """The answer will not change by asking again (4xx, missing in a file:// mirror, LFS pointer)."""


class _StopRequestedError(Exception):
    """The run is being stopped (Ctrl-C); the .part stays for the next run."""


class _Outcome(NamedTuple):
    file: str
    attempts: int
    reason: str  # "" on success


class _Fetcher:
    """Per-run state shared by the worker threads: the bar, the byte counter, the stop flag."""

    def __init__(self, root: Path, base_url: str, cfg: DownloadConfig, bar: tqdm, stop: threading.Event):
        self.root, self.base_url, self.cfg, self.bar, self.stop = root, base_url, cfg, bar, stop
        self.received = 0
        self._lock = threading.Lock()
        # per run, so proxy env vars are read now; our handlers replace urllib's, adding the deadline
        self._opener = deadline_opener()

    def _advance(self, n: int, *, network: bool = True) -> None:
        with self._lock:
            self.bar.update(n)
            if network:
                self.received += n

    def _discard(self, part: Path) -> None:
        """Delete a .part and take its bytes back off the bar (they will be fetched again)."""
        if part.exists():
            n = part.stat().st_size
            part.unlink()
            self._advance(-n, network=False)

    def fetch(self, row: ManifestRow) -> _Outcome:
        final, part = self.root / row.file, self.root / (row.file + PART_SUFFIX)
        url = self.base_url + urllib.parse.quote(row.file)
        if part.is_symlink() or (part.exists() and not part.is_file()):  # never write through a planted link
            with self._lock:
                self.bar.total -= row.size
            return _Outcome(row.file, 0, f"{part} is not a regular file (a symlink?); remove it and rerun")
        if part.exists():
            if part.stat().st_size > row.size:
                part.unlink()
            else:
                self._advance(part.stat().st_size, network=False)  # bytes from an earlier run
        reason = ""
        for attempt in range(1, self.cfg.attempts + 1):
            if self.stop.is_set():
                return self._failed(row, part, attempt - 1, "interrupted")
            retry_after = None
            try:
                self._transfer(url, part, row.size)
                self._check(part, row)
                os.replace(part, final)
                return _Outcome(row.file, attempt, "")
            except _StopRequestedError:
                return self._failed(row, part, attempt, "interrupted")
            except _FinalError as e:
                self._discard(part)
                return self._failed(row, part, attempt, str(e))
            except _TransientError as e:
                reason, retry_after = str(e), e.retry_after
            except (OSError, HTTPException) as e:  # URLError, timeouts, resets, IncompleteRead
                reason = f"{type(e).__name__}: {getattr(e, 'reason', None) or e}"
            logger.debug("%s attempt %d/%d: %s", row.file, attempt, self.cfg.attempts, reason)
            if attempt < self.cfg.attempts and self.stop.wait(self._delay(attempt, retry_after)):
                return self._failed(row, part, attempt, "interrupted")
        return self._failed(row, part, self.cfg.attempts, f"gave up after {self.cfg.attempts} attempts: {reason}")

    def _failed(self, row: ManifestRow, part: Path, attempts: int, reason: str) -> _Outcome:
        kept = part.stat().st_size if part.exists() else 0
        with self._lock:  # the bar should end full, not stuck short of the files that failed
            self.bar.total -= row.size
            self.bar.update(-kept)
        return _Outcome(row.file, attempts, reason)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.cfg.max_backoff_s, self.cfg.backoff_s * 2 ** (attempt - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter, so parallel workers do not retry in lockstep
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cfg.max_backoff_s))
        return delay

    def _transfer(self, url: str, part: Path, size: int) -> None:
        """One request: append the missing tail of ``part`` (or rewrite it if Range is ignored).

        The whole attempt, connect and headers included, must end within ``file_timeout_s``.
        """
        deadline = time.monotonic() + self.cfg.file_timeout_s
        try:
            with attempt_deadline(deadline):
                self._request(url, part, size, deadline)
        except (OSError, HTTPException) as e:
            if time.monotonic() < deadline:
                raise
            raise self._too_slow(f"no complete answer ({type(e).__name__})") from None  # the timer shut it

    def _too_slow(self, what: str) -> _TransientError:
        return _TransientError(f"too slow: {what} within the {self.cfg.file_timeout_s:g} s limit")

    def _request(self, url: str, part: Path, size: int, deadline: float) -> None:
        offset = part.stat().st_size if part.exists() else 0
        if offset == size and part.exists():
            return  # complete from an earlier attempt; _check decides
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = self._opener.open(request, timeout=min(self.cfg.timeout_s, self.cfg.file_timeout_s))
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416:
                self._discard(part)
                raise _TransientError(f"HTTP 416 for bytes={offset}-; restarting from zero") from None
            if e.code == 429 or e.code >= 500:
                raise _TransientError(f"HTTP {e.code} {e.reason}", _retry_after(e.headers.get("Retry-After"))) from None
            raise _FinalError(f"HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, FileNotFoundError):  # file:// mirror
                raise _FinalError(f"not in the mirror: {url}") from None
            raise
        with response:
            status = response.status or 200  # file:// answers without a status, like a 200
            if offset and status == 206:
                content_range = response.headers.get("Content-Range", "")
                m = _CONTENT_RANGE_RE.match(content_range)
                if not m or int(m.group(1)) != offset:
                    self._discard(part)
                    raise _TransientError(f"Content-Range {content_range!r} does not answer bytes={offset}-")
                mode = "ab"
            elif status == 200:
                if offset:
                    logger.debug("%s: server ignored Range, restarting from zero", url)
                    self._discard(part)
                    offset = 0
                mode = "wb"
            else:
                raise _TransientError(f"unexpected HTTP {status}")
            wanted = size - offset
            got = 0
            with _open_part(part, mode) as f:
                while got <= wanted:  # one byte past the end tells "too long" from "exact"
                    if self.stop.is_set():
                        raise _StopRequestedError
                    if time.monotonic() > deadline:  # the .part keeps what arrived; the next attempt resumes
                        raise self._too_slow(f"{got} of {wanted} bytes")
                    # read1: whatever has arrived, so bytes before a drop or stall reach the .part
                    chunk = response.read1(min(self.cfg.chunk_bytes, wanted + 1 - got))
                    if not chunk and time.monotonic() > deadline:  # the deadline's timer shut the socket
                        raise self._too_slow(f"{got} of {wanted} bytes")
                    if not chunk:
                        break
                    f.write(chunk)
                    f.flush()  # to the .part now: a stall or a crash must not strand it in the buffer
                    got += len(chunk)
                    self._advance(len(chunk))

    def _check(self, part: Path, row: ManifestRow) -> None:
        actual = part.stat().st_size if part.exists() else 0
        if actual < row.size:
            if 0 < actual < 1024 and part.read_bytes().startswith(_LFS_POINTER):
                raise _FinalError("got a Git LFS pointer, not audio: base_url must be the LFS media endpoint")
            raise _TransientError(f"truncated: {actual} of {row.size} bytes")  # keep the .part: resume it
        if actual > row.size:
            self._discard(part)
            raise _TransientError(f"too long: {actual} bytes, manifest says {row.size}")
        digest = _sha256(part)
        if digest != row.sha256:
            self._discard(part)
            raise _TransientError(f"sha256 mismatch: got {digest[:12]}..., manifest says {row.sha256[:12]}...")


def _open_part(part: Path, mode: str) -> BinaryIO:
    """Open ``part`` to append ("ab") or rewrite ("wb"); a symlink, FIFO or device is refused, never written."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    flags |= os.O_APPEND if mode == "ab" else os.O_TRUNC
    try:
        fd = os.open(part, flags, 0o644)
    except OSError as e:  # ELOOP: a symlink; ENXIO: a FIFO nobody reads
        raise _FinalError(f"{part} is not a regular file (a symlink?); remove it and rerun") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _FinalError(f"{part} is not a regular file; remove it and rerun")
    return open(fd, mode)  # noqa: SIM115 - the caller's `with` closes it


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header; the HTTP-date form is rare here and ignored."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
