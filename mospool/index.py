"""The record index: an SQLite file inside the spool (WAL, fsync on commit).

It answers two questions in O(1)/O(log n) however large the spool grows: "was this notification seen
before?" (dedup, keyed by (origin, code, tracking-id) or the body's SHA-256) and "which records match?"
(the CLI's `find`, and its `--text`: an FTS5 table over each notice's subject and text, ranked by bm25).
It is derived data: `rebuild()` recreates it from the record folders.

One concept, a little over 300 lines: the index's tables and every statement that keeps them in step with
the folders; the search table's statements sit beside the ones they follow, so that none is forgotten.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mospool.durable import create_private
from mospool.store import FILED_STATES, Folder, Records, State
from mospool.store.layout import INDEX_FILE

# Failures of our own storage (the spool's disk, the index): a postback is tried again later, never failed.
STORAGE_ERRORS = (OSError, sqlite3.Error)

# Searchable columns, filled from message.json.
COLUMNS = (
    "kind", "origin", "code", "sender", "recipient", "keyword", "tracking_id", "operator_id",
    "timestamp", "subject", "text",
)  # fmt: skip

SCHEMA_VERSION = 3  # 3: messages.status, status_details and the messages_text search table
# Tables made anew (and refilled by rebuild) when an index from an older release is opened: derived data
# only, never the records table, whose rows of deferred postbacks hold their dedup keys across a restart.
DERIVED_TABLES = ("messages_text", "messages")
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
-- One row per notice of every filed folder, whatever its state: what find, list and the pages show.
CREATE TABLE IF NOT EXISTS messages (
    spool_id TEXT NOT NULL,
    position INTEGER NOT NULL,   -- 1, or its place in a batch
    state TEXT NOT NULL,         -- processed | failed | duplicates | dismissed
    received_at TEXT,
    folder TEXT NOT NULL,
    {", ".join(f"{column} TEXT" for column in COLUMNS)},
    media_count INTEGER NOT NULL DEFAULT 0,
    first_image TEXT,            -- its first picture, relative to the record folder
    reason TEXT,                 -- failed: "stage: error"
    duplicate_of TEXT,
    status TEXT,                 -- a delivery-status notice: its status, and the details Sinch gave
    status_details TEXT,
    PRIMARY KEY (spool_id, position)
);
CREATE INDEX IF NOT EXISTS messages_received ON messages (received_at);
CREATE INDEX IF NOT EXISTS messages_folder ON messages (folder);
CREATE INDEX IF NOT EXISTS messages_sender ON messages (sender);
CREATE INDEX IF NOT EXISTS messages_recipient ON messages (recipient);
CREATE INDEX IF NOT EXISTS messages_tracking ON messages (tracking_id);
-- find --text: the words of each notice's subject and text, kept in step with messages by the statements
-- that change it (an external-content table: the text itself stays in messages, by rowid).
CREATE VIRTUAL TABLE IF NOT EXISTS messages_text USING fts5(
    subject, text, content='messages', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2'
);
"""

# Built from the constant COLUMNS only: no outside text reaches the SQL.
RECORD_UPSERT = (
    "INSERT OR REPLACE INTO records (key, spool_id, state, received_at, folder, "  # noqa: S608
    f"{', '.join(COLUMNS)}) VALUES (?, ?, 'processed', ?, ?, {', '.join('?' * len(COLUMNS))})"
)
MESSAGE_COLUMNS = (
    "spool_id", "position", "state", "received_at", "folder", *COLUMNS,
    "media_count", "first_image", "reason", "duplicate_of", "status", "status_details",
)  # fmt: skip
MESSAGE_UPSERT = (
    f"INSERT OR REPLACE INTO messages ({', '.join(MESSAGE_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(MESSAGE_COLUMNS))})"
)
# The search table's side of a change to messages: its words out before a row goes, in once it is written.
TEXT_OUT = (
    "INSERT INTO messages_text (messages_text, rowid, subject, text) "
    "SELECT 'delete', rowid, subject, text FROM messages WHERE "
)
TEXT_IN = "INSERT INTO messages_text (rowid, subject, text) VALUES (?, ?, ?)"
# find --text: the notices whose subject or text hold every word, best first, with the words in context.
TEXT_SEARCH = (
    "SELECT {columns}, snippet(messages_text, -1, '[', ']', '…', 12) AS matched "
    "FROM messages_text JOIN messages ON messages.rowid = messages_text.rowid "
    "WHERE messages_text MATCH ?{where} ORDER BY bm25(messages_text) LIMIT ?"
)


