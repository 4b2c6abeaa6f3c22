"""Filing: a finished postback becomes a published record folder, then its outputs are told.

This is the one seam between "a record is filed" and what follows from it. For each ``Filing`` the filer
writes the folder's files into ``work/<id>/``, lets every output add what it derives (a page, an outbox entry)
through the same ``Batch`` (so it is as durable as the record), makes all of it durable, publishes the folder
by one rename into ``<state>/YYYY-MM-DD/<id>/``, records it in the index, and only then calls each output's
``published`` and removes the work file. Invariants: a published folder is whole; a work file is removed only
after its record is durable; the index never names an unpublished folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from mospool.index import Index
from mospool.record import RETRY, Filing, Folder, read_folder
from mospool.spool import Spool, State, fsync_dir, write_file

log = logging.getLogger(__name__)


class Batch:
    """The files written for the records being filed together: each is durable before any is published."""

    def __init__(self) -> None:
        self.folders: set[Path] = set()

    def write(self, path: Path, data: bytes) -> None:
        """Write a whole new file (mode 0640); its folder is synced with the records."""
        write_file(path, data)
        self.folders.add(path.parent)

    def sync(self) -> None:
        for folder in sorted(self.folders):
            fsync_dir(folder)


class Output(Protocol):
    """Something derived from each filed record (pages, webhook deliveries)."""

    def prepare(self, filing: Filing, build: Path, batch: Batch) -> None:
        """Before publish: write derived files through ``batch``, into ``build`` or elsewhere in the spool."""

    def published(self, folders: Sequence[Folder]) -> None:
        """After publish and index: cheap and non-blocking (mark a view stale, wake a sender)."""

    def tick(self) -> None:
        """Called by the worker's loop about once a second, and at the end of a drain: debounced work."""

    def close(self) -> None:
        """The worker stops: finish or hand back what is in flight."""


class Filer:
    def __init__(self, spool: Spool, index: Index, outputs: Sequence[Output] = ()) -> None:
        self.spool = spool
        self.index = index
        self.outputs = list(outputs)

    def file(self, filing: Filing, build: Path, work_file: Path) -> Path:
        """Publish one record folder and remove its work file; returns the published folder."""
        batch = Batch()
        for name, data in filing.files():
            batch.write(build / name, data)
        (build / RETRY).unlink(missing_ok=True)
        for output in self.outputs:
            output.prepare(filing, build, batch)
        batch.folders.discard(build)  # synced by publish, with media/
        batch.sync()
        path = self.spool.file_record(build, filing.state)
        folder = filing.as_folder(path)
        self.index.filed(self.relative(path), folder)
        self.notify([folder])
        work_file.unlink()
        return path

    def refile(self, folder: Path, state: State) -> None:
        """A folder published before a crash that came before its index row: index it and notify again."""
        filed = read_folder(folder, state)
        self.index.filed(self.relative(folder), filed)
        self.notify([filed])

    def tick(self) -> None:
        for output in self.outputs:
            output.tick()

    def close(self) -> None:
        for output in self.outputs:
            output.close()

    def notify(self, folders: Sequence[Folder]) -> None:
        for output in self.outputs:
            output.published(folders)

    def relative(self, folder: Path) -> str:
        return os.fspath(folder.relative_to(self.spool.root))
