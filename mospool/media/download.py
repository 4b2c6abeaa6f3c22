"""One media part's download: checked, requested from the checked address, capped, timed, and put in place.

Every URL, and every redirect hop, passes the SSRF guard (``mospool.media.guard``) first, and the connection
goes to the address it checked. A part has one total deadline (``mospool.deadline``: connect, TLS, headers
and body, redirects included, however the origin trickles), a byte cap counted on what is read, and a share
of its postback's byte budget (``Budget``). It is written to ``media/.NN.part``, fsynced and renamed, so
media/ never holds half a file. Keep-alive connections are pooled per (scheme, host, checked address, port),
TLS verified against the host name (SNI = the host name) while the socket goes to the checked address; a
connection goes back to its pool only after a whole, clean body read within the deadline.
"""

from __future__ import annotations

import collections
import os
import socket
import ssl
import threading
import urllib.parse
from pathlib import Path

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError

from mospool import deadline, retry
from mospool.config import MediaSettings
from mospool.durable import FILE_MODE
from mospool.media.files import MediaFile, describe, extension_for, safe_stem
from mospool.media.guard import MediaError, Resolver, Target, check_url
from mospool.store.layout import media_part, media_temp

USER_AGENT = "mo-spool/1"
CHUNK = 64 * 1024
REDIRECTS = {301, 302, 303, 307, 308}
# Connection pools kept (least recently used dropped): a few content hosts, each maybe on a few addresses.
MAX_POOLS = 32

Response = urllib3.BaseHTTPResponse
Pool = urllib3.HTTPConnectionPool


class Budget:
    """The bytes the parts of one postback may take together (None: no limit); shared by their threads."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def add(self, size: int) -> bool:
        """Count ``size`` more bytes; False once the total is over the limit."""
        with self._lock:
            self._used += size
            return self.limit is None or self._used <= self.limit

    def take(self, url: str, size: int) -> None:
        if not self.add(size):
            raise MediaError(
                url, f"the postback's media exceeds max_total_bytes ({self.limit})", permanent=True
            )


class Downloader:
    """Downloads single parts for any number of threads, sharing their kept-alive connections."""

    def __init__(self, settings: MediaSettings, resolve: Resolver) -> None:
        self.settings = settings
        self._resolve = resolve
        self._tls = ssl.create_default_context()  # verifies the chain and the host name given as SNI
        self._pools: collections.OrderedDict[tuple[str, str, str, int], Pool] = collections.OrderedDict()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the idle connections; a download in flight ends on its own deadline."""
        with self._lock:
            pools, self._pools = list(self._pools.values()), collections.OrderedDict()
        for pool in pools:
            pool.close()

    def fetch_one(self, url: str, index: int, media_dir: Path, budget: Budget | None = None) -> MediaFile:
        """One part, redirects followed, under one deadline of ``timeout_seconds``."""
        settings = self.settings
        with deadline.watch(settings.timeout_seconds) as limit:
            try:
                return self._follow(url, index, media_dir, limit, budget or Budget(None))
            except MediaError as error:
                if limit.cut or (error.timed_out and limit.remaining() == 0):
                    raise _timed_out(url, settings) from error
                raise

    def _follow(
        self, url: str, index: int, media_dir: Path, limit: deadline.Deadline, budget: Budget
    ) -> MediaFile:
        settings = self.settings
        current = url
        for _ in range(settings.max_redirects + 1):
            target = check_url(current, settings, self._resolve)
            response = self._get(current, target, limit)
            if response.status not in REDIRECTS:
                return _save(url, index, response, media_dir, settings, limit, budget)
            location = response.headers.get("Location")
            _discard(response)
            if not location:
                raise MediaError(url, f"HTTP {response.status} redirect without a Location", permanent=True)
            current = urllib.parse.urljoin(current, location)
        raise MediaError(
            url, f"refused: more than max_redirects ({settings.max_redirects}) redirects", permanent=True
        )

    # --- the request, to the checked address

    def _get(self, url: str, target: Target, limit: deadline.Deadline) -> Response:
        pool = self._pool(target)
        headers = {
            "Host": target.host_header, "User-Agent": USER_AGENT, "Accept": "*/*",
            "Accept-Encoding": "identity",
        }  # fmt: skip
        for attempt in (1, 2):
            if limit.remaining() <= 0:
                raise _timed_out(url, self.settings)
            try:
                timeout = limit.timeout(self.settings.connect_timeout_seconds)
                return pool.urlopen(
                    "GET", target.path, headers=headers, timeout=timeout, retries=False, redirect=False,
                    assert_same_host=False, preload_content=False, decode_content=False, release_conn=False,
                )  # fmt: skip
            except ProtocolError as exc:  # a kept-alive connection the server had just closed: once more
                if attempt == 2 or limit.cut:
                    raise _connection_error(url, exc) from exc
            except (HTTPError, OSError) as exc:
                raise _connection_error(url, exc) from exc
        raise AssertionError("unreachable")

    def _pool(self, target: Target) -> Pool:
        key = (target.scheme, target.host, target.address, target.port)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = self._new_pool(target)
                if len(self._pools) > MAX_POOLS:
                    self._pools.popitem(last=False)[1].close()
            self._pools.move_to_end(key)
            return pool

    def _new_pool(self, target: Target) -> Pool:
        size = self.settings.per_host_downloads
        if target.scheme == "https":
            return deadline.WatchedHTTPSConnectionPool(
                target.address, target.port, maxsize=size, ssl_context=self._tls, server_hostname=target.host
            )
        return deadline.WatchedHTTPConnectionPool(target.address, target.port, maxsize=size)


