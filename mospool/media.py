"""Download the media parts of an MMS MO (the `content[].file` URLs) safely into the record's folder.

The URLs come from the internet and are hostile until checked: only allowed schemes and hosts, every address
the host resolves to must be public (unless allow_private_networks), and we connect to the address we
checked, so DNS cannot be re-pointed between the check and the connect. Redirects are followed by hand and
every hop is checked again. Each download has a total deadline and a byte cap counted on what is read.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import http.client
import ipaddress
import logging
import os
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    address: tuple[Any, ...]
    family: int
    path: str


def fetch_all(urls: Sequence[str], record_dir: Path, settings: MediaSettings) -> list[MediaFile | MediaError]:
    """Every part into record_dir/media/, in parallel; result i is for urls[i]. Complete parts are reused."""
    media_dir = record_dir / "media"
    media_dir.mkdir(mode=0o750, exist_ok=True)
    for leftover in media_dir.glob(".*.part"):  # a download a crash cut short: fetched again below
        leftover.unlink()
    workers = max(1, min(settings.parallel_downloads, len(urls)))
    with ThreadPoolExecutor(workers, thread_name_prefix="media") as pool:
        jobs = [
            pool.submit(_fetch_or_reuse, url, index, media_dir, settings) for index, url in enumerate(urls, 1)
        ]
        return [job.result() for job in jobs]


def _fetch_or_reuse(url: str, index: int, media_dir: Path, settings: MediaSettings) -> MediaFile | MediaError:
    done = sorted(media_dir.glob(f"{index:02d}-*"))
    if done:
        return _describe(done[0], index, url, TYPES.get(done[0].suffix.lstrip(".")))
    try:
        return fetch_one(url, index, media_dir, settings)
    except MediaError as error:
        log.warning("media part %d of %s: %s", index, media_dir.parent.name, error)
        return error


def fetch_one(url: str, index: int, media_dir: Path, settings: MediaSettings) -> MediaFile:
    deadline = time.monotonic() + settings.timeout_seconds
    current = url
    for _ in range(settings.max_redirects + 1):
        target = check_url(current, settings)
        connection, response = _get(current, target, settings, deadline)
        try:
            if response.status not in REDIRECTS:
                return _save(url, index, response, media_dir, settings, deadline)
            location = response.getheader("Location")
        finally:
            connection.close()
        if not location:
            raise MediaError(url, f"HTTP {response.status} redirect without a Location", permanent=True)
        current = urllib.parse.urljoin(current, location)
    raise MediaError(
        url, f"refused: more than max_redirects ({settings.max_redirects}) redirects", permanent=True
    )


# --- the safety checks


def check_url(url: str, settings: MediaSettings) -> _Target:
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
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise MediaError(url, f"cannot resolve {host}: {exc}", permanent=False) from exc
    if not settings.allow_private_networks:
        for info in infos:
            address = str(info[4][0])
            if not _public(address):
                raise _refused(
                    url, f"{host} resolves to non-public address {address} (allow_private_networks)"
                )
    family, _, _, _, sockaddr = infos[0]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    path = urllib.parse.quote(path, safe=REQUEST_TARGET_SAFE)  # non-ASCII becomes %XX; escapes stay
    return _Target(scheme, host, port, tuple(sockaddr), family, path)


def _refused(url: str, rule: str) -> MediaError:
    return MediaError(url, f"refused: {rule}", permanent=True)


def _host_allowed(host: str, allowed: Sequence[str]) -> bool:
    host = host.lower()
    return any(
        host.endswith(entry[1:].lower()) if entry.startswith("*.") else host == entry.lower()
        for entry in allowed
    )


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast and not ip.is_unspecified


# --- the request, to the checked address


def _get(
    url: str, target: _Target, settings: MediaSettings, deadline: float
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    try:
        sock = socket.socket(target.family, socket.SOCK_STREAM)
        sock.settimeout(min(settings.connect_timeout_seconds, _remaining(url, deadline)))
        sock.connect(target.address)
        if target.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=target.host)
        connection = http.client.HTTPConnection(target.host, target.port)
        connection.sock = sock
        default_port = 443 if target.scheme == "https" else 80
        host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
        connection.putrequest("GET", target.path, skip_host=True, skip_accept_encoding=True)
        for name, value in (("Host", host_header), ("User-Agent", USER_AGENT), ("Accept", "*/*")):
            connection.putheader(name, value)
        connection.putheader("Connection", "close")
        connection.endheaders()
        sock.settimeout(_remaining(url, deadline))
        return connection, connection.getresponse()
    except MediaError:
        raise
    except (OSError, http.client.HTTPException) as exc:
        raise MediaError(url, f"connection failed: {exc!r}", permanent=False) from exc


def _remaining(url: str, deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise MediaError(url, "timed out: timeout_seconds deadline passed", permanent=False)
    return left


def _status_error(url: str, response: http.client.HTTPResponse) -> MediaError:
    status = response.status
    transient = status in (408, 429) or status >= 500
    retry_after = _retry_after(response.getheader("Retry-After")) if transient else None
    return MediaError(
        url, f"HTTP {status} {response.reason}", permanent=not transient, retry_after=retry_after
    )


def _retry_after(raw: str | None) -> float | None:
    if not raw:
        return None
    if raw.strip().isdigit():
        return float(raw.strip())
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(raw)
        return max(when.timestamp() - time.time(), 0.0)
    return None


def _save(
    url: str,
    index: int,
    response: http.client.HTTPResponse,
    media_dir: Path,
    settings: MediaSettings,
    deadline: float,
) -> MediaFile:
    if response.status != 200:
        raise _status_error(url, response)
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > settings.max_bytes:
        raise MediaError(
            url, f"Content-Length {declared} exceeds max_bytes ({settings.max_bytes})", permanent=True
        )
    content_type = response.getheader("Content-Type")
    final = media_dir / f"{index:02d}-{safe_stem(url)}.{extension_for(content_type, url)}"
    temp = media_dir / f".{index:02d}.part"
    temp.unlink(missing_ok=True)
    try:
        _stream(url, response, temp, settings.max_bytes, deadline)
        if declared and declared.isdigit() and temp.stat().st_size < int(declared):
            raise MediaError(
                url, f"download interrupted: got {temp.stat().st_size} of {declared} bytes", permanent=False
            )
        os.rename(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return _describe(final, index, url, content_type)


def _stream(url: str, response: http.client.HTTPResponse, temp: Path, limit: int, deadline: float) -> None:
    with temp.open("xb") as out:
        size = 0
        while True:
            _set_timeout(response, _remaining(url, deadline))
            try:
                chunk = response.read1(CHUNK)  # one recv at most, so the deadline is checked between them
            except (OSError, http.client.HTTPException) as exc:
                raise MediaError(url, f"download interrupted: {exc!r}", permanent=False) from exc
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise MediaError(url, f"part exceeds max_bytes ({limit})", permanent=True)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())


def _set_timeout(response: http.client.HTTPResponse, seconds: float) -> None:
    raw = getattr(response.fp, "raw", None)
    sock = getattr(raw, "_sock", None)  # socket.SocketIO keeps its socket here
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
