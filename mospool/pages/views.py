"""The pages output: each record's page before it is published, and the day and root views after.

A record page (``<state>/YYYY-MM-DD/<id>/index.html``) is written into the build folder through the filer's
batch, so it is part of the record and never changes. The views are derived from the index's ``messages``
table and rewritten on the worker's tick, at most every ``VIEWS_EVERY_SECONDS`` whatever was filed meanwhile,
atomically (a temp file renamed over the old one; being derived, they are not fsynced):

- a day is listed in receive order, cut into pages of ``ROWS_PER_PAGE`` rows: ``page-0001.html`` holds the
  oldest rows, and so on; ``index.html`` holds the newest ``ROWS_PER_PAGE`` rows and links to every page.
  Only pages from the one holding the earliest newly filed record onward are rewritten, so a record filed in
  order costs one short page whatever the size of the day;
- the spool root's ``index.html``: counts, backlog, failures by reason and the days.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from mospool import record
from mospool.filer import Batch
from mospool.index import Index
from mospool.outbox import Outbox
from mospool.pages import render
from mospool.record import FILED_STATES, Filing, Folder, read_folder
from mospool.spool import FILE_MODE, SUFFIX, Spool, State, id_time

log = logging.getLogger(__name__)

ROWS_PER_PAGE = 250
# What a page can weigh whatever the postbacks hold (every cell is cut; tests/test_pages.py checks the worst).
DAY_PAGE_BYTES_MAX = 512 * 1024
ROOT_PAGE_BYTES_MAX = 256 * 1024
VIEWS_EVERY_SECONDS = 5.0  # a busy day's pages lag at most this much; each rewrite is one short page
ROOT_REFRESH_SECONDS = 30.0  # the backlog figures age even when nothing is filed
WAITING_COUNT_LIMIT = 5000
REASONS_SHOWN = 20
DAYS_SHOWN = 400
FROM_THE_START = ""  # sorts before every spool id: rewrite every page of the day
ROW_COLUMNS = (
    "spool_id, position, state, received_at, kind, substr(sender, 1, 200) AS sender, "
    "substr(recipient, 1, 200) AS recipient, substr(subject, 1, 400) AS subject, "
    "substr(text, 1, 400) AS text, media_count, first_image, substr(reason, 1, 400) AS reason, "
    "substr(duplicate_of, 1, 200) AS duplicate_of"
)


def full_page_name(number: int) -> str:
    return f"page-{number:04d}.html"


def write_view(path: Path, data: bytes) -> None:
    """Replace a view atomically: readers see the old page or the new one, never a part."""
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    temp.replace(path)


def utc_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class DayPages:
    """The listing of one ``<state>/YYYY-MM-DD/`` folder, from the index."""

    def __init__(
        self,
        spool: Spool,
        index: Index,
        state: str,
        day: str,
        per_page: int = ROWS_PER_PAGE,
        labels: dict[int, str] | None = None,
    ) -> None:
        self.index = index
        self.per_page = per_page
        self.labels = {} if labels is None else labels  # full page number -> the times it spans (immutable)
        self.state, self.day = state, day
        self.folder = spool.root / state / day
        self.low = f"{state}/{day}/"
        self.high = f"{state}/{day}0"  # '0' follows '/': every folder of the day sorts between

    def write(self, since: str) -> int:
        """Rewrite the pages from the one holding record ``since`` onward; returns how many were written."""
        if not self.folder.is_dir():
            return 0
        total = self._count("folder < ?", self.high)
        full = total // self.per_page
        first = self._count("folder < ?", self.low + since) // self.per_page
        for chunk in range(first, full):
            self._write_full(chunk, full)
        self._drop_pages_after(full)
        links = self._page_links(full)
        rows = self._newest_rows()
        note = f"{total} notifications; this page: the newest {len(rows)}"
        write_view(
            self.folder / record.PAGE, render.day_page(self.state, self.day, rows, links, note, utc_stamp())
        )
        return full - first + 1

    def _count(self, bound: str, value: str) -> int:
        sql = f"SELECT count(*) FROM messages WHERE folder >= ? AND {bound}"  # noqa: S608 (constant bounds)
        return int(self.index.query(sql, (self.low, value))[0][0])

    def _newest_rows(self) -> list[render.Row]:
        """Walks the folder index from the end: as cheap in a day of 20,000 as in a day of 20."""
        sql = (
            f"SELECT {ROW_COLUMNS} FROM messages WHERE folder >= ? AND folder < ? "  # noqa: S608
            "ORDER BY folder DESC, position DESC LIMIT ?"
        )
        return [
            render.day_row(dict(row)) for row in self.index.query(sql, (self.low, self.high, self.per_page))
        ]

    def _rows(self, offset: int, limit: int) -> list[render.Row]:
        sql = (
            f"SELECT {ROW_COLUMNS} FROM messages WHERE folder >= ? AND folder < ? "  # noqa: S608
            "ORDER BY folder, position LIMIT ? OFFSET ?"
        )
        rows = self.index.query(sql, (self.low, self.high, limit, offset))
        return [render.day_row(dict(row)) for row in reversed(rows)]

    def _write_full(self, chunk: int, full: int) -> None:
        rows = self._rows(chunk * self.per_page, self.per_page)
        self.labels[chunk + 1] = f"{rows[-1].time[:5]} to {rows[0].time[:5]}"
        first, last = chunk * self.per_page + 1, (chunk + 1) * self.per_page
        note = f"page {chunk + 1} of {full} full pages: notifications {first} to {last} of the day"
        links = [render.PageLink(record.PAGE, "newest")]
        if chunk + 2 <= full:
            links.append(render.PageLink(full_page_name(chunk + 2), "newer"))
        if chunk > 0:
            links.append(render.PageLink(full_page_name(chunk), "older"))
        page = render.day_page(self.state, self.day, rows, links, note, utc_stamp())
        write_view(self.folder / full_page_name(chunk + 1), page)

    def _drop_pages_after(self, full: int) -> None:
        number = full + 1
        while (self.folder / full_page_name(number)).exists():
            (self.folder / full_page_name(number)).unlink()
            number += 1

    def _page_links(self, full: int) -> list[render.PageLink]:
        """Newest first, each labelled with the receive times it spans (looked up once per worker run)."""
        if any(number not in self.labels for number in range(1, full + 1)):
            self._look_up_labels(full)
        return [
            render.PageLink(full_page_name(number), self.labels.get(number, "?"))
            for number in range(full, 0, -1)
        ]

    def _look_up_labels(self, full: int) -> None:
        sql = (
            "SELECT n, folder FROM (SELECT folder, row_number() OVER (ORDER BY folder, position) AS n "
            "FROM messages WHERE folder >= ? AND folder < ?) WHERE n <= ? AND (n % ? IN (0, 1))"
        )
        found = self.index.query(sql, (self.low, self.high, full * self.per_page, self.per_page))
        edges = {int(n): str(folder) for n, folder in found}
        for number in range(1, full + 1):
            start = edges.get((number - 1) * self.per_page + 1)
            end = edges.get(number * self.per_page)
            self.labels[number] = f"{_clock(start)} to {_clock(end)}"


def _count_up_to(names: Iterator[str]) -> int:
    return sum(1 for _ in itertools.islice(names, WAITING_COUNT_LIMIT))


def _clock(folder: str | None) -> str:
    if not folder:
        return "?"
    try:
        return id_time(folder.rsplit("/", 1)[-1]).strftime("%H:%M")
    except ValueError:
        return "?"


class RootPage:
    """The spool root's index.html; each day's count is kept until that day is filed into again."""

    def __init__(self, spool: Spool, index: Index) -> None:
        self.spool = spool
        self.index = index
        self._counts: dict[tuple[str, str], int] = {}

    def forget(self, state: str, day: str) -> None:
        self._counts.pop((state, day), None)

    def write(self) -> None:
        days = {state.value: self._days(state.value) for state in FILED_STATES}
        waiting, oldest = self.spool.backlog(WAITING_COUNT_LIMIT)
        overview = render.Overview(
            counts={state: sum(day.count for day in found) for state, found in days.items()},
            waiting=waiting,
            waiting_capped=waiting >= WAITING_COUNT_LIMIT,
            oldest_waiting_seconds=_age(oldest),
            deferred=sum(1 for _ in os.scandir(self.spool.deferred)) if self.spool.deferred.is_dir() else 0,
            days={state: found[:DAYS_SHOWN] for state, found in days.items()},
            reasons=self._reasons(),
            generated=utc_stamp(),
            webhooks=self._webhooks(),
        )
        write_view(self.spool.root / record.PAGE, render.root_page(overview))

    def _webhooks(self) -> dict[str, int] | None:
        """Webhooks waiting and undelivered, each counted up to a cap; None if nothing was ever forwarded."""
        outbox = Outbox(self.spool.root)
        if not outbox.pending.is_dir():
            return None
        return {
            "waiting": _count_up_to(outbox.names(outbox.pending)),
            "undelivered": _count_up_to(outbox.names(outbox.undelivered)),
        }

    def _days(self, state: str) -> list[render.DayCount]:
        root = self.spool.root / state
        return [
            render.DayCount(_day_link(state, day), day.name, self._count(state, day.name))
            for day in reversed(_day_folders(root))
        ]

    def _count(self, state: str, day: str) -> int:
        if (state, day) not in self._counts:
            sql = "SELECT count(DISTINCT folder) FROM messages WHERE folder >= ? AND folder < ?"
            self._counts[state, day] = int(
                self.index.query(sql, (f"{state}/{day}/", f"{state}/{day}0"))[0][0]
            )
        return self._counts[state, day]

    def _reasons(self) -> list[tuple[str, int]]:
        sql = (
            "SELECT reason, count(DISTINCT folder) AS n FROM messages WHERE folder >= 'failed/' "
            "AND folder < 'failed0' GROUP BY reason ORDER BY n DESC LIMIT ?"
        )
        return [(str(reason), int(n)) for reason, n in self.index.query(sql, (REASONS_SHOWN,))]


def _day_link(state: str, day: Path) -> str:
    """The day's page, or its folder (a listing) where the worker has written none, as in dismissed/."""
    if (day / record.PAGE).is_file():
        return render.href(state, day.name, record.PAGE)
    return render.href(state, day.name) + "/"


