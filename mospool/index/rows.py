"""What a filed record folder becomes in the index, whatever the backend: one row per table, by column name.

- ``records``: one row per notice of a processed record that is not itself a repeat (the dedup key's owner);
- ``duplicates``: one row per duplicates/ folder;
- ``messages``: one row per notice of every filed folder, whatever its state (what find, list and the pages
  read), with the notice itself (``message``: its message.json, or for a failed or duplicate folder what
  error.json or duplicate.json say about it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mospool.store import Folder, State

# Searchable columns, filled from message.json (``sender`` and ``recipient`` are its ``from`` and ``to``).
COLUMNS = (
    "kind", "origin", "code", "sender", "recipient", "keyword", "tracking_id", "operator_id",
    "timestamp", "subject", "text",
)  # fmt: skip
RECORD_COLUMNS = ("key", "spool_id", "node", "state", "received_at", "folder", *COLUMNS)
DUPLICATE_COLUMNS = (
    "spool_id", "key", "node", "duplicate_of", "duplicate_of_node", "received_at", "folder",
)  # fmt: skip
MESSAGE_COLUMNS = (
    "spool_id", "position", "node", "state", "received_at", "folder", *COLUMNS,
    "media_count", "first_image", "reason", "duplicate_of", "duplicate_of_node", "status", "status_details",
)  # fmt: skip

Row = dict[str, Any]


@dataclass
class FolderRows:
    records: list[Row] = field(default_factory=list)
    duplicates: list[Row] = field(default_factory=list)
    messages: list[Row] = field(default_factory=list)  # each with "message": the notice, beside the columns


def folder_rows(record: Folder, folder: str, node: str) -> FolderRows:
    """The rows of one record folder, ``folder`` being its path relative to the spool, filed on ``node``."""
    rows = FolderRows()
    received_at = record.received_at
    if record.state is State.PROCESSED:
        for message in record.messages:
            if message.get("duplicate_of") is None and message.get("dedup_key"):
                rows.records.append(
                    {"key": message["dedup_key"], "spool_id": record.spool_id, "node": node,
                     "state": State.PROCESSED.value, "received_at": received_at, "folder": folder,
                     **searchable(message)}
                )  # fmt: skip
    note = record.duplicate or {}
    if record.state is State.DUPLICATES and note:
        rows.duplicates.append(
            {"spool_id": record.spool_id, "key": note.get("key"), "node": node,
             "duplicate_of": note.get("duplicate_of"), "duplicate_of_node": note.get("duplicate_of_node"),
             "received_at": received_at, "folder": folder}
        )  # fmt: skip
    reason = f"{record.error.get('stage')}: {record.error.get('error')}" if record.error else None
    notices = record.notices or [{}]  # an unreadable postback still gets its row
    for position, notice in enumerate(notices, 1):
        media = notice.get("media") or []
        rows.messages.append(
            {"spool_id": record.spool_id, "position": position, "node": node, "state": record.state.value,
             "received_at": received_at, "folder": folder, **searchable(notice),
             "media_count": len(media), "first_image": first_image(media), "reason": reason,
             "duplicate_of": notice.get("duplicate_of") or note.get("duplicate_of"),
             "duplicate_of_node": notice.get("duplicate_of_node") or note.get("duplicate_of_node"),
             "status": _text(notice.get("status")), "status_details": _text(notice.get("status_details")),
             "message": dict(notice)}
        )  # fmt: skip
    return rows


def first_image(media: list[dict[str, Any]]) -> str | None:
    """A notice's first picture, relative to its record folder (the day page's preview)."""
    for part in media:
        if str(part.get("content_type") or "").startswith("image/") and part.get("file"):
            return str(part["file"])
    return None


def searchable(message: Mapping[str, Any]) -> Row:
    aliases = {"sender": "from", "recipient": "to"}
    return {column: _text(message.get(aliases.get(column, column))) for column in COLUMNS}


def _text(value: Any) -> str | None:
    """A column holds text (or nothing): a hostile postback may send a number or a list where text goes."""
    if value is None or isinstance(value, str):
        return value
    return str(value)


def like_prefix(prefix: str) -> str:
    """A LIKE pattern (escape character backslash) for every folder under ``prefix``, taken literally."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
