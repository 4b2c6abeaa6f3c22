"""`mospool find --text`: the index's full-text table over subject and text, ranked, kept in step with every
change to the notices (filing, refiling, retry, dismiss, purge, rebuild), on a spool filed by the worker."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mospool.cli import main
from mospool.config import Settings
from mospool.index import Index, text_query
from mospool.store import Spool
from mospool.worker import Worker
from tests.build import batch, mms, publish, sms
from tests.servers import write_config

DAY = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)


def at(minutes: int) -> dt.datetime:
    return DAY + dt.timedelta(minutes=minutes)


@pytest.fixture
def filed(make_worker: Callable[..., Worker], tmp_path: Path) -> tuple[Worker, Path, dict[str, str]]:
    """A worker's spool with a few messages about orders and screens, and a config for the CLI."""
    worker = make_worker()
    spool = worker.spool
    ids = {
        "order": publish(spool, sms("s-1", "Where is my order? It was due Monday"), when=at(1)),
        "twice": publish(spool, sms("s-2", "Order 55: the order never came", sender="15550002"), when=at(2)),
        "screen": publish(
            spool, mms("m-1", subject="Cracked screen", text="photo of the screen"), when=at(3)
        ),
        "accents": publish(spool, sms("s-3", "Crème brûlée, s'il vous plaît"), when=at(4)),
        "bad": publish(spool, b"<postback><origin>SMS_MO</orig", "text/xml", when=at(5)),
        "batch": publish(
            spool, batch("b-1", "b-2", text="batch note {n} about orders"), "text/xml", when=at(6)
        ),
    }
    assert worker.drain() == 6
    return worker, write_config(tmp_path / "config.ini", spool.root), ids


