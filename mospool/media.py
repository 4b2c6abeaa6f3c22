"""Download the media parts of an MMS MO (the `content[].file` URLs) safely into the record's folder.

The URLs come from the internet and are hostile until checked: only allowed schemes and hosts, every address
the host resolves to must be public (unless allow_private_networks), IPv6 forms that carry an IPv4 address
judged by that IPv4 too, and we connect to the address we checked, so DNS cannot be re-pointed between the
check and the connect. Redirects are followed by hand and every hop is checked again. Each download has a
total deadline and a byte cap counted on what is read.

One `Fetcher` serves every postback thread: a fixed pool of download threads (so the parts of different
postbacks interleave) and keep-alive connections pooled per (scheme, host, checked address, port), TLS
verified against the host name (SNI = the host name) while the socket goes to the checked address.
"""

from __future__ import annotations

import collections
import hashlib
import ipaddress
import logging
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import urllib3
from urllib3.exceptions import HTTPError, ProtocolError

from mospool import retry
from mospool.config import MediaSettings

log = logging.getLogger(__name__)

USER_AGENT = "mo-spool/1"
CHUNK = 64 * 1024
REDIRECTS = {301, 302, 303, 307, 308}
EXTENSIONS = {
    "image/jpeg": "jpg", "image/jpg": "jpg", "image/pjpeg": "jpg", "image/png": "png", "image/gif": "gif",
    "image/bmp": "bmp", "image/webp": "webp", "image/heic": "heic", "video/mp4": "mp4", "video/3gpp": "3gp",
    "video/3gpp2": "3g2", "video/quicktime": "mov", "audio/amr": "amr", "audio/mpeg": "mp3",
    "audio/mp4": "m4a", "audio/aac": "aac", "audio/ogg": "ogg", "audio/wav": "wav", "audio/x-wav": "wav",
    "text/plain": "txt",
    "text/vcard": "vcf", "text/x-vcard": "vcf", "text/calendar": "ics", "application/smil": "smil",
    "application/pdf": "pdf",
}  # fmt: skip
TYPES = {extension: media_type for media_type, extension in reversed(EXTENSIONS.items())}
URL_EXTENSIONS = {**{extension: extension for extension in TYPES}, "jpeg": "jpg", "3gpp": "3gp"}
REQUEST_TARGET_SAFE = "/?&=%:@!$'()*+,;-._~"
UNTYPED = {"", "application/octet-stream", "binary/octet-stream"}


# Connection pools kept (least recently used dropped): a few content hosts, each maybe on a few addresses.
MAX_POOLS = 32
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")

Resolver = Callable[[str, int], Sequence[tuple[Any, ...]]]
Response = urllib3.BaseHTTPResponse
Pool = urllib3.HTTPConnectionPool


