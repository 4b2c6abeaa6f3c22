"""Durable-write primitives: what "on disk" means here, whatever the folder.

A new file is created with O_EXCL, written whole and fsynced before anyone may see it; a folder's entries are
durable once the folder itself is fsynced; ``syncfs(2)`` makes everything written to one filesystem durable in
one journal commit. Files are created 0640 and folders 0750, whatever the umask.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)  # syncfs(2), which the os module does not offer

FILE_MODE = 0o640
DIR_MODE = 0o750


def write_new(path: Path | str, data: bytes) -> None:
    """Create ``path`` (must not exist) with ``data``, mode 0640, fsynced; nothing is left on failure."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        _write_whole(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(path)
        raise
    os.close(fd)


def write_file(path: Path | str, data: bytes, *, sync: bool = True) -> None:
    """Write a whole file in an unpublished folder, mode 0640, and fsync it unless the caller syncs later."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        _write_whole(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_whole(fd: int, data: bytes) -> None:
    """All of ``data``, however many writes it takes, in a file made 0640 whatever the umask."""
    os.fchmod(fd, FILE_MODE)  # the umask must not take the group's read bit
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def replace_file(path: Path, data: bytes, suffix: str) -> None:
    """Replace ``path`` whole (a fsynced temp file renamed over it): a crash leaves the old or the new one."""
    temp = path.with_name(f".{path.name}.{os.urandom(4).hex()}{suffix}")
    write_new(temp, data)
    try:
        os.rename(temp, path)
    except OSError:
        unlink_quietly(temp)
        raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dir(path: Path) -> bool:
    """Create one folder (mode 0750) if it is missing and fsync its parent; True if it was created."""
    if not make_private_dir(path):
        return False
    fsync_dir(path.parent)
    return True


def make_private_dir(path: Path, parents: bool = False) -> bool:
    """Create a folder, mode 0750 whatever the umask (and its missing parents too, if asked); True if it
    was created (False: it was there)."""
    if parents and not path.parent.is_dir():
        make_private_dir(path.parent, parents=True)
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        return False
    os.chmod(path, DIR_MODE)  # mkdir's mode is cut by the umask: under 077 the group could not read
    return True


def create_private(path: Path) -> None:
    """Create an empty file, mode 0640 whatever the umask, unless it exists (a database file, before the
    library that fills it creates it with its own mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def owned_like(path: Path, model: Path) -> None:
    """When root (an operator's CLI) makes a file or folder in the spool, it takes ``model``'s owner and
    group, so the services, which run as the spool's owner, can read and move it."""
    if os.geteuid() == 0:
        owner = model.stat()
        os.chown(path, owner.st_uid, owner.st_gid)


def unlink_quietly(path: Path | str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)  # noqa: PTH108 (a str or a Path)


class FilesystemSync:
    """``syncfs(2)`` of the filesystem holding one folder, on a descriptor held from the first call on, so a
    write-back error since then is reported by the next sync."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None

    def sync(self) -> None:
        if self._fd is None:
            self._fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if _libc.syncfs(self._fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"syncfs {self.folder}: {os.strerror(errno)}")


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
