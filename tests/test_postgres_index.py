"""The shared index's own promises, on a real PostgreSQL cluster (tests/pg.py): one winner per dedup key however
claims race, a claim whose outcome was lost resolved by reading it back, migrations under a lock, and two VMs
(two spools, two workers) sharing one index: one notice filed once, every record found with its node, each
VM's pages showing its own records."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mospool.cli import main as cli_main
from mospool.config import ConfigError, IndexSettings, Settings, load_settings, replace
from mospool.index import IndexUnavailable, Search, open_index, pg_schema
from mospool.index.postgres import PostgresIndex
from mospool.store import Owner, State, new_id
from mospool.worker import Worker
from tests.build import LOCAL_MEDIA, publish, read_json, sms
from tests.pg import Cluster, CuttingProxy
from tests.servers import REPO, free_port, write_config

PASSWORD = "s3cret pass, not in any config"


def shared(root: Path, url: str, node: str, password_file: Path | None = None) -> Settings:
    """A VM's settings: its own spool under root/<node>, the shared index at url."""
    index = IndexSettings(url=url, password_file=password_file)
    settings = Settings.for_spool(root / node / "spool", index=index, media=LOCAL_MEDIA)
    return replace(settings, "spool", node=node)


def vm_config(root: Path, url: str, node: str) -> Path:
    """The config.ini of a VM sharing the index, for the CLI."""
    sections = {"spool": {"node": node}, "index": {"url": url}}
    return write_config(root / node / "config.ini", root / node / "spool", sections)


