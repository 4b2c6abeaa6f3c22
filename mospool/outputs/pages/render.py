"""The HTML pages as pure functions: a record folder or index rows in, UTF-8 bytes out.

This module holds what every page shares and the listings (a day's pages, the front page);
``record_page`` holds the record's own page.

Every value a postback carries is hostile: it reaches the page only through Jinja2's autoescaping, never as
a link or a source, and with its control and bidi characters shown as ``[U+202E]`` rather than obeyed
(``mospool.unprintable``), in the title too. Links are built here, from names the spool itself chose, as
relative paths with every segment percent-encoded, so the pages work under any URL prefix. No page loads
anything from elsewhere or runs any script; the style is inline (the browse site's CSP allows inline styles
and nothing else).
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2
import markupsafe

from mospool import unprintable
from mospool.english import shortened
from mospool.outputs.registry import StatusPart
from mospool.store import State, id_day, id_time
from mospool.store.layout import MEDIA, PAGE, media_file_name


def _neutralized(value: Any) -> Any:
    """Every value a template prints: its control and bidi characters shown, not obeyed."""
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
        return unprintable.shown(value)
    return value


ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("mospool.outputs.pages", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    finalize=_neutralized,
    auto_reload=False,  # the templates ship with the package: no stat of each one at every page
)

# By file extension, because the browse site's Content-Type comes from the extension (deploy/nginx).
IMAGES = {"jpg", "jpeg", "png", "gif", "bmp", "webp"}
VIDEOS = {"mp4", "webm"}
AUDIOS = {"mp3", "m4a", "aac", "ogg", "wav"}
WRITTEN_FOR = re.compile(rb"<!-- mospool-rows (\d+) -->")
KINDS = {"mms_mo": "MMS", "sms_mo": "SMS", "status": "delivery status", "other": "notice"}

# Day-page cells are cut to these lengths, so a row (and so a page) has a size bound whatever arrives.
KIND_CHARS = 16
CELL_CHARS = 32
SNIPPET_CHARS = 80


def zone_named(name: str) -> dt.tzinfo:
    """The zone the pages show times in ([pages] timezone): UTC, or an IANA name."""
    return dt.UTC if name == "UTC" else zoneinfo.ZoneInfo(name)


@dataclass(frozen=True)
class Shown:
    """A time as a page shows it: to the second, in the pages' zone and naming it; ``iso`` is the exact
    time as recorded, kept in the page (a tooltip, and the datetime a browser or a script may read).

    It writes its own markup (``__html__``, which Jinja's autoescape honours), escaped here: cheaper than a
    macro call for each of a page's times."""

    text: str
    iso: str

    def __html__(self) -> str:
        iso = markupsafe.escape(self.iso)
        return f'<time datetime="{iso}" title="{iso}">{markupsafe.escape(self.text)}</time>'


def shown_time(value: Any, zone: dt.tzinfo) -> Shown | str | None:
    """An ISO time as ``Shown``; any other text as it is (a Sinch timestamp we could not read)."""
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    local = (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).astimezone(zone)
    return Shown(local.strftime("%Y-%m-%d %H:%M:%S %Z"), str(value))


def stamp(zone: dt.tzinfo) -> str:
    """Now, as the pages say when they were written."""
    return dt.datetime.now(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def href(*segments: str) -> str:
    """A relative link from spool-chosen names: each segment percent-encoded (no scheme can sneak in)."""
    return "/".join(urllib.parse.quote(segment, safe="") for segment in segments)


def day_of(spool_id: str) -> str | None:
    """The YYYY-MM-DD folder of a spool id, or None if it is not one."""
    try:
        return id_day(spool_id)
    except ValueError:
        return None


@dataclass(frozen=True)
class Row:
    """One notice in a day listing, every text cut to a bound."""

    link: str
    time: str  # HH:MM:SS in the pages' zone
    date: str | None  # its date there, when that is not the page's (UTC) day
    iso: str  # the exact receive time, as recorded
    kind: str
    sender: str
    recipient: str
    snippet: str
    preview: str | None
    outcome: str


def day_row(row: Mapping[str, Any], zone: dt.tzinfo = dt.UTC) -> Row:
    """A messages-table row (index.py) as shown on its day page."""
    spool_id, position = str(row["spool_id"]), int(row["position"])
    anchor = f"#notice-{position}" if position > 1 else ""
    image = row["first_image"]
    preview = _media_link(spool_id, str(image)) if image else None
    received = _received(row["received_at"], spool_id)
    local = received.astimezone(zone) if received else None
    other_day = local is not None and received is not None and local.date() != received.date()
    return Row(
        link=href(spool_id, PAGE) + anchor,
        time=local.strftime("%H:%M:%S") if local else "?",
        date=local.date().isoformat() if local and other_day else None,
        iso=received.isoformat() if received else "",
        kind=KINDS.get(str(row["kind"]), _cut(row["kind"], KIND_CHARS) or "?"),
        sender=_cut(row["sender"], CELL_CHARS),
        recipient=_cut(row["recipient"], CELL_CHARS),
        snippet=_cut(_what_it_says(row), SNIPPET_CHARS),
        preview=preview,
        outcome=_outcome(row),
    )


def _what_it_says(row: Mapping[str, Any]) -> str | None:
    """Its subject or text; a delivery-status notice has none, and says its status (and details) instead."""
    if row["subject"] or row["text"]:
        return str(row["subject"] or row["text"])
    status, details = row.get("status"), row.get("status_details")
    if status and details and details != status:
        return f"{status}: {details}"
    return str(status or details) if status or details else None


def _media_link(spool_id: str, name: str) -> str | None:
    inner = media_file_name(name)
    if inner is None or inner.rsplit(".", 1)[-1].lower() not in IMAGES:
        return None
    return href(spool_id, MEDIA, inner)


def _received(received_at: Any, spool_id: str) -> dt.datetime | None:
    """When it was received (UTC): as recorded, else as its id says; None if neither can be read."""
    try:
        moment = dt.datetime.fromisoformat(str(received_at))
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    except ValueError:
        return id_time(spool_id) if day_of(spool_id) else None


def _outcome(row: Mapping[str, Any]) -> str:
    if row["state"] == State.FAILED:
        return _cut(row["reason"], SNIPPET_CHARS) or "failed"
    if row["state"] == State.DUPLICATES:
        return f"duplicate of {_cut(row['duplicate_of'], CELL_CHARS)}"
    count = int(row["media_count"] or 0)
    return f"{count} media" if count else "filed"


def _cut(value: Any, limit: int) -> str:
    return shortened(str(value), limit) if value else ""


@dataclass(frozen=True)
class PageLink:
    link: str
    label: str


def day_page(
    state: str,
    day: str,
    rows: Sequence[Row],
    pages: Sequence[PageLink],
    note: str,
    generated: str,
    zone: dt.tzinfo = dt.UTC,
    total: int | None = None,
) -> bytes:
    """One page of a day's listing, newest first, with links to the day's other pages; ``total``: on the
    day's index page, the notifications it was written for (a comment the worker reads back at start)."""
    html = ENV.get_template("day.html").render(
        state=state,
        day=day,
        rows=rows,
        pages=pages,
        note=note,
        generated=generated,
        zone=str(zone),
        total=total,
    )
    return html.encode()


def written_for(page: bytes) -> int | None:
    """The ``total`` a day's index page was written for, or None."""
    found = WRITTEN_FOR.search(page)
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class DayCount:
    link: str
    day: str
    count: int


@dataclass(frozen=True)
class NodeSeen:
    """A VM filing into a shared index, and when it last said so."""

    name: str
    last_seen: str


@dataclass
class Overview:
    """What the spool root page shows."""

    counts: dict[str, int]
    waiting: int
    waiting_capped: bool
    oldest_waiting_seconds: float
    deferred: int
    days: dict[str, list[DayCount]]
    reasons: list[tuple[str, int]]
    generated: str
    outputs: list[StatusPart] = field(default_factory=list)  # what each output that ever ran adds
    node: str = ""  # this VM: every record on these pages is in its spool
    nodes: list[NodeSeen] = field(default_factory=list)  # with a shared index: every VM filing into it


def root_page(overview: Overview) -> bytes:
    html = ENV.get_template("root.html").render(
        o=overview, reasons=[(_cut(r, 160), n) for r, n in overview.reasons]
    )
    return html.encode()
