"""A business's application, played locally: a real HTTP server on 127.0.0.1 that takes mo-spool's webhooks.

Every request is checked the way an application would, with the ``standardwebhooks`` library's
``Webhook.verify`` (not mo-spool's code), and recorded. What it answers is scripted per request, so a test
can make it fail a few times, stall past the client's timeout, or refuse.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

SECRET = "whsec_" + base64.b64encode(b"mo-spool test secret, 32 bytes!!").decode()


@dataclass(frozen=True)
class Reply:
    status: int = 200
    stall_seconds: float = 0.0  # before answering
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    webhook_id: str
    timestamp: str
    body: bytes
    payload: Any  # what Webhook.verify returned; None when verification failed
    seen_before: int  # requests with this webhook-id that arrived before this one
    status: int  # what the application answered

    @property
    def verified(self) -> bool:
        return self.payload is not None


Script = Callable[[str, int], Reply]  # (webhook-id, times seen before) -> reply


def always(reply: Reply) -> Script:
    return lambda webhook_id, seen: reply


def fail_first(times: int, failure: Reply, then: Reply = Reply()) -> Script:
    """Each webhook-id gets ``failure`` for its first ``times`` tries, then ``then``."""
    return lambda webhook_id, seen: failure if seen < times else then


ACCEPT = always(Reply())


class App:
    def __init__(self, script: Script = ACCEPT, secret: str = SECRET) -> None:
        self.script = script
        self.verifier = Webhook(secret)
        self.received: list[Received] = []  # in the order the answers were decided
        self._arrivals: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/mo"

    def delivered(self) -> dict[str, Received]:
        """The first 2xx-answered request of each webhook-id."""
        with self._lock:
            found: dict[str, Received] = {}
            for item in self.received:
                if 200 <= item.status < 300:
                    found.setdefault(item.webhook_id, item)
            return found

    def tries(self, webhook_id: str) -> list[Received]:
        with self._lock:
            return [item for item in self.received if item.webhook_id == webhook_id]

    def _take(self, headers: dict[str, str], body: bytes) -> Reply:
        try:
            payload = self.verifier.verify(body, headers)
        except WebhookVerificationError:
            payload = None
        webhook_id = headers.get("webhook-id", "")
        with self._lock:
            seen = self._arrivals[webhook_id]
            self._arrivals[webhook_id] += 1
        reply = self.script(webhook_id, seen) if payload is not None else Reply(401)  # may block
        with self._lock:
            stamp = headers.get("webhook-timestamp", "")
            self.received.append(Received(webhook_id, stamp, body, payload, seen, reply.status))
        return reply

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request (kill -9): nothing was delivered
                    self.close_connection = True
                    return
                reply = app._take({k.lower(): v for k, v in self.headers.items()}, body)
                time.sleep(reply.stall_seconds)
                answer = json.dumps({"status": reply.status}).encode()
                with contextlib.suppress(OSError):  # the client gave up (timeout): the point of the test
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> App:
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()
