"""The HTML pages on a real spool filed by the worker: hostile values stay text, links stay local, days paginate."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from mospool import unprintable
from mospool.cli import main as cli_main
from mospool.config import IndexSettings, Settings, load_settings
from mospool.filer import IndexStage
from mospool.index import open_index
from mospool.outputs.pages import Pages, rebuild
from mospool.outputs.pages.record_page import TEXT_LIMIT, record_page
from mospool.outputs.pages.render import (
    DayCount,
    Overview,
    PageLink,
    day_page,
    day_row,
    root_page,
)
from mospool.outputs.pages.views import (
    DAY_PAGE_BYTES_MAX,
    DAYS_SHOWN,
    REASONS_SHOWN,
    ROOT_PAGE_BYTES_MAX,
    ROWS_PER_PAGE,
    RootPage,
)
from mospool.store import Folder, Outbox, Spool, State, new_id, read_folder
from mospool.store.layout import day_page_name
from mospool.worker import Worker
from tests.build import publish
from tests.pages_html import HTML, assert_inert, parse_bytes, parse_strictly, text_of
from tests.pages_spool import (
    ATTRIBUTE,
    HOSTILE_STRINGS,
    LONG_SUBJECT,
    SCRIPT,
    Filed,
    sms,
)
from tests.servers import write_config


def page_of(spool: Spool, state: str, postback_id: str) -> Path:
    return spool.record_dir(state, postback_id) / "index.html"


def every_page(spool: Spool) -> list[Path]:
    return sorted(spool.root.rglob("*.html"))


def test_every_page_is_valid_html_with_nothing_that_runs_or_reaches_out(filed: tuple[Spool, Filed]) -> None:
    spool, _ = filed
    pages = every_page(spool)
    assert len(pages) >= 13  # 9 records, 3 days, the root
    for page in pages:
        assert_inert(parse_strictly(page))


def test_hostile_values_are_shown_as_text(filed: tuple[Spool, Filed]) -> None:
    spool, ids = filed
    page = page_of(spool, "processed", ids.hostile)
    raw = page.read_text()
    shown = text_of(parse_strictly(page))
    for hostile in HOSTILE_STRINGS:
        assert unprintable.shown(hostile) in shown
    assert SCRIPT not in raw and ATTRIBUTE not in raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    # the text is kept exactly, but for its bidi controls: shown by name, not obeyed
    assert "مرحبا بالعالم [U+202E]evil[U+202C] 👍🏽 שלום 🇺🇦" in raw
    assert "\u202e" not in raw and "\u202c" not in raw
    day = text_of(parse_strictly(spool.processed / page.parent.parent.name / "index.html"))
    assert SCRIPT in day and ATTRIBUTE[:30] in day


def test_a_javascript_media_url_is_text_on_a_failed_page_with_the_retry_command(
    filed: tuple[Spool, Filed],
) -> None:
    spool, ids = filed
    page = page_of(spool, "failed", ids.javascript_media)
    document = parse_strictly(page)
    shown = text_of(document)
    assert "javascript:alert(document.domain)" in shown
    assert f"mospool retry {ids.javascript_media}" in shown and "python -m" not in shown
    assert "Failed at stage “media”" in shown
    assert "javascript:" not in "".join(str(e.attrib) for e in document.iter())


def test_a_missing_part_names_its_error_in_plain_words(filed: tuple[Spool, Filed]) -> None:
    spool, ids = filed
    shown = text_of(parse_strictly(page_of(spool, "failed", ids.missing_media)))
    assert "A media part of the MMS could not be downloaded." in shown
    assert "HTTP 404" in shown
    assert "gone-1" in shown and "17745550001" in shown  # who sent it, on a failed page too


def test_a_50000_character_subject_is_cut_on_its_page_and_in_the_day_and_whole_in_the_record(
    filed: tuple[Spool, Filed],
) -> None:
    spool, ids = filed
    page = page_of(spool, "processed", ids.long_subject)
    shown = text_of(parse_strictly(page))
    assert "S" * TEXT_LIMIT in shown and "S" * (TEXT_LIMIT + 1) not in shown and "<b>end</b>" not in shown
    assert "The subject is cut short here: the whole of it is in the body and in the message file" in shown
    assert len(page.read_bytes()) < TEXT_LIMIT + 16 * 1024
    assert read_folder(page.parent, State.PROCESSED).messages[0]["subject"] == LONG_SUBJECT
    day = (page.parent.parent / "index.html").read_text()
    assert "S" * 200 not in day
    assert len(day.encode()) < 64 * 1024


def test_the_mms_page_shows_each_part_by_type_and_links_its_files(filed: tuple[Spool, Filed]) -> None:
    spool, ids = filed
    page = page_of(spool, "processed", ids.mms)
    document = parse_strictly(page)
    images = [e.attrib["src"] for e in document.iter(f"{HTML}img")]
    assert images == ["media/01-photo.jpg", "media/02-part.png"]
    links = {e.attrib["href"] for e in document.iter(f"{HTML}a")}
    assert {"body.json", "request.json", "message.json", "media/04-voice.amr", "../index.html"} <= links
    assert all((page.parent / link).exists() for link in links if not link.startswith("../"))
    shown = text_of(document)
    for expected in (
        "17745550001",
        "18885551234",
        "10000123434",
        "PHOTO",
        "mms-1",
        "2026-11-24 10:00:00 UTC",
    ):
        assert expected in shown
    assert "a text part <script>alert(1)</script>" in shown  # the text part, as text
    assert "AMR voice recording" in shown
    assert "/m/photo.jpg" in shown  # the URL it came from, as text only


def test_a_duplicate_links_to_the_original_page(filed: tuple[Spool, Filed]) -> None:
    spool, ids = filed
    page = page_of(spool, "duplicates", ids.duplicate)
    links = [e.attrib["href"] for e in parse_strictly(page).iter(f"{HTML}a") if ids.sms in e.attrib["href"]]
    assert links == [f"../../../processed/{page.parent.parent.name}/{ids.sms}/index.html"]
    assert (page.parent / links[0]).resolve() == page_of(spool, "processed", ids.sms).resolve()
    assert "Where is my order?" in text_of(parse_strictly(page))


def test_a_batch_has_one_section_per_notice_and_day_rows_point_at_them(filed: tuple[Spool, Filed]) -> None:
    spool, ids = filed
    page = page_of(spool, "processed", ids.batch)
    sections = [e.attrib.get("id") for e in parse_strictly(page).iter(f"{HTML}section")]
    assert sections == ["notice-1", "notice-2"]
    day = parse_strictly(page.parent.parent / "index.html")
    assert f"{ids.batch}/index.html#notice-2" in {e.attrib["href"] for e in day.iter(f"{HTML}a")}


def test_an_unreadable_postback_still_gets_a_page(filed: tuple[Spool, Filed]) -> None:
    spool, ids = filed
    shown = text_of(parse_strictly(page_of(spool, "failed", ids.unreadable)))
    assert "Failed at stage “parse”" in shown
    assert f"mospool retry {ids.unreadable}" in shown


def test_the_root_page_counts_states_and_links_every_day(filed: tuple[Spool, Filed]) -> None:
    spool, ids = filed
    document = parse_strictly(spool.root / "index.html")
    day = spool.record_dir("processed", ids.mms).parent.name
    links = {e.attrib["href"] for e in document.iter(f"{HTML}a")}
    for state in ("processed", "failed", "duplicates"):
        assert f"{state}/{day}/index.html" in links
        assert (spool.root / state / day / "index.html").is_file()
    shown = text_of(document)
    assert "media: HTTP 404 Not Found" in shown
    assert "parse: unreadable body" in shown


def test_the_cli_still_sees_only_record_folders_beside_the_day_pages(
    filed: tuple[Spool, Filed], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool, _ = filed
    config = write_config(tmp_path / "config.ini", spool.root)
    assert cli_main(["--config", str(config), "--json", "list", "failed"]) == 0
    listed = capsys.readouterr().out
    assert "index.html" not in listed
    assert listed.count('"id"') == 3


# --- pagination: flat cost as a day grows


def publish_at(spool: Spool, when: dt.datetime, n: int) -> str:
    return publish(spool, sms(f"day-{n}", f"text {n}"), when=when)


def day_worker(make_worker: Callable[..., Worker], index: IndexSettings) -> Worker:
    worker = make_worker(outputs=[], index=index)
    later = itertools.count(0, 60)  # each drain's tick comes a minute after the last: no debounce in the way
    pages = Pages(worker.spool, worker.index, worker.settings, per_page=3, clock=lambda: float(next(later)))
    worker.filer.outputs = [IndexStage(worker.index), pages]
    return worker


def rows_of(page: Path) -> list[str]:
    """The subject/text cell of each row, newest first."""
    document = parse_strictly(page)
    return [text_of(list(row)[4]) for row in document.iter(f"{HTML}tr")][1:]


def test_a_day_is_cut_into_immutable_full_pages_and_a_short_newest_page(
    make_worker: Callable[..., Worker], index_settings: IndexSettings
) -> None:
    worker = day_worker(make_worker, index_settings)
    spool = worker.spool
    start = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
    for n in range(1, 9):
        publish_at(spool, start + dt.timedelta(minutes=n), n)
    worker.drain()
    day = spool.processed / "2026-11-20"
    assert sorted(p.name for p in day.glob("*.html")) == ["index.html", "page-0001.html", "page-0002.html"]
    assert rows_of(day / "index.html") == ["text 8", "text 7", "text 6"]
    assert rows_of(day / "page-0001.html") == ["text 3", "text 2", "text 1"]
    assert rows_of(day / "page-0002.html") == ["text 6", "text 5", "text 4"]
    full = (day / "page-0001.html").stat().st_ino, (day / "page-0002.html").stat().st_ino

    publish_at(spool, start + dt.timedelta(minutes=9), 9)  # in order: only the newest page is written
    worker.drain()
    assert ((day / "page-0001.html").stat().st_ino, (day / "page-0002.html").stat().st_ino) == full
    assert rows_of(day / "page-0003.html") == rows_of(day / "index.html")
    assert rows_of(day / "index.html") == ["text 9", "text 8", "text 7"]

    # filed late (after a media retry, say): its page and every later one are rewritten
    publish_at(spool, start + dt.timedelta(seconds=30), 0)
    worker.drain()
    assert rows_of(day / "page-0001.html") == ["text 2", "text 1", "text 0"]
    assert rows_of(day / "page-0002.html") == ["text 5", "text 4", "text 3"]
    assert rows_of(day / "page-0003.html") == ["text 8", "text 7", "text 6"]
    assert rows_of(day / "index.html") == ["text 9", "text 8", "text 7"]
    assert not (day / "page-0004.html").exists()
    assert page_links(day / "index.html") == [
        (day_page_name(3), "08:06 to 08:08"),
        (day_page_name(2), "08:03 to 08:05"),
        (day_page_name(1), "08:00 to 08:02"),
    ]
    written = page_links(day / "index.html")
    worker.close()
    index = open_index(worker.settings)
    rebuild(Spool(spool.root), index, worker.settings, per_page=3)  # a new run looks the labels up
    index.close()
    assert page_links(day / "index.html") == written
    assert page_links(day / "page-0002.html") == [
        ("index.html", "newest"),
        (day_page_name(3), "newer"),
        (day_page_name(1), "older"),
    ]


def page_links(page: Path) -> list[tuple[str, str]]:
    found = parse_strictly(page).iter(f"{HTML}a")
    return [
        (e.attrib["href"], text_of(e))
        for e in found
        if e.attrib["href"].split("#")[0].endswith(".html") and "/" not in e.attrib["href"]
    ]


def test_pages_rebuild_makes_every_page_of_an_existing_spool(
    make_worker: Callable[..., Worker], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = make_worker(outputs=[])  # filed before pages existed
    start = dt.datetime(2026, 11, 21, 9, 0, tzinfo=dt.UTC)
    ids = [publish_at(worker.spool, start + dt.timedelta(minutes=n), n) for n in range(3)]
    worker.drain()
    worker.close()
    assert not list(worker.spool.root.rglob("*.html"))
    config = write_config(tmp_path / "config.ini", worker.spool.root)
    assert cli_main(["--config", str(config), "--json", "pages", "--rebuild"]) == 0
    assert '"record_pages": 3' in capsys.readouterr().out
    for postback_id in ids:
        assert_inert(parse_strictly(page_of(worker.spool, "processed", postback_id)))
    assert (worker.spool.processed / "2026-11-21" / "index.html").is_file()
    assert (worker.spool.root / "index.html").is_file()


def test_pages_can_be_turned_off(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.ini", tmp_path / "spool", {"pages": {"enabled": "no"}})
    worker = Worker(load_settings(config))
    publish_at(worker.spool, dt.datetime.now(dt.UTC), 1)
    worker.drain()
    worker.close()
    assert not list(worker.spool.root.rglob("*.html"))


# --- size bounds, with the worst a postback can put in each cell


def test_a_full_day_page_stays_under_its_bound_with_the_worst_cells(tmp_path: Path) -> None:
    hostile = {
        "spool_id": "20261126T100001.000001Z-955617268ed8", "position": 2, "state": "failed",
        "received_at": "2026-11-26T10:00:01+00:00", "kind": "<" * 500, "sender": '"' * 5000,
        "recipient": '"' * 5000, "subject": '"' * 5000, "text": None, "media_count": 1,
        "first_image": "media/01-" + "p" * 60 + ".jpeg", "reason": '"' * 5000, "duplicate_of": None,
    }  # fmt: skip
    rows = [day_row(hostile) for _ in range(ROWS_PER_PAGE)]
    links = [PageLink(day_page_name(n), "23:59 to 23:59") for n in range(400, 0, -1)]
    page = day_page("duplicates", "2026-11-26", rows, links, "x" * 100, "2026-11-26 10:00:00 UTC")
    assert len(page) < DAY_PAGE_BYTES_MAX
    assert_inert(parse_bytes(page))


def test_the_root_page_stays_under_its_bound_with_a_long_retention_and_many_reasons() -> None:
    days = [DayCount(f"processed/{n}/index.html", "2026-11-26", 10**9) for n in range(DAYS_SHOWN)]
    overview = Overview(
        counts={"processed": 10**9, "failed": 10**9, "duplicates": 10**9}, waiting=5000, waiting_capped=True,
        oldest_waiting_seconds=10**9, deferred=10**6,
        days={"processed": days, "failed": days, "duplicates": days},
        reasons=[('"' * 5000, 10**9)] * REASONS_SHOWN, generated="2026-11-26 10:00:00 UTC",
    )  # fmt: skip
    page = root_page(overview)
    assert len(page) < ROOT_PAGE_BYTES_MAX
    assert_inert(parse_bytes(page))


def test_a_media_entry_that_is_not_a_plain_file_of_media_gets_no_link(tmp_path: Path) -> None:
    """Defence in depth: message.json is ours, but a page never links outside the record's media/."""
    folder = tmp_path / "processed" / "2026-11-26" / "20261126T100001.000001Z-955617268ed8"
    (folder / "media").mkdir(parents=True)
    names = [
        "media/../../../index.sqlite3",
        "media/..",
        "../request.json",
        "javascript:alert(1)",
        "media/a/b.jpg",
    ]
    message = {"kind": "mms_mo", "from": "1", "media": [{"url": name, "file": name} for name in names]}
    page = folder / "index.html"
    page.write_bytes(record_page(Folder(State.PROCESSED, folder, folder.name, None, [message], None, None)))
    document = parse_strictly(page)
    assert_inert(document)
    links = {
        e.attrib.get("href") or e.attrib.get("src")
        for e in document.iter()
        if {"href", "src"} & set(e.attrib)
    }
    assert links == {"../../../index.html", "../index.html"}
    assert text_of(document).count("not downloaded") == len(names)


