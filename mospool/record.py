"""The record folder: the one owner of its file names, its message shape and what it holds.

Every postback ends as one folder, ``<state>/YYYY-MM-DD/<id>/``. The worker builds a ``Filing``
(everything the folder will hold but the media), writes it into ``work/<id>/`` and publishes the folder by
one rename. The CLI, the pages and the forwarder read a published folder back with ``read_folder``; nothing
else in the project spells a file name of the record folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mospool.parse import Parsed, Record, body_extension
from mospool.spool import State

SCHEMA = 1
REQUEST = "request.json"
MESSAGE = "message.json"
ERROR = "error.json"
DUPLICATE = "duplicate.json"
RETRY = "retry.json"
SPOOL_FILE = "spool-file.postback"
MEDIA = "media"
PAGE = "index.html"
BODY_STEM = "body"

# What a failed or duplicate folder says about each notice, so it can be found and read without its body.
SUMMARY_KEYS = ("kind", "origin", "code", "from", "to", "tracking_id", "timestamp", "subject", "text")


# States whose postbacks are finished record folders under <state>/YYYY-MM-DD/<id>/.
FILED_STATES = (State.PROCESSED, State.FAILED, State.DUPLICATES, State.DISMISSED)


def is_message_file(name: str) -> bool:
    """message.json, or one of a batch's message-NNN.json."""
    return name == MESSAGE or (name.startswith("message-") and name.endswith(".json"))


def message_name(position: int, count: int) -> str:
    """message.json for a single notice; message-001.json, message-002.json, … for a batch."""
    return MESSAGE if count == 1 else f"message-{position:03d}.json"


def dedup_key(record: Record, body_sha256: str, position: int) -> str:
    """(origin, code, tracking-id); without a tracking id, the body itself (and its place in a batch)."""
    if record.tracking_id:
        return f"{record.origin or ''}|{record.code or ''}|{record.tracking_id}"
    return f"sha256:{body_sha256}" + (f"#{position}" if position > 1 else "")


def messages(
    spool_id: str, received_at: str, parsed: Parsed, keys: Sequence[str], owners: Sequence[str]
) -> list[dict[str, Any]]:
    """The message.json records of one postback, schema 1, one per notice."""
    batch = len(parsed.records) > 1
    result = []
    for position, (record, key, owner) in enumerate(zip(parsed.records, keys, owners, strict=True), 1):
        message: dict[str, Any] = {
            "schema": SCHEMA,
            "spool_id": spool_id,
            "received_at": received_at,
            "format": parsed.format,
            **record.to_message(),
            "dedup_key": key,
            "duplicate_of": owner if owner != spool_id else None,
        }
        if batch:
            message["batch_position"] = position
        result.append(message)
    return result


def summaries(parsed: Parsed | None) -> list[dict[str, Any]]:
    """Who sent what, for a failed or duplicate folder's JSON: one entry per notice that parsed."""
    if parsed is None:
        return []
    return [{key: record.to_message()[key] for key in SUMMARY_KEYS} for record in parsed.records]


@dataclass
class Filing:
    """Everything a record folder holds but its media: built by the worker, written by ``write``."""

    state: State
    spool_id: str
    meta: dict[str, Any] | None  # the receiver's metadata (request.json); None when the spool file is damaged
    body: bytes | None
    content_type: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)  # processed: the message.json records
    error: dict[str, Any] | None = None  # failed: error.json
    duplicate: dict[str, Any] | None = None  # duplicates: duplicate.json
    spool_file: bytes | None = None  # failed at stage read: the damaged spool file, kept whole

    @property
    def received_at(self) -> str | None:
        return (self.meta or {}).get("received_at")

    def as_folder(self, path: Path) -> Folder:
        """The folder this filing becomes, without reading it back."""
        return Folder(self.state, path, self.spool_id, self.meta, self.messages, self.error, self.duplicate)

    def files(self) -> Iterator[tuple[str, bytes]]:
        """(name, content) of every file of the folder but media/ and the page."""
        if self.spool_file is not None:
            yield SPOOL_FILE, self.spool_file
        if self.body is not None:
            yield f"{BODY_STEM}.{body_extension(self.body, self.content_type)}", self.body
        if self.meta is not None:
            yield REQUEST, _json_bytes(self.meta)
        for position, message in enumerate(self.messages, 1):
            yield message_name(position, len(self.messages)), _json_bytes(message)
        if self.error is not None:
            yield ERROR, _json_bytes(self.error)
        if self.duplicate is not None:
            yield DUPLICATE, _json_bytes(self.duplicate)


@dataclass(frozen=True)
class Folder:
    """A published record folder, read back."""

    state: State
    path: Path
    spool_id: str
    request: dict[str, Any] | None
    messages: list[dict[str, Any]]
    error: dict[str, Any] | None
    duplicate: dict[str, Any] | None

    @property
    def notices(self) -> list[dict[str, Any]]:
        """Each notice's summary, whatever the state: the messages, or what error/duplicate.json say."""
        if self.messages:
            return self.messages
        note = self.error or self.duplicate or {}
        found = note.get("notices")
        return found if isinstance(found, list) else []

    def message_files(self) -> list[Path]:
        return sorted(self.path.glob("message-*.json")) or [p for p in [self.path / MESSAGE] if p.is_file()]

    def body_file(self) -> Path | None:
        return next(iter(sorted(self.path.glob(f"{BODY_STEM}.*"))), None)

    def media_files(self) -> list[Path]:
        media = self.path / MEDIA
        return sorted(p for p in media.iterdir() if p.is_file()) if media.is_dir() else []


def read_folder(path: Path, state: State) -> Folder:
    """A published (or build) record folder; unreadable JSON files read as absent."""
    batch = sorted(path.glob("message-*.json"))
    found = [read_json(p) for p in batch] if batch else [read_json(path / MESSAGE)]
    return Folder(
        state=state,
        path=path,
        spool_id=path.name,
        request=read_json(path / REQUEST),
        messages=[message for message in found if message is not None],
        error=read_json(path / ERROR),
        duplicate=read_json(path / DUPLICATE),
    )


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2, ensure_ascii=False).encode() + b"\n"
