"""The SSRF guard: whether a media URL may be fetched, and the checked address to connect to.

The URLs come from the internet and are hostile until checked: only allowed schemes and hosts, no
credentials, every address the host resolves to must be public (unless allow_private_networks), and IPv6
forms that carry an IPv4 address are judged by that IPv4 too. The fetcher connects to the address checked
here, so DNS cannot be re-pointed between the check and the connect.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mospool.config import MediaSettings

REQUEST_TARGET_SAFE = "/?&=%:@!$'()*+,;-._~"
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")

Resolver = Callable[[str, int], Sequence[tuple[Any, ...]]]


class MediaError(Exception):
    """One part could not be fetched: permanent (do not retry) or transient (retry later)."""

    def __init__(self, url: str, message: str, *, permanent: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.permanent = permanent
        self.retry_after = retry_after


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
        default_port = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal
        return host if self.port == default_port else f"{host}:{self.port}"


def resolve_tcp(host: str, port: int) -> Sequence[tuple[Any, ...]]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def check_url(url: str, settings: MediaSettings, resolve: Resolver = resolve_tcp) -> Target:
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
