"""Power cuts, played on loop devices: a fresh ext4 or XFS on a sparse file, periodic writeback off, and a cut
that copies the backing file while every process writing to it is frozen with SIGSTOP.

With periodic writeback off and the journal timer parked, only what was fsynced has reached the loop device,
so the copy is what a power cut leaves (the page cache of the spool's filesystem is lost). The copy is taken
only while the loop device is idle, and retaken if anything reached the device meanwhile, so it is one
instant. What it does not model: a disk cache that loses or reorders blocks written to the device but not yet
flushed (the copy keeps every block that reached the loop device).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

FS_BYTES = 512 * 1024 * 1024  # XFS refuses anything under 300 MiB
JOURNAL_TIMER_SECONDS = 3600  # ext4 commit=: jbd2 must not commit on its own timer during a run

# Set for the whole run, restored after. Periodic writeback off; XFS's log worker (which forces the log) parked.
SYSCTLS = {
    "vm/dirty_writeback_centisecs": "0",
    "vm/dirty_expire_centisecs": "360000",
    "fs/xfs/xfssyncd_centisecs": "720000",
}

# The sysctls are the machine's, so two runs at once (two worktrees, say) would save each other's settings and
# leave writeback off for good: a machine-wide lock makes them take turns.
LOCK_FILE = Path("/run/lock/mo-spool-powercut.lock")
LOCK_WAIT_SECONDS = 120

MKFS = {
    # Inode tables and journal zeroed now, so no ext4lazyinit thread writes to the device during a cut.
    "ext4": ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"],
    "xfs": ["mkfs.xfs", "-q", "-f"],
}
MOUNT_OPTIONS = {"ext4": f"commit={JOURNAL_TIMER_SECONDS},noinit_itable", "xfs": "defaults"}
COPY_MOUNT_OPTIONS = {"ext4": "defaults", "xfs": "nouuid"}  # the copy has the live filesystem's UUID


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def machine_lock(path: Path = LOCK_FILE, timeout: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, f"another power-cut run held {path} for {timeout}s"
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def writeback_off(settings: Mapping[str, str] = SYSCTLS) -> Iterator[None]:
    """Set the sysctls for the duration and put every one back, whatever happens (one run at a time)."""
    saved: dict[Path, str] = {}
    with machine_lock():
        try:
            for name, value in settings.items():
                path = Path("/proc/sys") / name
                saved[path] = path.read_text().strip()
                path.write_text(value)
            yield
        finally:
            for path, value in saved.items():
                path.write_text(value)


@contextlib.contextmanager
def attached(backing: Path) -> Iterator[str]:
    device = run("losetup", "-f", "--show", str(backing))
    try:
        yield device
    finally:
        run("losetup", "-d", device)


@contextlib.contextmanager
def mounted(device: str, mount_point: Path, fstype: str, options: str) -> Iterator[Path]:
    mount_point.mkdir(parents=True, exist_ok=True)
    run("mount", "-t", fstype, "-o", options, device, str(mount_point))
    try:
        yield mount_point
    finally:
        try:
            run("umount", str(mount_point))
        except subprocess.CalledProcessError:  # still busy after a failure: detach it so the device frees
            run("umount", "--lazy", str(mount_point))


@contextlib.contextmanager
def fresh_filesystem(fstype: str, backing: Path, mount_point: Path) -> Iterator[str]:
    """A new filesystem on a sparse file on a loop device, mounted at mount_point; yields the device."""
    with backing.open("wb") as handle:
        handle.truncate(FS_BYTES)
    with attached(backing) as device:
        run(*MKFS[fstype], device)
        with mounted(device, mount_point, fstype, MOUNT_OPTIONS[fstype]):
            yield device


@contextlib.contextmanager
def mounted_copy(fstype: str, copy: Path, mount_point: Path) -> Iterator[Path]:
    """Mount a cut's copy: the journal is replayed (ext4) or the log recovered (XFS) here, as after a reboot."""
    with attached(copy) as device, mounted(device, mount_point, fstype, COPY_MOUNT_OPTIONS[fstype]):
        yield mount_point


def device_writes(device: str) -> tuple[int, ...]:
    """Writes, discards and flushes the device has completed, and the requests in flight (/sys/block/*/stat)."""
    fields = [int(field) for field in Path(f"/sys/block/{Path(device).name}/stat").read_text().split()]
    write_ios, write_sectors, in_flight, discard_ios, flush_ios = (fields[i] for i in (4, 6, 8, 11, 15))
    return write_ios, write_sectors, discard_ios, flush_ios, in_flight


def copy_when_idle(device: str, backing: Path, copy: Path, attempts: int = 5) -> None:
    """Copy the backing file while nothing reaches the device, so the copy is one instant."""
    for _ in range(attempts):
        before = device_writes(device)
        if before[-1] == 0:
            copy.unlink(missing_ok=True)
            run("cp", "--sparse=always", str(backing), str(copy))
            if device_writes(device) == before:
                return
        time.sleep(0.05)
    raise AssertionError(f"{device} kept being written while every writer was frozen: no clean cut")


def process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def freeze(groups: list[int], timeout: float = 10.0) -> list[int]:
    """SIGSTOP every process of the given process groups; returns once all are stopped (a syscall in progress,
    an fsync say, completes first). Returns the pids frozen."""
    for pgid in groups:
        os.killpg(pgid, signal.SIGSTOP)
    pids = [pid for pgid in groups for pid in group_members(pgid)]
    deadline = time.monotonic() + timeout
    while not all(process_state(pid) in ("T", "gone", "Z") for pid in pids):
        if time.monotonic() > deadline:
            raise AssertionError(f"not frozen after {timeout}s: { {p: process_state(p) for p in pids} }")
        time.sleep(0.005)
    return pids


def thaw(groups: list[int]) -> None:
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGCONT)
