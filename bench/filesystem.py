"""Where the benchmarks write: a fresh ext4 filesystem with a journal, made for the run on a loop device.

Every spool (mo-spool's and the baselines') lives on it, so the figures are about mo-spool and not about the
state of the host's filesystem. That matters here: this workplace's root ext4 has no journal, and without
one ext4 scans the inodes deleted in the last few seconds on every file creation, so one benchmark's clean-up
slows the next one's writes (a kernel profile showed most of the worker's time in ext4's
recently_deleted()). A VM's ext4 has a journal, as this one does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SIZE_BYTES = 8 * 2**30  # sparse: only what the benchmarks write takes space
HOST_TMP = tempfile.gettempdir()  # where the images go: never inside another fresh filesystem


@contextmanager
def fresh_ext4() -> Iterator[str]:
    """Mount a new journaled ext4 and yield a description; falls back to the default temp dir without root."""
    if not (shutil.which("mkfs.ext4") and shutil.which("mount")) or os.geteuid() != 0:
        yield f"{tempfile.gettempdir()} (not root: no fresh filesystem)"
        return
    with tempfile.TemporaryDirectory(prefix="mospool-bench-", dir=HOST_TMP) as holder:
        image, mount_point = Path(holder) / "ext4.img", Path(holder) / "fs"
        mount_point.mkdir()
        with image.open("wb") as handle:
            handle.truncate(SIZE_BYTES)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mount_point)], check=True)
        previous, tempfile.tempdir = tempfile.tempdir, str(mount_point)
        try:
            yield f"fresh ext4 with a journal on a loop device ({mount_point})"
        finally:
            tempfile.tempdir = previous
            unmount(mount_point)


def unmount(mount_point: Path) -> None:
    """Unmount, waiting a little for a process that was just killed to let go of its files."""
    for _ in range(30):
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode == 0:
            return
        time.sleep(1)
    subprocess.run(["umount", str(mount_point)], check=True)
