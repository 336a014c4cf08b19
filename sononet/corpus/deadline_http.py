"""urllib connections with a wall-clock deadline per attempt, connecting and response headers included.

A socket timeout bounds each read, so a server sending one header byte every second would keep
``urlopen`` waiting forever. Inside :func:`attempt_deadline` every connection the opener from
:func:`deadline_opener` makes has its socket shut when the deadline passes, whatever it is waiting
for; the read then fails and the caller sees the deadline passed.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

_attempt = threading.local()  # this thread's attempt: its deadline and the timers guarding its sockets


def _shut(sock: socket.socket) -> None:
    """Wake whatever read blocks on ``sock`` (headers, body): the attempt's deadline passed."""
    with contextlib.suppress(OSError):  # closed already
        sock.shutdown(socket.SHUT_RDWR)


class _DeadlineConnection:
    """A connection whose socket is shut when its attempt's deadline passes, whatever it is waiting for.

    A socket timeout bounds each read, so a server sending one header byte every second would keep
    ``urlopen`` waiting forever; the timer bounds the attempt as ``file_timeout_s`` promises.
    """

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        deadline = getattr(_attempt, "deadline", None)
        if deadline is not None:
            timer = threading.Timer(max(0.0, deadline - time.monotonic()), _shut, (self.sock,))  # type: ignore[attr-defined]
            timer.daemon = True
            timer.start()
            _attempt.timers.append(timer)


class _HTTPConnection(_DeadlineConnection, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPSConnection, req, context=self._context)  # type: ignore[attr-defined]


def deadline_opener() -> urllib.request.OpenerDirector:
    """An opener whose HTTP(S) connections honour :func:`attempt_deadline` (proxy variables read now)."""
    return urllib.request.build_opener(_HTTPHandler, _HTTPSHandler)


@contextlib.contextmanager
def attempt_deadline(deadline: float) -> Iterator[None]:
    """Connections opened in this thread inside the block are shut at ``deadline`` (``time.monotonic``)."""
    _attempt.deadline, _attempt.timers = deadline, []
    try:
        yield
    finally:
        for timer in _attempt.timers:
            timer.cancel()
        _attempt.deadline, _attempt.timers = None, []