def find(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    assert main(["--config", str(config), "--json", "find", *args]) == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


def test_text_search_ranks_hits_and_names_their_day_and_page(
    filed: tuple[Worker, Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    worker, config, ids = filed
    rows = find(config, capsys, "--text", "order")
    assert [row["id"] for row in rows] == [ids["twice"], ids["order"]]  # "order" twice ranks first
    best = rows[0]
    assert best["folder"] == f"processed/2026-11-24/{ids['twice']}"
    assert best["day"] == "processed/2026-11-24/index.html"
    assert best["page"] == f"processed/2026-11-24/{ids['twice']}/index.html"
    assert (worker.spool.root / best["page"]).is_file() and (worker.spool.root / best["day"]).is_file()
    assert best["matched"] == "[Order] 55: the [order] never came"
    prefixed = [row["tracking_id"] for row in find(config, capsys, "--text", "order*")]
    assert sorted(prefixed) == ["b-1", "b-2", "s-1", "s-2"]  # and the batch's "orders"


def test_every_word_must_match_in_the_subject_or_the_text(
    filed: tuple[Worker, Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    _, config, ids = filed
    assert [row["id"] for row in find(config, capsys, "--text", "cracked photo")] == [ids["screen"]]
    assert find(config, capsys, "--text", "cracked order") == []
    assert [row["id"] for row in find(config, capsys, "--text", "creme brulee")] == [ids["accents"]]
    rows = find(config, capsys, "--text", "note 2")
    assert [(row["id"], row["tracking_id"]) for row in rows] == [
        (ids["batch"], "b-2")
    ]  # one notice of a batch


@pytest.mark.parametrize("words", ['"', "AND", "order OR", "NEAR(a b)", "subject:order", "-order", "*", "()"])
def test_what_a_person_types_is_words_never_query_syntax(
    filed: tuple[Worker, Path, dict[str, str]], capsys: pytest.CaptureFixture[str], words: str
) -> None:
    _, config, _ = filed
    find(config, capsys, f"--text={words}")  # no error, whatever FTS5 would make of it


def test_text_combines_with_the_other_filters(
    filed: tuple[Worker, Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    _, config, ids = filed
    rows = find(config, capsys, "--text", "order", "--from", "+1 555 000 2")
    assert [row["id"] for row in rows] == [ids["twice"]]
    assert find(config, capsys, "--text", "order", "--since", "2026-11-25") == []
    assert find(config, capsys, "--text", "order", "--state", "failed") == []


def test_the_search_follows_retry_dismiss_purge_and_rebuild(
    filed: tuple[Worker, Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    worker, config, ids = filed
    worker.close()
    index = Index(worker.spool.root)
    try:
        index.unfiled(ids["order"])  # as retry does: not searchable while it waits
        assert [row["id"] for row in find(config, capsys, "--text", "order")] == [ids["twice"]]
        index.moved(ids["twice"], "dismissed", f"dismissed/2026-11-24/{ids['twice']}")
        (row,) = find(config, capsys, "--text", "order")
        assert (row["state"], row["folder"]) == ("dismissed", f"dismissed/2026-11-24/{ids['twice']}")
        assert index.forget_folders("dismissed/2026-11-24/") == 1
        assert find(config, capsys, "--text", "order") == []
        assert index.rebuild() == 6  # from the folders, where nothing moved: both orders are processed still
        assert [row["id"] for row in find(config, capsys, "--text", "order")] == [ids["twice"], ids["order"]]
        assert index.query("INSERT INTO messages_text (messages_text) VALUES ('integrity-check')") == []
    finally:
        index.close()


def test_a_record_filed_again_is_found_once(
    make_worker: Callable[..., Worker], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The filer's crash recovery indexes a folder again: the search table must not count it twice."""
    worker = make_worker()
    postback_id = publish(worker.spool, sms("s-1", "parcel lost"))
    worker.drain()
    worker.index.rebuild()
    folder = worker.spool.records.find(postback_id).path
    worker.index.filed([worker.spool.records.read(folder)])
    worker.close()
    config = write_config(tmp_path / "config.ini", worker.spool.root)
    assert [row["id"] for row in find(config, capsys, "--text", "parcel")] == [postback_id]
    index = Index(worker.spool.root)
    assert index.query("INSERT INTO messages_text (messages_text) VALUES ('integrity-check')") == []
    index.close()


def test_an_index_from_the_release_before_is_made_anew_with_its_search(spool: Spool, tmp_path: Path) -> None:
    """Schema 2 had no search table and no status columns: opening it rebuilds the derived tables, and keeps
    the records table (the dedup keys of deferred postbacks)."""
    Index(spool.root).close()
    db = sqlite3.connect(spool.index_file)
    db.executescript(
        "DROP TABLE messages_text; DROP TABLE messages;"
        "CREATE TABLE messages (spool_id TEXT NOT NULL, position INTEGER NOT NULL, state TEXT NOT NULL,"
        " folder TEXT NOT NULL, subject TEXT, text TEXT, PRIMARY KEY (spool_id, position));"
        "INSERT INTO records (key, spool_id, state) VALUES ('k', '20261124T090000.000000Z-000000000001', 'deferred');"
        "PRAGMA user_version = 2;"
    )
    db.close()
    worker = Worker(Settings.for_spool(spool.root))
    publish(worker.spool, sms("s-1", "parcel lost"))
    worker.drain()
    worker.close()
    index = Index(spool.root)
    try:
        assert len(index.search_text("parcel", "messages.status", [], (), 10)) == 1
        assert index.claim("k", "another") == "20261124T090000.000000Z-000000000001"
    finally:
        index.close()


@pytest.mark.parametrize(
    ("typed", "query"),
    [
        ("order", '"order"'),
        ("two words", '"two" "words"'),
        ('say "hi"', '"say" """hi"""'),
        ("ord*", '"ord"*'),
        ("*", '"*"'),
        ("", '""'),
    ],
)
def test_text_query_quotes_each_word(typed: str, query: str) -> None:
    assert text_query(typed) == query
