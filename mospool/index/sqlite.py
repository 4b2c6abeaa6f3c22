"""The index as an SQLite file inside the spool (WAL, fsync on commit): the default, for one VM.

Claims live in memory until their record is filed (or deferred): they only have to hold against this worker's
other threads, and after a crash the postback is processed again and claims again. Everything in the file is
this spool's, so the reads are not narrowed to a node (a row keeps the node that filed it). `find --text`
reads an FTS5 table of each notice's subject and text, kept in step by the statements that change messages.

Three connections: the writer; the claims' reader and the pages' and CLI's reader, each with a lock of its
own. In WAL mode a reader never waits for the writer's commit (its fsync), so neither a claim nor a page
waits for a group commit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mospool.durable import create_private
from mospool.index.reads import Reads, Row, TextMatch
from mospool.index.rows import (
    COLUMNS,
    DUPLICATE_COLUMNS,
    MESSAGE_COLUMNS,
    RECORD_COLUMNS,
    folder_rows,
    like_prefix,
)
from mospool.store import FILED_STATES, Folder, Owner, Records, State
from mospool.store.layout import INDEX_FILE

SCHEMA_VERSION = 4  # 3: every row names its node; the nodes table. 4: status columns, the search table
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY,        -- dedup key of one notification
    spool_id TEXT NOT NULL,      -- the postback that owns it
    state TEXT NOT NULL,         -- deferred | processed
    received_at TEXT,
    folder TEXT,                 -- record folder relative to the spool, once filed
    {", ".join(f"{column} TEXT" for column in COLUMNS)},
    node TEXT
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
    node TEXT,
    duplicate_of_node TEXT,
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
    node TEXT,
    duplicate_of_node TEXT,
    status TEXT,                 -- a delivery-status notice: its status, and the details Sinch gave
    status_details TEXT,
    PRIMARY KEY (spool_id, position)
);
CREATE INDEX IF NOT EXISTS messages_received ON messages (received_at);
CREATE INDEX IF NOT EXISTS messages_folder ON messages (folder);
CREATE INDEX IF NOT EXISTS messages_sender ON messages (sender);
CREATE INDEX IF NOT EXISTS messages_recipient ON messages (recipient);
CREATE INDEX IF NOT EXISTS messages_tracking ON messages (tracking_id);
CREATE TABLE IF NOT EXISTS nodes (node TEXT PRIMARY KEY, spool TEXT, first_seen TEXT, last_seen TEXT);
-- find --text: the words of each notice's subject and text, kept in step with messages by the statements
-- that change it (an external-content table: the text itself stays in messages, by rowid).
CREATE VIRTUAL TABLE IF NOT EXISTS messages_text USING fts5(
    subject, text, content='messages', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2'
);
"""
ADDED_COLUMNS = {  # columns a table of an older release lacks, added before it is rebuilt: the records
    "records": ("node",),  # table is kept (its rows of deferred postbacks hold their dedup keys)
    "duplicates": ("node", "duplicate_of_node"),
}
# Made anew (and refilled by rebuild) when an index from an older release is opened: derived data only.
DERIVED_TABLES = ("messages_text", "messages")
# The search table's side of a change to messages: its words out before a row goes, in once it is written.
TEXT_OUT = (
    "INSERT INTO messages_text (messages_text, rowid, subject, text) "
    "SELECT 'delete', rowid, subject, text FROM messages WHERE "
)
TEXT_IN = "INSERT INTO messages_text (rowid, subject, text) VALUES (?, ?, ?)"


def _insert(table: str, columns: Sequence[str]) -> str:
    """Built from the constant column lists only: no outside text reaches the SQL."""
    names = ", ".join(columns)
    values = ", ".join(f":{column}" for column in columns)
    return f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({values})"  # noqa: S608


RECORD_UPSERT = _insert("records", RECORD_COLUMNS)
DUPLICATE_UPSERT = _insert("duplicates", DUPLICATE_COLUMNS)
MESSAGE_UPSERT = _insert("messages", MESSAGE_COLUMNS)


