"""The pages output: HTML for people browsing the spool (``[pages]``, on by default).

A record page (``<state>/YYYY-MM-DD/<id>/index.html``) is written into the build folder through the filer's
batch, so it is part of the record (only a move by the CLI, such as dismiss, writes it again). The views
(``views``: a day's pages and the spool's front page) are derived from the index and rewritten on the
worker's tick, at most every ``VIEWS_EVERY_SECONDS``: the days it filed into, the days the CLI noted as
stale (``changed``: retry, dismiss, purge, redeliver, resend), and the front page whenever what it shows
changed. ``render`` turns what a page shows into HTML; times are shown in ``[pages] timezone``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mospool.config import Section, Settings
from mospool.durable import owned_like
from mospool.filer import Batch
from mospool.index import STORAGE_ERRORS, Index
from mospool.outputs.pages.record_page import record_page
from mospool.outputs.pages.render import zone_named
from mospool.outputs.pages.views import ROWS_PER_PAGE, DayPages, RootPage, write_view
from mospool.outputs.registry import BaseOutput, Context, Spec, register
from mospool.store import FILED_STATES, Folder, Spool, State
from mospool.store.layout import PAGE
from mospool.values import boolean, time_zone

log = logging.getLogger(__name__)

VIEWS_EVERY_SECONDS = 5.0  # a busy day's pages lag at most this much; each rewrite is one short page
ROOT_REFRESH_SECONDS = 30.0  # the backlog figures age even when nothing is filed
FROM_THE_START = ""  # sorts before every spool id: rewrite every page of the day


@dataclass(frozen=True)
class PagesSettings:
    enabled: bool = True
    timezone: str = "UTC"  # the zone the pages show times in (an IANA name); folders stay by UTC day

    @property
    def zone(self) -> dt.tzinfo:
        return zone_named(self.timezone)


SECTION = Section("pages", PagesSettings, {"enabled": boolean, "timezone": time_zone})


class Pages(BaseOutput):
    """Writes each record's page with the record, and keeps the day and front pages up to date."""

    def __init__(
        self,
        spool: Spool,
        index: Index,
        settings: Settings,
        per_page: int = ROWS_PER_PAGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spool = spool
        self.index = index
        self.per_page = per_page
        self.clock = clock
        self.zone = settings.output(SECTION).zone
        self.root_page = RootPage(spool, index, settings, self.zone)
        self._lock = threading.Lock()
        # (state, day) -> the earliest record filed there since the last rewrite
        self._stale: dict[tuple[str, str], str] = dict.fromkeys(self._newest_days(), FROM_THE_START)
        self._labels: dict[tuple[str, str], dict[int, str]] = {}
        self._root_written_at = self._views_written_at = float("-inf")

    def _newest_days(self) -> Iterator[tuple[str, str]]:
        """At start, the newest day of each state is rewritten whole unless its pages are current: a crash
        may have cut a rewrite short, or come between a record's index row and its day's pages."""
        for state in FILED_STATES:
            days = self.spool.records.days(state)
            if (
                days
                and not DayPages(self.spool, self.index, state.value, days[-1], self.per_page).is_current()
            ):
                yield state.value, days[-1]

    def prepare(self, folder: Folder, batch: Batch) -> None:
        page = record_page(folder, located=batch.build, names=batch.in_record, zone=self.zone)
        batch.write_in_record(PAGE, page)

    def published(self, folders: Sequence[Folder]) -> None:
        with self._lock:
            for folder in folders:
                key = (folder.state.value, folder.day)
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
        try:
            notes, noted = self.spool.stale_pages.read()
            for state, day in noted:  # changed by the CLI: rewritten whole
                stale[state.value, day] = FROM_THE_START
            if not stale and not notes and now - self._root_written_at < ROOT_REFRESH_SECONDS:
                if self.root_page.write(only_if_changed=True):
                    self._root_written_at = now
                return
            self._write(stale)
            self.spool.stale_pages.done(notes)
        except STORAGE_ERRORS as exc:  # views are derived: try again at a later tick
            log.warning("pages: cannot rewrite the day and root pages yet: %s", exc)
            self.published_again(stale)
            return
        self._root_written_at = now

    def _write(self, stale: dict[tuple[str, str], str]) -> None:
        for (state, day), since in sorted(stale.items()):
            self.root_page.forget(state, day)
            labels = self._labels.setdefault((state, day), {})
            DayPages(self.spool, self.index, state, day, self.per_page, labels, self.zone).write(since)
        self.root_page.write()

    def published_again(self, stale: dict[tuple[str, str], str]) -> None:
        with self._lock:
            for key, since in stale.items():
                self._stale[key] = min(since, self._stale.get(key, since))


def rebuild(spool: Spool, index: Index, settings: Settings, per_page: int = ROWS_PER_PAGE) -> dict[str, int]:
    """Every page of an existing spool: each record's page, then the day and root views."""
    zone = settings.output(SECTION).zone
    records = days = 0
    for state in FILED_STATES:
        for day in spool.records.days(state):
            for path in spool.records.in_day(state, day):
                write_view(path / PAGE, record_page(spool.records.read(path), zone=zone))
                records += 1
            DayPages(spool, index, state.value, day, per_page, zone=zone).write(FROM_THE_START)
            days += 1
    RootPage(spool, index, settings, zone).write()
    return {"record_pages": records, "days": days}


def changed(settings: Settings, spool: Spool, days: Iterable[tuple[State, str]] = ()) -> None:
    """The CLI changed the spool behind the worker's back: the pages of ``days`` and the front page are
    rewritten by the worker at its next tick (nothing to do while pages are off)."""
    if settings.output(SECTION).enabled:
        spool.stale_pages.note(days)


def moved(settings: Settings, spool: Spool, folder: Path) -> None:
    """The CLI moved a record folder whole (dismiss): its page says where it is now, in its own words."""
    pages = settings.output(SECTION)
    if pages.enabled and (folder / PAGE).is_file():
        write_view(folder / PAGE, record_page(spool.records.read(folder), zone=pages.zone))
        owned_like(folder / PAGE, folder)


def build(settings: PagesSettings, context: Context) -> Pages:
    return Pages(context.spool, context.index, context.settings)


SPEC = register(Spec(SECTION, build, enabled=lambda settings: settings.enabled))
