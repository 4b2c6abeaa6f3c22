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
    "substr(duplicate_of, 1, 200) AS duplicate_of, duplicate_of_node, substr(status, 1, 200) AS status, "
    "substr(status_details, 1, 400) AS status_details"
)
# What find shows of each notice (qualified: a text search joins a table with a subject and a text too).
FOUND_COLUMNS = (
    "messages.spool_id AS id, messages.node, messages.state, messages.received_at, messages.kind, "
    'messages.sender AS "from", messages.recipient AS "to", messages.keyword, messages.tracking_id, '
    "messages.subject, messages.text, messages.reason, messages.duplicate_of, messages.duplicate_of_node, "
    "messages.folder, messages.position"
)
ID_AFTER = "~"  # sorts after every character of a spool id: [prefix, prefix + "~") holds every id it starts


@dataclass(frozen=True)
class Search:
    """What `mospool find` and `resend` look for; None is "any". Numbers are compared in each form given."""

    senders: tuple[str, ...] | None = None
    recipients: tuple[str, ...] | None = None
    keyword: str | None = None
    tracking_id: str | None = None
    kind: str | None = None
    state: str | None = None
    states: tuple[str, ...] | None = None  # any of these
    since: dt.date | None = None
    until: dt.date | None = None  # inclusive
    text: str | None = None  # every one of these words in the subject or text (word* a prefix); best first
    here_only: bool = False  # this VM's notices only (a shared index holds every VM's)
    oldest_first: bool = False
    limit: int | None = 100


@dataclass(frozen=True)
class TextMatch:
    """How a backend finds words, as SQL around find's: ``prefix`` before the SELECT, ``source`` for its
    FROM, ``matched`` the words in their context, ``where`` the match, ``order`` best first; ``params`` are
    the values of the prefix or the match, whichever holds them (each comes before every filter's)."""

    prefix: str
    source: str
    matched: str
    where: str
    order: str
    params: tuple[Any, ...]


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

    def _text_match(self, words: str) -> TextMatch:
        raise NotImplementedError

    def find(self, search: Search) -> list[Row]:
        """Every filed notice matching ``search``, on any VM unless ``here_only``: newest first, oldest
        first, or with ``text`` best match first."""
        match = self._text_match(search.text) if search.text is not None else None
        filters = _filters(search, self.NOCASE_EQUAL.format(column="messages.keyword"))
        if search.here_only:
            filters.append(("messages.node = ?", (self.node,)))
        if match is not None:
            filters.insert(0, (match.where, match.params))
        where = "".join(f" AND {clause}" for clause, _ in filters)
        params = [value for _, values in filters for value in values]
        direction = "" if search.oldest_first else " DESC"
        order = f"messages.received_at{direction}, messages.spool_id{direction}, messages.position"
        prefix, source, matched = "", "messages", ""
        if match is not None:
            prefix, source, matched, order = (
                match.prefix,
                match.source,
                f", {match.matched} AS matched",
                match.order,
            )
        limit = "" if search.limit is None else " LIMIT ?"
        # The clauses are constants (here and the backends'); only their values are parameters.
        select = f"{prefix}SELECT {FOUND_COLUMNS}{matched} FROM {source}"  # noqa: S608
        sql = f"{select} WHERE 1 = 1{where} ORDER BY {order}{limit}"
        return self._fetch(sql, (*params, *(() if search.limit is None else (search.limit,))))

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


def _filters(search: Search, keyword: str) -> list[tuple[str, Sequence[Any]]]:
    """The SQL clause and values of each filter ``search`` gives."""
    until = search.until and (search.until + dt.timedelta(days=1)).isoformat()
    states = search.states
    filters: list[tuple[str, Sequence[Any] | None]] = [
        (_one_of("messages.sender", search.senders), search.senders),
        (_one_of("messages.recipient", search.recipients), search.recipients),
        (keyword, _given(search.keyword)),
        ("messages.tracking_id = ?", _given(search.tracking_id)),
        ("messages.kind = ?", _given(search.kind)),
        ("messages.state = ?", _given(search.state)),
        (_one_of("messages.state", states), states),
        ("messages.received_at >= ?", _given(search.since and search.since.isoformat())),
        ("messages.received_at < ?", _given(until)),
    ]
    return [(clause, values) for clause, values in filters if values is not None]


def _given(value: Any) -> tuple[Any, ...] | None:
    return None if value is None else (value,)


def _one_of(column: str, values: tuple[str, ...] | None) -> str:
    if not values:
        return "1 = 0"  # one of none: nothing matches
    return f"{column} IN ({', '.join('?' for _ in values)})"
