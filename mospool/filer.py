"""Filing: finished postbacks become published record folders, then their outputs are told.

This is the one seam between "a record is filed" and what follows from it. The postback's own thread writes
its record: the folder's files into ``work/<id>/``, then what every output derives from the ``Folder`` it
becomes (a page, an outbox entry) through the same ``Batch``. It then hands the record to the committer and
takes its next postback. The committer thread publishes what was handed in, in groups: one ``syncfs(2)``
makes every file the group wrote durable at once, one rename per folder publishes it into
``<state>/YYYY-MM-DD/<id>/``, one fsync per parent folder makes the renames durable, each output's
``commit`` stage runs (the index: one transaction for the group), and only then each output's ``published``,
the work files' removal and the caller's ``done``. Invariants: a published folder is whole; a work file is
removed only after its record is durable and published; the index never names an unpublished folder.

Group commit: the records handed in while a commit runs are published by the next one, so commits grow with
the load. That is also what keeps filing going when another process writes to the same filesystem: a syncfs
then waits for the neighbour's data too, and the larger groups share that wait (measured in
docs/performance.md: per-file fsyncs, made by each record's own thread, did worse there, 0.58 of the
minimal filer against 1.05, and no better alone).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mospool.durable import fsync_dir, write_file
from mospool.index import STORAGE_ERRORS, Index
from mospool.metrics import Metrics
from mospool.store import Filing, Folder, Spool, State

log = logging.getLogger(__name__)

MAX_GROUP = 1024  # records in one commit at most: bounds one index transaction
MAX_PENDING = 2048  # records written and not yet published at most: a thread handing in more waits

Done = Callable[[State, BaseException | None], None]


class Batch:
    """The files written for one record and what follows from it; the commit makes them durable (syncfs)."""

    def __init__(self, build: Path) -> None:
        self.build = build  # where the record's files are until it is published
        self.in_record: list[str] = []  # the names written into it so far (media/ aside)

    def write(self, path: Path, data: bytes) -> None:
        """Write a whole new file (mode 0640), made durable by the commit that publishes its record."""
        write_file(path, data, sync=False)

    def write_in_record(self, name: str, data: bytes) -> None:
        """A file of the record folder itself (its page): published with it, by the same rename."""
        write_file(f"{self.build}/{name}", data, sync=False)
        self.in_record.append(name)


class Output(Protocol):
    """Something derived from each filed record (the index, pages, deliveries): mospool.outputs."""

    def prepare(self, folder: Folder, batch: Batch) -> None:
        """Before publish: write derived files through ``batch``. ``folder.path`` is where it will be."""

    def commit(self, folders: Sequence[Folder]) -> None:
        """After publish, inside the commit (the index): a failure here has the records filed again."""

    def published(self, folders: Sequence[Folder]) -> None:
        """After the commit, on the committer's thread: cheap and non-blocking (mark a view stale, wake a
        sender)."""

    def tick(self) -> None:
        """Called by the worker's loop about once a second, and at the end of a drain: debounced work."""

    def close(self) -> None:
        """The worker stops: finish or hand back what is in flight."""


class BaseOutput:
    """An output that does nothing at any stage: subclass it and keep the stages you need."""

    def prepare(self, folder: Folder, batch: Batch) -> None:
        pass

    def commit(self, folders: Sequence[Folder]) -> None:
        pass

    def published(self, folders: Sequence[Folder]) -> None:
        pass

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