def test_a_dismissed_record_says_so_instead_of_offering_a_retry(
    filed: tuple[Spool, Filed], tmp_path: Path
) -> None:
    spool, ids = filed
    failed = spool.record_dir("failed", ids.missing_media)
    dismissed = tmp_path / "dismissed" / failed.parent.name / failed.name
    shutil.copytree(failed, dismissed)
    (dismissed / "index.html").write_bytes(record_page(read_folder(dismissed, State.DISMISSED)))
    shown = text_of(parse_strictly(dismissed / "index.html"))
    assert "HTTP 404" in shown and "An operator has dismissed it" in shown
    assert "mospool retry" not in shown


def test_the_root_page_shows_webhooks_waiting_and_undelivered(spool: Spool) -> None:
    settings = Settings.for_spool(spool.root)
    index = open_index(settings)
    root = RootPage(spool, index, settings)
    root.write()
    assert "Webhooks" not in text_of(parse_strictly(spool.root / "index.html"))  # never forwarded
    outbox = Outbox(spool.root)
    outbox.create()
    outbox.entry_path(f"{new_id()}.001", outbox.undelivered).write_text("{}")
    outbox.entry_path(f"{new_id()}.001").write_text("{}")
    outbox.entry_path(f"{new_id()}.002").write_text("{}")
    root.write()
    shown = " ".join(text_of(parse_strictly(spool.root / "index.html")).split())
    assert "Webhooks 2 in outbox/, 1 undelivered" in shown
    assert "1 webhook in undelivered/ (mospool list undelivered; mospool redeliver ID… or --all)" in shown
    index.close()


