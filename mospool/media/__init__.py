"""MMS media: the SSRF guard (``guard``, on ``addresses``), file names and types (``files``), the download
lanes (``lanes``) and the shared fetcher."""

from mospool.media.addresses import embedded_ipv4
from mospool.media.fetcher import Fetcher
from mospool.media.files import MediaFile, extension_for, safe_stem
from mospool.media.guard import MediaError, Resolver, check_url

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
