"""The spool directory: Maildir discipline for postbacks.

A postback is written to ``tmp/`` with O_EXCL, fsynced, renamed into ``incoming/`` and the directory is
fsynced; only then does the receiver answer 200. A published file is never modified: every later state change
is a rename into another folder, so the folder a file is in *is* its state. ``Spool`` is the one way in: the
receiver publishes, the worker claims, builds and files, and the records and deliveries it holds are reached
through ``records`` and ``outbox()``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mospool.durable import (
    DIR_MODE,
    FilesystemSync,
    GroupSync,
    fsync_dir,
    make_dir,
    make_private_dir,
    unlink_quietly,
    write_file,
    write_new,
)
from mospool.store.layout import (
    INDEX_FILE,
    MEDIA,
    MEDIA_TEMP_PATTERN,
    PAGE,
    RETRY,
    STATES,
    SUFFIX,
    State,
    id_day,
    new_id,
)
from mospool.store.outbox import Outbox
from mospool.store.postback import Postback, decode, encode, sealed
from mospool.store.record import json_bytes
from mospool.store.records import Records
from mospool.store.stale import StalePages


class SpoolError(OSError):
    """The spool could not take or give back a postback."""


class Spool:
    """Paths and atomic moves inside one spool directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / State.TMP
        self.incoming = self.root / State.INCOMING
        self.work = self.root / State.WORK
        self.deferred = self.root / State.DEFERRED
        self.processed = self.root / State.PROCESSED
        self.failed = self.root / State.FAILED
        self.duplicates = self.root / State.DUPLICATES
        self.records = Records(self.root)
        self.index_file = self.root / INDEX_FILE
        self.front_page = self.root / PAGE
        self.stale_pages = StalePages(self.root)
        self._incoming_sync = GroupSync(self.incoming)
        self._filesystem = FilesystemSync(self.root)
        self._days: set[Path] = set()  # day folders known to exist: no stat for each record placed

    def create(self) -> None:
        """Make every folder (idempotent) and check the spool takes writes; raises SpoolError if not."""
        for state in STATES:
            try:
                make_private_dir(self.root / state, parents=True)
            except OSError as exc:
                raise SpoolError(f"cannot create spool folder {self.root / state}: {exc}") from exc
        for state in STATES:
            if not os.access(self.root / state, os.W_OK | os.X_OK):
                raise SpoolError(f"spool folder {self.root / state} is not writable")
        try:
            self.stale_pages.create()
        except OSError as exc:
            raise SpoolError(f"cannot create spool folder {self.stale_pages.folder}: {exc}") from exc

    def outbox(self, destination: str) -> Outbox:
        """The deliveries waiting for (and given up by) one destination of an output."""
        return Outbox(self.root, destination)

    # --- the receiver's side

    def publish(self, meta: dict[str, Any], body: bytes, postback_id: str | None = None) -> str:
        """Store one postback durably in incoming/ and return its id.

        Raises OSError when any step fails; the temp file is then gone and nothing was published.
        Once this returns, the file is fsynced, renamed and its directory entry fsynced.
        """
        postback_id = postback_id or new_id()
        name = postback_id + SUFFIX
        temp = f"{self.tmp}/{name}"  # strings, not pathlib: this runs once per request
        write_new(temp, encode(sealed({**meta, "id": postback_id}, body), body))
        try:
            os.rename(temp, f"{self.incoming}/{name}")
        except OSError:
            unlink_quietly(temp)
            raise
        self._incoming_sync.sync()
        return postback_id

    # --- the worker's side: claim, build, file

    def claim(self, path: Path) -> Path | None:
        """Move a waiting file into work/; None if another worker (or an earlier pass) took it first."""
        target = self.work / path.name
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return None
        return target

    def release(self, work_file: Path) -> None:
        """Put a claimed file back in incoming/ (crash recovery, shutdown)."""
        os.rename(work_file, self.incoming / work_file.name)

    def build_dir(self, postback_id: str) -> Path:
        """work/<id>/: where a record folder is assembled (and media kept between retries)."""
        return self.open_build(postback_id)[0]

    def open_build(self, postback_id: str) -> tuple[Path, bool]:
        """The build folder, and whether it is new (nothing of an earlier try can be in it)."""
        path = f"{self.work}/{postback_id}"
        try:
            os.mkdir(path, DIR_MODE)  # noqa: PTH102 (once per postback: no pathlib)
        except FileExistsError:
            return Path(path), False
        os.chmod(path, DIR_MODE)
        return Path(path), True

    def clear_build(self, build: Path) -> None:
        """Before a filing is written into its build folder: remove what a try cut short by a crash left
        there (its files, and a media part half downloaded); the media parts already whole stay."""
        media = False
        with os.scandir(build) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)  # noqa: PTH108 (once per record: no pathlib)
                media = media or entry.name == MEDIA
        if media:
            for partial in (build / MEDIA).glob(MEDIA_TEMP_PATTERN):
                partial.unlink()

    def record_dir(self, state: str, postback_id: str) -> Path:
        """<state>/YYYY-MM-DD/<id>, the date being the UTC receive date."""
        return Path(self._record_path(state, postback_id))

    def _record_path(self, state: str, postback_id: str) -> str:
        return f"{self.root}/{state}/{id_day(postback_id)}/{postback_id}"

    def filed(self, postback_id: str) -> Path | None:
        """The finished folder of a postback, if it has one (processed, duplicates or failed)."""
        for state in (State.PROCESSED, State.DUPLICATES, State.FAILED):
            folder = self._record_path(state, postback_id)
            if os.path.isdir(folder):  # noqa: PTH112 (once per postback: no pathlib)
                return Path(folder)
        return None

    def place(self, build: Path, state: str) -> Path:
        """Rename a durable build folder to <state>/YYYY-MM-DD/<id>; the caller fsyncs the parent."""
        target = self.record_dir(state, build.name)
        if target.parent not in self._days:
            self._make_day(target.parent)
        try:
            os.rename(build, target)
        except FileNotFoundError:  # the day was purged since: make it again
            self._make_day(target.parent)
            os.rename(build, target)
        return target

    def _make_day(self, day: Path) -> None:
        make_dir(day)
        self._days.add(day)

    def sync(self) -> None:
        """Make everything written to the spool's filesystem durable, in one journal commit (syncfs(2))."""
        self._filesystem.sync()

    def retry_schedule(self, folder: Path) -> dict[str, Any]:
        """The media retry schedule of a deferred (or claimed back) postback; {} if it has none."""
        return self.records.retry_schedule(folder)

    def set_retry_schedule(self, build: Path, schedule: dict[str, Any]) -> None:
        """Keep the schedule in the build folder: it moves with it to deferred/ and back."""
        write_file(build / RETRY, json_bytes(schedule))

    def deferred_folders(self) -> Iterator[Path]:
        with os.scandir(self.deferred) as entries:
            for entry in entries:
                yield Path(entry.path)

    def defer(self, build: Path, work_file: Path) -> Path:
        """Park a postback and its partial media in deferred/<id>/ until its next try."""
        os.rename(work_file, build / work_file.name)
        target = self.deferred / build.name
        os.rename(build, target)
        fsync_dir(self.deferred)
        return target

    def undefer(self, folder: Path) -> Path | None:
        """Claim a deferred folder back into work/; returns the claimed work file."""
        build = self.work / folder.name
        try:
            os.rename(folder, build)
        except FileNotFoundError:
            return None
        work_file = self.work / (folder.name + SUFFIX)
        os.rename(build / work_file.name, work_file)
        return work_file

    def is_deferred(self, path: Path) -> bool:
        return path.parent == self.deferred

    def recover(self) -> list[str]:
        """After a crash: every claimed file goes back to incoming/. Returns their ids."""
        released = []
        for entry in list(os.scandir(self.work)):
            path = Path(entry.path)
            inner = path / (entry.name + SUFFIX)
            if entry.name.endswith(SUFFIX):
                self.release(path)
            elif entry.is_dir() and inner.exists():
                self.release(inner)
            else:
                continue
            released.append(postback_id(path))
        return released

    def clean_tmp(self, older_than: float) -> int:
        """Remove receiver leftovers in tmp/ older than ``older_than`` seconds. Returns how many."""
        cutoff = time.time() - older_than
        removed = 0
        for entry in list(os.scandir(self.tmp)):
            try:
                stale = entry.is_file() and entry.stat().st_mtime < cutoff
            except FileNotFoundError:  # published (renamed into incoming/) since the listing
                continue
            if stale:
                unlink_quietly(Path(entry.path))
                removed += 1
        return removed

    # --- reading

    def read(self, path: Path) -> Postback:
        return decode(postback_id(path), path.read_bytes())

    def waiting(self) -> Iterator[os.DirEntry[str]]:
        """Postbacks in incoming/, streamed in directory order (never the whole listing at once)."""
        with os.scandir(self.incoming) as entries:
            for entry in entries:
                if entry.name.endswith(SUFFIX):
                    yield entry

    def waiting_path(self, postback_id: str) -> Path:
        return self.incoming / (postback_id + SUFFIX)

    def waiting_ids(self) -> Iterator[str]:
        return (entry.name.removesuffix(SUFFIX) for entry in self.waiting())

    def backlog(self, limit: int) -> tuple[int, str | None]:
        """(count, oldest id) over at most ``limit`` waiting files: cheap however large the backlog."""
        count, oldest = 0, None
        for name in self.waiting_ids():
            count += 1
            oldest = name if oldest is None or name < oldest else oldest
            if count >= limit:
                break
        return count, oldest

    def deferred_count(self) -> int:
        return sum(1 for _ in os.scandir(self.deferred)) if self.deferred.is_dir() else 0

    def write_problem(self) -> str | None:
        """Why this user cannot write the spool (a folder it may not write, a read-only or full filesystem),
        found by writing and removing a small file in tmp/; None when it can."""
        probe = self.tmp / f".status-probe-{os.urandom(6).hex()}"
        try:
            write_new(probe, b"can the spool take writes?\n")
        except OSError as exc:
            return f"cannot write in {self.tmp}: {exc.strerror or exc}"
        unlink_quietly(probe)
        for state in STATES:
            folder = self.root / state
            if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
                return f"{folder} is not writable by this user"
        return None

    def writable(self) -> bool:
        return os.access(self.tmp, os.W_OK) and os.access(self.incoming, os.W_OK)

    def free_bytes(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize


def postback_id(path: Path) -> str:
    """The id of a spool file (incoming/<id>.postback) or of a folder named by its id."""
    return path.name.removesuffix(SUFFIX)
