"""A real full disk: the spool on a small tmpfs that the test fills up (needs root, as CI has)."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mospool.spool import Spool
from tests.servers import Gunicorn, write_config


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_full_disk_answers_503_loses_nothing_and_recovers(small_disk: Path) -> None:
    spool = Spool(small_disk / "spool")
    config = write_config(small_disk.parent / "config.ini", spool.root, {"receiver": {"min_free_bytes": 0}})
    server = Gunicorn(config).start()
    try:
        assert server.post("/postback", b"before the disk filled")[0] == 200
        filler = fill(small_disk)
        status, headers, _ = server.post("/postback", b"B" * 200_000)
        health = server.post("/healthz", b"", method="GET")[0]
        filler.unlink()
        after = server.post("/postback", b"after space was freed")[0]
    finally:
        server.stop()
    assert (status, headers["Retry-After"]) == (503, "300")
    assert health == 503
    assert after == 200
    bodies = sorted(spool.read(Path(entry.path)).body for entry in spool.waiting())
    assert bodies == [b"after space was freed", b"before the disk filled"]
    assert list(spool.tmp.iterdir()) == []
