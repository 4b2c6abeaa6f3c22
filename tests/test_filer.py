"""The filer on a real spool: records handed in while a commit runs share the next one; failures stay apart."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest

from mospool.config import WorkerSettings
from mospool.filer import Batch
from mospool.outputs import BaseOutput
from mospool.store import SUFFIX, Folder, Spool, State
from mospool.worker import Worker
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


class HeldCommit(Outputs):
    """Holds the first commit until ``release`` is set, and remembers who each commit published."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.groups: list[list[str]] = []

    def commit(self, folders: Sequence[Folder]) -> None:
        self.groups.append(sorted(folder.spool_id for folder in folders))
        if len(self.groups) == 1:
            self.release.wait(30)


def test_a_thread_hands_its_record_in_and_goes_on_while_a_commit_runs(
    make_worker: Callable[..., Worker],
) -> None:
    outputs = HeldCommit()
    worker = worker_for(make_worker, outputs)
    first = publish(worker.spool, sms("group-first"))
    assert worker.process(worker.spool.waiting_path(first)) == "processed"
    deadline = time.monotonic() + 30
    while not outputs.groups and time.monotonic() < deadline:
        time.sleep(0.01)  # the committer is now held in the first commit
    ids = [publish(worker.spool, sms(f"group-{n}")) for n in range(6)]
    # each thread writes its record and returns at once, though no commit can publish it yet
    assert [worker.process(worker.spool.waiting_path(i)) for i in ids] == ["processed"] * 6
    assert not any(worker.spool.record_dir(State.PROCESSED, i).exists() for i in ids)
    assert all((worker.spool.work / f"{i}{SUFFIX}").is_file() for i in ids)  # not durable-published yet
    outputs.release.set()
    assert worker.filer.flush(30)
    assert outputs.groups == [[first], sorted(ids)]  # the six handed in meanwhile: one commit
    assert commits(worker) == 2
    assert sorted(outputs.seen) == sorted([first, *ids])
    for postback_id in ids:
        folder = worker.spool.record_dir(State.PROCESSED, postback_id)
        assert (folder / "derived.txt").read_bytes() == postback_id.encode()
        assert read_json(folder / "message.json")["spool_id"] == postback_id
    assert list(worker.spool.work.iterdir()) == []
    rows = worker.index.query("SELECT spool_id FROM messages WHERE state = 'processed'")
    assert sorted(row["spool_id"] for row in rows) == sorted([first, *ids])


class FailingCommit(Outputs):
    """The first commit fails as a full disk would: nothing of it is known durable."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def commit(self, folders: Sequence[Folder]) -> None:
        if not self.failed:
            self.failed = True
            raise OSError(28, "No space left on device")


def test_a_commit_that_fails_sends_its_postbacks_back_for_a_later_pass(
    spool: Spool, make_worker: Callable[..., Worker]
) -> None:
    outputs = FailingCommit()
    worker = worker_for(make_worker, outputs, concurrency=1)
    postback_id = publish(spool, sms("full-disk"))
    assert worker.drain() == 1
    assert (spool.incoming / f"{postback_id}{SUFFIX}").is_file()  # back, whole, with its id
    assert outputs.seen == []
    assert worker.drain() == 1  # the next pass files it: its published folder is recognised
    assert spool.record_dir(State.PROCESSED, postback_id).is_dir()
    assert outputs.seen == [postback_id]
    assert list(spool.incoming.iterdir()) == [] and list(spool.work.iterdir()) == []


def test_a_record_that_cannot_be_written_does_not_fail_its_group(
    spool: Spool, make_worker: Callable[..., Worker]
) -> None:
    ids = [publish(spool, sms(f"group-{n}")) for n in range(3)]
    outputs = Outputs(fail_for=ids[1])
    worker = worker_for(make_worker, outputs)
    outcomes = [worker.process(spool.incoming / f"{i}{SUFFIX}") for i in ids]
    assert outcomes == ["processed", "released", "processed"]
    assert worker.filer.flush(30)
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
