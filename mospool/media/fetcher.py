"""Download the media parts of an MMS MO (the `content[].file` URLs) safely into the record's folder.

Every URL, and every redirect hop, passes the SSRF guard (``mospool.media.guard``) first, and the connection
goes to the address it checked. Each download has a total deadline and a byte cap counted on what is read.

One `Fetcher` serves every postback thread: a fixed pool of download threads (so the parts of different
postbacks interleave) and keep-alive connections pooled per (scheme, host, checked address, port), TLS
verified against the host name (SNI = the host name) while the socket goes to the checked address.
"""

from __future__ import annotations

import collections
import logging
import os
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import urllib3
from urllib3.exceptions import HTTPError, ProtocolError

from mospool import retry
from mospool.config import MediaSettings
from mospool.durable import DIR_MODE
from mospool.media.files import TYPES, MediaFile, describe, extension_for, safe_stem
from mospool.media.guard import MediaError, Resolver, Target, check_url, resolve_tcp
from mospool.store.layout import MEDIA, MEDIA_TEMP_PATTERN, media_part, media_part_pattern, media_temp

log = logging.getLogger(__name__)

USER_AGENT = "mo-spool/1"
CHUNK = 64 * 1024
REDIRECTS = {301, 302, 303, 307, 308}
# Connection pools kept (least recently used dropped): a few content hosts, each maybe on a few addresses.
MAX_POOLS = 32

Response = urllib3.BaseHTTPResponse
Pool = urllib3.HTTPConnectionPool