def cli(config: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    code = cli_main(["--config", str(config), "--json", *args])
    return code, json.loads(capsys.readouterr().out or "null")


# --- dedup: a unique constraint, and nothing guessed


def test_of_two_vms_claiming_the_same_keys_at_once_exactly_one_wins(pg_url: str, tmp_path: Path) -> None:
    indexes = [PostgresIndex(shared(tmp_path, pg_url, node), connections=4) for node in ("vm-a", "vm-b")]
    keys = [f"SMS_MO|N401|race-{n}" for n in range(150)]
    start = threading.Barrier(8)
    answers: dict[str, list[tuple[str, Owner]]] = {key: [] for key in keys}
    lock = threading.Lock()

    def claimant(number: int) -> None:
        index = indexes[number % 2]
        order = random.Random(number).sample(keys, len(keys))  # in one order, the first thread would win all
        start.wait()
        for key in order:
            mine = new_id()
            owner = index.claim(key, mine)
            with lock:
                answers[key].append((mine, owner))

    threads = [threading.Thread(target=claimant, args=(n,)) for n in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for index in indexes:
            index.close()
    nodes_that_won = set()
    for key, claims in answers.items():
        assert len(claims) == 8
        owners = {owner for _, owner in claims}
        assert len(owners) == 1, f"{key}: claims disagree on its owner: {owners}"
        (owner,) = owners
        assert [mine for mine, _ in claims if mine == owner.spool_id] == [owner.spool_id]
        nodes_that_won.add(owner.node)
    assert nodes_that_won == {"vm-a", "vm-b"}  # the race was real: each VM won some


@pytest.fixture
def proxied(pg: Cluster, pg_url: str, tmp_path: Path) -> Iterator[tuple[Settings, CuttingProxy]]:
    """A VM reaching the index over TCP through a proxy that can cut its connection, logging in with the
    password from a password file."""
    proxy = CuttingProxy(pg.port)
    password = tmp_path / "index-password"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o640)
    yield shared(tmp_path, pg.login(pg_url, "mospool_vm", PASSWORD, proxy.port), "vm-a", password), proxy
    proxy.close()


def claim_rows(url: str, key: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute("SELECT spool_id, node, state FROM records WHERE key = %s", (key,)))


@pytest.mark.parametrize("reached", [True, False], ids=["committed-answer-lost", "never-reached"])
def test_a_claim_whose_connection_is_cut_is_read_back_not_guessed(
    proxied: tuple[Settings, CuttingProxy], pg_url: str, reached: bool, caplog: pytest.LogCaptureFixture
) -> None:
    settings, proxy = proxied
    index = open_index(settings)
    try:
        index.ping()
        mine = new_id()
        proxy.arm(b"INSERT INTO records", forward=reached)
        with caplog.at_level(logging.INFO, "mospool.index"):
            owner = index.claim("SMS_MO|N401|cut-1", mine)
    finally:
        index.close()
    assert proxy.cut.is_set()
    assert owner == Owner(mine, "vm-a")
    assert claim_rows(pg_url, "SMS_MO|N401|cut-1") == [(mine, "vm-a", "work")]
    said = [record.getMessage() for record in caplog.records]
    assert any("outcome unknown" in line for line in said), said
    assert any("resolved: ours" in line for line in said), said


def test_a_cut_claim_that_another_vm_won_meanwhile_is_a_duplicate(
    proxied: tuple[Settings, CuttingProxy], pg_url: str
) -> None:
    """VM B inserted the key first and has not committed; A's INSERT waits on it and A's connection is cut;
    then B commits. Read back, the key is B's: A's postback is a duplicate of B's."""
    settings, proxy = proxied
    index = open_index(settings)
    index.ping()  # the tables exist
    other = new_id()
    with psycopg.connect(pg_url) as b:  # not autocommit: a transaction B holds open
        b.execute(
            "INSERT INTO records (key, spool_id, node, state) VALUES (%s, %s, 'vm-b', 'work')",
            ("SMS_MO|N401|cut-2", other),
        )
        threading.Timer(2.0, b.commit).start()
        proxy.arm(b"INSERT INTO records", forward=True)
        try:
            owner = index.claim("SMS_MO|N401|cut-2", new_id())
        finally:
            index.close()
    assert proxy.cut.is_set()
    assert owner == Owner(other, "vm-b")
    assert claim_rows(pg_url, "SMS_MO|N401|cut-2") == [(other, "vm-b", "work")]


# --- the schema


def test_vms_starting_at_once_create_the_tables_once(pg_url: str, tmp_path: Path) -> None:
    start = threading.Barrier(8)
    failures: list[BaseException] = []

    def open_and_ping(node: str) -> None:
        index = PostgresIndex(shared(tmp_path, pg_url, node), connections=1)
        start.wait()
        try:
            index.ping()
        except BaseException as exc:
            failures.append(exc)
        finally:
            index.close()

    threads = [threading.Thread(target=open_and_ping, args=(f"vm-{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert list(conn.execute("SELECT version FROM mospool_schema")) == [(pg_schema.VERSION,)]


def test_a_schema_of_the_release_before_gains_the_search_and_keeps_its_rows(
    pg_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:  # what the first release made, with one row
        conn.execute(pg_schema.STEPS[0])
        conn.execute(
            "CREATE TABLE mospool_schema (version integer NOT NULL); INSERT INTO mospool_schema VALUES (1)"
        )
        conn.execute(
            "INSERT INTO messages (spool_id, position, node, state, received_at, folder, text) "
            "VALUES ('20261120T080000.000000Z-000000000001', 1, 'vm-a', 'processed', now(), "
            "'processed/2026-11-20/20261120T080000.000000Z-000000000001', 'parcel lost')"
        )
    index = PostgresIndex(shared(tmp_path, pg_url, "vm-a"), connections=1)
    try:
        (row,) = index.find(Search(text="parcel"))
        assert (row["id"], row["matched"]) == ("20261120T080000.000000Z-000000000001", "[parcel] lost")
    finally:
        index.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert list(conn.execute("SELECT version FROM mospool_schema")) == [(pg_schema.VERSION,)]


def test_a_schema_of_a_newer_release_is_refused(pg_url: str, tmp_path: Path) -> None:
    index = PostgresIndex(shared(tmp_path, pg_url, "vm-a"), connections=1)
    index.ping()
    index.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE mospool_schema SET version = 99")
    later = PostgresIndex(shared(tmp_path, pg_url, "vm-a"), connections=1)
    try:
        with pytest.raises(
            IndexUnavailable, match=f"version 99, newer than this release's {pg_schema.VERSION}"
        ):
            later.ping()
    finally:
        later.close()


# --- the password stays out of config.ini


def test_a_password_in_the_url_is_refused_and_never_echoed(tmp_path: Path) -> None:
    config = tmp_path / "config.ini"
    config.write_text("[spool]\ndir = spool\n[index]\nurl = postgresql://mospool:hunter2@db/mospool\n")
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    assert "password_file" in str(refused.value) and "hunter2" not in str(refused.value)


def test_a_password_file_everyone_can_read_is_refused(pg_url: str, tmp_path: Path) -> None:
    password = tmp_path / "index-password"
    password.write_text(PASSWORD)
    password.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by everyone"):
        PostgresIndex(shared(tmp_path, pg_url, "vm-a", password))


def test_the_password_file_logs_in(proxied: tuple[Settings, CuttingProxy]) -> None:
    settings, _ = proxied
    index = open_index(settings)
    try:
        index.ping()
    finally:
        index.close()
    assert settings.index.password_file is not None
    wrong = replace(settings, "index", password_file=settings.index.password_file.with_name("wrong"))
    wrong.index.password_file.write_text("not it\n")  # type: ignore[union-attr]
    os.chmod(wrong.index.password_file, 0o600)  # type: ignore[arg-type]
    refused = open_index(wrong)
    try:
        with pytest.raises(IndexUnavailable, match="password authentication failed"):
            refused.ping()
    finally:
        refused.close()


# --- two VMs, one index


@pytest.fixture
def two_vms(pg_url: str, tmp_path: Path) -> Iterator[tuple[Worker, Worker]]:
    workers = (Worker(shared(tmp_path, pg_url, "vm-a")), Worker(shared(tmp_path, pg_url, "vm-b")))
    yield workers
    for worker in workers:
        worker.close()


def test_a_notice_received_by_two_vms_is_filed_once_and_the_repeat_names_its_owner(
    two_vms: tuple[Worker, Worker],
) -> None:
    a, b = two_vms
    first = publish(a.spool, sms("both-1"))
    a.drain()
    again = publish(b.spool, sms("both-1", text="resent"))
    b.drain()
    assert a.spool.record_dir(State.PROCESSED, first).is_dir()
    repeat = b.spool.record_dir(State.DUPLICATES, again)
    note = read_json(repeat / "duplicate.json")
    assert (note["duplicate_of"], note["duplicate_of_node"], note["node"]) == (first, "vm-a", "vm-b")
    page = (repeat / "index.html").read_text()
    assert 'on the VM <span class="mono">vm-a</span>' in page
    assert f'{first}/index.html"' not in page  # that page is in the other VM's spool: no link to it
    assert not any(b.spool.processed.glob("*/*/"))


def test_find_lists_every_vm_and_each_vms_pages_only_its_own(
    two_vms: tuple[Worker, Worker], pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two_vms
    on_a = publish(a.spool, sms("a-1"))
    a.drain()
    on_b = [publish(b.spool, sms("b-1")), publish(b.spool, sms("a-1", text="resent"))]
    b.drain()
    for worker in (a, b):
        worker.filer.close()  # the pages output rewrites the day and front pages
    config_a, config_b = vm_config(tmp_path, pg_url, "vm-a"), vm_config(tmp_path, pg_url, "vm-b")
    for config in (config_a, config_b):
        _, found = cli(config, "find", capsys=capsys)
        assert sorted((row["id"], row["node"], row["state"]) for row in found) == sorted(
            [(on_a, "vm-a", "processed"), (on_b[0], "vm-b", "processed"), (on_b[1], "vm-b", "duplicates")]
        )
    day = a.spool.records.days(State.PROCESSED)[-1]
    assert on_a in (a.spool.records.day_dir(State.PROCESSED, day) / "index.html").read_text()
    b_page = (b.spool.records.day_dir(State.PROCESSED, day) / "index.html").read_text()
    assert on_b[0] in b_page and on_a not in b_page
    front = (b.spool.root / "index.html").read_text()
    assert "on vm-b" in front and ">vm-a</span>" in front
    _, listed = cli(config_a, "list", "processed", capsys=capsys)
    assert [(row["id"], row["node"]) for row in listed] == [(on_a, "vm-a")]
    code, shown = cli(config_a, "show", on_b[0], capsys=capsys)
    assert code == 0 and (shown["node"], shown["state"], shown["tracking_id"]) == ("vm-b", "processed", "b-1")
    assert "on the VM vm-b" in shown["elsewhere"] and shown["folder"].startswith("processed/")
    code, status = cli(config_a, "status", capsys=capsys)
    assert status["index"]["reachable"] is True and status["index"]["nodes"] == ["vm-a", "vm-b"]
    with psycopg.connect(pg_url, autocommit=True) as conn:  # message.json kept whole, for SQL
        kept = conn.execute("SELECT message FROM messages WHERE spool_id = %s", (on_b[0],)).fetchone()
    assert kept is not None
    assert kept[0] == read_json(b.spool.record_dir(State.PROCESSED, on_b[0]) / "message.json")


def test_reindex_rebuilds_this_vms_rows_and_leaves_the_others(
    two_vms: tuple[Worker, Worker], pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two_vms
    publish(a.spool, sms("a-1"))
    a.drain()
    publish(b.spool, sms("b-1"))
    b.drain()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM messages WHERE node = 'vm-a'")  # a lost index, as far as vm-a knows
    code, result = cli(vm_config(tmp_path, pg_url, "vm-a"), "reindex", capsys=capsys)
    assert (code, result["records"]) == (0, 1)
    found = a.index.find(Search())
    assert sorted((row["tracking_id"], row["node"]) for row in found) == [("a-1", "vm-a"), ("b-1", "vm-b")]


# --- when the index cannot be reached


def test_the_receiver_never_loads_a_postgresql_driver() -> None:
    """A 200 means the spool holds the bytes: the receiver's process has no way to talk to PostgreSQL."""
    probe = "import sys, app; print(sorted(name for name in sys.modules if name.startswith('psycopg')))"
    config = Path(__file__).resolve().parent.parent / "config.ini"
    found = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env={**os.environ, "MOSPOOL_CONFIG": str(config)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.strip() == "[]"


def test_a_worker_that_cannot_reach_the_index_holds_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = f"postgresql://mospool@127.0.0.1:{free_port()}/mospool"  # nothing listens there
    worker = Worker(shared(tmp_path, nowhere, "vm-a"))
    try:
        waiting = publish(worker.spool, sms("held-1"))
        assert worker.drain() == 0
        assert worker.spool.waiting_path(waiting).is_file()  # not claimed: it waits where it was
        assert not worker.watch.up
    finally:
        worker.close()
    said = [record.getMessage() for record in caplog.records if "cannot be reached" in record.getMessage()]
    assert len(said) == 1 and "claiming stops" in said[0]
    code, status = cli(vm_config(tmp_path, nowhere, "vm-a"), "status", capsys=capsys)
    assert code == 1 and status["index"]["reachable"] is False
    assert any("the index cannot be reached" in alert for alert in status["attention"])
