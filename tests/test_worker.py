"""The worker on real spools under tmp_path: batch mode, crash recovery, duplicates, the live observer."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mospool.config import WorkerSettings
from mospool.index import Search, open_index
from mospool.store import SUFFIX, Spool
from mospool.worker import EXIT_OBSERVER_DIED, Worker
from tests import index_db
from tests.build import BATCH, SMS_MO, STATUS_XML, publish, read_json, sms
from tests.servers import REPO, write_config


def folder(spool: Spool, state: str, postback_id: str) -> Path:
    return spool.record_dir(state, postback_id)


def test_drain_files_each_postback_as_a_readable_record(indexed_worker: Worker) -> None:
    worker = indexed_worker
    spool = worker.spool
    sms = publish(spool, SMS_MO)
    status = publish(spool, STATUS_XML, "text/xml")
    assert worker.drain() == 2
    record = folder(spool, "processed", sms)
    assert sorted(p.name for p in record.iterdir()) == [
        "body.json",
        "index.html",
        "message.json",
        "request.json",
    ]
    assert (record / "body.json").read_bytes() == SMS_MO
    message = read_json(record / "message.json")
    assert message["kind"] == "sms_mo"
    assert message["text"] == "hello"
    assert message["from"] == "17745550001"
    assert message["spool_id"] == sms
    assert message["node"] == worker.settings.spool.node
    assert message["schema"] == 1
    assert read_json(record / "request.json")["remote_addr"] == "192.0.2.1"
    status_message = read_json(folder(spool, "processed", status) / "message.json")
    assert status_message["kind"] == "status"
    assert list(spool.incoming.iterdir()) == [] and list(spool.work.iterdir()) == []


def test_record_folder_is_named_by_utc_receive_date(worker: Worker) -> None:
    when = dt.datetime(2026, 3, 1, 23, 59, 59, tzinfo=dt.UTC)
    postback_id = publish(worker.spool, SMS_MO, when=when)
    worker.drain()
    assert (worker.spool.root / "processed" / "2026-03-01" / postback_id / "message.json").is_file()


def test_malformed_postback_is_filed_under_failed_with_the_reason(worker: Worker) -> None:
    postback_id = publish(worker.spool, b"<postback><origin>MMS_MO</orig", "text/xml")
    xxe = publish(
        worker.spool,
        b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]><postback>&x;</postback>',
        "text/xml",
    )
    assert worker.drain() == 2
    error = read_json(folder(worker.spool, "failed", postback_id) / "error.json")
    assert error["stage"] == "parse"
    assert error["error"]
    assert error["attempts"] == 1
    assert (folder(worker.spool, "failed", postback_id) / "body.xml").read_bytes().startswith(b"<postback>")
    xxe_error = read_json(folder(worker.spool, "failed", xxe) / "error.json")
    assert "root:" not in json.dumps(xxe_error)


def test_retry_of_the_same_notification_is_a_duplicate(indexed_worker: Worker) -> None:
    worker = indexed_worker
    first = publish(worker.spool, SMS_MO)
    worker.drain()
    again = publish(worker.spool, sms(text="hello (resent)"))
    worker.drain()
    note = read_json(folder(worker.spool, "duplicates", again) / "duplicate.json")
    assert note["duplicate_of"] == first
    assert note["duplicate_of_node"] == note["node"] == worker.settings.spool.node
    assert note["key"] == "SMS_MO|N401|sms-1"
    assert (folder(worker.spool, "duplicates", again) / "body.json").is_file()
    assert not folder(worker.spool, "processed", again).exists()


def test_postbacks_without_tracking_id_dedup_on_the_body(indexed_worker: Worker) -> None:
    worker = indexed_worker
    body = b'{"origin":"SMS_MO","code":"N401","from":"1","to":"2","message-text":"no id"}'
    ids = {publish(worker.spool, body), publish(worker.spool, body)}
    worker.drain()  # both in one batch: whichever is claimed first is the original
    (original,) = [i for i in ids if folder(worker.spool, "processed", i).is_dir()]
    (duplicate,) = ids - {original}
    note = read_json(folder(worker.spool, "duplicates", duplicate) / "duplicate.json")
    assert note["duplicate_of"] == original
    assert str(note["key"]).startswith("sha256:")


def test_batched_postback_gives_one_message_file_per_notification(indexed_worker: Worker) -> None:
    worker = indexed_worker
    postback_id = publish(worker.spool, BATCH, "text/xml")
    worker.drain()
    record = folder(worker.spool, "processed", postback_id)
    messages = [read_json(record / f"message-{n:03d}.json") for n in (1, 2, 3)]
    assert [m["tracking_id"] for m in messages] == ["batch-1", "batch-2", "batch-3"]
    assert [m["batch_position"] for m in messages] == [1, 2, 3]


def test_crash_recovery_releases_claimed_files(worker: Worker) -> None:
    postback_id = publish(worker.spool, SMS_MO)
    name = postback_id + SUFFIX
    os.rename(worker.spool.incoming / name, worker.spool.work / name)  # claimed, then the worker died
    worker.recover()
    assert (worker.spool.incoming / name).exists()
    worker.drain()
    assert folder(worker.spool, "processed", postback_id).is_dir()


def test_work_file_left_after_filing_is_not_filed_twice(indexed_worker: Worker) -> None:
    worker = indexed_worker
    postback_id = publish(worker.spool, SMS_MO)
    name = postback_id + SUFFIX
    data = (worker.spool.incoming / name).read_bytes()
    worker.drain()
    (worker.spool.work / name).write_bytes(data)  # crash between the folder rename and the unlink
    worker.recover()
    worker.drain()
    assert not (worker.spool.root / "duplicates").joinpath("x").exists()
    assert list((worker.spool.root / "duplicates").iterdir()) == []
    assert list(worker.spool.incoming.iterdir()) == [] and list(worker.spool.work.iterdir()) == []


def leave_tmp_files(worker: Worker) -> Path:
    """A receiver's leftover older than the grace period, and a write in progress; returns the stale one."""
    stale, fresh = worker.spool.tmp / "stale.postback", worker.spool.tmp / "fresh.postback"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"in progress")
    old = time.time() - 2 * worker.settings.spool.tmp_grace_seconds
    os.utime(stale, (old, old))
    return stale


