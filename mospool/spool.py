"""The spool directory: Maildir discipline for postbacks.

A postback is written to ``tmp/`` with O_EXCL, fsynced, renamed into ``incoming/`` and the directory is
fsynced; only then does the receiver answer 200. A published file is never modified: every later state change
is a rename into another folder, so the folder a file is in *is* its state.

A spooled file is one line of JSON metadata (the request as received, never the body) followed by the raw
body, byte for byte, so a reader sees both or neither.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import enum
import hashlib
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_libc = ctypes.CDLL(None, use_errno=True)  # syncfs(2), which the os module does not offer

SUFFIX = ".postback"
FILE_MODE = 0o640
DIR_MODE = 0o750
HEADER_LIMIT = 64 * 1024
ID_TIME = re.compile(r"(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)\.(\d{6})Z(?:-|$)")


class State(enum.StrEnum):
    """The spool's folders, in the order a postback moves through them: a file's folder is its state."""

    TMP = "tmp"
    INCOMING = "incoming"
    WORK = "work"
    DEFERRED = "deferred"
    PROCESSED = "processed"
    FAILED = "failed"
    DUPLICATES = "duplicates"
    DISMISSED = "dismissed"  # failed ones an operator has handled


STATES = tuple(State)


class SpoolError(OSError):
    """The spool could not take or give back a postback."""


class CorruptPostback(ValueError):
    """A spooled file whose header is unreadable or whose body does not match it."""


@dataclass(frozen=True)
class Postback:
    """A spooled postback as read back: the receiver's metadata and the exact body."""

    id: str
    meta: dict[str, Any]
    body: bytes

    @property
    def received_at(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.meta["received_at"])

    @property
    def content_type(self) -> str:
        return str(self.meta.get("content_type") or "")


