"""The index's one interface on both backends (SQLite in the spool, PostgreSQL): the same claims, the same rows,
the same answers to the pages and the CLI. Spools filed with the same postback ids on each backend must
read back identically."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mospool.config import IndexSettings, Settings, replace
from mospool.index import Index, Search, open_index
from mospool.store import Owner, Spool, State, new_id
from mospool.store.records import day_range, state_range
from mospool.worker import Worker
from tests import index_db
from tests.build import BATCH, LOCAL_MEDIA, STATUS_XML, batch, mms, publish, read_json, sms

NODE = "vm-a"
START = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)


@pytest.fixture
def opened(tmp_path: Path, index_settings: IndexSettings) -> Iterator[Callable[[], Index]]:
    """open() the index of tmp_path/spool on the backend of this run, as many times as a test likes."""
    settings = Settings.for_spool(tmp_path / "spool", index=index_settings)
    Spool(settings.spool.dir).create()
    settings = _with_node(settings, NODE)
    made: list[Index] = []

    def open_() -> Index:
        made.append(open_index(settings))
        return made[-1]

    yield open_
    for index in made:
        index.close()


def _with_node(settings: Settings, node: str) -> Settings:
    return replace(settings, "spool", node=node)


def test_the_first_claim_wins_and_a_claim_is_idempotent_for_its_postback(opened: Callable[[], Index]) -> None:
    index = opened()
    first, second = new_id(), new_id()
    assert index.claim("SMS_MO|N401|t1", first) == Owner(first, NODE)
    assert index.claim("SMS_MO|N401|t1", second) == Owner(first, NODE)
    assert index.claim("SMS_MO|N401|t1", first) == Owner(first, NODE)  # its own claim, asked again


def test_a_released_key_is_free_and_a_deferred_one_is_held_across_a_restart(
    opened: Callable[[], Index],
) -> None:
    index = opened()
    failed, deferred, later = new_id(), new_id(), new_id()
    index.claim("k-failed", failed)
    index.release(["k-failed"], failed)
    assert index.claim("k-failed", later) == Owner(later, NODE)
    index.claim("k-deferred", deferred)
    index.defer(["k-deferred"], deferred, START.isoformat())
    index.close()
    reopened = opened()  # a worker restart
    assert reopened.claim("k-deferred", later) == Owner(deferred, NODE)


# --- the same spool on both backends reads back the same


def file_the_same_postbacks(worker: Worker) -> dict[str, str]:
    """Postbacks with fixed ids (so both backends' spools hold the same folders), filed by the worker."""
    bodies = {
        "sms": (sms("t-1", "INFO please", sender="15550001", keyword="INFO"), "application/json"),
        "again": (sms("t-1", "INFO please (resent)", sender="15550001", keyword="INFO"), "application/json"),
        "stop": (sms("t-2", "stop", sender="15550002", keyword="STOP"), "application/json"),
        "batch": (BATCH, "text/xml"),
        "status": (STATUS_XML, "text/xml"),
        "broken": (b"<postback><origin>MMS_MO</orig", "text/xml"),
        "nul": (sms("t-nul", "a NUL \u0000 in the text", sender="15550003"), "application/json"),
        "gone": (mms("t-gone", "javascript:alert(1)"), "application/json"),
        **{f"late-{n}": (sms(f"late-{n}", f"text {n}"), "application/json") for n in range(7)},
    }
    ids = {}
    for n, (name, (body, content_type)) in enumerate(bodies.items()):
        when = START + dt.timedelta(minutes=n)
        meta = {"received_at": when.isoformat(), "content_type": content_type, "remote_addr": "192.0.2.1"}
        ids[name] = worker.spool.publish(meta, body, when.strftime("%Y%m%dT%H%M%S.%fZ-") + f"{n:012x}")
        if name == "sms":
            worker.drain()  # filed before its resend arrives
    worker.drain()
    return ids


@pytest.fixture
def both(pg_url: str, tmp_path: Path) -> Iterator[tuple[Index, Index]]:
    """The same postbacks filed by a worker on SQLite and one on PostgreSQL: (sqlite index, postgres index)."""
    indexes: list[Index] = []
    for name, where in (("sqlite", IndexSettings()), ("postgresql", IndexSettings(url=pg_url))):
        worker = Worker(_with_node(Settings.for_spool(tmp_path / name, index=where, media=LOCAL_MEDIA), NODE))
        file_the_same_postbacks(worker)
        indexes.append(worker.index)
    yield indexes[0], indexes[1]
    for index in indexes:
        index.close()


SEARCHES = [
    Search(),
    Search(senders=("15550001", "+15550001")),
    Search(keyword="info"),
    Search(keyword="STOP"),
    Search(tracking_id="t-1"),
    Search(kind="sms_mo", limit=3),
    Search(state="failed"),
    Search(state="duplicates"),
    Search(since=START.date(), until=START.date()),
    Search(since=START.date() + dt.timedelta(days=1)),
    Search(recipients=("28444", "+28444")),
]


@pytest.mark.parametrize("search", SEARCHES, ids=lambda search: repr(search)[7:60])
def test_find_answers_the_same_on_both_backends(both: tuple[Index, Index], search: Search) -> None:
    lite, postgres = both
    found = [as_postgres_keeps_it(row) for row in lite.find(search)]
    assert postgres.find(search) == found
    assert found or search.since == START.date() + dt.timedelta(days=1)


def as_postgres_keeps_it(row: dict[str, object]) -> dict[str, object]:
    """PostgreSQL's text cannot hold U+0000: its index has U+FFFD there (message.json keeps the original)."""
    return {
        key: value.replace("\x00", "\ufffd") if isinstance(value, str) else value
        for key, value in row.items()
    }


def test_find_gives_every_column_the_cli_shows(both: tuple[Index, Index]) -> None:
    for index in both:
        (duplicate,) = index.find(Search(state="duplicates"))
        assert (duplicate["node"], duplicate["from"], duplicate["to"]) == (NODE, "15550001", "18885551234")
        assert duplicate["duplicate_of_node"] == NODE and duplicate["folder"].startswith("duplicates/")
        (failed, gone) = index.find(Search(state="failed"))
        assert {failed["reason"].split(":")[0], gone["reason"].split(":")[0]} == {"parse", "media"}
        (nul,) = index.find(Search(tracking_id="t-nul"))
        assert nul["text"].startswith("a NUL ") and nul["text"].endswith(" in the text")


def test_the_pages_queries_answer_the_same_on_both_backends(both: tuple[Index, Index]) -> None:
    day = START.date().isoformat()
    low, high = day_range(State.PROCESSED, day)
    answers = [
        (
            index.message_count(low, high),
            index.message_count(low, low + "20261120T0805"),
            index.folder_count(low, high),
            index.day_rows(low, high, 4, newest=True),
            index.day_rows(low, high, 3, offset=2),
            index.page_edges(low, high, 9, 3),
            index.failure_reasons(*state_range(State.FAILED), 20),
            [row["spool_id"] for row in index.locate("20261120T0801")],
        )
        for index in both
    ]
    assert answers[0] == answers[1]
    count, early, folders, newest, middle, edges, reasons, located = answers[0]
    assert (count, folders) == (14, 12)  # the batch is one folder of three notices
    assert early == 6 and len(newest) == 4 and len(middle) == 3
    assert sorted(edges) == [1, 3, 4, 6, 7, 9]
    assert [n for _, n in reasons] == [1, 1]
    assert len(located) == 1


def test_every_row_names_the_node_that_filed_it(both: tuple[Index, Index]) -> None:
    for index in both:
        assert {row["node"] for row in index.find(Search(limit=1000))} == {NODE}
        assert [row["node"] for row in index.nodes()] == [NODE]


# --- SQLite: an index from an older release


V2_SCHEMA = """
CREATE TABLE records (key TEXT PRIMARY KEY, spool_id TEXT NOT NULL, state TEXT NOT NULL, received_at TEXT,
    folder TEXT, kind TEXT, origin TEXT, code TEXT, sender TEXT, recipient TEXT, keyword TEXT,
    tracking_id TEXT, operator_id TEXT, timestamp TEXT, subject TEXT, text TEXT);
CREATE TABLE duplicates (spool_id TEXT NOT NULL, key TEXT NOT NULL, duplicate_of TEXT NOT NULL,
    received_at TEXT, folder TEXT, PRIMARY KEY (spool_id, key));
CREATE TABLE messages (spool_id TEXT NOT NULL, position INTEGER NOT NULL, state TEXT NOT NULL,
    received_at TEXT, folder TEXT NOT NULL, kind TEXT, origin TEXT, code TEXT, sender TEXT, recipient TEXT,
    keyword TEXT, tracking_id TEXT, operator_id TEXT, timestamp TEXT, subject TEXT, text TEXT,
    media_count INTEGER NOT NULL DEFAULT 0, first_image TEXT, reason TEXT, duplicate_of TEXT,
    PRIMARY KEY (spool_id, position));
PRAGMA user_version = 2;
"""


def test_an_index_of_the_previous_release_gains_its_nodes(make_worker: Callable[..., Worker]) -> None:
    worker = make_worker()
    first = publish(worker.spool, sms("old-1"))
    worker.drain()
    worker.close()
    worker.spool.index_file.unlink()
    old = sqlite3.connect(worker.spool.index_file)
    old.executescript(V2_SCHEMA)
    old.close()
    again = make_worker()
    try:
        (row,) = again.index.find(Search())
        assert (row["id"], row["node"]) == (first, again.settings.spool.node)
        duplicate = publish(again.spool, sms("old-1"))
        again.drain()
        note = read_json(again.spool.record_dir(State.DUPLICATES, duplicate) / "duplicate.json")
        assert note["duplicate_of"] == first
    finally:
        again.close()
    assert index_db.rows(again.settings, "PRAGMA user_version") == [(4,)]


def test_a_batch_of_notices_keeps_its_order_in_every_answer(
    make_worker: Callable[..., Worker], index_settings: IndexSettings
) -> None:
    worker = make_worker(index=index_settings)
    try:
        postback_id = publish(worker.spool, batch("b-1", "b-2", "b-3"), "text/xml")
        worker.drain()
        found = worker.index.find(Search())
        assert [(row["id"], row["tracking_id"]) for row in found] == [
            (postback_id, f"b-{n}") for n in (1, 2, 3)
        ]
    finally:
        worker.close()
