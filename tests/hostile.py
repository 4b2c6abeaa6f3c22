"""A hostile HTTP server for tests: a raw TCP socket on 127.0.0.1 that answers every request one bad way.

The ways a remote can hold a client without ever failing: its headers one byte at a time, its body one byte
at a time, headers that never end, a chunked body that never ends, or no answer at all. The server notes
when each client gives up (its side of the connection closes), so a test can see that the client cut the
request rather than the server ending it.
"""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import threading
import time
from collections.abc import Iterator
from types import TracebackType

SLOW_HEADERS = "slow headers"
SLOW_BODY = "slow body"
ENDLESS_HEADERS = "endless headers"
ENDLESS_CHUNKED_BODY = "endless chunked body"
NEVER_ANSWERS = "never answers"
MODES = (SLOW_HEADERS, SLOW_BODY, ENDLESS_HEADERS, ENDLESS_CHUNKED_BODY, NEVER_ANSWERS)

HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n"
CHUNKED = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"


class Hostile:
    def __init__(self, mode: str, interval: float = 0.5) -> None:
        assert mode in MODES, mode
        self.mode = mode
        self.interval = interval
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.accepted = 0
        self.closed_after: list[float] = []  # seconds from each connection's request to its client's close
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def url(self, path: str = "/x.jpg") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for_closes(self, count: int, timeout: float) -> list[float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.closed_after) >= count:
                    return list(self.closed_after)
            time.sleep(0.05)
        with self._lock:
            return list(self.closed_after)

    def __enter__(self) -> Hostile:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            if not _read_request(conn):
                return
            asked = time.monotonic()
            with contextlib.suppress(OSError):
                for piece in self._answer():
                    if self._client_left(conn) or self._stop.is_set():
                        break
                    conn.sendall(piece)
            with self._lock:
                self.closed_after.append(time.monotonic() - asked)

    def _answer(self) -> Iterator[bytes]:
        """What is sent, one piece per interval (for ever, but for the headers' trickle)."""
        if self.mode == SLOW_HEADERS:
            yield from (bytes([byte]) for byte in HEADERS + b"x" * 1000)
        elif self.mode == SLOW_BODY:
            yield HEADERS
            yield from itertools.repeat(b"x")
        elif self.mode == ENDLESS_HEADERS:
            yield b"HTTP/1.1 200 OK\r\n"
            yield from (b"X-More-%d: x\r\n" % n for n in itertools.count())
        elif self.mode == ENDLESS_CHUNKED_BODY:
            yield CHUNKED
            yield from itertools.repeat(b"1\r\nx\r\n")
        else:
            yield from itertools.repeat(b"")  # never answers: only watches for the client leaving

    def _client_left(self, conn: socket.socket) -> bool:
        """Waits one interval; True once the client has closed or shut down its side."""
        readable, _, _ = select.select([conn], [], [], self.interval)
        if not readable:
            return False
        try:
            return conn.recv(4096) == b""
        except OSError:
            return True


def _read_request(conn: socket.socket) -> bool:
    """The request's head and its body (by Content-Length); False if the client left first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        body += chunk
    return True
