"""A real, scriptable HTTP(S) origin on 127.0.0.1 for media tests: Sinch's content servers, played locally.

Each path answers a scripted sequence of replies (the last one repeats), and every request is logged, so a
test can assert that a refused URL never reached the server. Connections are kept alive (HTTP/1.1) unless a
reply has to end at the close, and the TCP connections accepted are counted, so a test can see reuse. With a
server-side TLS context it speaks HTTPS and records the SNI name each client sent. With latency_seconds every
request waits that long before its answer, as from a server across the internet (the media benchmark's).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any


def issue_certificates(folder: Path, *names: str) -> Path:
    """A throwaway CA (returned: folder/ca.pem) and, for each name (a DNS name or an IP), a certificate
    folder/<name>.pem with its key folder/<name>.key, signed by that CA, valid one day."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *new_key, "-days", "1", "-subj", "/CN=mo-spool test CA", "-keyout", ca_key, "-out", ca
    )
    for name in names:
        key, csr, cert, extensions = (folder / f"{name}.{ext}" for ext in ("key", "csr", "pem", "ext"))
        kind = "IP" if _is_ip(name) else "DNS"
        extensions.write_text(f"subjectAltName={kind}:{name}\nbasicConstraints=CA:FALSE\n")
        _openssl("req", *new_key, "-subj", f"/CN={name}", "-keyout", key, "-out", csr)
        _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "1",
                 "-extfile", extensions, "-out", cert)  # fmt: skip
    return ca


def server_tls(folder: Path, name: str) -> ssl.SSLContext:
    """A server-side TLS context presenting the certificate issue_certificates() made for name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / f"{name}.pem", folder / f"{name}.key")
    return context


def _canonical(path: str) -> str:
    """%2e and %2E are the same (RFC 3986 6.2.2.1); urllib3 sends the upper case."""
    return re.sub("%[0-9a-fA-F]{2}", lambda escape: escape.group(0).upper(), path)


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str | None = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    content_length: int | None = None  # None: the true length; -1: no header (ends at close); else a lie
    stall_seconds: float = 0.0  # after the headers, before the body
    trickle_seconds: float = 0.0  # between body bytes
    rendezvous: threading.Barrier | None = None  # answer only once the others are here too, else 503


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None) -> None:
        self.tls = tls
        self.connections = 0
        super().__init__(("127.0.0.1", 0), handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        self.connections += 1  # only the accepting thread counts
        if self.tls:  # the handshake happens in the handler's thread, not in the accept loop
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that refuses our certificate or gives up early is what some tests are about


class Origin:
    def __init__(self, tls: ssl.SSLContext | None = None, latency_seconds: float = 0.0) -> None:
        self.latency_seconds = latency_seconds
        self.routes: dict[str, list[Reply]] = {}
        self.requests: list[str] = []
        self.hosts: list[str] = []  # the Host header of each request
        self.sni: list[str | None] = []  # the server name each TLS client asked for
        self._lock = threading.Lock()
        self._active = 0
        self.most_at_once = 0  # the most requests being answered at the same time
        if tls:
            tls.sni_callback = self._record_sni
        self.server = _Server(self._handler(), tls)
        self.port = int(self.server.server_address[1])
        self.scheme = "https" if tls else "http"

    @property
    def connections(self) -> int:
        return self.server.connections

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def serve(self, path: str, *replies: Reply, host: str = "127.0.0.1") -> str:
        """Script ``path``'s replies; returns its URL. Non-ASCII paths match their %-encoded request form."""
        with self._lock:
            self.routes[_canonical(urllib.parse.quote(path, safe="/?&=%:@!$'()*+,;-._~"))] = list(replies)
        return self.url(path, host)

    def seen(self, path: str) -> int:
        with self._lock:
            return self.requests.count(_canonical(path))

    def _record_sni(
        self, sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, context: ssl.SSLContext
    ) -> None:
        with self._lock:
            self.sni.append(name)

    def _next(self, path: str, host: str) -> Reply:
        with self._lock:
            path = _canonical(path)
            self.requests.append(path)
            self.hosts.append(host)
            replies = self.routes.get(path)
            if not replies:
                return Reply(404, b"not found", "text/plain")
            return replies.pop(0) if len(replies) > 1 else replies[0]

    @contextlib.contextmanager
    def _answering(self) -> Any:
        with self._lock:
            self._active += 1
            self.most_at_once = max(self.most_at_once, self._active)
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.do_handshake()
                super().setup()

            def do_GET(self) -> None:
                with origin._answering():
                    reply = origin._next(self.path, self.headers.get("Host", ""))
                    if origin.latency_seconds:
                        time.sleep(origin.latency_seconds)
                    if reply.rendezvous:
                        try:
                            reply.rendezvous.wait()
                        except threading.BrokenBarrierError:
                            reply = Reply(503, b"the other requests never came", "text/plain")
                    self._answer(reply)

            def _answer(self, reply: Reply) -> None:
                self.send_response(reply.status)
                if reply.content_type:
                    self.send_header("Content-Type", reply.content_type)
                length = len(reply.body) if reply.content_length is None else reply.content_length
                if length >= 0:
                    self.send_header("Content-Length", str(length))
                if length != len(reply.body):  # the body's end is the connection's end
                    self.send_header("Connection", "close")
                    self.close_connection = True
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