class Fetcher:
    """Fetches media parts for any number of postback threads at once; build one, share it, close() it.

    `parallel_downloads` download threads serve every caller, taking parts in the order they were asked for,
    so at most that many parts (and connections per host) are in flight in the whole worker.
    """

    def __init__(self, settings: MediaSettings, resolve: Resolver = resolve_tcp) -> None:
        self.settings = settings
        self._resolve = resolve
        self._tls = ssl.create_default_context()  # verifies the chain and the host name given as SNI
        self._pools: collections.OrderedDict[tuple[str, str, str, int], Pool] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._downloads = ThreadPoolExecutor(settings.parallel_downloads, thread_name_prefix="media")

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop taking parts and close idle connections; a download in flight ends on its own deadline."""
        self._downloads.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            pools, self._pools = list(self._pools.values()), collections.OrderedDict()
        for pool in pools:
            pool.close()

    def fetch_all(self, urls: Sequence[str], record_dir: Path) -> list[MediaFile | MediaError]:
        """Every part into record_dir/media/; result i is for urls[i]. Complete parts are reused."""
        media_dir = record_dir / MEDIA
        media_dir.mkdir(mode=DIR_MODE, exist_ok=True)
        for leftover in media_dir.glob(
            MEDIA_TEMP_PATTERN
        ):  # a download a crash cut short: fetched again below
            leftover.unlink()
        try:
            jobs = [
                self._downloads.submit(self._fetch_or_reuse, url, index, media_dir)
                for index, url in enumerate(urls, 1)
            ]
        except RuntimeError:  # close() came first
            return [_stopped(url) for url in urls]
        return [_outcome(job, url) for job, url in zip(jobs, urls, strict=True)]

    def _fetch_or_reuse(self, url: str, index: int, media_dir: Path) -> MediaFile | MediaError:
        done = sorted(media_dir.glob(media_part_pattern(index)))
        if done:
            return describe(done[0], index, url, TYPES.get(done[0].suffix.lstrip(".")))
        try:
            return self.fetch_one(url, index, media_dir)
        except MediaError as error:
            log.warning("media part %d of %s: %s", index, media_dir.parent.name, error)
            return error

    def fetch_one(self, url: str, index: int, media_dir: Path) -> MediaFile:
        settings = self.settings
        deadline = time.monotonic() + settings.timeout_seconds
        current = url
        for _ in range(settings.max_redirects + 1):
            target = check_url(current, settings, self._resolve)
            response = self._get(current, target, deadline)
            if response.status not in REDIRECTS:
                return _save(url, index, response, media_dir, settings, deadline)
            location = response.headers.get("Location")
            _discard(response)
            if not location:
                raise MediaError(url, f"HTTP {response.status} redirect without a Location", permanent=True)
            current = urllib.parse.urljoin(current, location)
        raise MediaError(
            url, f"refused: more than max_redirects ({settings.max_redirects}) redirects", permanent=True
        )

    # --- the request, to the checked address

    def _get(self, url: str, target: Target, deadline: float) -> Response:
        pool = self._pool(target)
        headers = {
            "Host": target.host_header, "User-Agent": USER_AGENT, "Accept": "*/*",
            "Accept-Encoding": "identity",
        }  # fmt: skip
        for attempt in (1, 2):
            remaining = _remaining(url, deadline)
            timeout = urllib3.Timeout(
                connect=min(self.settings.connect_timeout_seconds, remaining), read=remaining
            )
            try:
                return pool.urlopen(
                    "GET", target.path, headers=headers, timeout=timeout, retries=False, redirect=False,
                    assert_same_host=False, preload_content=False, decode_content=False, release_conn=False,
                )  # fmt: skip
            except ProtocolError as exc:  # a kept-alive connection the server had just closed: once more
                if attempt == 2:
                    raise MediaError(url, f"connection failed: {exc!r}", permanent=False) from exc
            except (HTTPError, OSError) as exc:
                raise MediaError(url, f"connection failed: {exc!r}", permanent=False) from exc
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
        size = self.settings.parallel_downloads
        if target.scheme == "https":
            return urllib3.HTTPSConnectionPool(
                target.address, target.port, maxsize=size, ssl_context=self._tls, server_hostname=target.host
            )
        return urllib3.HTTPConnectionPool(target.address, target.port, maxsize=size)


# --- the response


def _outcome(job: Future[MediaFile | MediaError], url: str) -> MediaFile | MediaError:
    try:
        return job.result()
    except CancelledError:
        return _stopped(url)


def _stopped(url: str) -> MediaError:
    """A part close() dropped before it started: tried again later, like any transient failure."""
    return MediaError(url, "not fetched: the worker was stopping", permanent=False)


def _remaining(url: str, deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise MediaError(url, "timed out: timeout_seconds deadline passed", permanent=False)
    return left


def _discard(response: Response) -> None:
    """Close a response whose body we do not read: its connection is not worth draining for reuse."""
    response.close()
    response.release_conn()


def _status_error(url: str, response: Response) -> MediaError:
    status = response.status
    transient = status in (408, 429) or status >= 500
    retry_after = retry.retry_after_seconds(response.headers.get("Retry-After")) if transient else None
    return MediaError(
        url, f"HTTP {status} {response.reason}", permanent=not transient, retry_after=retry_after
    )


def _save(
    url: str, index: int, response: Response, media_dir: Path, settings: MediaSettings, deadline: float
) -> MediaFile:
    """Stream a 200 into place; the connection goes back to its pool only after a whole, clean body."""
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
            size = _stream(url, response, temp, settings.max_bytes, deadline)
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


def _stream(url: str, response: Response, temp: Path, limit: int, deadline: float) -> int:
    with temp.open("xb") as out:
        size = 0
        while True:
            _set_timeout(response, _remaining(url, deadline))
            try:
                chunk = response.read1(CHUNK)  # one recv at most, so the deadline is checked between them
            except (HTTPError, OSError) as exc:
                raise MediaError(url, f"download interrupted: {exc!r}", permanent=False) from exc
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise MediaError(url, f"part exceeds max_bytes ({limit})", permanent=True)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size


def _set_timeout(response: Response, seconds: float) -> None:
    connection = response.connection
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        sock.settimeout(seconds)
