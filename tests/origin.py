"""A real, scriptable HTTP origin on 127.0.0.1 for media tests: Sinch's content servers, played locally.

Each path answers a scripted sequence of replies (the last one repeats), and every request is logged, so a
test can assert that a refused URL never reached the server.
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str | None = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    content_length: int | None = None  # None: the true length; -1: no header (ends at close); else a lie
    stall_seconds: float = 0.0  # after the headers, before the body
    trickle_seconds: float = 0.0  # between body bytes


class Origin:
    def __init__(self) -> None:
        self.routes: dict[str, list[Reply]] = {}
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, *replies: Reply) -> str:
        """Script ``path``'s replies; returns its URL. Non-ASCII paths match their %-encoded request form."""
        with self._lock:
            self.routes[urllib.parse.quote(path, safe="/?&=%:@!$'()*+,;-._~")] = list(replies)
        return self.url(path)

    def seen(self, path: str) -> int:
        with self._lock:
            return self.requests.count(path)

    def _next(self, path: str) -> Reply:
        with self._lock:
            self.requests.append(path)
            replies = self.routes.get(path)
            if not replies:
                return Reply(404, b"not found", "text/plain")
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                reply = origin._next(self.path)
                self.send_response(reply.status)
                if reply.content_type:
                    self.send_header("Content-Type", reply.content_type)
                length = len(reply.body) if reply.content_length is None else reply.content_length
                if length >= 0:
                    self.send_header("Content-Length", str(length))
                self.send_header("Connection", "close")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                time.sleep(reply.stall_seconds)
                with contextlib.suppress(OSError):  # the client gave up (deadline): the point of the test
                    self._body(reply)

            def _body(self, reply: Reply) -> None:
                if not reply.trickle_seconds:
                    self.wfile.write(reply.body)
                    return
                for byte in reply.body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(reply.trickle_seconds)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> Origin:
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()
