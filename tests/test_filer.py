"""The filer on a real spool: records handed in while a commit runs share the next one; failures stay apart."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest

from mospool.config import WorkerSettings
from mospool.filer import Batch
from mospool.outputs import BaseOutput
from mospool.process import Claimed
from mospool.store import SUFFIX, Folder, Spool, State
from mospool.worker import Worker
from tests import index_db
from tests.build import publish, read_json, sms


class Outputs(BaseOutput):
    """An output that writes a derived file beside each record and remembers what it was told."""

    def __init__(self, fail_for: str | None = None) -> None:
        self.fail_for = fail_for
        self.seen: list[str] = []

    def prepare(self, folder: Folder, batch: Batch) -> None:
        if folder.spool_id == self.fail_for:
            raise OSError(28, "No space left on device")
        batch.write_in_record("derived.txt", folder.spool_id.encode())

    def published(self, folders: Sequence[Folder]) -> None:
        self.seen.extend(folder.spool_id for folder in folders)


def worker_for(make_worker: Callable[..., Worker], outputs: Outputs, concurrency: int = 4) -> Worker:
    return make_worker([outputs], worker=WorkerSettings(concurrency=concurrency))


def test_records_handed_in_during_a_commit_share_the_next_one(make_worker: Callable[..., Worker]) -> None:
    outputs = Outputs()
    worker = worker_for(make_worker, outputs)
    ids = [publish(worker.spool, sms(f"group-{n}")) for n in range(6)]
    filer = worker.filer
    with filer._cond:  # a commit is running: everyone who arrives now waits for the next one
        filer._committing = True
    threads = [
        threading.Thread(target=worker.processor.handle, args=(claim,)) for claim in claims(worker, ids)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(filer._waiting) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(filer._waiting) == len(ids)
    with filer._cond:
        filer._committing = False
        filer._cond.notify_all()
    for thread in threads:
        thread.join(30)
    assert commits(worker) == 1  # six records, one commit
    assert sorted(outputs.seen) == sorted(ids)
    for postback_id in ids:
        folder = worker.spool.record_dir(State.PROCESSED, postback_id)
        assert (folder / "derived.txt").read_bytes() == postback_id.encode()
        assert read_json(folder / "message.json")["spool_id"] == postback_id
    assert list(worker.spool.work.iterdir()) == []
    rows = index_db.rows(worker.settings, "SELECT spool_id FROM messages WHERE state = 'processed'")
    assert sorted(row[0] for row in rows) == sorted(ids)


def test_a_record_that_cannot_be_written_does_not_fail_its_group(
    spool: Spool, make_worker: Callable[..., Worker]
) -> None:
    ids = [publish(spool, sms(f"group-{n}")) for n in range(3)]
    outputs = Outputs(fail_for=ids[1])
    worker = worker_for(make_worker, outputs)
    outcomes = [worker.process(spool.incoming / f"{i}{SUFFIX}") for i in ids]
    assert outcomes == ["processed", "released", "processed"]
    assert (
        spool.record_dir(State.PROCESSED, ids[0]).is_dir()
        and spool.record_dir(State.PROCESSED, ids[2]).is_dir()
    )
    assert (spool.incoming / f"{ids[1]}.postback").is_file()  # a storage error: tried again later
    assert not spool.record_dir(State.PROCESSED, ids[1]).exists()
    assert sorted(outputs.seen) == sorted([ids[0], ids[2]])


@pytest.mark.parametrize("concurrency", [1, 8])
def test_drain_files_everything_whatever_the_concurrency(
    make_worker: Callable[..., Worker], concurrency: int
) -> None:
    outputs = Outputs()
    worker = worker_for(make_worker, outputs, concurrency)
    ids = [publish(worker.spool, sms(f"group-{n}")) for n in range(40)]
    assert worker.drain() == 40
    assert sorted(outputs.seen) == sorted(ids)
    assert 1 <= commits(worker) <= 40
    assert all(worker.spool.record_dir(State.PROCESSED, i).is_dir() for i in ids)


def claims(worker: Worker, ids: list[str]) -> list[Claimed]:
    """Claim each postback as the worker's loop would."""
    result = []
    for postback_id in ids:
        work_file = worker.spool.claim(worker.spool.incoming / f"{postback_id}{SUFFIX}")
        assert work_file is not None
        result.append(Claimed(work_file, worker.spool.build_dir(postback_id)))
    return result


def commits(worker: Worker) -> float:
    value = worker.metrics.registry.get_sample_value("mospool_filing_commits_total")
    assert value is not None
    return value


def test_a_try_cut_short_leaves_nothing_in_the_record(make_worker: Callable[..., Worker]) -> None:
    """A crash while a failed/ folder was being written, then the next try succeeds: no stale error.json."""
    outputs = Outputs()
    worker = worker_for(make_worker, outputs)
    postback_id = publish(worker.spool, sms("group-1"))
    build = worker.spool.build_dir(postback_id)
    (build / "error.json").write_text('{"stage": "internal"}')
    (build / "media").mkdir()
    (build / "media" / "01-kept.jpg").write_bytes(b"kept")
    assert worker.drain() == 1
    folder = worker.spool.record_dir(State.PROCESSED, postback_id)
    assert sorted(p.name for p in folder.iterdir()) == [
        "body.json",
        "derived.txt",
        "media",
        "message.json",
        "request.json",
    ]
    assert (folder / "media" / "01-kept.jpg").read_bytes() == b"kept"


def test_a_download_cut_short_is_not_published_with_a_duplicate(make_worker: Callable[..., Worker]) -> None:
    """Killed mid-download, then filed as a duplicate (no media fetched this time): no half part in it."""
    worker = make_worker()
    publish(worker.spool, sms("dup-1"))
    assert worker.drain() == 1
    again = publish(worker.spool, sms("dup-1"))
    build = worker.spool.build_dir(again)
    (build / "media").mkdir()
    (build / "media" / ".01.part").write_bytes(b"half a pict")
    assert worker.drain() == 1
    folder = worker.spool.record_dir(State.DUPLICATES, again)
    assert [p.name for p in (folder / "media").iterdir()] == []
