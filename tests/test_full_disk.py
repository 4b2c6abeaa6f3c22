"""A real full disk: the spool on a small tmpfs that the test fills up (needs root, as CI has)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mospool.store import SUFFIX, Spool
from tests.build import publish, sms
from tests.disk import fill, small_tmpfs
from tests.servers import REPO, Gunicorn, write_config

pytestmark = pytest.mark.slow  # tmpfs mounts, gunicorn and worker processes


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "4m") as mount_point:
        yield mount_point


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


def test_worker_on_a_full_disk_releases_and_waits_for_the_next_rescan(small_disk: Path) -> None:
    """A storage error puts the postback back in incoming/; that rename is an inotify event, which must not
    make the worker claim it again at once, in a hot loop, while the disk is still full."""
    spool = Spool(small_disk / "spool")
    worker_settings = {"rescan_seconds": 2, "min_free_bytes": 0}  # filing goes on until it fails
    config = write_config(small_disk.parent / "config.ini", spool.root, {"worker": worker_settings})
    worker = subprocess.Popen(
        [sys.executable, "spool_worker.py", "--config", str(config)], cwd=REPO, stderr=subprocess.PIPE
    )
    while not (spool.root / "index.sqlite3").exists():  # running, its index open
        time.sleep(0.05)
    staging = Spool(small_disk / "staging")  # same disk, not watched: a rename from it needs no space
    staging.create()
    postback_id = publish(staging, sms("full-1", "x" * 50_000))
    filler = fill(small_disk)
    name = postback_id + SUFFIX
    (staging.incoming / name).rename(spool.incoming / name)  # arrives while the disk is full
    time.sleep(3)  # the inotify hint and one periodic rescan, while the disk stays full
    filler.unlink()
    deadline = time.monotonic() + 10
    while not spool.record_dir("processed", postback_id).is_dir() and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.terminate()
    _, stderr = worker.communicate(timeout=30)
    storage_errors = [line for line in stderr.decode().splitlines() if "storage error" in line]
    assert spool.record_dir("processed", postback_id).is_dir()  # and once space is back, it is filed
    assert 1 <= len(storage_errors) <= 3, f"{len(storage_errors)} claims of one postback on a full disk"


def test_worker_started_on_a_full_disk_says_why_and_exits_2(small_disk: Path) -> None:
    spool = Spool(small_disk / "spool")
    spool.create()
    fill(small_disk)  # the index's WAL files cannot be created
    config = write_config(small_disk.parent / "config.ini", spool.root)
    run = subprocess.run(
        [sys.executable, "spool_worker.py", "--config", str(config)], cwd=REPO, capture_output=True, text=True
    )
    assert run.returncode == 2  # systemd's Restart=always tries again until there is space
    assert "cannot open the index" in run.stderr and "Traceback" not in run.stderr