class SqliteIndex(Reads):
    """One connection shared by the worker's threads, serialized by a lock (SQLite has one writer anyway)."""

    scoped = False

    def __init__(self, spool_root: Path, node: str) -> None:
        self.root = Path(spool_root)
        self.node = node
        self.records = Records(self.root)
        self.path = self.root / INDEX_FILE
        self._lock = threading.Lock()  # the writer connection
        self._claims_lock = threading.Lock()  # the claims in memory and their reader connection
        self._claims: dict[str, str] = {}  # dedup key -> the postback processing it now
        create_private(self.path)  # 0640 whatever the umask; SQLite gives its -wal and -shm the same mode
        self._db = _connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a lost commit would let a Sinch retry through
        outdated = self._db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION
        if outdated:  # derived data: an index from an older release is made anew from the folders
            self._db.executescript("".join(f"DROP TABLE IF EXISTS {table};" for table in DERIVED_TABLES))
        self._db.executescript(SCHEMA)
        if outdated:
            self._add_columns()
            self.rebuild()
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._reader = _connect(self.path)
        self._query_lock = threading.Lock()  # the connection the pages and the CLI read through
        self._queries = _connect(self.path)

    def _add_columns(self) -> None:
        for table, columns in ADDED_COLUMNS.items():
            present = {row["name"] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for column in columns:
                if column not in present:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")

    def close(self) -> None:
        with self._query_lock:
            self._queries.close()
        with self._claims_lock:
            self._reader.close()
        with self._lock:
            self._db.close()

    def ping(self) -> None:
        pass  # a file in the spool: its failures are the spool's, met where they happen

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

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """A read, through a connection of its own: it neither waits for nor holds up the writer."""
        with self._query_lock:
            return [dict(row) for row in self._queries.execute(sql, tuple(params))]

    def _text_match(self, words: str) -> TextMatch:
        return TextMatch(
            prefix="",
            source="messages_text JOIN messages ON messages.rowid = messages_text.rowid",
            matched="snippet(messages_text, -1, '[', ']', '…', 12)",
            where="messages_text MATCH ?",
            order="bm25(messages_text)",
            params=(text_query(words),),
        )

    # --- dedup

    def claim(self, key: str, spool_id: str) -> Owner:
        with self._claims_lock:
            # Memory first: a claim is forgotten only after its row is committed, so a key missing from
            # memory is either new or already in the table, where the read below finds it.
            owner = self._claims.get(key)
            if owner is not None:
                return Owner(owner, self.node)
            row = self._reader.execute("SELECT spool_id, node FROM records WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return Owner(str(row["spool_id"]), str(row["node"] or self.node))
            self._claims[key] = spool_id
            return Owner(spool_id, self.node)

    def release(self, keys: Sequence[str], spool_id: str) -> None:
        with self._transaction() as db:
            db.executemany(
                "DELETE FROM records WHERE key = ? AND spool_id = ?", [(key, spool_id) for key in keys]
            )
        self._forget_claims(keys, spool_id)

    def defer(self, keys: Sequence[str], spool_id: str, received_at: str) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO records (key, spool_id, node, state, received_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(key, spool_id, self.node, State.DEFERRED.value, received_at) for key in keys],
            )
        self._forget_claims(keys, spool_id)

    def _forget_claims(self, keys: Sequence[str], spool_id: str) -> None:
        """Once the keys' rows are committed (or gone), the claims in memory are not needed."""
        with self._claims_lock:
            for key in keys:
                if self._claims.get(key) == spool_id:
                    del self._claims[key]

    # --- filing

    def filed(self, folders: Sequence[Folder]) -> None:
        with self._transaction() as db:
            for record in folders:
                self._index_folder(db, record)
        for record in folders:
            keys = [message.get("dedup_key") for message in record.messages]
            self._forget_claims([key for key in keys if key], record.spool_id)

    def _index_folder(self, db: sqlite3.Connection, record: Folder) -> None:
        rows = folder_rows(record, self.records.relative(record.path), self.node)
        db.executemany(RECORD_UPSERT, rows.records)
        db.executemany(DUPLICATE_UPSERT, rows.duplicates)
        for row in rows.messages:
            db.execute(TEXT_OUT + "spool_id = ? AND position = ?", (row["spool_id"], row["position"]))
            written = db.execute(MESSAGE_UPSERT, row)
            db.execute(TEXT_IN, (written.lastrowid, row["subject"], row["text"]))

    def moved(self, spool_id: str, state: str, folder: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE messages SET state = ?, folder = ? WHERE spool_id = ?", (state, folder, spool_id)
            )

    def unfiled(self, spool_id: str) -> None:
        with self._transaction() as db:
            db.execute(TEXT_OUT + "spool_id = ?", (spool_id,))
            db.execute("DELETE FROM messages WHERE spool_id = ?", (spool_id,))

    def forget_folders(self, prefix: str) -> int:
        pattern = like_prefix(prefix)
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
        with self._transaction() as db:
            db.execute("DELETE FROM records WHERE state = 'processed'")  # claims of deferred ones stay
            db.execute("DELETE FROM duplicates")
            db.execute("DELETE FROM messages")
            db.execute("INSERT INTO messages_text (messages_text) VALUES ('delete-all')")
            for state in FILED_STATES:
                for path in self.records.folders(state):
                    self._index_folder(db, self.records.read(path))
            count = db.execute("SELECT count(*) FROM records WHERE state = 'processed'").fetchone()[0]
        return int(count)

    def heartbeat(self) -> None:
        now = dt.datetime.now(dt.UTC).isoformat()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO nodes (node, spool, first_seen, last_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (node) DO UPDATE SET spool = excluded.spool, last_seen = excluded.last_seen",
                (self.node, str(self.root), now, now),
            )


def text_query(words: str) -> str:
    """FTS5 query syntax from what a person typed: each word a quoted string (so AND, NEAR, quotes and
    colons are plain words), all of them required; a trailing * keeps its meaning, a prefix search."""
    terms = []
    for word in words.split():
        stem, star = (word[:-1], "*") if word.endswith("*") and len(word) > 1 else (word, "")
        terms.append('"' + stem.replace('"', '""') + '"' + star)
    return " ".join(terms) or '""'


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA busy_timeout=10000")
    return db