class Index:
    """One connection shared by the worker's threads, serialized by a lock (SQLite has one writer anyway)."""

    def __init__(self, spool_root: Path) -> None:
        self.root = Path(spool_root)
        self.records = Records(self.root)
        self.path = self.root / INDEX_FILE
        self._lock = threading.Lock()  # the writer connection
        self._claims_lock = threading.Lock()  # the claims in memory and the reader connection
        self._claims: dict[str, str] = {}  # dedup key -> the postback processing it now
        create_private(self.path)  # 0640 whatever the umask; SQLite gives its -wal and -shm the same mode
        self._db = _connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a lost commit would let a Sinch retry through
        self._db.execute("PRAGMA busy_timeout=10000")
        outdated = self._db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION
        if outdated:  # derived data: an index from an older release is made anew from the folders
            self._db.executescript("".join(f"DROP TABLE IF EXISTS {table};" for table in DERIVED_TABLES))
        self._db.executescript(SCHEMA)
        if outdated:
            self.rebuild()
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        # Claims read through a connection of their own: in WAL mode a reader never waits for the writer's
        # commit (its fsync), so a postback's claim does not wait for the group commit of others.
        self._reader = _connect(self.path)
        self._query_lock = threading.Lock()  # the connection the pages and the CLI read through
        self._queries = _connect(self.path)

    def close(self) -> None:
        with self._query_lock:
            self._queries.close()
        with self._claims_lock:
            self._reader.close()
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # a failed COMMIT (disk full) leaves it open
                    self._db.execute("ROLLBACK")
                raise

    def claim(self, key: str, spool_id: str) -> str:
        """Reserve ``key`` for ``spool_id`` and return its owner: spool_id itself, or the earlier postback.

        A claim lives in memory until its record is filed (or deferred): it only has to hold against this
        worker's other threads, and after a crash the postback is processed again and claims again.
        """
        with self._claims_lock:
            # Memory first: a claim is forgotten only after its row is committed, so a key missing from
            # memory is either new or already in the table, where the read below finds it.
            owner = self._claims.get(key)
            if owner is not None:
                return owner
            row = self._reader.execute("SELECT spool_id FROM records WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return str(row["spool_id"])
            self._claims[key] = spool_id
            return spool_id

    def release(self, keys: list[str], spool_id: str) -> None:
        """Give up keys that a failed postback held, so a later retry of it is not called a duplicate."""
        with self._transaction() as db:
            db.executemany(
                "DELETE FROM records WHERE key = ? AND spool_id = ?", [(key, spool_id) for key in keys]
            )
        self._forget_claims(keys, spool_id)

    def defer(self, keys: list[str], spool_id: str, received_at: str) -> None:
        """Keep the keys of a postback that waits in deferred/, across restarts."""
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO records (key, spool_id, state, received_at) VALUES (?, ?, ?, ?)",
                [(key, spool_id, State.DEFERRED.value, received_at) for key in keys],
            )
        self._forget_claims(keys, spool_id)

    def _forget_claims(self, keys: Iterable[str], spool_id: str) -> None:
        """Once the keys' rows are committed (or gone), the claims in memory are not needed."""
        with self._claims_lock:
            for key in keys:
                if self._claims.get(key) == spool_id:
                    del self._claims[key]

    def filed(self, folders: Sequence[Folder]) -> None:
        """Index published record folders, in one transaction."""
        with self._transaction() as db:
            for record in folders:
                _index_folder(db, self.records.relative(record.path), record)
        for record in folders:
            keys = [message.get("dedup_key") for message in record.messages]
            self._forget_claims([key for key in keys if key], record.spool_id)

    def moved(self, spool_id: str, state: str, folder: str) -> None:
        """A filed folder an operator moved whole (dismiss): its notices follow it."""
        with self._transaction() as db:
            db.execute(
                "UPDATE messages SET state = ?, folder = ? WHERE spool_id = ?", (state, folder, spool_id)
            )

    def unfiled(self, spool_id: str) -> None:
        """A failed folder put back through the worker (retry): it is not filed until the worker says so."""
        with self._transaction() as db:
            db.execute(TEXT_OUT + "spool_id = ?", (spool_id,))
            db.execute("DELETE FROM messages WHERE spool_id = ?", (spool_id,))

    def forget_folders(self, prefix: str) -> int:
        """Drop the rows of every record filed under ``prefix`` (a purge); returns how many."""
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        gone = 0
        with self._transaction() as db:
            db.execute(TEXT_OUT + "folder LIKE ? ESCAPE '\\'", (pattern,))
            for table in ("records", "duplicates", "messages"):
                gone += db.execute(
                    f"DELETE FROM {table} WHERE folder LIKE ? ESCAPE '\\'",  # noqa: S608 (constant names)
                    (pattern,),
                ).rowcount
        return gone

    def rebuild(self) -> int:
        """Recreate every row from the record folders; returns the number of processed records indexed."""
        with self._transaction() as db:
            db.execute("DELETE FROM records WHERE state = 'processed'")  # claims of work/deferred stay
            db.execute("DELETE FROM duplicates")
            db.execute("DELETE FROM messages")
            db.execute("INSERT INTO messages_text (messages_text) VALUES ('delete-all')")
            for state in FILED_STATES:
                for path in self.records.folders(state):
                    _index_folder(db, self.records.relative(path), self.records.read(path))
            count = db.execute("SELECT count(*) FROM records WHERE state = 'processed'").fetchone()[0]
        return int(count)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """A read, through a connection of its own: it neither waits for nor holds up the writer."""
        with self._query_lock:
            return self._queries.execute(sql, params).fetchall()

    def search_text(
        self, words: str, columns: str, where: Sequence[str], params: Sequence[Any], limit: int
    ) -> list[sqlite3.Row]:
        """The notices whose subject or text hold every one of ``words`` (a word ending in * is a prefix),
        best match first (bm25), each with ``matched``: the words in their context, marked [so].

        ``columns`` and ``where`` are SQL over the messages table (the constants of the caller, never outside
        text), ``params`` the values of ``where``.
        """
        clauses = "".join(f" AND {clause}" for clause in where)
        sql = TEXT_SEARCH.format(columns=columns, where=clauses)
        return self.query(sql, (text_query(words), *params, limit))


