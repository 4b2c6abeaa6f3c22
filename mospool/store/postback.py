"""The framing of a spooled file: one line of JSON metadata, then the raw bytes, byte for byte.

A reader sees both or neither, and checks the bytes against the length and SHA-256 the metadata gives. A
postback in ``incoming/`` uses it (the metadata is the request as received), and so does a delivery entry
in ``outbox/`` (its metadata is where the message belongs; its bytes are exactly what is sent).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

HEADER_LIMIT = 64 * 1024


class CorruptPostback(ValueError):
    """A spooled file whose header is unreadable or whose body does not match it."""


@dataclass(frozen=True)
class Postback:
    """A spooled postback as read back: the receiver's metadata and the exact body."""

    id: str
    meta: dict[str, Any]
    body: bytes

    @property
    def received_at(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.meta["received_at"])

    @property
    def content_type(self) -> str:
        return str(self.meta.get("content_type") or "")


def sealed(meta: dict[str, Any], body: bytes) -> dict[str, Any]:
    """``meta`` plus the length and checksum of ``body``, which ``decode`` checks."""
    return {**meta, "body_bytes": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}


def encode(meta: dict[str, Any], body: bytes) -> bytes:
    header = json.dumps(meta, ensure_ascii=True, separators=(",", ":"), sort_keys=True).encode()
    return header + b"\n" + body


def decode_frame(name: str, data: bytes) -> tuple[dict[str, Any], bytes]:
    """(metadata, body) of one framed file; CorruptPostback if it is not whole."""
    newline = data.find(b"\n", 0, HEADER_LIMIT)
    if newline < 0:
        raise CorruptPostback(f"{name}: no metadata line")
    try:
        meta = json.loads(data[:newline])
    except ValueError as exc:
        raise CorruptPostback(f"{name}: metadata is not JSON: {exc}") from exc
    body = data[newline + 1 :]
    if not isinstance(meta, dict) or meta.get("body_bytes") != len(body):
        raise CorruptPostback(f"{name}: body length does not match its metadata")
    if meta.get("body_sha256") != hashlib.sha256(body).hexdigest():
        raise CorruptPostback(f"{name}: body checksum does not match its metadata")
    return meta, body


def decode(postback_id: str, data: bytes) -> Postback:
    meta, body = decode_frame(postback_id, data)
    return Postback(postback_id, meta, body)
