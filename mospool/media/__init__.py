"""MMS media: the SSRF guard (``guard``), file names and types (``files``) and the shared fetcher."""

from mospool.media.fetcher import Fetcher
from mospool.media.files import MediaFile, extension_for, safe_stem
from mospool.media.guard import MediaError, Resolver, check_url, embedded_ipv4

__all__ = [
    "Fetcher",
    "MediaError",
    "MediaFile",
    "Resolver",
    "check_url",
    "embedded_ipv4",
    "extension_for",
    "safe_stem",
]
