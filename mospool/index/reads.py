"""The questions the pages and the CLI ask the index, as methods: one SQL text for both backends.

The SQL is written once, with ``?`` placeholders; a backend runs it through its ``_fetch`` (PostgreSQL's
turns the placeholders into its own). Folders are this spool's: the queries by folder (a day's pages, the
front page's counts) only see this VM's rows when the index is shared (``scoped``). ``find`` and ``locate``
see every VM's rows, each with its ``node``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Row = dict[str, Any]

# A day listing's columns, every text cut so that a page has a size bound whatever arrived.
DAY_COLUMNS = (
    "spool_id, position, state, received_at, kind, substr(sender, 1, 200) AS sender, "
    "substr(recipient, 1, 200) AS recipient, substr(subject, 1, 400) AS subject, "
    "substr(text, 1, 400) AS text, media_count, first_image, substr(reason, 1, 400) AS reason, "
    "substr(duplicate_of, 1, 200) AS duplicate_of, duplicate_of_node"
)
FOUND_COLUMNS = (
    'spool_id, node, state, received_at, kind, sender AS "from", recipient AS "to", keyword, tracking_id, '
    "subject, text, reason, duplicate_of, duplicate_of_node, folder"
)
ID_AFTER = "~"  # sorts after every character of a spool id: [prefix, prefix + "~") holds every id it starts


@dataclass(frozen=True)
class Search:
    """What `mospool find` looks for; None is "any". Numbers are compared in each form given."""

    senders: tuple[str, ...] | None = None
    recipients: tuple[str, ...] | None = None
    keyword: str | None = None
    tracking_id: str | None = None
    kind: str | None = None
    state: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None  # inclusive
    limit: int = 100


class Reads:
    """Mixed into each backend, which provides ``node``, ``scoped``, ``NOCASE_EQUAL`` and ``_fetch``."""

    node: str
    scoped: bool  # True: the index holds other VMs' rows too, whose folders are not in this spool
    NOCASE_EQUAL = "{column} = ? COLLATE NOCASE"

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    def _here(self) -> tuple[str, tuple[str, ...]]:
        return (" AND node = ?", (self.node,)) if self.scoped else ("", ())

    # --- the pages

    def message_count(self, low: str, high: str) -> int:
        """Notices filed in folders from ``low`` up to (not including) ``high``."""
        here, mine = self._here()
        sql = f"SELECT count(*) AS n FROM messages WHERE folder >= ? AND folder < ?{here}"  # noqa: S608
        return int(self._fetch(sql, (low, high, *mine))[0]["n"])

    def folder_count(self, low: str, high: str) -> int:
        """Record folders from ``low`` up to ``high`` (a batch is one folder of several notices)."""
        here, mine = self._here()
        sql = f"SELECT count(DISTINCT folder) AS n FROM messages WHERE folder >= ? AND folder < ?{here}"  # noqa: S608
        return int(self._fetch(sql, (low, high, *mine))[0]["n"])

    def day_rows(self, low: str, high: str, limit: int, offset: int = 0, newest: bool = False) -> list[Row]:
        """A day listing's rows in filing order, or the newest ``limit`` of them newest first (walking the
        folder index from its end: as cheap in a day of 20,000 as in a day of 20)."""
        here, mine = self._here()
        order = "folder DESC, position DESC LIMIT ?" if newest else "folder, position LIMIT ? OFFSET ?"
        sql = f"SELECT {DAY_COLUMNS} FROM messages WHERE folder >= ? AND folder < ?{here} ORDER BY {order}"  # noqa: S608
        paging = (limit,) if newest else (limit, offset)
        return self._fetch(sql, (low, high, *mine, *paging))

    def page_edges(self, low: str, high: str, rows: int, per_page: int) -> dict[int, str]:
        """The folder of the first and last row of each full page among the first ``rows``, by row number."""
        here, mine = self._here()
        sql = (
            "SELECT n, folder FROM (SELECT folder, row_number() OVER (ORDER BY folder, position) AS n "  # noqa: S608
            f"FROM messages WHERE folder >= ? AND folder < ?{here}) AS numbered "
            "WHERE n <= ? AND (n % ? IN (0, 1))"
        )
        found = self._fetch(sql, (low, high, *mine, rows, per_page))
        return {int(row["n"]): str(row["folder"]) for row in found}

    def failure_reasons(self, low: str, high: str, limit: int) -> list[tuple[str, int]]:
        """The most frequent failure reasons among the folders from ``low`` to ``high``, with their counts."""
        here, mine = self._here()
        sql = (
            "SELECT reason, count(DISTINCT folder) AS n FROM messages WHERE folder >= ? "  # noqa: S608
            f"AND folder < ?{here} GROUP BY reason ORDER BY n DESC, reason LIMIT ?"
        )
        return [(str(row["reason"]), int(row["n"])) for row in self._fetch(sql, (low, high, *mine, limit))]

    # --- the CLI

    def find(self, search: Search) -> list[Row]:
        """Every filed notice matching ``search``, on any VM, newest first."""
        keyword = self.NOCASE_EQUAL.format(column="keyword")
        until = search.until and (search.until + dt.timedelta(days=1)).isoformat()
        filters: list[tuple[str, Sequence[Any] | None]] = [
            (_one_of("sender", search.senders), search.senders),
            (_one_of("recipient", search.recipients), search.recipients),
            (keyword, _given(search.keyword)),
            ("tracking_id = ?", _given(search.tracking_id)),
            ("kind = ?", _given(search.kind)),
            ("state = ?", _given(search.state)),
            ("received_at >= ?", _given(search.since and search.since.isoformat())),
            ("received_at < ?", _given(until)),
        ]
        chosen = [(clause, values) for clause, values in filters if values is not None]
        where = "".join(f" AND {clause}" for clause, _ in chosen)
        params = [value for _, values in chosen for value in values]
        # The clauses are the constants above; only their values are parameters.
        sql = (
            f"SELECT {FOUND_COLUMNS} FROM messages WHERE 1 = 1{where} "  # noqa: S608
            "ORDER BY received_at DESC, spool_id DESC, position LIMIT ?"
        )
        return self._fetch(sql, (*params, search.limit))

    # search_text(words, limit): issue 22's full-text search goes here, beside find (each backend adds its
    # own table: SQLite an FTS5 table, PostgreSQL a tsvector column with a GIN index).

    def locate(self, wanted: str, limit: int = 11) -> list[Row]:
        """Where the postbacks whose id is ``wanted`` or starts with it were filed, on any VM, with who sent
        their first notice."""
        sql = (
            'SELECT spool_id, node, state, folder, received_at, kind, sender AS "from", recipient AS "to", '
            "tracking_id FROM messages WHERE spool_id >= ? AND spool_id < ? AND position = 1 "
            "ORDER BY spool_id LIMIT ?"
        )
        return self._fetch(sql, (wanted, wanted + ID_AFTER, limit))

    def nodes(self) -> list[Row]:
        """The VMs filing into this index and when each last said so (its worker's start and rescans)."""
        return self._fetch("SELECT node, spool, first_seen, last_seen FROM nodes ORDER BY node")


def _given(value: Any) -> tuple[Any, ...] | None:
    return None if value is None else (value,)


def _one_of(column: str, values: tuple[str, ...] | None) -> str:
    return f"{column} IN ({', '.join('?' for _ in values or ())})"