class IndexStage:
    """The index as the filer's commit stage: published folders are indexed in the commit's transaction."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def prepare(self, folder: Folder, batch: object) -> None:
        pass

    def commit(self, folders: Sequence[Folder]) -> None:
        self.index.filed(folders)

    def published(self, folders: Sequence[Folder]) -> None:
        pass

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass  # the worker owns the index's connection, and outputs closed after this one still read it


def _index_folder(db: sqlite3.Connection, folder: str, record: Folder) -> None:
    received_at = record.received_at
    if record.state is State.PROCESSED:
        for message in record.messages:
            if message.get("duplicate_of") is None:
                db.execute(RECORD_UPSERT, (message["dedup_key"], record.spool_id, received_at, folder,
                                           *_searchable(message)))  # fmt: skip
    if record.state is State.DUPLICATES and record.duplicate:
        note = record.duplicate
        db.execute(
            "INSERT OR REPLACE INTO duplicates VALUES (?, ?, ?, ?, ?)",
            (record.spool_id, note["key"], note["duplicate_of"], received_at, folder),
        )
    reason = f"{record.error.get('stage')}: {record.error.get('error')}" if record.error else None
    duplicate_of = record.duplicate.get("duplicate_of") if record.duplicate else None
    notices = record.notices or [{}]  # an unreadable postback still gets its row
    for position, notice in enumerate(notices, 1):
        media = notice.get("media") or []
        db.execute(TEXT_OUT + "spool_id = ? AND position = ?", (record.spool_id, position))
        row = db.execute(
            MESSAGE_UPSERT,
            (
                record.spool_id, position, record.state.value, received_at, folder, *_searchable(notice),
                len(media), _first_image(media), reason, notice.get("duplicate_of") or duplicate_of,
                notice.get("status"), notice.get("status_details"),
            ),
        )  # fmt: skip
        db.execute(TEXT_IN, (row.lastrowid, notice.get("subject"), notice.get("text")))


def text_query(words: str) -> str:
    """FTS5 query syntax from what a person typed: each word a quoted string (so AND, NEAR, quotes and
    colons are plain words), all of them required; a trailing * keeps its meaning, a prefix search."""
    terms = []
    for word in words.split():
        stem, star = (word[:-1], "*") if word.endswith("*") and len(word) > 1 else (word, "")
        terms.append('"' + stem.replace('"', '""') + '"' + star)
    return " ".join(terms) or '""'


def _first_image(media: list[dict[str, Any]]) -> str | None:
    for part in media:
        if str(part.get("content_type") or "").startswith("image/") and part.get("file"):
            return str(part["file"])
    return None


def _searchable(message: Mapping[str, Any]) -> list[Any]:
    aliases = {"sender": "from", "recipient": "to"}
    return [message.get(aliases.get(column, column)) for column in COLUMNS]


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA busy_timeout=10000")
    return db