class IndexStage(BaseOutput):
    """The index as the filer's commit stage: published folders are indexed in the commit's transaction.
    Its close does nothing: the worker owns the index's connection, and outputs closed after it still read
    it."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def commit(self, folders: Sequence[Folder]) -> None:
        self.index.filed(folders)


@dataclass
class _Job:
    filing: Filing
    build: Path
    work_file: Path
    done: Done
    folder: Folder  # where publishing puts it, as the outputs see it
    error: BaseException | None = None


class Filer:
    def __init__(self, spool: Spool, metrics: Metrics, outputs: Sequence[Output] = ()) -> None:
        self.spool = spool
        self.metrics = metrics
        self.outputs = list(outputs)
        self._cond = threading.Condition()
        self._waiting: list[_Job] = []
        self._pending = 0  # handed in and not yet published (waiting, or in the commit that runs)
        self._committer: threading.Thread | None = None
        self._stopping = False

    def file(self, filing: Filing, build: Path, work_file: Path, done: Done) -> None:
        """Write the record now, on this thread, then hand it to the committer and return.

        Raises what writing raised (nothing was handed in). ``done(state, error)`` is called on the
        committer's thread once the record is published and its work file gone (error None), or when the
        commit failed (the postback is to go back for a later pass).
        """
        folder = filing.as_folder(self.spool.record_dir(filing.state, filing.spool_id))
        job = _Job(filing, build, work_file, done, folder)
        self._write(job)
        with self._cond:
            while self._pending >= MAX_PENDING:
                self._cond.wait()
            self._waiting.append(job)
            self._pending += 1
            if self._committer is None:
                self._committer = threading.Thread(target=self._commit_loop, name="filer", daemon=True)
                self._committer.start()
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything handed in is published (or failed); False if ``timeout`` came first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def refile(self, path: Path) -> None:
        """A folder published before a crash that came before its commit stage: commit and notify again."""
        folder = self.spool.records.read(path)
        for output in self.outputs:
            output.commit([folder])
        self.notify([folder])

    def tick(self) -> None:
        for output in self.outputs:
            output.tick()

    def close(self, timeout: float | None = None) -> None:
        """Publish what was handed in (at most ``timeout`` seconds), stop the committer, close the outputs."""
        if not self.flush(timeout):
            log.warning("%d records written, not published at stop: filed at the next start", self._pending)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for output in self.outputs:
            output.close()

    def notify(self, folders: Sequence[Folder]) -> None:
        for output in self.outputs:
            output.published(folders)

    # --- writing, on the postback's thread

    def _write(self, job: _Job) -> None:
        filing = job.filing
        batch = Batch(job.build)
        self.spool.clear_build(job.build)
        for name, data in filing.files():
            batch.write_in_record(name, data)
        for output in self.outputs:
            output.prepare(job.folder, batch)

    # --- publishing, on the committer's thread

    def _commit_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._waiting or self._stopping)
                if not self._waiting:
                    return
                group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
            try:
                self._commit(group)
            finally:
                with self._cond:
                    self._pending -= len(group)
                    self._cond.notify_all()

    def _commit(self, group: list[_Job]) -> None:
        folders: list[Folder] = []
        try:
            self.spool.sync()
            folders = [job.folder for job in group if self._place(job)]
            for parent in sorted({folder.path.parent for folder in folders}):
                fsync_dir(parent)
            for output in self.outputs:
                output.commit(folders)
        except STORAGE_ERRORS as exc:  # not known durable: every record of the group is filed again
            for job in group:
                job.error = job.error or exc
        else:
            self.metrics.commits.inc()
            self.notify(folders)
        for job in group:
            self._finished(job)

    def _place(self, job: _Job) -> bool:
        try:
            self.spool.place(job.build, job.filing.state)
        except OSError as exc:
            job.error = exc
            return False
        return True

    def _finished(self, job: _Job) -> None:
        if job.error is None:
            _remove_work_file(job.work_file)
        try:
            job.done(job.filing.state, job.error)
        except Exception:  # a caller's bug must not stop the committer
            log.exception("filing %s: the completion callback failed", job.filing.spool_id)


def _remove_work_file(work_file: Path) -> None:
    """Only once the record is durable; a file left by a failed unlink is found already filed later."""
    try:
        work_file.unlink()
    except OSError as exc:
        log.error("cannot remove %s after filing it: %s", work_file, exc)
