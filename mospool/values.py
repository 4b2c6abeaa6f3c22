"""How config.ini's values are read: each parser takes the raw text of one key and returns the typed value,
or raises ValueError saying what a person should write instead (config names the section and key)."""

from __future__ import annotations

import configparser
import ipaddress
import math
import urllib.parse
import zoneinfo
from collections.abc import Callable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Sane bounds shared by many keys: no setting may ask for an absurd amount of time or space.
DAY = 86_400.0
GIB = 2**30


def non_negative_int(raw: str) -> int:
    digits = raw.replace("_", "")
    if not digits.lstrip("-").isdecimal():
        raise ValueError("must be a whole number such as 1048576, without a unit (no KB, MB, s)")
    value = int(digits)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def positive_int(raw: str) -> int:
    value = non_negative_int(raw)
    if value == 0:
        raise ValueError("must be at least 1")
    return value


def positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number such as 30 or 0.5, without a unit") from None
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


def whole(low: int, high: int) -> Callable[[str], int]:
    """A parser for a count or a size in ``[low, high]``: whole, no unit."""

    def parse(raw: str) -> int:
        value = non_negative_int(raw) if low >= 0 else int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be at least {_shown(low)} and at most {_shown(high)}")
        return value

    return parse


def seconds(low: float, high: float) -> Callable[[str], float]:
    """A parser for a duration in ``[low, high]`` seconds: a finite number, no unit (inf and nan refused)."""

    def parse(raw: str) -> float:
        value = positive_float(raw)
        if not math.isfinite(value) or not low <= value <= high:
            raise ValueError(f"must be at least {_shown(low)} and at most {_shown(high)} seconds")
        return value

    return parse


def _shown(value: float) -> str:
    """86400 or 0.05, as config.ini takes it."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def boolean(raw: str) -> bool:
    states = configparser.ConfigParser.BOOLEAN_STATES
    if raw.lower() not in states:
        raise ValueError("must be yes or no")
    return states[raw.lower()]


def words(raw: str) -> tuple[str, ...]:
    return tuple(word for word in raw.replace(",", " ").split() if word)


def networks(raw: str) -> tuple[Network, ...]:
    return tuple(network(word) for word in words(raw))


def network(word: str) -> Network:
    """A CIDR whose host bits are zero: 203.0.113.5/24 is refused rather than silently widened."""
    try:
        return ipaddress.ip_network(word)
    except ValueError as exc:
        if "host bits set" not in str(exc):
            raise
        meant = ipaddress.ip_network(word, strict=False)
        hint = f"{word} has host bits set: write {meant} for the network, or the bare address"
        raise ValueError(hint) from None


def url_path(raw: str) -> str:
    if not raw.startswith("/") or (raw.endswith("/") and raw != "/"):
        raise ValueError("must start with / and not end with /")
    return raw


def token(raw: str) -> str:
    if raw and not all(c.isalnum() or c in "-_." for c in raw):
        raise ValueError("may hold only letters, digits, '-', '_' and '.'")
    return raw


def log_level(raw: str) -> str:
    if raw.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return raw.upper()


def http_url(raw: str) -> str:
    """Empty, or an http(s) URL with a host."""
    if not raw:
        return raw
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return raw


def time_zone(raw: str) -> str:
    """UTC (also when empty), or an IANA time zone name the system's zoneinfo knows."""
    if raw in ("", "UTC"):
        return "UTC"
    try:
        zoneinfo.ZoneInfo(raw)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            "must be UTC or an IANA time zone name such as Europe/Paris or America/New_York "
            "(from the system's tzdata)"
        ) from None
    return raw


def node_name(raw: str) -> str:
    """A VM's name on the index's rows: empty (the host name), or letters, digits, '-', '_' and '.'."""
    if len(raw) > 63 or not all(c.isalnum() or c in "-_." for c in raw):
        raise ValueError("must be at most 63 letters, digits, '-', '_' or '.' (empty: the host name)")
    return raw


def index_url(raw: str) -> str:
    """Empty (SQLite in the spool), or a postgresql:// URL without a password (that goes in password_file)."""
    if not raw:
        return raw
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("must be empty (SQLite in the spool) or a postgresql:// URL")
    query = urllib.parse.parse_qs(parts.query)
    if parts.password is not None or "password" in query:
        raise ValueError("must not hold a password: put it in [index] password_file (mode 0640)")
    return raw
