"""The index in PostgreSQL, shared by every VM whose ``[index] url`` names it (psycopg 3 and its pool).

Dedup across VMs rests on one unique constraint (``mospool.index.pg_claims``): a claim is an INSERT of the
key ON CONFLICT DO NOTHING, committed before its postback is acted on, and read back when the connection is
lost with its outcome unknown. The claim row (state ``work``) becomes ``deferred`` or ``processed`` in the
same row, or is deleted when its postback fails.

Every row names its node; the queries by folder (pages) read only this VM's rows, ``find`` reads every VM's.
Every psycopg error surfaces as ``IndexUnavailable``: the worker then holds postbacks until ``ping`` works,
and the pool is renewed then, so claiming resumes at once rather than at the pool's next back-off.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from mospool.config import Settings
from mospool.index import IndexUnavailable, read_password, where
from mospool.index.pg_claims import Claims
from mospool.index.pg_schema import NewerSchema, migrate
from mospool.index.reads import Reads, Row, TextMatch
from mospool.index.rows import DUPLICATE_COLUMNS, MESSAGE_COLUMNS, RECORD_COLUMNS, folder_rows, like_prefix
from mospool.store import FILED_STATES, Folder, Owner, Records, State

log = logging.getLogger(__name__)
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # the worker says an outage once, not per try

CONNECT_SECONDS = 3  # libpq's connect_timeout
WAIT_SECONDS = 3.0  # for a connection from the pool
WAIT_WHILE_FAILING_SECONDS = 0.2  # once an operation failed, until ping works: the rest fail fast


def _upsert(table: str, columns: Sequence[str], key: str, guard: str = "") -> str:
    """INSERT … ON CONFLICT DO UPDATE of every column, from the constant column lists only (``message`` is
    given as JSON text)."""
    names = ", ".join(f'"{column}"' for column in columns)
    values = ", ".join(
        f"%({column})s::jsonb" if column == "message" else f"%({column})s" for column in columns
    )
    updates = ", ".join(f'"{column}" = EXCLUDED."{column}"' for column in columns)
    return (
        f"INSERT INTO {table} ({names}) VALUES ({values}) ON CONFLICT ({key}) DO UPDATE SET {updates}{guard}"  # noqa: S608
    )


# A processed record never takes over a key another postback holds.
RECORD_UPSERT = _upsert("records", RECORD_COLUMNS, "key", " WHERE records.spool_id = EXCLUDED.spool_id")
DUPLICATE_UPSERT = _upsert("duplicates", DUPLICATE_COLUMNS, "spool_id, key")
MESSAGE_UPSERT = _upsert("messages", (*MESSAGE_COLUMNS, "message"), "spool_id, position")
DEFER = (
    "INSERT INTO records (key, spool_id, node, state, received_at) VALUES (%s, %s, %s, 'deferred', %s) "
    "ON CONFLICT (key) DO UPDATE SET state = 'deferred', received_at = EXCLUDED.received_at "
    "WHERE records.spool_id = EXCLUDED.spool_id"
)


class PostgresIndex(Reads):
    scoped = True
    NOCASE_EQUAL = "lower({column}) = lower(?)"

    def __init__(self, settings: Settings, connections: int = 8) -> None:
        self.node = settings.spool.node
        self.root = settings.spool.dir
        self.records = Records(self.root)
        self.where = where(settings)
        self.url = settings.index.url
        self.connections = connections
        password = read_password(settings)
        self._options: dict[str, Any] = {"autocommit": True, "connect_timeout": CONNECT_SECONDS}
        if password is not None:
            self._options["password"] = password
        self._lock = threading.Lock()
        self._migrated = False
        self._failing = False  # the last operation failed: the next ones wait little, ping renews the pool
        self._pool = self._new_pool()
        self._claims = Claims(self.node, self._connection)

    def _new_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self.url,
            kwargs=self._options,
            min_size=1,
            max_size=self.connections,
            timeout=WAIT_SECONDS,
            configure=_configure,
            check=ConnectionPool.check_connection,  # a connection the server dropped is never handed out
            name=f"mospool-index-{self.node}",
            open=False,
        )
        pool.open(wait=False)
        return pool

    def close(self) -> None:
        self._pool.close()

    # --- connections

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        wait = WAIT_WHILE_FAILING_SECONDS if self._failing else WAIT_SECONDS
        try:
            with self._pool.connection(timeout=wait) as conn:
                if not self._migrated:
                    self._migrate(conn)
                yield conn
        except psycopg.Error as exc:
            self._failing = True
            raise IndexUnavailable(f"the index at {self.where}: {_said(exc)}") from exc
        self._failing = False  # it answered: the pool is fine as it is

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        try:
            found = migrate(conn)
        except NewerSchema as exc:
            raise IndexUnavailable(str(exc)) from exc
        if found == 0:
            log.info("created the index's tables in %s", self.where)
        self._migrated = True

    def ping(self) -> None:
        """A connection of its own (the pool may be waiting out a back-off): when it works after a failure,
        the pool is made anew, so the worker claims again at once."""
        try:
            with psycopg.connect(self.url, **self._options) as conn:
                _configure(conn)
                if not self._migrated:
                    self._migrate(conn)
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            self._failing = True
            raise IndexUnavailable(f"the index at {self.where}: {_said(exc)}") from exc
        with self._lock:
            if self._failing:
                old, self._pool = self._pool, self._new_pool()
                self._failing = False
                threading.Thread(target=old.close, name="index-pool-close", daemon=True).start()

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        query = sql.replace("%", "%%").replace("?", "%s")
        with self._connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
            rows = cursor.execute(query, tuple(params)).fetchall()
        return [{key: _plain(value) for key, value in row.items()} for row in rows]

    def _text_match(self, words: str) -> TextMatch:
        return TextMatch(
            prefix="WITH q AS (SELECT to_tsquery('simple', ?) AS query) ",
            source="messages CROSS JOIN q",
            matched=(
                "ts_headline('simple', concat_ws(' ', messages.subject, messages.text), "
                "q.query, 'StartSel=[, StopSel=], MaxWords=12, MinWords=8')"
            ),
            where="messages.search @@ q.query",
            order="ts_rank(messages.search, q.query) DESC, messages.received_at DESC",
            params=(text_query(words),),
        )

    # --- dedup

    def claim(self, key: str, spool_id: str) -> Owner:
        return self._claims.claim(key, spool_id)

    def release(self, keys: Sequence[str], spool_id: str) -> None:
        with self._connection() as conn:
            conn.execute("DELETE FROM records WHERE key = ANY(%s) AND spool_id = %s", (list(keys), spool_id))

    def defer(self, keys: Sequence[str], spool_id: str, received_at: str) -> None:
        when = _timestamp(received_at)
        with self._connection() as conn, conn.transaction(), conn.cursor() as cursor:
            cursor.executemany(DEFER, [(key, spool_id, self.node, when) for key in keys])

    # --- filing

    def filed(self, folders: Sequence[Folder]) -> None:
        """One transaction, sent as one pipeline: a round trip and a WAL flush for the whole group commit."""
        with self._connection() as conn, conn.pipeline(), conn.transaction(), conn.cursor() as cursor:
            for record in folders:
                self._index_folder(cursor, record)

    def _index_folder(self, cursor: psycopg.Cursor[Any], record: Folder) -> None:
        rows = folder_rows(record, self.records.relative(record.path), self.node)
        for sql, found in ((RECORD_UPSERT, rows.records), (DUPLICATE_UPSERT, rows.duplicates)):
            if found:
                cursor.executemany(sql, [_stored(row) for row in found])
        cursor.executemany(
            MESSAGE_UPSERT,
            [{**_stored(row), "message": _json(row["message"])} for row in rows.messages],
        )

    def moved(self, spool_id: str, state: str, folder: str) -> None:
        with self._connection() as conn:
            conn.execute(
                "UPDATE messages SET state = %s, folder = %s WHERE spool_id = %s AND node = %s",
                (state, folder, spool_id, self.node),
            )

    def unfiled(self, spool_id: str) -> None:
        with self._connection() as conn:
            conn.execute("DELETE FROM messages WHERE spool_id = %s AND node = %s", (spool_id, self.node))

    def forget_folders(self, prefix: str) -> int:
        pattern = like_prefix(prefix)
        gone = 0
        with self._connection() as conn, conn.transaction():
            for table in ("records", "duplicates", "messages"):
                cursor = conn.execute(
                    f"DELETE FROM {table} WHERE node = %s AND folder LIKE %s",  # noqa: S608 (constant names)
                    (self.node, pattern),
                )
                gone += cursor.rowcount
        return gone

    def rebuild(self) -> int:
        """This VM's rows only: the other VMs' rows, and this VM's claims of waiting postbacks, stay."""
        with self._connection() as conn, conn.transaction(), conn.cursor() as cursor:
            cursor.execute("DELETE FROM records WHERE node = %s AND state = 'processed'", (self.node,))
            cursor.execute("DELETE FROM duplicates WHERE node = %s", (self.node,))
            cursor.execute("DELETE FROM messages WHERE node = %s", (self.node,))
            for state in FILED_STATES:
                for path in self.records.folders(state):
                    self._index_folder(cursor, self.records.read(path))
            found = cursor.execute(
                "SELECT count(*) FROM records WHERE node = %s AND state = %s",
                (self.node, State.PROCESSED.value),
            ).fetchone()
        return int(found[0]) if found else 0

    def heartbeat(self) -> None:
        with self._connection() as conn:
            conn.execute(
                "INSERT INTO nodes (node, spool) VALUES (%s, %s) "
                "ON CONFLICT (node) DO UPDATE SET spool = EXCLUDED.spool, last_seen = now()",
                (self.node, str(self.root)),
            )

    # search_text (issue 22): a tsvector column on messages (subject, text, sender, …) with a GIN index,
    # filled by MESSAGE_UPSERT (to_tsvector('simple', …)), queried with websearch_to_tsquery.


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET TIME ZONE 'UTC'")  # received_at comes back as the receiver wrote it: +00:00


