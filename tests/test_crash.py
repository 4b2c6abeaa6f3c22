"""Crash consistency: 3,000 postbacks while gunicorn workers, the arbiter and the spool worker are killed -9.

Afterwards every postback that got a 200 must be in processed/ exactly once, byte-exact, with its media;
nothing may be half-written, and the index must agree with the folders. The figures are printed so the log
shows what was proven: they are printed past pytest's capture, so CI's log carries them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mospool.config import Settings
from mospool.store import Spool
from tests import index_db
from tests.disk import fill, small_tmpfs
from tests.origin import Origin, Reply
from tests.servers import REPO, Gunicorn, KeepAlive, free_port, write_config

pytestmark = pytest.mark.slow  # gunicorn and the worker killed -9 under load, a tmpfs filled up

TOTAL = 3000
SENDERS = 4
KILLS_EACH = 5
GRACE_SECONDS = 3600


def photo(n: int) -> bytes:
    return b"\xff\xd8\xff\xe0" + f"photo {n} ".encode() * 200


def body_for(n: int, origin: Origin) -> tuple[bytes, str]:
    """A mix of dialects; every third one is an MMS with a photo from the local origin."""
    tracking = f"crash-{n}"
    if n % 3 == 0:
        url = origin.url(f"/m/{n}.jpg")
        return json.dumps(
            {"origin": "MMS_MO", "code": "N401", "from": "1555", "to": "28444", "tracking-id": tracking,
             "content": [{"file": url}]}
        ).encode(), "application/json"  # fmt: skip
    if n % 3 == 1:
        xml = f"<POSTBACK><ORIGIN>SMS_MO</ORIGIN><CODE>N401</CODE><TRACKINGID>{tracking}</TRACKINGID><TEXT>t{n}</TEXT></POSTBACK>"
        return xml.encode(), "text/xml"
    return (
        f"origin=SMS_MO&code=N401&tracking-id={tracking}&text=f{n}".encode(),
        "application/x-www-form-urlencoded",
    )


@dataclass
class Ledger:
    bodies: dict[str, bytes] = field(default_factory=dict)
    acknowledged: set[str] = field(default_factory=set)
    sent: int = 0
    refused: int = 0
    resent_after_ack: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Sender(threading.Thread):
    """One Sinch-like keep-alive connection: on a non-200 or a broken connection, it retries the postback."""

    def __init__(self, port: int, numbers: list[int], origin: Origin, ledger: Ledger, seed: int) -> None:
        super().__init__(daemon=True)
        self.port, self.numbers, self.origin, self.ledger = port, numbers, origin, ledger
        self.random = random.Random(seed)
        self.client = KeepAlive(port, timeout=10)

    def run(self) -> None:
        for n in self.numbers:
            body, content_type = body_for(n, self.origin)
            with self.ledger.lock:
                self.ledger.bodies[f"crash-{n}"] = body
            self.deliver(f"crash-{n}", body, content_type)
            if self.random.random() < 0.05:  # Sinch sometimes retries what we already acknowledged
                self.deliver(f"crash-{n}", body, content_type)
                with self.ledger.lock:
                    self.ledger.resent_after_ack += 1

    def deliver(self, tracking: str, body: bytes, content_type: str) -> None:
        for _ in range(200):
            status = self.client.post(body, content_type)
            with self.ledger.lock:
                self.ledger.sent += 1
                if status == 200:
                    self.ledger.acknowledged.add(tracking)
                    return
                self.ledger.refused += 1
            time.sleep(0.05)
        raise AssertionError(f"{tracking} was never acknowledged")


class Services:
    """The receiver (gunicorn) and the spool worker, restarted after every kill as systemd would."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.port = free_port()
        self.kills = {"gunicorn worker": 0, "gunicorn arbiter": 0, "spool worker": 0}
        self.gunicorn = self.start_gunicorn()
        self.worker = self.start_worker()

    def start_gunicorn(self) -> Gunicorn:
        return Gunicorn(self.config, workers=2, threads=4, extra=("--reuse-port",), port=self.port).start()

    def start_worker(self) -> subprocess.Popen[bytes]:
        args = [sys.executable, "spool_worker.py", "--config", str(self.config)]
        return subprocess.Popen(args, cwd=REPO, stderr=subprocess.DEVNULL)

    def kill_one(self, target: str) -> None:
        if target == "gunicorn worker":
            pids = self.gunicorn.worker_pids()
            if not pids:
                return
            os.kill(random.choice(pids), signal.SIGKILL)
        elif target == "gunicorn arbiter":
            assert self.gunicorn.proc is not None
            self.gunicorn.proc.kill()
            self.gunicorn.proc.wait()
            self.gunicorn = self.start_gunicorn()  # orphaned workers exit when they see their parent gone
        else:
            self.worker.kill()
            self.worker.wait()
            self.worker = self.start_worker()
        self.kills[target] += 1

    def stop(self) -> None:
        self.worker.terminate()
        self.worker.wait(timeout=60)
        self.gunicorn.stop()


