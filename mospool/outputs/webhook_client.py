"""The webhooks' transport: one signed POST to the application per try, within one total deadline.

Requests are signed per Standard Webhooks: an HMAC-SHA256 over ``id.timestamp.body`` with the secret, fresh
at each try. Each try has one deadline, ``timeout_seconds``, from connect to the last byte of the answer read
(``mospool.deadline``): an application that trickles its answer is cut there, and that connection is never
used again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import urllib.parse
from typing import Protocol

import urllib3

from mospool import deadline, retry
from mospool.outputs.destination import Answer
from mospool.store import Entry

RESPONSE_LIMIT = 4096  # bytes of the application's answer kept for the log and the undelivered entry
USER_AGENT = "mo-spool-webhook/1"


class ClientSettings(Protocol):
    """What the client needs of [forward]."""

    @property
    def url(self) -> str: ...
    @property
    def secret(self) -> str: ...
    @property
    def timeout_seconds(self) -> float: ...
    @property
    def concurrency(self) -> int: ...


def secret_key(secret: str) -> bytes:
    """The key a ``whsec_`` secret encodes (empty when it is not one)."""
    if not secret.startswith("whsec_"):
        return b""
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return b""


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature of one try, computed on the exact bytes sent."""
    signed = b"%s.%d.%s" % (message_id.encode(), timestamp, body)
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookClient:
    """The transport: one pooled HTTP client for every sender thread; signs each try with a fresh timestamp.

    Every request goes to the one configured URL, so the senders use its connection pool directly. Each try
    has one total deadline, ``timeout_seconds``, from connect to the last byte of the answer read
    (``mospool.deadline``): an application that trickles its answer is cut there, and the connection is
    never used again.
    """

    def __init__(self, settings: ClientSettings) -> None:
        self.key = secret_key(settings.secret)
        self.timeout_seconds = settings.timeout_seconds
        parts = urllib.parse.urlsplit(settings.url)
        secure = parts.scheme == "https"
        pool = deadline.WatchedHTTPSConnectionPool if secure else deadline.WatchedHTTPConnectionPool
        self.pool = pool(parts.hostname or "", parts.port, maxsize=settings.concurrency, retries=False)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def headers(self, entry: Entry, now: float) -> dict[str, str]:
        stamp = int(now)
        return {
            "User-Agent": USER_AGENT,
            "Content-Type": "application/json",
            "webhook-id": entry.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(self.key, entry.id, stamp, entry.body),
        }

    def send(self, entry: Entry) -> Answer:
        with deadline.watch(self.timeout_seconds) as limit:
            try:
                response = self.pool.urlopen(
                    "POST",
                    self.target,
                    body=entry.body,
                    headers=self.headers(entry, time.time()),
                    redirect=False,
                    preload_content=False,
                    timeout=limit.timeout(self.timeout_seconds),
                )
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                return Answer(False, self._failure(limit, exc), transient=True)
            if limit.cut:  # while the headers came: what looks like an answer may be a part of one
                response.close()
                response.release_conn()
                return Answer(False, self._failure(limit, None), transient=True)
            return self._answer(response, limit)

    def _failure(self, limit: deadline.Deadline, exc: BaseException | None) -> str:
        if limit.cut or limit.remaining() == 0:
            return f"timed out: no whole answer within timeout_seconds ({self.timeout_seconds:g})"
        return f"{type(exc).__name__}: {exc}"

    def _answer(self, response: urllib3.BaseHTTPResponse, limit: deadline.Deadline) -> Answer:
        """The status decides; the start of the body is kept for the log and the undelivered entry."""
        try:
            text = (
                ""
                if response.length_remaining == 0
                else response.read(RESPONSE_LIMIT).decode("utf-8", "replace")
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            text = f"(answer unreadable: {type(exc).__name__})"
        finally:
            cut = limit.finish()  # before the connection may go back to the pool
            if cut or response.length_remaining != 0:  # more than we read, or unknown: not reused
                response.close()
            response.release_conn()
        if cut:
            text = f"(answer cut at timeout_seconds, {self.timeout_seconds:g})"
        status = response.status
        detail = f"HTTP {status} {response.reason or ''}".strip()
        if text.strip():
            detail += f": {text.strip()[:200]}"
        if 200 <= status < 300:
            return Answer(True, detail)
        transient = retry.transient_status(status)
        wait = retry.retry_after_seconds(response.headers.get("Retry-After"))
        return Answer(False, detail, transient, wait)

    def close(self) -> None:
        self.pool.close()