BIDI_AND_NUL = "+1 555 \u202e0001\u202c\u2066x\u2069\x00end"


def test_bidi_controls_and_nul_are_shown_not_obeyed_in_record_day_pages_and_titles(
    make_worker: Callable[..., Worker],
) -> None:
    worker = make_worker()  # pages on
    body = sms_json(sender=BIDI_AND_NUL, tracking=BIDI_AND_NUL, text=BIDI_AND_NUL)
    postback_id = publish(worker.spool, body)
    worker.drain()
    worker.close()
    record = worker.spool.record_dir(State.PROCESSED, postback_id)
    shown = "+1 555 [U+202E]0001[U+202C][U+2066]x[U+2069][U+0000]end"
    for page in (record / "index.html", record.parent / "index.html"):
        raw = page.read_text()
        assert not any(char in raw for char in "\u202e\u202c\u2066\u2069\x00"), page
        assert shown[:24] in text_of(parse_bytes(page.read_bytes())), page
    title = parse_strictly(record / "index.html").find(f"{HTML}head/{HTML}title")
    assert title is not None and title.text is not None
    assert title.text.startswith(f"SMS from {shown}")


def sms_json(sender: str, tracking: str, text: str) -> bytes:
    return json.dumps(
        {"origin": "SMS_MO", "code": "N211", "from": sender, "to": "28444", "tracking-id": tracking,
         "message-text": text}
    ).encode()  # fmt: skip
