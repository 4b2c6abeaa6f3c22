"""The record index: an SQLite file inside the spool (WAL, fsync on commit).

It answers two questions in O(1)/O(log n) however large the spool grows: "was this notification seen
before?" (dedup, keyed by (origin, code, tracking-id) or the body's SHA-256) and "which records match?"
(the CLI's `find`). It is derived data: `rebuild()` recreates it from the record folders.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

FILE_NAME = "index.sqlite3"

# Searchable columns, filled from message.json.
COLUMNS = (
    "kind", "origin", "code", "sender", "recipient", "keyword", "tracking_id", "operator_id",
    "timestamp", "subject", "text",
)  # fmt: skip

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY,        -- dedup key of one notification
    spool_id TEXT NOT NULL,      -- the postback that owns it
    state TEXT NOT NULL,         -- work | deferred | processed
    received_at TEXT,
    folder TEXT,                 -- record folder relative to the spool, once filed
    {", ".join(f"{column} TEXT" for column in COLUMNS)}
);
CREATE INDEX IF NOT EXISTS records_spool_id ON records (spool_id);
CREATE INDEX IF NOT EXISTS records_received ON records (received_at);
CREATE INDEX IF NOT EXISTS records_sender ON records (sender);
CREATE INDEX IF NOT EXISTS records_recipient ON records (recipient);
CREATE INDEX IF NOT EXISTS records_tracking ON records (tracking_id);
CREATE TABLE IF NOT EXISTS duplicates (
    spool_id TEXT NOT NULL,
    key TEXT NOT NULL,
    duplicate_of TEXT NOT NULL,
    received_at TEXT,
    folder TEXT,
    PRIMARY KEY (spool_id, key)
);
"""

# Built from the constant COLUMNS only: no outside text reaches the SQL.
RECORD_UPSERT = (
    "INSERT OR REPLACE INTO records (key, spool_id, state, received_at, folder, "  # noqa: S608
    f"{', '.join(COLUMNS)}) VALUES (?, ?, 'processed', ?, ?, {', '.join('?' * len(COLUMNS))})"
)


class Index:
    """One connection shared by the worker's threads, serialized by a lock (SQLite has one writer anyway)."""

    def __init__(self, spool_root: Path) -> None:
        self.path = Path(spool_root) / FILE_NAME
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a lost commit would let a Sinch retry through
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def claim(self, key: str, spool_id: str, received_at: str) -> str:
        """Reserve ``key`` for ``spool_id`` and return its owner: spool_id itself, or the earlier postback."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO records (key, spool_id, state, received_at) VALUES (?, ?, 'work', ?)",
                (key, spool_id, received_at),
            )
            row = self._db.execute("SELECT spool_id FROM records WHERE key = ?", (key,)).fetchone()
        return str(row["spool_id"])

    def release(self, keys: list[str], spool_id: str) -> None:
        """Give up keys that a failed postback held, so a later retry of it is not called a duplicate."""
        with self._lock:
            self._db.executemany(
                "DELETE FROM records WHERE key = ? AND spool_id = ?", [(key, spool_id) for key in keys]
            )

    def set_state(self, keys: list[str], spool_id: str, state: str) -> None:
        with self._lock:
            self._db.executemany(
                "UPDATE records SET state = ? WHERE key = ? AND spool_id = ?",
                [(state, key, spool_id) for key in keys],
            )

    def record(self, key: str, spool_id: str, folder: str, message: Mapping[str, Any]) -> None:
        """Mark ``key`` processed, with the searchable fields of its message."""
        values = _searchable(message)
        with self._lock:
            self._db.execute(RECORD_UPSERT, (key, spool_id, message.get("received_at"), folder, *values))

    def duplicate(self, spool_id: str, key: str, duplicate_of: str, received_at: str, folder: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO duplicates VALUES (?, ?, ?, ?, ?)",
                (spool_id, key, duplicate_of, received_at, folder),
            )

    def forget_folders(self, prefix: str) -> int:
        """Drop the rows of every record filed under ``prefix`` (a purge); returns how many."""
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._lock:
            gone = self._db.execute(
                "DELETE FROM records WHERE folder LIKE ? ESCAPE '\\'", (pattern,)
            ).rowcount
            gone += self._db.execute(
                "DELETE FROM duplicates WHERE folder LIKE ? ESCAPE '\\'", (pattern,)
            ).rowcount
        return int(gone)

    def rebuild(self, spool_root: Path) -> int:
        """Recreate every row from processed/ and duplicates/; returns the number of records indexed."""
        count = 0
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM records")
            self._db.execute("DELETE FROM duplicates")
        for folder, message in _filed_messages(Path(spool_root) / "processed"):
            if message.get("duplicate_of") is None:
                self.record(message["dedup_key"], message["spool_id"], folder, message)
                count += 1
        for folder, note in _filed_notes(Path(spool_root) / "duplicates"):
            self.duplicate(note["spool_id"], note["key"], note["duplicate_of"], note["received_at"], folder)
        with self._lock:
            self._db.execute("COMMIT")
        return count

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()


def _searchable(message: Mapping[str, Any]) -> list[Any]:
    aliases = {"sender": "from", "recipient": "to"}
    return [message.get(aliases.get(column, column)) for column in COLUMNS]


def _filed_messages(root: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(root.glob("*/*/message*.json")):
        yield str(path.parent.relative_to(root.parent)), json.loads(path.read_bytes())


def _filed_notes(root: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(root.glob("*/*/duplicate.json")):
        yield str(path.parent.relative_to(root.parent)), json.loads(path.read_bytes())
