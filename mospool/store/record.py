"""The record folder: what it holds, its message shape, and how it is read back.

Every postback ends as one folder, ``<state>/YYYY-MM-DD/<id>/``. The worker builds a ``Filing`` (everything
the folder will hold but the media, each message built once, with its media), the filer writes it into
``work/<id>/`` and publishes the folder by one rename, and the outputs get the ``Folder`` the filing becomes.
The CLI, the pages and the index read a published folder back with ``read_folder``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from mospool.parse import Parsed, Record, body_extension
from mospool.store.layout import (
    DUPLICATE,
    ERROR,
    MEDIA,
    MESSAGE,
    REQUEST,
    SPOOL_FILE,
    State,
    body_name,
    is_body_file,
    is_message_file,
    message_name,
)

SCHEMA = 1
# Schema 2: like 1, but a long value that is the record's text or subject is not repeated in ``fields``.
SCHEMA_SHORTENED = 2
REPEAT_LIMIT = 1024  # characters: a text or subject longer than this is kept once, in its own key

# What a failed or duplicate folder says about each notice, so it can be found and read without its body.
SUMMARY_KEYS = ("kind", "origin", "code", "from", "to", "tracking_id", "timestamp", "subject", "text")


def dedup_key(record: Record, body_sha256: str, position: int) -> str:
    """(origin, code, tracking-id); without a tracking id, the body itself (and its place in a batch)."""
    if record.tracking_id:
        return f"{record.origin or ''}|{record.code or ''}|{record.tracking_id}"
    return f"sha256:{body_sha256}" + (f"#{position}" if position > 1 else "")


@dataclass(frozen=True)
class Owner:
    """Who holds a dedup key: the postback that is (or will be) its processed record, and its VM."""

    spool_id: str
    node: str


@dataclass(frozen=True)
class Media:
    """The downloaded parts of one notice (as message.json lists them) and the text its text parts hold."""

    parts: list[dict[str, Any]]
    texts: list[str] = field(default_factory=list)
    not_fetched: int = 0  # parts beyond [media] max_parts: named in fields (and the body), not downloaded


def messages(
    spool_id: str,
    received_at: str,
    parsed: Parsed,
    keys: Sequence[str],
    owners: Sequence[Owner],
    media: Sequence[Media | None] = (),
    node: str = "",
) -> list[dict[str, Any]]:
    """The message.json records of one postback, schema 1, one per notice, each with its media; ``node``
    is the VM that received it."""
    batch = len(parsed.records) > 1
    fetched = [*media, *[None] * (len(parsed.records) - len(media))]
    result = []
    for position, (record, key, owner, parts) in enumerate(
        zip(parsed.records, keys, owners, fetched, strict=True), 1
    ):
        earlier = owner.spool_id != spool_id
        message: dict[str, Any] = {
            "schema": SCHEMA,
            "spool_id": spool_id,
            "node": node or None,
            "received_at": received_at,
            "format": parsed.format,
            **record.to_message(),
            "dedup_key": key,
            "duplicate_of": owner.spool_id if earlier else None,
        }
        if earlier:
            message["duplicate_of_node"] = owner.node
        if parts is not None:
            message["media"] = parts.parts
            if parts.texts and not message["text"]:
                message["text"] = "\n".join(parts.texts)
            if parts.not_fetched:
                message["media_not_fetched"] = parts.not_fetched
        if batch:
            message["batch_position"] = position
        result.append(_once(message))
    return result


def _once(message: dict[str, Any]) -> dict[str, Any]:
    """A long text or subject is kept once: where ``fields`` repeats it, ``{"same_as": "text"}`` stands in
    its place, and the record says schema 2 (docs/spool-format.md)."""
    shortened = False
    for key in ("text", "subject"):
        value = message.get(key)
        if isinstance(value, str) and len(value) > REPEAT_LIMIT:
            message["fields"], found = _replaced(message["fields"], value, {"same_as": key})
            shortened = shortened or found
    if shortened:
        message["schema"] = SCHEMA_SHORTENED
    return message


def _replaced(value: Any, repeated: str, marker: dict[str, str]) -> tuple[Any, bool]:
    """``value`` with every string that is ``repeated`` (but for surrounding whitespace, which the normalized
    value drops) replaced by ``marker``, and whether there was one."""
    if isinstance(value, str):
        return (marker, True) if value.strip() == repeated else (value, False)
    if isinstance(value, dict):
        pairs = {key: _replaced(item, repeated, marker) for key, item in value.items()}
        return {key: new for key, (new, _) in pairs.items()}, any(found for _, found in pairs.values())
    if isinstance(value, list):
        items = [_replaced(item, repeated, marker) for item in value]
        return [new for new, _ in items], any(found for _, found in items)
    return value, False


def summaries(parsed: Parsed | None) -> list[dict[str, Any]]:
    """Who sent what, for a failed or duplicate folder's JSON: one entry per notice that parsed."""
    if parsed is None:
        return []
    return [{key: record.to_message()[key] for key in SUMMARY_KEYS} for record in parsed.records]


