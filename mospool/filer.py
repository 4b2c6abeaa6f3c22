"""Filing: finished postbacks become published record folders, then their outputs are told.

This is the one seam between "a record is filed" and what follows from it. For each ``Filing`` the filer
writes the folder's files into ``work/<id>/``, builds the ``Folder`` it becomes (once), lets every output
add what it derives (a page, an outbox entry) through the same ``Batch`` (so it is as durable as the record),
makes all of it durable, publishes the folder by one rename into ``<state>/YYYY-MM-DD/<id>/``, runs each
output's ``commit`` stage (the index), and only then calls each output's ``published`` and removes the work
file.
Invariants: a published folder is whole; a work file is removed only after its record is durable; the index
never names an unpublished folder.

Group commit: the records that the worker's threads hand in while a commit runs are filed together by the
next one, sharing its syncs: write them all, one syncfs, rename them all, one fsync per parent folder, one
index transaction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mospool.durable import fsync_dir, write_file
from mospool.index import STORAGE_ERRORS
from mospool.metrics import Metrics
from mospool.store import Filing, Folder, Spool

log = logging.getLogger(__name__)

MAX_GROUP = 256  # records in one commit at most: bounds the work a crash can make us redo


class Batch:
    """The files written for the records being filed together; the filer syncs them all at once."""

    def __init__(self, build: Path) -> None:
        self.build = build  # where the record's files are until it is published

    def write(self, path: Path, data: bytes) -> None:
        """Write a whole new file (mode 0640), made durable with the records of this commit."""
        write_file(path, data, sync=False)

    def write_in_record(self, name: str, data: bytes) -> None:
        """A file of the record folder itself (its page): published with it, by the same rename."""
        self.write(self.build / name, data)


class Output(Protocol):
    """Something derived from each filed record (the index, pages, deliveries): mospool.outputs."""

    def prepare(self, folder: Folder, batch: Batch) -> None:
        """Before publish: write derived files through ``batch``. ``folder.path`` is where it will be."""

    def commit(self, folders: Sequence[Folder]) -> None:
        """After publish, inside the commit (the index): a failure here has the records filed again."""

    def published(self, folders: Sequence[Folder]) -> None:
        """After the commit: cheap and non-blocking (mark a view stale, wake a sender)."""

    def tick(self) -> None:
        """Called by the worker's loop about once a second, and at the end of a drain: debounced work."""

    def close(self) -> None:
        """The worker stops: finish or hand back what is in flight."""


@dataclass
class _Job:
    filing: Filing
    build: Path
    work_file: Path
    folder: Folder | None = None
    error: BaseException | None = None
    done: bool = False


class Filer:
    def __init__(self, spool: Spool, metrics: Metrics, outputs: Sequence[Output] = ()) -> None:
        self.spool = spool
        self.metrics = metrics
        self.outputs = list(outputs)
        self._cond = threading.Condition()
        self._waiting: list[_Job] = []
        self._committing = False

    def file(self, filing: Filing, build: Path, work_file: Path) -> Path:
        """Publish one record folder and remove its work file; returns the published folder.

        The calling thread either commits everything handed in so far (its own record among them) or waits
        for the commit that takes its record.
        """
        job = _Job(filing, build, work_file)
        with self._cond:
            self._waiting.append(job)
            while not job.done:
                if self._committing:
                    self._cond.wait()
                    continue
                group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
                self._committing = True
                self._cond.release()
                try:
                    self._commit(group)
                finally:
                    self._cond.acquire()
                    for done in group:
                        done.done = True
                    self._committing = False
                    self._cond.notify_all()
        if job.error is not None:
            raise job.error
        assert job.folder is not None
        return job.folder.path

    def refile(self, path: Path) -> None:
        """A folder published before a crash that came before its commit stage: commit and notify again."""
        folder = self.spool.records.read(path)
        for output in self.outputs:
            output.commit([folder])
        self.notify([folder])

    def tick(self) -> None:
        for output in self.outputs:
            output.tick()

    def close(self) -> None:
        for output in self.outputs:
            output.close()

    def notify(self, folders: Sequence[Folder]) -> None:
        for output in self.outputs:
            output.published(folders)

    # --- one commit

    def _commit(self, group: list[_Job]) -> None:
        placed: list[Folder] = []
        try:
            written = [job for job in group if self._write(job)]
            self.spool.sync()
            placed = [job.folder for job in written if job.folder and self._place(job)]
            for parent in sorted({folder.path.parent for folder in placed}):
                fsync_dir(parent)
            for output in self.outputs:
                output.commit(placed)
        except STORAGE_ERRORS as exc:  # nothing of this commit is known durable
            for job in group:
                job.error = job.error or exc
            return
        self.metrics.commits.inc()
        self.notify(placed)
        for job in group:
            if job.error is None:
                _remove_work_file(job.work_file)

    def _write(self, job: _Job) -> bool:
        batch = Batch(job.build)
        filing = job.filing
        try:
            self.spool.clear_build(job.build)
            for name, data in filing.files():
                batch.write_in_record(name, data)
            job.folder = filing.as_folder(self.spool.record_dir(filing.state, filing.spool_id))
            for output in self.outputs:
                output.prepare(job.folder, batch)
        except Exception as exc:  # a storage error, or a bug in an output: this record only
            job.error = exc
            return False
        return True

    def _place(self, job: _Job) -> bool:
        try:
            self.spool.place(job.build, job.filing.state)
        except OSError as exc:
            job.error = exc
            return False
        return True


def _remove_work_file(work_file: Path) -> None:
    """Only once the record is durable; a file left by a failed unlink is found already filed later."""
    try:
        work_file.unlink()
    except OSError as exc:
        log.error("cannot remove %s after filing it: %s", work_file, exc)
