"""Media files: their names and types, and what a downloaded part is.

A part is kept as ``media/NN-<name>.<ext>``: ``NN`` keeps the order, ``<name>`` is a safe stem of the URL's
last path segment and ``<ext>`` comes from the Content-Type through an explicit map, else from the URL.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mospool.store.layout import media_entry

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
UNTYPED = {"", "application/octet-stream", "binary/octet-stream"}


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


def describe(path: Path, index: int, url: str, content_type: str | None) -> MediaFile:
    data = path.read_bytes()
    return MediaFile(
        index=index,
        url=url,
        file=media_entry(path.name),
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
