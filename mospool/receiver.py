"""The HTTP receiver: store the raw postback durably, then answer 200. Nothing else happens in the request.

It never parses the payload: a malformed postback is stored like any other (the worker files it under
failed/), because a 4xx would make Sinch retry and then drop a real message.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import logging
import threading
import time
from typing import Any

from flask import Flask, Request, Response, abort, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response as BaseResponse

from mospool.config import Settings
from mospool.store import Spool, id_age_seconds, new_id

log = logging.getLogger(__name__)

# healthz counts at most this many waiting files, so it stays cheap with any backlog.
HEALTH_SCAN_LIMIT = 10_000
FREE_SPACE_REFRESH_SECONDS = 0.25
HEADER_ALLOWANCE = 4096  # the spool file's metadata line, and a block's rounding, counted per postback
POST_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def create_app(settings: Settings) -> Flask:
    """The WSGI app for one spool. Creates the spool folders; raises SpoolError if it cannot take writes."""
    spool = Spool(settings.spool.dir)
    spool.create()
    app = Flask(__name__)
    app.extensions["mospool"] = {"settings": settings, "spool": spool}
    _add_routes(app, settings, spool)
    if settings.receiver.trusted_proxy_count:
        count = settings.receiver.trusted_proxy_count
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count)  # type: ignore[method-assign]
    log.info("ready: postbacks to %s are stored in %s", settings.receiver.path, spool.incoming)
    return app


def _add_routes(app: Flask, settings: Settings, spool: Spool) -> None:
    receiver = settings.receiver
    free = FreeSpace(spool)

    @app.before_request
    def refuse_outsiders() -> None:
        if receiver.allowed_networks and not _allowed(request.remote_addr, receiver.allowed_networks):
            abort(403)

    def receive(token: str | None = None) -> Response:
        if receiver.token and not hmac.compare_digest((token or "").encode(), receiver.token.encode()):
            abort(404)
        if request.method != "POST":
            abort(405, valid_methods=["POST"])
        return _store(spool, settings, free)

    if receiver.token:
        app.add_url_rule(f"{receiver.path}/<token>", "receive", receive, methods=POST_METHODS)
    else:
        app.add_url_rule(receiver.path, "receive", receive, methods=POST_METHODS)

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return _health(spool, settings)

    @app.errorhandler(HTTPException)
    def plain_error(error: HTTPException) -> BaseResponse:
        response = error.get_response()
        response.set_data(f"{error.code} {error.name}\n")
        response.mimetype = "text/plain"
        return response


def _allowed(address: str | None, networks: tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


class FreeSpace:
    """The spool's free space for the requests of one process: read at most every ``refresh`` seconds, less
    what this process wrote since, so the check costs no system call per request. Other writers' bytes show
    at the next read, at most ``refresh`` seconds later; a write that fails for want of space is a 503
    anyway."""

    def __init__(self, spool: Spool, refresh: float = FREE_SPACE_REFRESH_SECONDS) -> None:
        self.spool = spool
        self.refresh = refresh
        self._lock = threading.Lock()
        self._free = 0
        self._read_at = float("-inf")

    def take(self, size: int, minimum: int) -> bool:
        """Whether ``size`` more bytes leave at least ``minimum`` free; if so, counts them as written."""
        with self._lock:
            now = time.monotonic()
            if now - self._read_at >= self.refresh:
                self._free, self._read_at = self.spool.free_bytes(), now
            if self._free - size < minimum:
                self._read_at = float("-inf")  # read again next time: space may come back at once
                return False
            self._free -= size
            return True


def _store(spool: Spool, settings: Settings, free: FreeSpace) -> Response:
    req = request._get_current_object()  # type: ignore[attr-defined]  # once, not through the proxy each time
    body = _read_body(req, settings.receiver.max_body_bytes)
    if not body:
        abort(400, "empty body")
    try:
        if not free.take(len(body) + HEADER_ALLOWANCE, settings.receiver.min_free_bytes):
            raise OSError("free space below min_free_bytes")
        now = dt.datetime.now(dt.UTC)
        postback_id = spool.publish(_request_meta(req, settings, now), body, new_id(now))
    except OSError as exc:
        log.error("not stored (answering 503 so Sinch retries): %s", exc)
        return _unavailable(settings)
    log.info(
        "stored %s bytes=%d remote=%s type=%s", postback_id, len(body), req.remote_addr, req.content_type
    )
    return Response("OK\n", status=200, mimetype="text/plain")


def _read_body(req: Request, limit: int) -> bytes:
    """The whole body, or 413 past ``limit``.

    Read from wsgi.input by hand: Werkzeug's max_content_length silently truncates a chunked body at the
    limit, and a truncated postback answered with 200 would be a lost message.
    """
    if req.content_length is not None and req.content_length > limit:
        abort(413)
    stream = req.environ["wsgi.input"]
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(limit + 1 - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    if size > limit:
        abort(413)
    return b"".join(parts)


def _unavailable(settings: Settings) -> Response:
    response = Response("503 Service Unavailable: not stored, retry later\n", 503, mimetype="text/plain")
    response.headers["Retry-After"] = str(settings.receiver.retry_after_seconds)
    return response


def _request_meta(req: Request, settings: Settings, now: dt.datetime) -> dict[str, Any]:
    return {
        "received_at": now.isoformat(),
        "remote_addr": req.remote_addr,
        "method": req.method,
        "path": settings.receiver.path,  # never the token that may follow it
        "query_string": req.query_string.decode("latin-1"),
        "content_type": req.content_type,
        "user_agent": req.headers.get("User-Agent") or None,
        "content_length": req.content_length,
    }


def _health(spool: Spool, settings: Settings) -> tuple[Response, int]:
    free = spool.free_bytes()
    waiting, oldest = spool.backlog(HEALTH_SCAN_LIMIT)
    writable = spool.writable() and free > 0 and free >= settings.receiver.min_free_bytes
    body = {
        "status": "ok" if writable else "unavailable",
        "spool_writable": writable,
        "free_bytes": free,
        "waiting": waiting,
        "waiting_capped": waiting >= HEALTH_SCAN_LIMIT,
        "oldest_waiting_seconds": round(id_age_seconds(oldest), 3),
    }
    return jsonify(body), 200 if writable else 503
