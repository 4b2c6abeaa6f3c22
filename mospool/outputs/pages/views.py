"""The views: a day's pages and the spool's front page, derived from the index's ``messages`` rows of this VM.

They are rewritten atomically (a temp file renamed over the old one; being derived, they are not fsynced):

- a day is listed in receive order, cut into pages of ``ROWS_PER_PAGE`` rows: ``page-0001.html`` holds the
  oldest rows, and so on; ``index.html`` holds the newest ``ROWS_PER_PAGE`` rows and links to every page.
  Only pages from the one holding the earliest newly filed record onward are rewritten, so a record filed in
  order costs one short page whatever the size of the day;
- the spool root's ``index.html``: counts, backlog, failures by reason and the days.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

from mospool.config import Settings
from mospool.durable import write_file
from mospool.english import counted
from mospool.index import Index
from mospool.outputs.pages import render
from mospool.outputs.registry import status_parts
from mospool.store import FILED_STATES, Spool, State, id_age_seconds, id_time
from mospool.store.layout import PAGE, day_page_name
from mospool.store.records import day_range, state_range

log = logging.getLogger(__name__)

ROWS_PER_PAGE = 250
# What a page can weigh whatever the postbacks hold (every cell is cut; tests/test_pages.py checks the worst).
DAY_PAGE_BYTES_MAX = 512 * 1024
ROOT_PAGE_BYTES_MAX = 256 * 1024
WAITING_COUNT_LIMIT = 5000
REASONS_SHOWN = 20
DAYS_SHOWN = 400


def write_view(path: Path, data: bytes) -> None:
    """Replace a view atomically: readers see the old page or the new one, never a part."""
    temp = path.with_name(f".{path.name}.tmp")
    write_file(temp, data, sync=False)  # derived: made again if a crash loses it
    temp.replace(path)


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
        zone: dt.tzinfo = dt.UTC,
    ) -> None:
        self.index = index
        self.zone = zone
        self.per_page = per_page
        self.labels = {} if labels is None else labels  # full page number -> the times it spans (immutable)
        self.state, self.day = state, day
        self.folder = spool.records.day_dir(State(state), day)
        self.low, self.high = day_range(State(state), day)

    def write(self, since: str) -> int:
        """Rewrite the pages from the one holding record ``since`` onward; returns how many were written."""
        if not self.folder.is_dir():
            return 0
        total = self.index.message_count(self.low, self.high)
        full = total // self.per_page
        first = self.index.message_count(self.low, self.low + since) // self.per_page
        for chunk, rows in enumerate(self._full_pages(first, full), first):
            self._write_full(chunk, full, rows)
        self._drop_pages_after(full)
        links = self._page_links(full)
        rows = self._newest_rows()
        note = f"{counted(total, 'notification')}; this page: the newest {len(rows)}"
        stamp = render.stamp(self.zone)
        page = render.day_page(self.state, self.day, rows, links, note, stamp, self.zone, total)
        write_view(self.folder / PAGE, page)
        return full - first + 1

    def is_current(self) -> bool:
        """Whether the day's pages were last written whole for as many notifications as the index holds: the
        index page is written last, so one that says so was preceded by every page of its rewrite."""
        try:
            written = render.written_for((self.folder / PAGE).read_bytes())
        except OSError:
            return False
        return written == self.index.message_count(self.low, self.high)

    def _newest_rows(self) -> list[render.Row]:
        rows = self.index.day_rows(self.low, self.high, self.per_page, newest=True)
        return [render.day_row(row, self.zone) for row in rows]

    def _full_pages(self, first: int, full: int) -> Iterator[list[render.Row]]:
        """The rows of full pages ``first`` to ``full`` (0-based), oldest page first, each newest first: one
        walk of the folder index from the first one's start, not one per page."""
        found = self.index.day_rows(
            self.low, self.high, (full - first) * self.per_page, first * self.per_page
        )
        for start in range(0, len(found), self.per_page):
            page = found[start : start + self.per_page]
            yield [render.day_row(row, self.zone) for row in reversed(page)]

    def _write_full(self, chunk: int, full: int, rows: list[render.Row]) -> None:
        self.labels[chunk + 1] = f"{rows[-1].time[:5]} to {rows[0].time[:5]}"
        first, last = chunk * self.per_page + 1, (chunk + 1) * self.per_page
        note = f"page {chunk + 1} of {full} full pages: notifications {first} to {last} of the day"
        links = [render.PageLink(PAGE, "newest")]
        if chunk + 2 <= full:
            links.append(render.PageLink(day_page_name(chunk + 2), "newer"))
        if chunk > 0:
            links.append(render.PageLink(day_page_name(chunk), "older"))
        page = render.day_page(self.state, self.day, rows, links, note, render.stamp(self.zone), self.zone)
        write_view(self.folder / day_page_name(chunk + 1), page)

    def _drop_pages_after(self, full: int) -> None:
        number = full + 1
        while (self.folder / day_page_name(number)).exists():
            (self.folder / day_page_name(number)).unlink()
            number += 1

    def _page_links(self, full: int) -> list[render.PageLink]:
        """Newest first, each labelled with the receive times it spans (looked up once per worker run)."""
        if any(number not in self.labels for number in range(1, full + 1)):
            self._look_up_labels(full)
        return [
            render.PageLink(day_page_name(number), self.labels.get(number, "?"))
            for number in range(full, 0, -1)
        ]

    def _look_up_labels(self, full: int) -> None:
        edges = self.index.page_edges(self.low, self.high, full * self.per_page, self.per_page)
        for number in range(1, full + 1):
            start = edges.get((number - 1) * self.per_page + 1)
            end = edges.get(number * self.per_page)
            self.labels[number] = f"{self._clock(start)} to {self._clock(end)}"

    def _clock(self, folder: str | None) -> str:
        if not folder:
            return "?"
        try:
            return id_time(folder.rsplit("/", 1)[-1]).astimezone(self.zone).strftime("%H:%M")
        except ValueError:
            return "?"