def _is_day(name: str) -> bool:
    try:
        dt.date.fromisoformat(name)
    except ValueError:
        return False
    return len(name) == 10


def _age(oldest: str | None) -> float:
    if oldest is None:
        return 0.0
    return max((dt.datetime.now(dt.UTC) - id_time(oldest.removesuffix(SUFFIX))).total_seconds(), 0.0)


class Pages:
    """The filer Output (mospool.filer.Output) that writes every page."""

    def __init__(
        self,
        spool: Spool,
        index: Index,
        per_page: int = ROWS_PER_PAGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spool = spool
        self.index = index
        self.per_page = per_page
        self.clock = clock
        self.root_page = RootPage(spool, index)
        self._lock = threading.Lock()
        # (state, day) -> the earliest record filed there since the last rewrite
        self._stale: dict[tuple[str, str], str] = dict.fromkeys(self._newest_days(), FROM_THE_START)
        self._labels: dict[tuple[str, str], dict[int, str]] = {}
        self._root_written_at = self._views_written_at = float("-inf")

    def _newest_days(self) -> Iterator[tuple[str, str]]:
        """At start, the newest day of each state is rewritten whole: a crash may have cut a rewrite short."""
        for state in FILED_STATES:
            days = _day_folders(self.spool.root / state)
            if days:
                yield state.value, days[-1].name

    def prepare(self, filing: Filing, build: Path, batch: Batch) -> None:
        batch.write(build / record.PAGE, render.record_page(filing.as_folder(build)))

    def published(self, folders: Sequence[Folder]) -> None:
        with self._lock:
            for folder in folders:
                key = (folder.state.value, folder.path.parent.name)
                earliest = self._stale.get(key)
                self._stale[key] = folder.spool_id if earliest is None else min(earliest, folder.spool_id)

    def tick(self) -> None:
        """Called about once a second; the views are rewritten at most every VIEWS_EVERY_SECONDS."""
        now = self.clock()
        if now - self._views_written_at >= VIEWS_EVERY_SECONDS:
            self.write_views(now)

    def close(self) -> None:
        self.write_views(self.clock())

    def write_views(self, now: float) -> None:
        self._views_written_at = now
        with self._lock:
            stale, self._stale = self._stale, {}
        if not stale and now - self._root_written_at < ROOT_REFRESH_SECONDS:
            return
        try:
            self._write(stale)
        except (OSError, sqlite3.Error) as exc:  # views are derived: try again at a later tick
            log.warning("pages: cannot rewrite the day and root pages yet: %s", exc)
            self.published_again(stale)
            return
        self._root_written_at = now

    def _write(self, stale: dict[tuple[str, str], str]) -> None:
        for (state, day), since in sorted(stale.items()):
            self.root_page.forget(state, day)
            labels = self._labels.setdefault((state, day), {})
            DayPages(self.spool, self.index, state, day, self.per_page, labels).write(since)
        self.root_page.write()

    def published_again(self, stale: dict[tuple[str, str], str]) -> None:
        with self._lock:
            for key, since in stale.items():
                self._stale[key] = min(since, self._stale.get(key, since))


def rebuild(spool: Spool, index: Index, per_page: int = ROWS_PER_PAGE) -> dict[str, int]:
    """Every page of an existing spool: each record's page, then the day and root views."""
    records = days = 0
    for state in FILED_STATES:
        for day in _day_folders(spool.root / state):
            for folder in sorted(p for p in day.iterdir() if p.is_dir()):
                write_view(folder / record.PAGE, render.record_page(read_folder(folder, State(state))))
                records += 1
            DayPages(spool, index, state.value, day.name, per_page).write(FROM_THE_START)
            days += 1
    RootPage(spool, index).write()
    return {"record_pages": records, "days": days}


def _day_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and _is_day(p.name)) if root.is_dir() else []