def new_id(now: dt.datetime | None = None) -> str:
    """A name that sorts by receive time and is unique across processes, threads and hosts."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%dT%H%M%S.%fZ-") + secrets.token_hex(6)


def id_time(postback_id: str) -> dt.datetime:
    """The receive time encoded in an id (UTC); ValueError for a name that is not an id."""
    match = ID_TIME.match(postback_id)
    if not match:
        raise ValueError(f"not a postback id: {postback_id!r}")
    year, month, day, hour, minute, second, micros = map(int, match.groups())  # 10x cheaper than strptime
    return dt.datetime(year, month, day, hour, minute, second, micros, tzinfo=dt.UTC)


def id_day(postback_id: str) -> str:
    """YYYY-MM-DD, the UTC receive date of an id: the name of its day folder."""
    return id_time(postback_id).date().isoformat()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class GroupSync:
    """fsync one directory on behalf of many threads: group commit.

    A caller returns only after an fsync that *started after* it called, so its rename is covered; threads
    that arrive while an fsync runs share the next one. A failed fsync fails every caller it covered.
    """

    KEEP_RESULTS = 1024

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._next = 1  # the generation the next fsync will have
        self._completed = 0
        self._running = False
        self._errors: dict[int, OSError | None] = {}

    def sync(self) -> None:
        with self._cond:
            mine = self._next  # an fsync running now started before our rename: we need the next one
            while self._completed < mine:
                if self._running:
                    self._cond.wait()
                    continue
                self._run_one()
            error = self._errors.get(mine, OSError("fsync result no longer known"))
        if error is not None:
            raise error

    def _run_one(self) -> None:
        generation, self._next, self._running = self._next, self._next + 1, True
        self._cond.release()
        error: OSError | None = None
        try:
            fsync_dir(self.path)
        except OSError as exc:
            error = exc
        finally:
            self._cond.acquire()
        self._errors[generation] = error
        self._errors.pop(generation - self.KEEP_RESULTS, None)
        self._completed, self._running = generation, False
        self._cond.notify_all()


def encode(meta: dict[str, Any], body: bytes) -> bytes:
    header = json.dumps(meta, ensure_ascii=True, separators=(",", ":"), sort_keys=True).encode()
    return header + b"\n" + body


def decode(postback_id: str, data: bytes) -> Postback:
    newline = data.find(b"\n", 0, HEADER_LIMIT)
    if newline < 0:
        raise CorruptPostback(f"{postback_id}: no metadata line")
    try:
        meta = json.loads(data[:newline])
    except ValueError as exc:
        raise CorruptPostback(f"{postback_id}: metadata is not JSON: {exc}") from exc
    body = data[newline + 1 :]
    if not isinstance(meta, dict) or meta.get("body_bytes") != len(body):
        raise CorruptPostback(f"{postback_id}: body length does not match its metadata")
    if meta.get("body_sha256") != hashlib.sha256(body).hexdigest():
        raise CorruptPostback(f"{postback_id}: body checksum does not match its metadata")
    return Postback(postback_id, meta, body)


class Spool:
    """Paths and atomic moves inside one spool directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.incoming = self.root / "incoming"
        self.work = self.root / "work"
        self.deferred = self.root / "deferred"
        self.processed = self.root / "processed"
        self.failed = self.root / "failed"
        self.duplicates = self.root / "duplicates"
        self._incoming_sync = GroupSync(self.incoming)
        self._sync_fd: int | None = None

    def create(self) -> None:
        """Make every folder (idempotent) and check the spool takes writes; raises SpoolError if not."""
        for state in STATES:
            try:
                (self.root / state).mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            except OSError as exc:
                raise SpoolError(f"cannot create spool folder {self.root / state}: {exc}") from exc
        for state in STATES:
            if not os.access(self.root / state, os.W_OK | os.X_OK):
                raise SpoolError(f"spool folder {self.root / state} is not writable")

    # --- the receiver's side

    def publish(self, meta: dict[str, Any], body: bytes, postback_id: str | None = None) -> str:
        """Store one postback durably in incoming/ and return its id.

        Raises OSError when any step fails; the temp file is then gone and nothing was published.
        Once this returns, the file is fsynced, renamed and its directory entry fsynced.
        """
        postback_id = postback_id or new_id()
        meta = {**meta, "id": postback_id, "body_bytes": len(body)}
        meta["body_sha256"] = hashlib.sha256(body).hexdigest()
        name = postback_id + SUFFIX
        temp = self.tmp / name
        self.write_new(temp, encode(meta, body))
        try:
            os.rename(temp, self.incoming / name)
        except OSError:
            _unlink_quietly(temp)
            raise
        self._incoming_sync.sync()
        return postback_id

    @staticmethod
    def write_new(path: Path, data: bytes) -> None:
        """Create ``path`` (must not exist) with ``data``, mode 0640, fsynced; nothing is left on failure."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # the umask must not take the group's read bit
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(path)
            raise
        os.close(fd)

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
        path = self.work / postback_id
        path.mkdir(mode=DIR_MODE, exist_ok=True)
        return path

    def record_dir(self, state: str, postback_id: str) -> Path:
        """<state>/YYYY-MM-DD/<id>, the date being the UTC receive date."""
        return self.root / state / id_day(postback_id) / postback_id

    def filed(self, postback_id: str) -> Path | None:
        """The finished folder of a postback, if it has one (processed, duplicates or failed)."""
        for state in (State.PROCESSED, State.DUPLICATES, State.FAILED):
            folder = self.record_dir(state, postback_id)
            if folder.exists():
                return folder
        return None

    def place(self, build: Path, state: str) -> Path:
        """Rename a durable build folder to <state>/YYYY-MM-DD/<id>; the caller fsyncs the parent."""
        target = self.record_dir(state, build.name)
        if not target.parent.is_dir():
            target.parent.mkdir(mode=DIR_MODE, exist_ok=True)
            fsync_dir(target.parent.parent)
        os.rename(build, target)
        return target

    def sync(self) -> None:
        """Make everything written to the spool's filesystem durable, in one journal commit (syncfs(2)).

        The descriptor is held from start-up on, so a write-back error since then is reported here.
        """
        if self._sync_fd is None:
            self._sync_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if _libc.syncfs(self._sync_fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"syncfs {self.root}: {os.strerror(errno)}")

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

    def recover(self) -> int:
        """After a crash: every claimed file goes back to incoming/. Returns how many."""
        count = 0
        for entry in list(os.scandir(self.work)):
            path = Path(entry.path)
            inner = path / (entry.name + SUFFIX)
            if entry.name.endswith(SUFFIX):
                self.release(path)
            elif entry.is_dir() and inner.exists():
                self.release(inner)
            else:
                continue
            count += 1
        return count

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
                _unlink_quietly(Path(entry.path))
                removed += 1
        return removed

    # --- reading

    def read(self, path: Path) -> Postback:
        return decode(path.name.removesuffix(SUFFIX), path.read_bytes())

    def waiting(self) -> Iterator[os.DirEntry[str]]:
        """Postbacks in incoming/, streamed in directory order (never the whole listing at once)."""
        with os.scandir(self.incoming) as entries:
            for entry in entries:
                if entry.name.endswith(SUFFIX):
                    yield entry

    def backlog(self, limit: int) -> tuple[int, str | None]:
        """(count, oldest id) over at most ``limit`` waiting files: cheap however large the backlog."""
        count, oldest = 0, None
        for entry in self.waiting():
            count += 1
            name = entry.name.removesuffix(SUFFIX)
            oldest = name if oldest is None or name < oldest else oldest
            if count >= limit:
                break
        return count, oldest

    def writable(self) -> bool:
        return os.access(self.tmp, os.W_OK) and os.access(self.incoming, os.W_OK)

    def free_bytes(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize


def write_file(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Write a whole file in an unpublished folder, mode 0640, and fsync it unless the caller syncs later."""
    with path.open("wb") as handle:
        os.fchmod(handle.fileno(), FILE_MODE)
        handle.write(data)
        handle.flush()
        if sync:
            os.fsync(handle.fileno())


def write_json(path: Path, value: Any) -> None:
    write_file(path, json.dumps(value, indent=2, ensure_ascii=False).encode() + b"\n")


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