def test_recover_removes_only_stale_tmp_files(worker: Worker) -> None:
    leave_tmp_files(worker)
    worker.recover()
    assert sorted(p.name for p in worker.spool.tmp.iterdir()) == ["fresh.postback"]


def test_running_worker_removes_stale_tmp_files_at_each_rescan(make_worker: Callable[..., Worker]) -> None:
    worker = make_worker(worker=WorkerSettings(rescan_seconds=0.2))
    thread, result = run_in_thread(worker)
    stale = leave_tmp_files(worker)  # after the worker started: only a rescan can find it
    deadline = time.monotonic() + 5
    while stale.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.stop()
    thread.join(10)
    assert sorted(p.name for p in worker.spool.tmp.iterdir()) == ["fresh.postback"]
    assert result == [0]


RECORDS = "SELECT key, spool_id, node, state, folder, sender, tracking_id FROM records ORDER BY key"
DUPLICATES = (
    "SELECT spool_id, key, node, duplicate_of, duplicate_of_node, received_at, folder FROM duplicates "
    "ORDER BY spool_id"
)
MESSAGES = (
    "SELECT spool_id, position, node, state, received_at, folder, kind, sender, text, duplicate_of "
    "FROM messages ORDER BY spool_id, position"
)


def test_rebuilt_index_matches_the_live_one(indexed_worker: Worker) -> None:
    worker = indexed_worker
    publish(worker.spool, SMS_MO)
    publish(worker.spool, SMS_MO)
    publish(worker.spool, BATCH, "text/xml")
    publish(worker.spool, STATUS_XML, "text/xml")
    publish(worker.spool, b"<oops", "text/xml")
    worker.drain()
    live = [index_db.rows(worker.settings, sql) for sql in (RECORDS, DUPLICATES, MESSAGES)]
    worker.close()
    rebuilt = open_index(worker.settings)
    try:
        assert rebuilt.rebuild() == 5
        assert [index_db.rows(worker.settings, sql) for sql in (RECORDS, DUPLICATES, MESSAGES)] == live
    finally:
        rebuilt.close()
    records, duplicates, messages = live
    assert len(records) == 5 and len(duplicates) == 1 and len(messages) == 7
    assert {row[2] for row in records} == {worker.settings.spool.node}


