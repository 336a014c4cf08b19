"""CREMA-D downloader against a local HTTP mirror that misbehaves on purpose (no internet).

Each file of the mirror has a script: the actions it performs on its successive requests
(then "ok"). The mirror logs every request with its Range header, so tests can check that a
resume really asked for the missing tail and that a rerun asks for nothing.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from sononet.corpus import download as dl
from sononet.corpus.download import (
    DEFAULT_BASE_URL,
    DownloadConfig,
    DownloadSummary,
    download_cremad,
    resolve_base_url,
    select_rows,
)

# 1 kB chunks over ~8 kB files: a drop after half a file leaves whole chunks on disk.
FAST = DownloadConfig(
    jobs=4, attempts=4, backoff_s=0.01, max_backoff_s=0.05, timeout_s=5.0, chunk_bytes=1024, progress=False
)
NAMES = ["ok", "truncate", "short", "wrong", "e500", "missing", "drop", "norange", "stall", "pointer"]
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 8192\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Mirror:
    """The files, their misbehaviour scripts and the request log of one local server."""

    def __init__(self) -> None:
        rng = random.Random(0)
        self.blobs = {f"{n}.wav": rng.randbytes(8192 + 2 * i) for i, n in enumerate(NAMES)}
        self.served = {k: v for k, v in self.blobs.items() if k != "missing.wav"}  # 404 forever
        self.scripts: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str | None]] = []  # (file, Range header)
        self.resets: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.stalling = threading.Event()  # set while a "stall" answer holds its second half back
        self.release = threading.Event()  # ends a stall (else it lasts 10 s): the test decides, not a timer
        self.url = ""

    def script(self, name: str, *actions: str) -> None:
        self.scripts[name] = list(actions)

    def next_action(self, name: str) -> str:
        with self.lock:
            queue = self.scripts.get(name)
            return queue.pop(0) if queue else "ok"

    def seen(self, name: str) -> list[str | None]:
        with self.lock:
            return [r for f, r in self.requests if f == name]

    def manifest(self, *names: str) -> list[dict[str, str]]:
        picked = names or tuple(self.blobs)
        return [{"file": n, "bytes": str(len(self.blobs[n])), "sha256": _sha(self.blobs[n])} for n in picked]


def _handler(mirror: Mirror) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet test output
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            name = unquote(self.path.rsplit("/", 1)[-1])
            rng = self.headers.get("Range")
            with mirror.lock:
                mirror.requests.append((name, rng))
            action = mirror.next_action(name)
            body = mirror.served.get(name)
            if body is None:
                self.send_error(404)
                return
            if action.isdigit():
                self.send_error(int(action))
                return
            if action == "wrong":
                body = bytes(b ^ 0xFF for b in body)  # right length, wrong bytes
            if action == "pointer":
                body = LFS_POINTER
            if action == "trickle_headers":  # a header byte every 20 ms: each read is quick, the head never ends
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nX-Pad: {'a' * 400}\r\n\r\n".encode()
                for i in range(len(head)):
                    try:
                        self.wfile.write(head[i : i + 1])
                        self.wfile.flush()
                    except OSError:  # the client gave up
                        return
                    time.sleep(0.02)
                self.wfile.write(body)
                return
            start = 0
            if rng and action != "ignore_range":
                start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            cut = len(payload) // 2
            self.send_header("Content-Length", str(cut if action == "short" else len(payload)))
            self.end_headers()
            if action not in ("truncate", "short", "drop", "stall", "trickle"):
                self.wfile.write(payload)
                return
            if action == "trickle":  # a byte every 20 ms: each read is quick, the whole never ends
                for i in range(len(payload)):
                    try:
                        self.wfile.write(payload[i : i + 1])
                        self.wfile.flush()
                    except OSError:  # the client gave up
                        return
                    time.sleep(0.02)
                return
            self.wfile.write(payload[:cut])
            if action == "drop":
                time.sleep(0.05)  # let the client read the first half
            if action == "stall":
                mirror.stalling.set()
                mirror.release.wait(10.0)
                mirror.stalling.clear()
            if action == "drop":
                mirror.resets.add(self.connection)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, mirror: Mirror) -> None:
        super().__init__(("127.0.0.1", 0), _handler(mirror))
        self.mirror = mirror

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        if request in self.mirror.resets:  # abortive close: the client sees ECONNRESET, not EOF
            self.mirror.resets.discard(request)
            request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            request.close()
        else:
            super().shutdown_request(request)


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mirror]:
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.delenv(dl.URL_ENV, raising=False)
    m = Mirror()
    server = _Server(m)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    m.url = f"http://127.0.0.1:{server.server_address[1]}/AudioWAV"  # no trailing slash on purpose
    yield m
    m.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _run(m: Mirror, root: Path, *names: str, **config: object) -> DownloadSummary:
    cfg = replace(FAST, base_url=m.url, **config)
    return download_cremad(root, manifest=m.manifest(*names), config=cfg)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("*.part"))


def test_flaky_mirror_every_good_file_verifies_and_404_is_final(mirror: Mirror, tmp_path: Path) -> None:
    mirror.script("truncate.wav", "truncate")
    mirror.script("short.wav", "short")
    mirror.script("wrong.wav", "wrong")
    mirror.script("e500.wav", "500", "429")
    mirror.script("drop.wav", "drop")
    mirror.script("norange.wav", "truncate", "ignore_range")
    names = ["ok", "truncate", "short", "wrong", "e500", "missing", "drop", "norange"]
    s = _run(mirror, tmp_path, *(f"{n}.wav" for n in names))

    assert (s.verified, s.downloaded, s.skipped, s.retried) == (7, 7, 0, 6)
    assert [f for f, _ in s.failed] == ["missing.wav"] and s.failed[0][1].startswith("HTTP 404")
    for n in names:
        f = tmp_path / f"{n}.wav"
        assert f.exists() == (n != "missing")
        if n != "missing":
            assert _sha(f.read_bytes()) == _sha(mirror.blobs[f.name])
    assert _leftovers(tmp_path) == []
    half = {n: len(mirror.blobs[f"{n}.wav"]) // 2 for n in names}
    assert mirror.seen("missing.wav") == [None]  # 404: no retry loop
    assert mirror.seen("ok.wav") == [None]
    assert mirror.seen("truncate.wav") == [None, f"bytes={half['truncate']}-"]
    assert mirror.seen("short.wav") == [None, f"bytes={half['short']}-"]
    assert mirror.seen("wrong.wav") == [None, None]  # mismatch deletes the .part: restart from zero
    assert mirror.seen("e500.wav") == [None, None, None]
    assert mirror.seen("norange.wav") == [None, f"bytes={half['norange']}-"]  # answered 200: rewritten
    drop = mirror.seen("drop.wav")
    assert len(drop) == 2 and drop[0] is None
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", drop[1]).group(1))
    assert 0 < resumed_at <= half["drop"]
    assert s.bytes >= sum(len(mirror.blobs[f"{n}.wav"]) for n in names if n != "missing")
    assert "7 files verified" in str(s) and "missing.wav: HTTP 404" in s.format() and not s.ok


def test_rerun_is_a_noop_without_requests(mirror: Mirror, tmp_path: Path) -> None:
    first = _run(mirror, tmp_path, "ok.wav", "e500.wav")
    n_requests = len(mirror.requests)
    again = _run(mirror, tmp_path, "ok.wav", "e500.wav")
    assert (first.downloaded, first.skipped) == (2, 0)
    assert (again.verified, again.downloaded, again.skipped, again.bytes) == (2, 0, 2, 0) and again.ok
    assert len(mirror.requests) == n_requests


def test_present_but_wrong_final_file_is_not_trusted(
    mirror: Mirror, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = mirror.blobs["ok.wav"]
    (tmp_path / "ok.wav").write_bytes(bytes(len(good)))  # right size, wrong content
    (tmp_path / "short.wav").write_bytes(b"RIFF")
    with caplog.at_level(logging.WARNING, logger="sononet.corpus.download"):
        s = _run(mirror, tmp_path, "ok.wav", "short.wav")
    assert (s.skipped, s.downloaded) == (0, 2)
    assert (tmp_path / "ok.wav").read_bytes() == good
    assert "does not match" in caplog.text


def test_part_from_an_interrupted_run_is_resumed(mirror: Mirror, tmp_path: Path) -> None:
    blob = mirror.blobs["ok.wav"]
    (tmp_path / "ok.wav.part").write_bytes(blob[:3000])
    (tmp_path / "e500.wav.part").write_bytes(mirror.blobs["e500.wav"] + b"extra")  # longer than the file
    s = _run(mirror, tmp_path, "ok.wav", "e500.wav")
    assert (s.downloaded, s.retried, s.bytes) == (2, 0, len(blob) - 3000 + len(mirror.blobs["e500.wav"]))
    assert mirror.seen("ok.wav") == ["bytes=3000-"] and mirror.seen("e500.wav") == [None]
    assert (tmp_path / "ok.wav").read_bytes() == blob and _leftovers(tmp_path) == []


def test_transport_failure_keeps_part_and_next_run_resumes_it(mirror: Mirror, tmp_path: Path) -> None:
    mirror.script("drop.wav", "drop", "drop")
    s = _run(mirror, tmp_path, "drop.wav", attempts=2)
    assert s.failed and s.failed[0][1].startswith("gave up after 2 attempts") and s.retried == 1
    assert not (tmp_path / "drop.wav").exists()
    kept = (tmp_path / "drop.wav.part").stat().st_size  # documented: kept for the next run
    assert 0 < kept < len(mirror.blobs["drop.wav"])
    s = _run(mirror, tmp_path, "drop.wav")
    assert s.ok and s.downloaded == 1 and mirror.seen("drop.wav")[-1] == f"bytes={kept}-"
    assert (tmp_path / "drop.wav").read_bytes() == mirror.blobs["drop.wav"] and _leftovers(tmp_path) == []


def test_exhausted_retries_leave_no_part_and_no_final(mirror: Mirror, tmp_path: Path) -> None:
    mirror.script("wrong.wav", *["wrong"] * 3)
    mirror.script("e500.wav", *["503"] * 3)
    s = _run(mirror, tmp_path, "wrong.wav", "e500.wav", attempts=3)
    reasons = dict(s.failed)
    assert "sha256 mismatch" in reasons["wrong.wav"] and "HTTP 503" in reasons["e500.wav"]
    assert (s.verified, s.retried) == (0, 2)
    assert len(mirror.seen("wrong.wav")) == 3 and len(mirror.seen("e500.wav")) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("code", ["403", "410"])
def test_client_errors_are_final(mirror: Mirror, tmp_path: Path, code: str) -> None:
    mirror.script("ok.wav", code)
    s = _run(mirror, tmp_path, "ok.wav")
    assert s.failed == [("ok.wav", s.failed[0][1])] and s.failed[0][1].startswith(f"HTTP {code}")
    assert mirror.seen("ok.wav") == [None] and s.retried == 0 and list(tmp_path.iterdir()) == []


def test_lfs_pointer_instead_of_audio_is_final(mirror: Mirror, tmp_path: Path) -> None:
    mirror.script("pointer.wav", *["pointer"] * 5)
    s = _run(mirror, tmp_path, "pointer.wav")
    assert "LFS pointer" in s.failed[0][1] and len(mirror.seen("pointer.wav")) == 1
    assert list(tmp_path.iterdir()) == []


def test_stalled_server_times_out_and_resumes(mirror: Mirror, tmp_path: Path) -> None:
    mirror.script("stall.wav", "stall")
    s = _run(mirror, tmp_path, "stall.wav", timeout_s=0.3)
    assert s.ok and s.retried == 1
    assert mirror.seen("stall.wav")[:2] == [None, f"bytes={len(mirror.blobs['stall.wav']) // 2}-"]
    assert (tmp_path / "stall.wav").read_bytes() == mirror.blobs["stall.wav"]


def test_file_mirror_and_env_override(mirror: Mirror, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "mirror"
    src.mkdir()
    (src / "ok.wav").write_bytes(mirror.blobs["ok.wav"])
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "ok.wav.part").write_bytes(b"x" * 100)  # file:// ignores Range: rewritten from zero
    monkeypatch.setenv(dl.URL_ENV, src.as_uri())
    s = download_cremad(dst, manifest=mirror.manifest("ok.wav", "short.wav"), config=replace(FAST, attempts=3))
    assert (dst / "ok.wav").read_bytes() == mirror.blobs["ok.wav"]
    assert s.failed[0][0] == "short.wav" and "not in the mirror" in s.failed[0][1] and s.retried == 0
    assert _leftovers(dst) == []


def test_progress_bar_stays_off_stdout(mirror: Mirror, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    s = _run(mirror, tmp_path, "ok.wav", "truncate.wav", progress=True)
    assert s.ok and capsys.readouterr().out == ""


def test_files_subset_by_limit_and_name(mirror: Mirror, tmp_path: Path) -> None:
    cfg = replace(FAST, base_url=mirror.url)
    s = download_cremad(tmp_path, manifest=mirror.manifest(), files=2, config=cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.wav", "truncate.wav"] and s.downloaded == 2
    s = download_cremad(tmp_path, manifest=mirror.manifest(), files=["wrong", "wrong.wav"], config=cfg)
    assert (s.downloaded, s.skipped) == (1, 0) and len(mirror.seen("wrong.wav")) == 1


def test_base_url_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dl.URL_ENV, raising=False)
    assert resolve_base_url() == DEFAULT_BASE_URL
    monkeypatch.setenv(dl.URL_ENV, "http://lab-mirror/cremad")
    assert resolve_base_url() == "http://lab-mirror/cremad/"
    assert resolve_base_url("https://x/y/") == "https://x/y/"
    with pytest.raises(ValueError, match="http.*Found: 'ftp://x'"):
        resolve_base_url("ftp://x")


def test_default_manifest_subset() -> None:
    rows = select_rows(None, 3)
    assert [r.file for r in rows] == ["1001_DFA_ANG_XX.wav", "1001_DFA_DIS_XX.wav", rows[2].file]
    assert all(r.size > 0 and len(r.sha256) == 64 for r in rows)
    assert len(select_rows()) == 7442
    assert select_rows(None, ["1001_DFA_ANG_XX"])[0].file == "1001_DFA_ANG_XX.wav"


GOOD_ROW = {"file": "a.wav", "bytes": "3", "sha256": "0" * 64}


@pytest.mark.parametrize(
    ("manifest", "files", "match"),
    [
        ([GOOD_ROW], ["b.wav"], r"not in the manifest. Found: \['b.wav'\]"),
        ([GOOD_ROW], -1, "non-negative int. Found: -1"),
        ([GOOD_ROW], True, "non-negative int. Found: True"),
        ([{"file": "a.wav", "bytes": "3"}], None, "needs file, bytes"),
        ([{**GOOD_ROW, "bytes": "many"}], None, "needs file, bytes"),
        ([{**GOOD_ROW, "sha256": "xyz"}], None, "bad size or sha256"),
        ([{**GOOD_ROW, "file": "../a.wav"}], None, "plain file name. Found: '../a.wav'"),
        ([GOOD_ROW, GOOD_ROW], None, "more than once"),
    ],
)
def test_bad_manifest_or_subset_is_refused(manifest: list, files: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        select_rows(manifest, files)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"jobs": 0}, "jobs must be at least 1. Found: 0"),
        ({"attempts": 0}, "attempts must be at least 1. Found: 0"),
        ({"timeout_s": 0.0}, "timeout_s must be positive. Found: 0.0"),
        ({"backoff_s": -1.0}, "backoff delays must be >= 0"),
    ],
)
def test_bad_config_is_refused(tmp_path: Path, change: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        download_cremad(tmp_path, manifest=[GOOD_ROW], config=replace(FAST, **change))


def test_summary_format_trims_long_failure_lists() -> None:
    s = DownloadSummary(verified=1, skipped=1, failed=[(f"{i}.wav", "HTTP 404") for i in range(25)])
    text = s.format()
    assert "1 files verified (1 already present, 0 downloaded)" in text and "25 failed" in text
    assert text.count("failed ") == 20 and "... and 5 more" in text


def test_ctrl_c_stops_workers_and_keeps_the_part(mirror: Mirror, tmp_path: Path) -> None:
    # Python's own Ctrl-C behaviour, whatever an earlier test or library left installed for SIGINT.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_run(mirror, tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c_run(mirror: Mirror, tmp_path: Path) -> None:
    mirror.script("stall.wav", "stall")
    half = len(mirror.blobs["stall.wav"]) // 2

    seen_in_stall = threading.Event()

    def interrupt_when_half_arrived() -> None:
        # The half must be on disk while the mirror still holds the rest back (a buffered
        # .part once kept it in memory until the stall ended, and this Ctrl-C came too late).
        part = tmp_path / "stall.wav.part"
        for _ in range(500):  # bounded: at most ~5 s
            if mirror.stalling.is_set() and part.exists() and part.stat().st_size == half:
                seen_in_stall.set()
                break
            time.sleep(0.01)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    killer = threading.Thread(target=interrupt_when_half_arrived, daemon=True)
    killer.start()
    try:  # the mirror stalls until released, so the Ctrl-C always lands while the transfer waits
        with pytest.raises(KeyboardInterrupt):
            _run(mirror, tmp_path, "stall.wav", "ok.wav", jobs=1)
    finally:
        mirror.release.set()
    killer.join(timeout=5)
    assert seen_in_stall.is_set(), "the first half never reached the .part during the stall"
    assert (tmp_path / "stall.wav.part").stat().st_size == half and not (tmp_path / "stall.wav").exists()
    assert mirror.seen("ok.wav") == []  # queued files were cancelled, not fetched


def test_trickling_mirror_hits_the_per_file_deadline_and_resumes(mirror: Mirror, tmp_path: Path) -> None:
    mirror.script("ok.wav", "trickle", "trickle")
    t0 = time.monotonic()
    s = _run(mirror, tmp_path, "ok.wav", attempts=2, file_timeout_s=0.5)  # socket timeout_s stays 5 s
    assert time.monotonic() - t0 < 4 and not s.ok and "too slow" in s.failed[0][1]
    got = (tmp_path / "ok.wav.part").stat().st_size
    assert 0 < got < len(mirror.blobs["ok.wav"])  # kept for the next run
    s = _run(mirror, tmp_path, "ok.wav")
    assert s.ok and mirror.seen("ok.wav")[-1] == f"bytes={got}-"
    assert (tmp_path / "ok.wav").read_bytes() == mirror.blobs["ok.wav"]


def test_trickled_headers_hit_the_per_file_deadline(mirror: Mirror, tmp_path: Path) -> None:
    mirror.script("ok.wav", "trickle_headers", "trickle_headers")  # 9 s of headers per attempt
    t0 = time.monotonic()
    s = _run(mirror, tmp_path, "ok.wav", attempts=2, file_timeout_s=0.5)  # socket timeout_s stays 5 s
    assert time.monotonic() - t0 < 4 and not s.ok, s
    assert s.failed[0][1].startswith("gave up after 2 attempts: too slow: "), s.failed
    s = _run(mirror, tmp_path, "ok.wav")  # the mirror answers normally again
    assert s.ok and (tmp_path / "ok.wav").read_bytes() == mirror.blobs["ok.wav"]


def test_timeout_option_reaches_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from sononet.cli import main

    seen = {}

    def fake(to: str, **kw: object) -> DownloadSummary:
        seen.update(kw)
        return DownloadSummary()

    monkeypatch.setattr(dl, "download_cremad", fake)
    result = CliRunner().invoke(main, ["download", "--to", str(tmp_path), "--timeout", "7.5"])
    assert result.exit_code == 0 and seen["config"].file_timeout_s == 7.5
    result = CliRunner().invoke(main, ["download", "--to", str(tmp_path), "--timeout", "0"])
    assert result.exit_code == 2 and "file_timeout_s (--timeout) must be positive. Found: 0.0" in result.output


def test_part_symlink_is_refused_and_its_target_untouched(mirror: Mirror, tmp_path: Path) -> None:
    root, target = tmp_path / "root", tmp_path / "precious.txt"
    root.mkdir()
    target.write_bytes(b"keep me")
    (root / "ok.wav.part").symlink_to(target)
    s = _run(mirror, root, "ok.wav", "drop.wav")
    assert s.failed == [("ok.wav", f"{root / 'ok.wav.part'} is not a regular file (a symlink?); remove it and rerun")]
    assert target.read_bytes() == b"keep me" and mirror.seen("ok.wav") == []
    assert not (root / "ok.wav").exists() and (root / "drop.wav").read_bytes() == mirror.blobs["drop.wav"]
    with pytest.raises(dl._FinalError, match="not a regular file"):  # a link planted between check and open
        dl._open_part(root / "ok.wav.part", "ab")
    assert target.read_bytes() == b"keep me"
