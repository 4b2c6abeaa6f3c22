"""The pages read at a glance (issue 22, items 4 and 5): delivery-status notices say their status, record pages
show every field of one, and times are shown to the second in a zone the operator chooses, the exact time
kept in the page."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from mospool.config import ConfigError, load_settings
from mospool.outputs.pages import SECTION, PagesSettings
from mospool.store import Spool
from mospool.worker import Worker
from tests.build import STATUS_XML, publish, sms
from tests.pages_html import HTML, parse_strictly, shown_text, text_of
from tests.pages_spool import Filed
from tests.servers import write_config


def day_cells(page: Path, spool_id: str) -> list[str]:
    """The cells of the row that links to ``spool_id``'s page."""
    for row in parse_strictly(page).iter(f"{HTML}tr"):
        if any(spool_id in a.attrib.get("href", "") for a in row.iter(f"{HTML}a")):
            return [" ".join(text_of(cell).split()) for cell in row]
    raise AssertionError(f"no row for {spool_id} in {page}")


def fields_of(page: Path) -> list[tuple[str, str]]:
    """(name, value) of each <dt> and the <dd> after it."""
    found = []
    for listing in parse_strictly(page).iter(f"{HTML}dl"):
        cells = [text_of(cell) for cell in listing]
        found += list(zip(cells[::2], cells[1::2], strict=True))
    return found


def times_in(page: Path) -> list[tuple[str, str, str]]:
    """(text, datetime, title) of every <time> of a page."""
    return [
        (text_of(e), e.attrib["datetime"], e.attrib["title"])
        for e in parse_strictly(page).iter(f"{HTML}time")
    ]


# --- delivery-status notices (item 4)


def test_a_status_notice_says_its_status_and_details_on_its_day_page(filed: tuple[Spool, Filed]) -> None:
    spool, ids = filed
    day = spool.record_dir("processed", ids.status).parent / "index.html"
    _, kind, _, _, what, _, _ = day_cells(day, ids.status)
    assert kind == "delivery status"
    assert what == "Message Sent: Handset setting: mms with pass via xHTML"
    assert "(no text)" not in shown_text(day)


def test_a_status_with_only_details_says_them(make_worker: Callable[..., Worker]) -> None:
    worker = make_worker()
    postback_id = publish(worker.spool, STATUS_XML, "text/xml")  # <status-details> and no <status>
    worker.drain()
    worker.close()
    day = worker.spool.record_dir("processed", postback_id).parent / "index.html"
    assert day_cells(day, postback_id)[4] == "Delivered to handset"


def test_a_status_record_page_shows_its_details_and_mms_id(filed: tuple[Spool, Filed]) -> None:
    spool, ids = filed
    fields = fields_of(spool.record_dir("processed", ids.status) / "index.html")
    for field in (
        ("status", "Message Sent"),
        ("status details", "Handset setting: mms with pass via xHTML"),
        ("MMS id", "39755"),
        ("sent as", "SMS"),
        ("tracking id", "TU1TXzU5Nzg3Nw=="),
    ):
        assert field in fields


def test_the_kind_cell_is_one_unbroken_line(filed: tuple[Spool, Filed]) -> None:
    """The browser test measures it; here: the cell is styled not to wrap, and its column fits the label."""
    spool, ids = filed
    page = spool.record_dir("processed", ids.status).parent / "index.html"
    (row,) = [
        r
        for r in parse_strictly(page).iter(f"{HTML}tr")
        if any(ids.status in a.attrib.get("href", "") for a in r.iter(f"{HTML}a"))
    ]
    assert list(row)[1].attrib["class"] == "line"
    assert re.search(r"td\.line \{[^}]*white-space: nowrap", page.read_text())


# --- times (item 5)


def test_times_are_shown_to_the_second_in_utc_with_the_exact_time_kept(filed: tuple[Spool, Filed]) -> None:
    spool, ids = filed
    page = spool.record_dir("processed", ids.status) / "index.html"
    received, sinch = times_in(page)
    exact = received[1]
    assert dt.datetime.fromisoformat(exact).microsecond  # what the receiver recorded, microseconds and all
    assert received == (dt.datetime.fromisoformat(exact).strftime("%Y-%m-%d %H:%M:%S UTC"), exact, exact)
    assert sinch == ("2012-06-07 12:27:34 UTC", "2012-06-07T07:27:34-05:00", "2012-06-07T07:27:34-05:00")
    assert exact not in shown_text(page)  # shown once, readable; exact in the tooltip only
    day = page.parent.parent / "index.html"
    assert day_cells(day, ids.status)[0] == dt.datetime.fromisoformat(exact).strftime("%H:%M:%S")
    assert "(UTC, newest first)" in shown_text(day)
    assert re.search(r"written \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", shown_text(day))


def test_times_are_shown_in_the_configured_zone(make_worker: Callable[..., Worker]) -> None:
    worker = make_worker(pages=PagesSettings(timezone="America/New_York"))
    late = dt.datetime(2026, 11, 30, 3, 30, 5, 123456, tzinfo=dt.UTC)  # 22:30:05 the evening before there
    postback_id = publish(worker.spool, sms("s-1", "late"), when=late)
    worker.drain()
    worker.close()
    page = worker.spool.record_dir("processed", postback_id) / "index.html"
    assert times_in(page)[0] == ("2026-11-29 22:30:05 EST", late.isoformat(), late.isoformat())
    day = page.parent.parent / "index.html"
    assert page.parent.parent.name == "2026-11-30"  # folders stay by UTC day
    assert day_cells(day, postback_id)[0] == "22:30:052026-11-29"  # the local date, as it is another day
    assert "(a UTC day; times in America/New_York, newest first)" in shown_text(day)
    assert re.search(r"written \d{4}-\d\d-\d\d \d\d:\d\d:\d\d E[SD]T", shown_text(day))
    front = shown_text(worker.spool.front_page)
    assert re.search(r"written \d{4}-\d\d-\d\d \d\d:\d\d:\d\d E[SD]T", front)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", "EST5EDT,M3.2.0,M11.1.0"])
def test_an_unknown_zone_stops_start_up_naming_the_key(tmp_path: Path, zone: str) -> None:
    config = write_config(tmp_path / "config.ini", tmp_path / "spool", {"pages": {"timezone": zone}})
    with pytest.raises(ConfigError, match=r"\[pages\] timezone = .*IANA time zone name"):
        load_settings(config)


def test_utc_is_the_default_and_a_zone_is_read(tmp_path: Path) -> None:
    default = write_config(tmp_path / "default.ini", tmp_path / "spool")
    assert load_settings(default).output(SECTION).timezone == "UTC"
    paris = write_config(tmp_path / "paris.ini", tmp_path / "spool", {"pages": {"timezone": "Europe/Paris"}})
    assert load_settings(paris).output(SECTION).timezone == "Europe/Paris"
