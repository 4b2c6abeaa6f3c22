"""The spool's durable write, on the real filesystem."""

from __future__ import annotations

import datetime as dt
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from mospool.durable import GroupSync
from mospool.store import SUFFIX, CorruptPostback, Spool, SpoolError, encode, id_time, new_id
from mospool.store.postback import decode


def test_publish_round_trips_exact_bytes_and_metadata(spool: Spool) -> None:
    body = b'{"origin":"MMS_MO"}\n\x00\xff raw \r\n bytes'
    meta = {"received_at": "2026-11-24T03:00:00+00:00", "remote_addr": "192.0.2.7", "content_type": "x/y"}
    postback_id = spool.publish(meta, body)
    path = spool.incoming / (postback_id + SUFFIX)
    postback = spool.read(path)
    assert postback.id == postback_id
    assert postback.body == body
    assert postback.meta["remote_addr"] == "192.0.2.7"
    assert postback.meta["body_bytes"] == len(body)
    assert postback.content_type == "x/y"
    assert postback.received_at == dt.datetime(2026, 11, 24, 3, tzinfo=dt.UTC)


def test_published_file_is_group_readable_and_tmp_is_empty(spool: Spool) -> None:
    old_umask = os.umask(0o077)
    try:
        postback_id = spool.publish({"received_at": "2026-11-24T03:00:00+00:00"}, b"x")
    finally:
        os.umask(old_umask)
    mode = stat.S_IMODE((spool.incoming / (postback_id + SUFFIX)).stat().st_mode)
    assert mode == 0o640
    assert list(spool.tmp.iterdir()) == []


def test_ids_are_unique_across_threads(spool: Spool) -> None:
    ids: list[list[str]] = [[] for _ in range(8)]

    def write_many(slot: list[str]) -> None:
        slot.extend(spool.publish({"received_at": "x"}, b"body") for _ in range(500))

    threads = [threading.Thread(target=write_many, args=(slot,)) for slot in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    all_ids = [postback_id for slot in ids for postback_id in slot]
    assert len(all_ids) == len(set(all_ids)) == 4000
    assert len(list(spool.incoming.iterdir())) == 4000
    assert list(spool.tmp.iterdir()) == []


def test_ids_sort_by_receive_time() -> None:
    early = dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
    late = early + dt.timedelta(microseconds=1)
    assert new_id(early) < new_id(late)
    assert id_time(new_id(early)) == early


def test_failed_rename_leaves_no_temp_file(spool: Spool) -> None:
    spool.incoming.rmdir()
    with pytest.raises(OSError):
        spool.publish({"received_at": "x"}, b"body")
    assert list(spool.tmp.iterdir()) == []


def test_truncated_file_is_detected() -> None:
    data = encode({"id": "a", "body_bytes": 10, "body_sha256": "0" * 64}, b"12345")
    with pytest.raises(CorruptPostback, match="length"):
        decode("a", data)
    with pytest.raises(CorruptPostback, match="metadata"):
        decode("a", b"no header at all")


def test_spool_that_cannot_be_created_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError, match=str(blocker)):
        Spool(blocker / "spool").create()


def test_group_sync_shares_directory_fsyncs_between_threads(tmp_path: Path) -> None:
    group = GroupSync(tmp_path)
    barrier = threading.Barrier(8)

    def many() -> None:
        barrier.wait()
        for _ in range(50):
            group.sync()

    threads = [threading.Thread(target=many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fsyncs = group._completed
    assert 50 <= fsyncs < 400  # every call was covered; concurrent calls shared fsyncs


def test_group_sync_failure_reaches_every_caller(tmp_path: Path) -> None:
    group = GroupSync(tmp_path / "gone")
    errors: list[BaseException] = []

    def call() -> None:
        try:
            group.sync()
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 4


def test_tmp_cleaning_while_the_receiver_publishes_does_not_raise(spool: Spool) -> None:
    """The worker cleans tmp/ at every rescan while the receiver writes there: a file renamed into incoming/
    between the listing and its stat is simply gone from tmp/, not an error that stops the worker."""
    done = threading.Event()
    published: list[str] = []

    def receiver() -> None:
        while not done.is_set() and len(published) < 20_000:
            published.append(spool.publish({"received_at": "2026-11-24T00:00:00+00:00"}, b"x"))

    thread = threading.Thread(target=receiver)
    thread.start()
    deadline = time.monotonic() + 3
    try:
        while time.monotonic() < deadline:
            assert spool.clean_tmp(older_than=3600) == 0
    finally:
        done.set()
        thread.join()
    assert published and len(list(spool.incoming.iterdir())) == len(published)
