"""A local media origin for the benchmarks, played the way Sinch's content servers look from afar.

HTTPS (a certificate for 127.0.0.1 from a throwaway CA, so clients verify it), keep-alive, and 100 ms added to
every request, as a server across the internet would. /<n>/photo.jpg (32 KiB) and /<n>/note.txt, with
deterministic bytes. The TCP connections it accepts are counted, so a run can show both clients used as many.
"""

from __future__ import annotations

import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.origin import issue_certificates, server_tls

PHOTO = bytes(range(256)) * 128
TYPES = {"photo.jpg": "image/jpeg", "note.txt": "text/plain; charset=utf-8"}
LATENCY_SECONDS = 0.1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()  # in this connection's thread, not in the accept loop
        super().setup()

    def do_GET(self) -> None:
        time.sleep(LATENCY_SECONDS)
        name = self.path.rsplit("/", 1)[-1]
        body = PHOTO if name == "photo.jpg" else f"note for {self.path}".encode()
        self.send_response(200 if name in TYPES else 404)
        self.send_header("Content-Type", TYPES.get(name, "text/plain"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext) -> None:
        self.tls = tls
        self.connections = 0
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        self.connections += 1
        return self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address


class MediaOrigin:
    def __init__(self, folder: Path) -> None:
        self.ca = issue_certificates(folder, "127.0.0.1")
        self.server = _Server(server_tls(folder, "127.0.0.1"))
        self.base_url = f"https://127.0.0.1:{self.server.server_address[1]}"

    def take_connections(self) -> int:
        """TCP connections accepted since the last call."""
        count, self.server.connections = self.server.connections, 0
        return count

    def __enter__(self) -> MediaOrigin:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()