def _said(exc: psycopg.Error) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _stored(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as PostgreSQL takes it: received_at a time (None if unreadable), no NUL in any text."""
    stored = {key: _clean(value) for key, value in row.items() if key != "message"}
    stored["received_at"] = _timestamp(row.get("received_at"))
    return stored


def _timestamp(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _json(notice: Mapping[str, Any]) -> str:
    """The notice as JSON text for its jsonb column (json.dumps writes U+0000 as the escape jsonb refuses)."""
    text = json.dumps(notice, ensure_ascii=False)
    return json.dumps(_clean(notice), ensure_ascii=False) if "\\u0000" in text else text


def _clean(value: Any) -> Any:
    """PostgreSQL's text and jsonb cannot hold U+0000, which a postback may carry: it becomes U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_clean(key): _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def _plain(value: Any) -> Any:
    """What the CLI and the pages get from either backend: times as the ISO text the receiver wrote."""
    return value.isoformat() if isinstance(value, dt.datetime) else value


def text_query(words: str) -> str:
    """A tsquery from what a person typed: the words as the 'simple' parser splits them (so &, |, ! and
    quotes are plain text), all of them required; a trailing * keeps its meaning, a prefix search."""
    terms: list[str] = []
    for word in words.split():
        parts = re.findall(r"[^\W_]+", word.lower())
        star = ":*" if word.endswith("*") else ""
        terms += [f"'{part}'" for part in parts[:-1]] + [f"'{part}'{star}" for part in parts[-1:]]
    return " & ".join(terms)  # none: an empty query, which matches nothing