def run_in_thread(worker: Worker) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(worker.run()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not hasattr(worker, "observer") and time.monotonic() < deadline:
        time.sleep(0.01)
    return thread, result


def test_live_observer_files_a_new_postback_within_two_seconds(make_worker: Callable[..., Worker]) -> None:
    worker = make_worker(worker=WorkerSettings(rescan_seconds=3600))  # only the inotify hint can find it
    thread, result = run_in_thread(worker)
    time.sleep(0.3)  # let the start-up scan pass, so the file arrives as an event
    postback_id = publish(worker.spool, SMS_MO)
    deadline = time.monotonic() + 2
    while not folder(worker.spool, "processed", postback_id).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    worker.stop()
    thread.join(10)
    assert folder(worker.spool, "processed", postback_id).is_dir()
    assert result == [0]


def test_dead_observer_makes_the_worker_exit_non_zero(worker: Worker) -> None:
    thread, result = run_in_thread(worker)
    worker.observer.stop()
    thread.join(10)
    assert result == [EXIT_OBSERVER_DIED]


@pytest.mark.slow
def test_worker_process_once_and_sigterm(spool: Spool, tmp_path: Path) -> None:
    postback_id = publish(spool, SMS_MO)
    config = write_config(tmp_path / "config.ini", spool.root)
    once = subprocess.run([sys.executable, "spool_worker.py", "--config", str(config), "--once"], cwd=REPO)
    assert once.returncode == 0
    assert folder(spool, "processed", postback_id).is_dir()
    daemon = subprocess.Popen(
        [sys.executable, "spool_worker.py", "--config", str(config)],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert daemon.stderr is not None
    while "watching" not in (line := daemon.stderr.readline()) and line:  # logged once SIGTERM is handled
        pass
    daemon.send_signal(signal.SIGTERM)
    daemon.communicate(timeout=30)
    assert daemon.returncode == 0


@pytest.mark.slow
def test_sigterm_with_a_backlog_exits_0_and_logs_no_error(spool: Spool, tmp_path: Path) -> None:
    for n in range(2000):
        publish(spool, sms(f"backlog-{n}"))
    config = write_config(tmp_path / "config.ini", spool.root)
    daemon = subprocess.Popen(
        [sys.executable, "spool_worker.py", "--config", str(config)], cwd=REPO, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 20
    while not any((spool.root / "processed").glob("*/*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    daemon.send_signal(signal.SIGTERM)  # while it is claiming the backlog, so inotify events keep coming
    _, stderr = daemon.communicate(timeout=60)
    assert daemon.returncode == 0
    assert [line for line in stderr.decode().splitlines() if " ERROR " in line] == []
    assert any(spool.incoming.iterdir()), "the backlog was finished before the stop: the test proves nothing"


@pytest.mark.slow
def test_bad_config_exits_with_a_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "bad.ini"
    config.write_text("[spool]\ndir = spool\n[worker]\nconcurrency = many\n")
    run = subprocess.run(
        [sys.executable, "spool_worker.py", "--config", str(config), "--once"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert "[worker] concurrency" in run.stderr


def test_a_record_published_but_not_indexed_before_a_crash_is_indexed_before_its_resend_is_claimed(
    make_worker: Callable[..., Worker],
) -> None:
    """A crash after a record's rename and before its index commit leaves it published, its work file in
    work/ and no index row. Its resend, waiting beside it, must be found a duplicate: the restart indexes
    the published record before it claims anything (else the resend, claimed first, is processed again)."""
    first = make_worker(worker=WorkerSettings(concurrency=1))
    now = dt.datetime.now(dt.UTC)
    original = publish(first.spool, sms("resent-1"), when=now)
    first.drain()
    first.close()
    record = folder(first.spool, "processed", original)
    meta = read_json(record / "request.json")
    body = next(record.glob("body.*")).read_bytes()
    index = open_index(first.settings)  # the index commit the crash lost
    index.forget_folders(first.spool.records.relative(record))
    index.close()
    spool = first.spool
    spool.publish(meta, body, original)  # its spool file, as the crash left it in work/
    (spool.incoming / f"{original}{SUFFIX}").rename(spool.work / f"{original}{SUFFIX}")
    resend = publish(spool, sms("resent-1"), when=now - dt.timedelta(seconds=1))  # claimed first
    restarted = make_worker(worker=WorkerSettings(concurrency=1))
    restarted.recover()
    restarted.drain()
    restarted.close()
    assert folder(spool, "duplicates", resend).is_dir()
    assert not folder(spool, "processed", resend).exists()
    assert list(spool.work.iterdir()) == []


def test_half_a_surrogate_pair_is_filed_with_its_bytes_kept(indexed_worker: Worker) -> None:
    """JSON's "\\ud800" is no character: once it stopped the filing of its postback, which stayed in work/."""
    body = (
        rb'{"origin": "SMS_MO", "code": "N401", "from": "15550001", "to": "28444", "tracking-id": "half-1",'
        rb' "text": "lone \ud800 half", "subject": "\udc00"}'
    )
    postback_id = publish(indexed_worker.spool, body)
    assert indexed_worker.drain() == 1
    record = folder(indexed_worker.spool, "processed", postback_id)
    message = read_json(record / "message.json")
    assert (message["text"], message["subject"]) == ("lone \ufffd half", "\ufffd")
    assert (record / "body.json").read_bytes() == body
    assert list(indexed_worker.spool.work.iterdir()) == []
    (row,) = indexed_worker.index.find(Search(tracking_id="half-1"))
    assert row["text"] == "lone \ufffd half"