@dataclass
class Filing:
    """Everything a record folder holds but its media: built by the worker, written by the filer."""

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
        """The folder this filing becomes at ``path``, without reading it back."""
        return Folder(self.state, path, self.spool_id, self.meta, self.messages, self.error, self.duplicate)

    def files(self) -> Iterator[tuple[str, bytes]]:
        """(name, content) of every file of the folder but media/ and the page."""
        if self.spool_file is not None:
            yield SPOOL_FILE, self.spool_file
        if self.body is not None:
            yield body_name(body_extension(self.body, self.content_type)), self.body
        if self.meta is not None:
            yield REQUEST, json_bytes(self.meta)
        for position, message in enumerate(self.messages, 1):
            yield message_name(position, len(self.messages)), json_bytes(message)
        if self.error is not None:
            yield ERROR, json_bytes(self.error)
        if self.duplicate is not None:
            yield DUPLICATE, json_bytes(self.duplicate)


@dataclass(frozen=True)
class Folder:
    """A record folder: published, or about to be (``path`` is then where it will be)."""

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

    @property
    def received_at(self) -> str | None:
        found = (self.request or {}).get("received_at")
        return found or next((n.get("received_at") for n in self.notices if n.get("received_at")), None)

    @property
    def day(self) -> str:
        return self.path.parent.name

    def media_dir(self, located: Path | None = None) -> Path:
        """Its media/ folder; ``located``: where the folder's files are now, if not yet at ``path``."""
        return (located or self.path) / MEDIA

    def media_files(self, located: Path | None = None) -> list[Path]:
        media = self.media_dir(located)
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


@dataclass(frozen=True)
class FileNote:
    """A file of a record folder that a person may want to open, and what it is."""

    name: str
    what: str


FILE_NOTES = {
    REQUEST: "what the receiver recorded (time, client address, headers)",
    ERROR: "why it failed",
    DUPLICATE: "what it duplicates",
    SPOOL_FILE: "the damaged spool file, whole",
}


def described_files(names: Sequence[str]) -> list[FileNote]:
    """The body first, then the messages and the other JSON files, each with what it holds."""
    found = [FileNote(name, "the body exactly as received") for name in names if is_body_file(name)]
    for name in names:
        if is_message_file(name):
            found.append(FileNote(name, "the normalized record"))
        elif name in FILE_NOTES:
            found.append(FileNote(name, FILE_NOTES[name]))
    return found


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def json_bytes(value: Any) -> bytes:
    """Pretty JSON (two-space indent, UTF-8, a final newline), as a person reads it in the record folder.

    orjson writes exactly the bytes of ``json.dumps(value, indent=2, ensure_ascii=False)`` (a test holds
    it to that) about 30 times faster: this is a tenth of a record's CPU otherwise. A value orjson does not
    take (an integer past 64 bits, half a surrogate pair) is written by json; such a half as its JSON escape.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return json.dumps(value, indent=2, ensure_ascii=False).encode("utf-8", "backslashreplace") + b"\n"