def _timed_out(url: str, settings: MediaSettings) -> MediaError:
    return MediaError(
        url,
        f"timed out: the part took longer than timeout_seconds ({settings.timeout_seconds:g})",
        permanent=False,
        timed_out=True,
    )


def _connection_error(url: str, exc: BaseException) -> MediaError:
    return MediaError(url, f"connection failed: {exc!r}", permanent=False, timed_out=_is_timeout(exc))


def _is_timeout(exc: BaseException) -> bool:
    """A socket timeout, not a refusal (urllib3 makes NewConnectionError a ConnectTimeoutError)."""
    return isinstance(exc, urllib3.exceptions.TimeoutError | socket.timeout) and not isinstance(
        exc, NewConnectionError
    )


def _discard(response: Response) -> None:
    """Close a response whose body we do not read: its connection is not worth draining for reuse."""
    response.close()
    response.release_conn()


def _status_error(url: str, response: Response) -> MediaError:
    status = response.status
    transient = retry.transient_status(status)
    retry_after = retry.retry_after_seconds(response.headers.get("Retry-After")) if transient else None
    return MediaError(
        url, f"HTTP {status} {response.reason}", permanent=not transient, retry_after=retry_after
    )


def _save(
    url: str,
    index: int,
    response: Response,
    media_dir: Path,
    settings: MediaSettings,
    limit: deadline.Deadline,
    budget: Budget,
) -> MediaFile:
    """Stream a 200 into place; the connection goes back to its pool only after a whole, clean body read
    within the deadline."""
    reusable = False
    try:
        if response.status != 200:
            raise _status_error(url, response)
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > settings.max_bytes:
            raise MediaError(
                url, f"Content-Length {declared} exceeds max_bytes ({settings.max_bytes})", permanent=True
            )
        content_type = response.headers.get("Content-Type")
        final = media_dir / media_part(index, safe_stem(url), extension_for(content_type, url))
        temp = media_dir / media_temp(index)
        temp.unlink(missing_ok=True)
        try:
            size = _stream(url, response, temp, settings, limit, budget)
            if limit.finish():  # cut at the deadline: what was read may look whole, and is not
                raise _timed_out(url, settings)
            if declared and declared.isdigit() and size < int(declared):
                raise MediaError(
                    url, f"download interrupted: got {size} of {declared} bytes", permanent=False
                )
            os.rename(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        reusable = True
    finally:
        if reusable:
            response.release_conn()
        else:
            _discard(response)
    return describe(final, index, url, content_type)


def _stream(
    url: str,
    response: Response,
    temp: Path,
    settings: MediaSettings,
    limit: deadline.Deadline,
    budget: Budget,
) -> int:
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), FILE_MODE)  # the umask must not decide who may read the media
        size = 0
        while True:
            if limit.remaining() <= 0:
                raise _timed_out(url, settings)
            _set_timeout(response, limit.remaining())
            try:
                chunk = response.read1(CHUNK)  # one recv at most, so the deadline is checked between them
            except (HTTPError, OSError) as exc:
                stuck = _is_timeout(exc)
                raise MediaError(
                    url, f"download interrupted: {exc!r}", permanent=False, timed_out=stuck
                ) from exc
            if not chunk:
                break
            size += len(chunk)
            if size > settings.max_bytes:
                raise MediaError(url, f"part exceeds max_bytes ({settings.max_bytes})", permanent=True)
            budget.take(url, len(chunk))
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size


def _set_timeout(response: Response, seconds: float) -> None:
    connection = response.connection
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        sock.settimeout(max(seconds, 0.001))