class RootPage:
    """The spool root's index.html; each day's count is kept until that day is filed into again."""

    def __init__(self, spool: Spool, index: Index, settings: Settings, zone: dt.tzinfo = dt.UTC) -> None:
        self.spool = spool
        self.index = index
        self.settings = settings
        self.zone = zone
        self._counts: dict[tuple[str, str], int] = {}
        self._shown: render.Overview | None = None  # what the page last written shows

    def forget(self, state: str, day: str) -> None:
        self._counts.pop((state, day), None)

    def write(self, only_if_changed: bool = False) -> bool:
        """Rewrite the page; with ``only_if_changed``, only when what it shows changed (a delivery made or
        parked, a backlog that ages). Returns whether it was written."""
        overview = self._overview()
        if only_if_changed and overview == self._shown:
            return False
        page = render.root_page(dataclasses.replace(overview, generated=render.stamp(self.zone)))
        write_view(self.spool.front_page, page)
        self._shown = overview
        return True

    def _overview(self) -> render.Overview:
        days = {state.value: self._days(state) for state in FILED_STATES}
        waiting, oldest = self.spool.backlog(WAITING_COUNT_LIMIT)
        return render.Overview(
            counts={state: sum(day.count for day in found) for state, found in days.items()},
            waiting=waiting,
            waiting_capped=waiting >= WAITING_COUNT_LIMIT,
            oldest_waiting_seconds=round(id_age_seconds(oldest)),
            deferred=self.spool.deferred_count(),
            days={state: found[:DAYS_SHOWN] for state, found in days.items()},
            reasons=self._reasons(),
            generated="",
            outputs=[part for part in status_parts(self.settings, self.spool) if part.active],
            node=self.index.node,
            nodes=self._nodes(),
        )

    def _days(self, state: State) -> list[render.DayCount]:
        """The days that hold records, newest first: a day emptied by retries or dismissals is left out."""
        found = [
            render.DayCount(self._day_link(state, day), day, self._count(state, day))
            for day in reversed(self.spool.records.days(state))
        ]
        return [day for day in found if day.count]

    def _day_link(self, state: State, day: str) -> str:
        """The day's page, or its folder (a listing) where the worker has written none, as in dismissed/."""
        if (self.spool.records.day_dir(state, day) / PAGE).is_file():
            return render.href(state, day, PAGE)
        return render.href(state, day) + "/"

    def _count(self, state: State, day: str) -> int:
        if (state, day) not in self._counts:
            self._counts[state, day] = self.index.folder_count(*day_range(state, day))
        return self._counts[state, day]

    def _reasons(self) -> list[tuple[str, int]]:
        return self.index.failure_reasons(*state_range(State.FAILED), REASONS_SHOWN)

    def _nodes(self) -> list[render.NodeSeen]:
        """The VMs filing into the index (this one first), when it is shared with others."""
        seen = [render.NodeSeen(str(row["node"]), str(row["last_seen"] or "?")) for row in self.index.nodes()]
        others = [node for node in seen if node.name != self.index.node]
        return [render.NodeSeen(self.index.node, "now"), *others] if others else []
