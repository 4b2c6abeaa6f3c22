"""One total deadline per remote operation, held however the remote trickles.

urllib3's timeouts bound each socket operation, not a request: a server that sends one byte of its headers
just before each read would time out holds a request as long as it likes. A ``Deadline`` covers one remote
operation (a media part with its redirects, one webhook try) from connect through TLS, the request, the
headers and the body. Every socket the operation opens or reuses is attached to it (the ``Watched``
connection classes below find the operation of their thread), and one reaper thread for the whole process
shuts down (``SHUT_RDWR``) the sockets of an operation still running ``SLACK_SECONDS`` after its deadline, so
the blocked read or write returns at once and the request fails. The caller asks ``finish()`` whether its
operation was cut, and never puts a cut connection back in its pool.

What it cannot cut is a blocking name lookup (the webhook URL's host; the media guard resolves before the
deadline starts): that is bounded by the resolver's own timeout (``/etc/resolv.conf``).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection

SLACK_SECONDS = 0.5  # past the deadline, before the reaper cuts: a socket timeout usually ends it first
# The reaper wakes at most this often: it cuts everything then due, so at thousands of operations a second
# it does not take the GIL from the senders once per operation (a cut is at most this much later).
REAPER_TICK_SECONDS = 0.1


class Deadline:
    """The time one remote operation may take, and the sockets it uses meanwhile."""

    def __init__(self, seconds: float) -> None:
        self.expires = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._cut = False
        self._done = False

    @property
    def cut(self) -> bool:
        """True once the reaper shut its sockets down."""
        with self._lock:
            return self._cut

    def remaining(self) -> float:
        return max(self.expires - time.monotonic(), 0.0)

    def timeout(self, connect_cap: float) -> urllib3.Timeout:
        """The socket timeouts of the next request: nothing waits past the deadline."""
        left = max(self.remaining(), 0.001)
        return urllib3.Timeout(connect=min(connect_cap, left), read=left)

    def attach(self, sock: socket.socket) -> None:
        """Watch a socket the operation uses; one attached after the cut is shut down at once."""
        with self._lock:
            if self._done:
                return
            if self._cut:
                _shut(sock)
                return
            self._sockets.append(sock)

    def finish(self) -> bool:
        """Stop watching (the connection may go back to its pool after this); True if it was cut."""
        with self._lock:
            self._done = True
            self._sockets.clear()
            return self._cut

    def reap(self) -> None:
        """The deadline passed: shut down every socket of the operation, unless it finished."""
        with self._lock:
            if self._done:
                return
            self._cut = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    """Shut the descriptor down (not close: the owner thread still uses the object). socket.socket's own
    method, so an SSLSocket's TLS state is left to the thread reading it, which then sees the end."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Reaper:
    """One thread that cuts every operation past its deadline (started with the first operation)."""

    def __init__(self, slack_seconds: float = SLACK_SECONDS) -> None:
        self.slack = slack_seconds
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, seconds: float) -> Iterator[Deadline]:
        """Run one remote operation under a deadline of ``seconds``: the sockets its thread's watched
        connections open or reuse meanwhile are cut once it passes."""
        deadline = Deadline(seconds)
        with self._cond:
            heapq.heappush(self._heap, (deadline.expires + self.slack, next(self._order), deadline))
            if self._heap[0][2] is deadline:  # sooner than what the reaper sleeps for: it wakes to see
                self._cond.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadline-reaper", daemon=True)
                self._thread.start()
        outer = getattr(_current, "deadline", None)
        _current.deadline = deadline
        try:
            yield deadline
        finally:
            _current.deadline = outer
            deadline.finish()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    nap = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(None if nap is None else max(nap, REAPER_TICK_SECONDS))
                now, due = time.monotonic(), []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
            for deadline in due:
                deadline.reap()


REAPER = Reaper()
_current = threading.local()


def watch(seconds: float) -> contextlib.AbstractContextManager[Deadline]:
    """``with deadline.watch(10) as limit:`` one remote operation, on the process's reaper."""
    return REAPER.watch(seconds)


def _attach_to_current(sock: socket.socket | None) -> None:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.attach(sock)


class WatchedHTTPConnection(HTTPConnection):
    """An HTTP connection whose socket belongs to the operation of the thread using it."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _attach_to_current(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach_to_current(self.sock)  # a kept-alive connection taken from the pool
        super().request(*args, **kwargs)


class WatchedHTTPSConnection(WatchedHTTPConnection, HTTPSConnection):
    """The same over TLS: the plain socket is attached before the handshake, so a slow one is cut too."""


class WatchedHTTPConnectionPool(urllib3.HTTPConnectionPool):
    ConnectionCls = WatchedHTTPConnection


class WatchedHTTPSConnectionPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = WatchedHTTPSConnection
