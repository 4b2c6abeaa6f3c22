"""The SSRF guard: whether a media URL may be fetched, and the checked address to connect to.

The URLs come from the internet and are hostile until checked: only allowed schemes and hosts, no
credentials, no URL longer than ``MAX_URL_CHARS``, and every address the host resolves to must be globally
reachable unicast (``mospool.media.addresses``: IANA's special-purpose registries), unless
allow_private_networks. The fetcher connects to the address checked here, so DNS cannot be re-pointed
between the check and the connect.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mospool.config import MediaSettings
from mospool.media.addresses import why_not_global

REQUEST_TARGET_SAFE = "/?&=%:@!$'()*+,;-._~"
MAX_URL_CHARS = 8192  # Sinch's content URLs are a hundred characters; a longer one is not one of them

Resolver = Callable[[str, int], Sequence[tuple[Any, ...]]]


class MediaError(Exception):
    """One part could not be fetched: permanent (do not retry) or transient (retry later)."""

    def __init__(
        self,
        url: str,
        message: str,
        *,
        permanent: bool,
        retry_after: float | None = None,
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.permanent = permanent
        self.retry_after = retry_after
        self.timed_out = timed_out  # it ran into a deadline: the origin is stuck, not merely saying no


@dataclass(frozen=True)
class Target:
    """A URL that passed every check, with the address it resolved to."""

    scheme: str
    host: str
    port: int
    address: str
    path: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        return host if self.port == default_port(self.scheme) else f"{host}:{self.port}"


def default_port(scheme: str) -> int:
    """The port a URL of ``scheme`` (lowercase) means when it names none."""
    return 443 if scheme == "https" else 80


def resolve_tcp(host: str, port: int) -> Sequence[tuple[Any, ...]]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def check_url(url: str, settings: MediaSettings, resolve: Resolver = resolve_tcp) -> Target:
    """Raise a permanent MediaError naming the rule a URL breaks; else resolve it to a checked address."""
    if len(url) > MAX_URL_CHARS:
        raise _refused(url, f"the URL is longer than {MAX_URL_CHARS} characters")
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
        port = parts.port or default_port(scheme)
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
    return Target(scheme, host, port, str(infos[0][4][0]), path)


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
    problem = why_not_global(ip)
    if problem:
        raise _refused(url, f"{host} resolves to non-public address {ip} ({problem}; allow_private_networks)")