class MediaError(Exception):
    """One part could not be fetched: permanent (do not retry) or transient (retry later)."""

    def __init__(self, url: str, message: str, *, permanent: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.permanent = permanent
        self.retry_after = retry_after


@dataclass(frozen=True)
class MediaFile:
    index: int
    url: str
    file: str
    content_type: str | None
    bytes: int
    sha256: str
    text: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "file": self.file,
            "content_type": self.content_type,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class _Target:
    """A URL that passed every check, with the address it resolved to."""

    scheme: str
    host: str
    port: int
    address: str
    path: str

    @property
    def host_header(self) -> str:
        default_port = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        return host if self.port == default_port else f"{host}:{self.port}"


def resolve_tcp(host: str, port: int) -> Sequence[tuple[Any, ...]]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


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
        media_dir = record_dir / "media"
        media_dir.mkdir(mode=0o750, exist_ok=True)
        for leftover in media_dir.glob(".*.part"):  # a download a crash cut short: fetched again below
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
        done = sorted(media_dir.glob(f"{index:02d}-*"))
        if done:
            return _describe(done[0], index, url, TYPES.get(done[0].suffix.lstrip(".")))
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

    def _get(self, url: str, target: _Target, deadline: float) -> Response:
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

    def _pool(self, target: _Target) -> Pool:
        key = (target.scheme, target.host, target.address, target.port)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = self._new_pool(target)
                if len(self._pools) > MAX_POOLS:
                    self._pools.popitem(last=False)[1].close()
            self._pools.move_to_end(key)
            return pool

    def _new_pool(self, target: _Target) -> Pool:
        size = self.settings.parallel_downloads
        if target.scheme == "https":
            return urllib3.HTTPSConnectionPool(
                target.address, target.port, maxsize=size, ssl_context=self._tls, server_hostname=target.host
            )
        return urllib3.HTTPConnectionPool(target.address, target.port, maxsize=size)


# --- the safety checks


def check_url(url: str, settings: MediaSettings, resolve: Resolver = resolve_tcp) -> _Target:
    """Raise a permanent MediaError naming the rule a URL breaks; else resolve it to a checked address."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in settings.allowed_schemes:
        raise _refused(url, f"scheme {scheme or '(none)'!r} is not in allowed_schemes")
    if parts.username is not None or parts.password is not None:
        raise _refused(url, "credentials in the URL are not allowed")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise _refused(url, "no host")
    if settings.allowed_hosts and not _host_allowed(host, settings.allowed_hosts):
        raise _refused(url, f"host {host} is not in allowed_hosts")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise _refused(url, "bad port") from exc
    try:
        infos = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise MediaError(url, f"cannot resolve {host}: {exc}", permanent=False) from exc
    if not infos:
        raise MediaError(url, f"cannot resolve {host}: no address", permanent=False)
    if not settings.allow_private_networks:
        for info in infos:
            _check_public(url, host, str(info[4][0]))
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    path = urllib.parse.quote(path, safe=REQUEST_TARGET_SAFE)  # non-ASCII becomes %XX; escapes stay
    return _Target(scheme, host, port, str(infos[0][4][0]), path)


def _refused(url: str, rule: str) -> MediaError:
    return MediaError(url, f"refused: {rule}", permanent=True)


def _host_allowed(host: str, allowed: Sequence[str]) -> bool:
    host = host.lower()
    return any(
        host.endswith(entry[1:].lower()) if entry.startswith("*.") else host == entry.lower()
        for entry in allowed
    )


def _check_public(url: str, host: str, address: str) -> None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    carried = embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else []
    for ipv4 in carried:
        if not _public(ipv4):
            rule = f"{host} resolves to non-public address {ip}, which carries IPv4 {ipv4}"
            raise _refused(url, f"{rule} (allow_private_networks)")
    # A local-use NAT64 prefix only reaches the operator's own network (IANA: not globally reachable),
    # whatever it carries; this Python's ipaddress predates that registry entry.
    if ip in LOCAL_NAT64 or (not carried and not _public(ip)):
        raise _refused(url, f"{host} resolves to non-public address {ip} (allow_private_networks)")


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not ip.is_multicast and not ip.is_unspecified


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: what a packet to it ends up reaching.

    IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and local-use NAT64
    (64:ff9b:1::/48, with the usual /96 layout: the last 32 bits), 6to4 (2002::/16, bits 16-47) and Teredo
    (2001::/32: the server in bits 32-63, the client in the last 32 bits inverted).
    """
    if ip.ipv4_mapped:
        return [ip.ipv4_mapped]
    if ip in IPV4_COMPATIBLE or ip in NAT64 or ip in LOCAL_NAT64:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour:
        return [ip.sixtofour]
    if ip.teredo:
        return list(ip.teredo)
    return []


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
        final = media_dir / f"{index:02d}-{safe_stem(url)}.{extension_for(content_type, url)}"
        temp = media_dir / f".{index:02d}.part"
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
    return _describe(final, index, url, content_type)


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


def _describe(path: Path, index: int, url: str, content_type: str | None) -> MediaFile:
    data = path.read_bytes()
    return MediaFile(
        index=index,
        url=url,
        file=f"media/{path.name}",
        content_type=content_type,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        text=_text(data, content_type, path.suffix),
    )


def _text(data: bytes, content_type: str | None, suffix: str) -> str | None:
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "text/plain" and not (media_type in UNTYPED and suffix == ".txt"):
        return None
    charset = re.search(r"charset=[\"']?([\w.:-]+)", content_type or "", re.IGNORECASE)
    try:
        return data.decode(charset.group(1) if charset else "utf-8", errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


# --- names


def safe_stem(url: str) -> str:
    """A file-name stem from the URL path's last segment: never a path, never hidden, at most 60 chars."""
    segment = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    stem = segment.rsplit(".", 1)[0] if "." in segment.lstrip(".") else segment
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".")[:60]
    return stem or "part"


def extension_for(content_type: str | None, url: str) -> str:
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type in EXTENSIONS:
        return EXTENSIONS[media_type]
    segment = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    from_url = segment.rsplit(".", 1)[-1].lower() if "." in segment else ""
    return URL_EXTENSIONS.get(from_url, "bin")
