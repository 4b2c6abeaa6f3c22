"""A real full disk for tests: a small tmpfs mounted under tmp_path (needs root, as CI has), and fill()."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def small_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount's size=, e.g. 4m) at mount_point, created here and lazily unmounted after."""
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(disk: Path, leave: int = 0) -> Path:
    """Write a file until the disk is full (ENOSPC), or until only ``leave`` bytes are free; returns it, for
    the test to free the space again."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while free_bytes(disk) > leave:
                handle.write(b"\0" * min(4096, max(free_bytes(disk) - leave, 1)))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def free_bytes(disk: Path) -> int:
    stats = os.statvfs(disk)
    return stats.f_bavail * stats.f_frsize