def killer(services: Services, done: threading.Event, seed: int) -> None:
    chooser = random.Random(seed)
    targets = list(services.kills)
    while not done.is_set() or min(services.kills.values()) < KILLS_EACH:
        time.sleep(chooser.uniform(0.1, 0.4))
        services.kill_one(targets[sum(services.kills.values()) % len(targets)])


@pytest.fixture
def origin(origin: Origin) -> Origin:
    """The local origin (tests/conftest.py), serving the photo of every third postback."""
    for n in range(0, TOTAL, 3):
        origin.serve(f"/m/{n}.jpg", Reply(body=photo(n), content_type="image/jpeg"))
    return origin


def final_drain(config: Path, spool: Spool) -> None:
    once = [sys.executable, "spool_worker.py", "--config", str(config), "--once"]
    for _ in range(20):
        subprocess.run(once, cwd=REPO, check=True, stderr=subprocess.DEVNULL)
        if not any(spool.deferred.iterdir()) and not any(spool.incoming.iterdir()):
            return
        time.sleep(0.3)


def test_nothing_acknowledged_is_lost_or_doubled_under_kill_9(
    tmp_path: Path, origin: Origin, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = Spool(tmp_path / "spool")
    config = write_config(
        tmp_path / "config.ini",
        spool.root,
        {
            "worker": {"rescan_seconds": 1, "concurrency": 4},
            "media": {"allow_private_networks": "yes", "retry_base_seconds": 0.2, "timeout_seconds": 5},
            "logging": {"level": "WARNING"},
        },
    )
    services = Services(config)
    ledger, done = Ledger(), threading.Event()
    senders = [
        Sender(services.port, list(range(i, TOTAL, SENDERS)), origin, ledger, seed=i) for i in range(SENDERS)
    ]
    chaos = threading.Thread(target=killer, args=(services, done, 7), daemon=True)
    started = time.monotonic()
    try:
        chaos.start()
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(timeout=120)
        done.set()
        chaos.join(timeout=60)
    finally:
        done.set()
        services.stop()
    final_drain(config, spool)
    figures = verify(spool, ledger, origin)
    with capsys.disabled():
        print(
            f"\ncrash suite: sent {ledger.sent} requests for {TOTAL} postbacks, acknowledged"
            f" {len(ledger.acknowledged)}, refused/broken {ledger.refused}, resent after ack"
            f" {ledger.resent_after_ack}; processed {figures['processed']}, duplicates {figures['duplicates']};"
            f" kills {services.kills}; {time.monotonic() - started:.1f}s"
        )
    assert min(services.kills.values()) >= KILLS_EACH
    assert all(not sender.is_alive() for sender in senders)


def verify(spool: Spool, ledger: Ledger, origin: Origin) -> dict[str, int]:
    processed: dict[str, Path] = {}
    for path in (spool.root / "processed").glob("*/*/message.json"):
        tracking = json.loads(path.read_bytes())["tracking_id"]
        assert tracking not in processed, (
            f"{tracking} processed twice: {processed[tracking]} and {path.parent}"
        )
        processed[tracking] = path.parent
    assert len(ledger.acknowledged) == TOTAL
    assert ledger.acknowledged <= set(processed), sorted(ledger.acknowledged - set(processed))[:5]
    for tracking, folder in processed.items():
        (body_file,) = folder.glob("body.*")
        assert body_file.read_bytes() == ledger.bodies[tracking], tracking
        n = int(tracking.split("-")[1])
        message = json.loads((folder / "message.json").read_bytes())
        if n % 3 == 0:
            (part,) = message["media"]
            assert part["sha256"] == hashlib.sha256(photo(n)).hexdigest()
            assert (folder / part["file"]).read_bytes() == photo(n)
    assert list(spool.work.iterdir()) == []
    assert list((spool.root / "failed").glob("*/*")) == []
    check_no_partial_files(spool)
    duplicates = list((spool.root / "duplicates").glob("*/*/duplicate.json"))
    check_index(spool, processed, duplicates)
    return {"processed": len(processed), "duplicates": len(duplicates)}


def check_no_partial_files(spool: Spool) -> None:
    now = time.time()
    for path in spool.root.rglob("*"):
        if not path.is_file() or path.name.startswith("index.sqlite3"):
            continue
        if path.parent == spool.tmp:  # a request killed mid-write; removed once older than the grace period
            assert now - path.stat().st_mtime < GRACE_SECONDS
            continue
        assert path.stat().st_size > 0, f"empty file {path}"
        assert not path.name.endswith(".part"), f"partial download {path}"
        if path.name.endswith(".json"):
            json.loads(path.read_bytes())


def check_index(spool: Spool, processed: dict[str, Path], duplicates: list[Path]) -> None:
    settings = Settings.for_spool(spool.root)
    rows = index_db.rows(settings, "SELECT tracking_id, spool_id, state FROM records")
    assert {(tracking, spool_id) for tracking, spool_id, _ in rows} == {
        (tracking, folder.name) for tracking, folder in processed.items()
    }
    assert {state for _, _, state in rows} == {"processed"}
    noted = {spool_id for (spool_id,) in index_db.rows(settings, "SELECT spool_id FROM duplicates")}
    assert noted == {path.parent.name for path in duplicates}


def test_full_disk_mid_run_answers_503_and_loses_nothing(
    tmp_path: Path, origin: Origin, capsys: pytest.CaptureFixture[str]
) -> None:
    with small_tmpfs(tmp_path / "disk", "16m") as mount_point:
        full_disk_run(mount_point, origin, capsys)


def full_disk_run(disk: Path, origin: Origin, capsys: pytest.CaptureFixture[str]) -> None:
    spool = Spool(disk / "spool")
    config = write_config(
        disk.parent / "config.ini",
        spool.root,
        {
            "receiver": {"min_free_bytes": 0},
            "worker": {"rescan_seconds": 1, "min_free_bytes": 0},  # the disk fills up under it all the same
            "media": {"allow_private_networks": "yes"},
            "logging": {"level": "WARNING"},
        },
    )
    services = Services(config)
    ledger = Ledger()
    sender = Sender(services.port, [], origin, ledger, seed=1)
    statuses: list[int | None] = []
    try:
        for n in range(0, 60):
            body, content_type = body_for(n, origin)
            ledger.bodies[f"crash-{n}"] = body
            if n == 20:
                filler = fill(disk)
            if n == 40:
                filler.unlink()
            status = sender.client.post(body, content_type)
            statuses.append(status)
            if status == 200:
                ledger.acknowledged.add(f"crash-{n}")
    finally:
        services.stop()
    final_drain(config, spool)
    with capsys.disabled():
        print(f"\nfull disk mid-run: statuses {statuses}")
    assert set(statuses[:20]) == {200}
    assert 503 in statuses[20:40]
    assert set(statuses[40:]) == {200}
    for tracking in ledger.acknowledged:
        matches = list((spool.root / "processed").glob("*/*/message.json"))
        assert tracking in {json.loads(m.read_bytes())["tracking_id"] for m in matches}
    assert list(spool.work.iterdir()) == []
