"""Power cuts: the spool on a fresh ext4 and a fresh XFS (loop devices), the real receiver and worker under
load, and at random instants a copy of the device taken while both are frozen (tests/powercut.py says why the
copy is what a power cut leaves). Each copy is mounted (journal replay, log recovery), the real worker runs
over it, and every postback acknowledged with 200 must be in processed/ exactly once, byte-exact, with no
partial folder and the index naming exactly the published folders.

The suite tests from the outside (processes, files, the index read-only), so it holds whatever the worker's
filing looks like inside. The last tests run the same cuts with mutants of the source (the receiver without
its file fsync or its directory fsync, the worker without its fsyncs) and find acknowledged postbacks lost:
the suite can see a missing fsync. Figures go to the log past pytest's capture, like tests/test_crash.py's.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import powercut
from tests.origin import Origin, Reply
from tests.servers import REPO, Gunicorn, KeepAlive, write_config

pytestmark = pytest.mark.slow  # loop devices with fresh filesystems, gunicorn and the worker under load

POSTBACK_LIMIT = 20_000  # per run, a bound on the load however long a run takes
FILED_BEFORE_CUTS = 20
SEED = int.from_bytes(os.urandom(4))

CONFIG: dict[str, dict[str, object]] = {
    "worker": {"rescan_seconds": 1, "concurrency": 4},
    "media": {"allow_private_networks": "yes", "retry_base_seconds": 0.2, "timeout_seconds": 10},
    "logging": {"level": "WARNING"},
}


@dataclass(frozen=True)
class Run:
    cuts: int
    with_worker: bool  # whether the worker runs during the load
    senders: int = 3
    pace_seconds: float = 0.03  # between one sender's postbacks: keeps a copy's backlog (filed later) at tens
    resend_share: float = 0.1  # Sinch resends an acknowledged postback now and then: a duplicate to file once


FULL_RUN = Run(cuts=4, with_worker=True)


# --- the load: realistic postbacks from a few Sinch-like connections


def photo(n: int) -> bytes:
    return b"\xff\xd8\xff\xe0" + f"powercut photo {n} ".encode() * 100


def postback(n: int, origin: Origin) -> tuple[bytes, str]:
    """JSON and XML, SMS and MMS, MMS with and without a photo from the local origin."""
    tracking = f"cut-{n}"
    kind = n % 4
    if kind == 0:
        url = origin.serve(f"/m/{n}.jpg", Reply(body=photo(n), content_type="image/jpeg"))
        content = {"origin": "MMS_MO", "code": "N401", "from": "17745550001", "to": "28444",
                   "tracking-id": tracking, "message-subject": f"s{n}", "content": [{"file": url}]}  # fmt: skip
        return json.dumps(content).encode(), "application/json"
    if kind == 1:
        content = {"origin": "MMS_MO", "code": "N401", "from": "17745550002", "to": "28444",
                   "tracking-id": tracking, "message-subject": f"no media {n}"}  # fmt: skip
        return json.dumps(content).encode(), "application/json"
    if kind == 2:
        content = {"origin": "SMS_MO", "code": "N401", "from": "17745550003", "to": "28444",
                   "tracking-id": tracking, "message-text": f"text {n} é"}  # fmt: skip
        return json.dumps(content, ensure_ascii=False).encode(), "application/json; charset=utf-8"
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<POSTBACK><ORIGIN>SMS_MO</ORIGIN><CODE>N401</CODE>'
        f"<FROM>15552312102</FROM><TO>86717</TO><TRACKINGID>{tracking}</TRACKINGID><TEXT>xml {n}</TEXT></POSTBACK>"
    )
    return xml.encode(), "text/xml"


@dataclass
class Ledger:
    """What was sent, and which tracking ids got a 200 (a postback is acknowledged once any try got one)."""

    bodies: dict[str, bytes] = field(default_factory=dict)
    acknowledged: set[str] = field(default_factory=set)
    sent: int = 0
    resent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> dict[str, bytes]:
        with self.lock:
            return {tracking: self.bodies[tracking] for tracking in self.acknowledged}


class Sender(threading.Thread):
    """One keep-alive connection posting postbacks numbered first, first+step, … until stopped."""

    def __init__(
        self, port: int, first: int, run: Run, origin: Origin, ledger: Ledger, stop: threading.Event
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.first, self.origin, self.ledger, self.stop = port, first, origin, ledger, stop
        self.senders, self.pace_seconds, self.resend_share = run.senders, run.pace_seconds, run.resend_share
        self.random = random.Random(SEED + first)
        self.client = KeepAlive(port, timeout=20)

    def run(self) -> None:
        for n in range(self.first, POSTBACK_LIMIT, self.senders):
            if self.stop.is_set():
                return
            body, content_type = postback(n, self.origin)
            with self.ledger.lock:
                self.ledger.bodies[f"cut-{n}"] = body
            self.deliver(f"cut-{n}", body, content_type)
            if self.random.random() < self.resend_share:
                self.deliver(f"cut-{n}", body, content_type)
                with self.ledger.lock:
                    self.ledger.resent += 1
            self.stop.wait(self.pace_seconds)

    def deliver(self, tracking: str, body: bytes, content_type: str) -> None:
        for _ in range(50):
            status = self.client.post(body, content_type)
            with self.ledger.lock:
                self.ledger.sent += 1
                if status == 200:
                    self.ledger.acknowledged.add(tracking)
                    return
            if self.stop.wait(0.05):
                return


# --- the services, frozen and thawed as a whole


class Services:
    """The receiver (gunicorn, arbiter and workers) and the spool worker, each in its own process group."""

    def __init__(self, source: Path, config: Path, with_worker: bool) -> None:
        self.gunicorn = Gunicorn(config, workers=2, threads=4, source=source).start()
        self.worker: subprocess.Popen[bytes] | None = None
        if with_worker:
            args = [sys.executable, "spool_worker.py", "--config", str(config)]
            self.worker = subprocess.Popen(args, cwd=source, start_new_session=True)

    @property
    def port(self) -> int:
        return self.gunicorn.port

    def check_alive(self) -> None:
        for name, proc in (("receiver (gunicorn)", self.gunicorn.proc), ("spool worker", self.worker)):
            code = proc.poll() if proc is not None else None
            assert code is None, (
                f"the {name} died under load (exit {code}); its stderr is in the captured output"
            )

    def groups(self) -> list[int]:
        assert self.gunicorn.proc is not None
        return [proc.pid for proc in (self.gunicorn.proc, self.worker) if proc is not None]

    def kill(self) -> None:
        """Power off: kill -9 every process (stopped ones too) and wait until none is left to hold the mount."""
        groups = self.groups()
        for pgid in groups:
            os.killpg(pgid, signal.SIGKILL)
        for proc in (self.gunicorn.proc, self.worker):
            if proc is not None:
                proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(powercut.group_members(pgid) for pgid in groups):
            assert time.monotonic() < deadline, "killed processes still hold the spool"
            time.sleep(0.05)


@dataclass(frozen=True)
class Cut:
    copy: Path
    acknowledged: dict[str, bytes]  # tracking id -> body, every postback acknowledged before the thaw


@pytest.fixture
def sysctls() -> Iterator[None]:
    if not Path("/proc/sys/fs/xfs").exists():  # XFS as a module, not loaded yet: its knobs appear on load
        powercut.run("modprobe", "xfs")
    with powercut.writeback_off():
        yield


def power_cuts(
    fstype: str, source: Path, tmp_path: Path, origin: Origin, run: Run
) -> tuple[list[Cut], Ledger]:
    """Run the receiver (and the worker) on a fresh filesystem under load; cut the power run.cuts times."""
    backing, chooser = tmp_path / f"{fstype}.img", random.Random(SEED)
    cuts: list[Cut] = []
    ledger, stop = Ledger(), threading.Event()
    with powercut.fresh_filesystem(fstype, backing, tmp_path / "live") as device:
        config = write_config(tmp_path / "live.ini", tmp_path / "live" / "spool", CONFIG)
        services = Services(source, config, run.with_worker)
        senders = [Sender(services.port, first, run, origin, ledger, stop) for first in range(run.senders)]
        try:
            for sender in senders:
                sender.start()
            wait_until(lambda: bool(ledger.snapshot()), "a postback acknowledged", services)
            if run.with_worker:  # cut once the worker is filing, so that the cuts find its work too
                processed = tmp_path / "live" / "spool" / "processed"
                wait_until(
                    lambda: len(list(processed.glob("*/*/"))) >= FILED_BEFORE_CUTS,
                    f"{FILED_BEFORE_CUTS} records filed",
                    services,
                )
            for number in range(run.cuts):
                time.sleep(chooser.uniform(0.3, 1.2))
                cuts.append(cut(device, backing, tmp_path / f"cut-{number}.img", services, ledger))
        finally:
            stop.set()
            services.kill()
            for sender in senders:
                sender.join(timeout=30)
    return cuts, ledger


def wait_until(condition: Callable[[], bool], what: str, services: Services, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        services.check_alive()
        assert time.monotonic() < deadline, f"not {what} after {timeout}s"
        time.sleep(0.1)


def cut(device: str, backing: Path, copy: Path, services: Services, ledger: Ledger) -> Cut:
    services.check_alive()
    groups = services.groups()
    powercut.freeze(groups)
    try:
        powercut.copy_when_idle(device, backing, copy)
        # Every 200 received by now was sent before the freeze, after its fsyncs: it must be in the copy.
        acknowledged = ledger.snapshot()
    finally:
        powercut.thaw(groups)
    return Cut(copy, acknowledged)


# --- after the cut: recover the copy with the real worker and look at what it holds


@dataclass
class Verdict:
    checked: int = 0
    waiting: int = 0  # postbacks the worker had not filed at the cut: only the receiver's fsyncs kept them
    duplicates: int = 0
    lost: list[str] = field(default_factory=list)  # acknowledged, not in processed/
    doubled: list[str] = field(default_factory=list)  # in processed/ more than once
    altered: list[str] = field(default_factory=list)  # body.* not the bytes sent
    broken: list[str] = field(default_factory=list)  # partial folders, leftovers, index disagreements


def recover_and_inspect(fstype: str, copy: Path, acknowledged: dict[str, bytes], tmp_path: Path) -> Verdict:
    with powercut.mounted_copy(fstype, copy, tmp_path / "recovered") as root:
        spool = root / "spool"
        config = write_config(tmp_path / "recovered.ini", spool, CONFIG)
        waiting = len(list(spool.glob("incoming/*.postback")) + list(spool.glob("work/*.postback")))
        once = [sys.executable, "spool_worker.py", "--config", str(config), "--once"]
        subprocess.run(once, cwd=REPO, check=True, timeout=90)
        verdict = inspect(spool, acknowledged)
        verdict.waiting = waiting
        return verdict


def inspect(spool: Path, acknowledged: dict[str, bytes]) -> Verdict:
    verdict = Verdict(checked=len(acknowledged))
    filed: dict[str, list[Path]] = {}
    for folder in sorted(spool.glob("processed/*/*/")):  # record folders, not the day pages beside them
        for tracking in check_processed_folder(folder, verdict):
            filed.setdefault(tracking, []).append(folder)
    for tracking, body in acknowledged.items():
        folders = filed.get(tracking, [])
        if not folders:
            verdict.lost.append(tracking)
        elif len(folders) > 1:
            verdict.doubled.append(tracking)
        elif [sha256(path) for path in folders[0].glob("body.*")] != [hashlib.sha256(body).hexdigest()]:
            verdict.altered.append(tracking)
    for folder in spool.glob("failed/*/*/"):
        require(verdict, (folder / "error.json").is_file(), f"{folder}: no error.json")
    for folder in spool.glob("duplicates/*/*/"):
        verdict.duplicates += 1
        for name in ("duplicate.json", "request.json"):
            require(verdict, (folder / name).is_file(), f"{folder}: no {name}")
    check_files(spool, verdict)
    check_index(spool, filed, verdict)
    return verdict


def check_processed_folder(folder: Path, verdict: Verdict) -> list[str]:
    """Check a processed record is whole; returns the tracking ids it holds."""
    bodies = list(folder.glob("body.*"))
    messages = sorted(folder.glob("message*.json"))
    require(verdict, len(bodies) == 1, f"{folder}: {len(bodies)} body files")
    require(verdict, (folder / "request.json").is_file(), f"{folder}: no request.json")
    require(verdict, bool(messages), f"{folder}: no message.json")
    trackings = []
    for path in messages:
        message = read_json(path, verdict)
        if message is None:
            continue
        trackings.append(str(message["tracking_id"]))
        files = [folder / part["file"] for part in message.get("media") or []]
        got = [sha256(path) if path.is_file() else None for path in files]
        want = expected_media(str(message["tracking_id"]))
        require(verdict, got == want, f"{folder}: media {got} where the origin served {want}")
    return trackings


def expected_media(tracking: str) -> list[str | None]:
    """The SHA-256 of each part the origin served for this postback (see postback())."""
    n = int(tracking.removeprefix("cut-"))
    return [hashlib.sha256(photo(n)).hexdigest()] if n % 4 == 0 else []


def check_files(spool: Path, verdict: Verdict) -> None:
    """Nothing half-written in a published folder, and nothing left waiting after the worker's pass."""
    for state in ("processed", "failed", "duplicates"):
        for path in (spool / state).rglob("*"):
            if path.is_dir() or len(path.relative_to(spool / state).parts) < 3:
                continue  # the day's pages are views, rewritten by the worker, not part of a record
            half = path.stat().st_size == 0 or path.name.startswith(".") or path.suffix in (".part", ".tmp")
            require(verdict, not half, f"{path}: looks half-written")
            if (
                path.suffix == ".json"
                and path.name != "message.json"
                and not path.name.startswith("message-")
            ):
                read_json(path, verdict)  # messages were read (and checked) with their folder
    for state in ("incoming", "work", "deferred"):
        left = sorted(path.name for path in (spool / state).iterdir())
        require(verdict, not left, f"{state}/ still holds {left[:3]} after the worker's pass")


def check_index(spool: Path, filed: dict[str, list[Path]], verdict: Verdict) -> None:
    """The index's processed rows name exactly the published folders, each with its tracking id."""
    published = {
        (tracking, str(folder.relative_to(spool)))
        for tracking, folders in filed.items()
        for folder in folders
    }
    db = sqlite3.connect(f"file:{spool / 'index.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT tracking_id, folder, state FROM records").fetchall()
        duplicates = {row[0] for row in db.execute("SELECT folder FROM duplicates")}
    finally:
        db.close()
    indexed = {(str(tracking), str(folder)) for tracking, folder, state in rows}
    require(
        verdict, {state for _, _, state in rows} <= {"processed"}, "index rows not processed after the pass"
    )
    require(
        verdict, indexed == published, f"index and processed/ disagree: {sorted(indexed ^ published)[:4]}"
    )
    on_disk = {str(folder.relative_to(spool)) for folder in spool.glob("duplicates/*/*/")}
    require(
        verdict, duplicates == on_disk, f"index and duplicates/ disagree: {sorted(duplicates ^ on_disk)[:4]}"
    )


def read_json(path: Path, verdict: Verdict) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_bytes())
    except ValueError:
        verdict.broken.append(f"{path}: not JSON")
        return None
    if not isinstance(value, dict):
        verdict.broken.append(f"{path}: not a JSON object")
        return None
    return value


def require(verdict: Verdict, condition: bool, problem: str) -> None:
    if not condition:
        verdict.broken.append(problem)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the tests


@pytest.mark.timeout(240)
@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_power_cut_loses_nothing_acknowledged(
    fstype: str, sysctls: None, origin: Origin, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    cuts, ledger = power_cuts(fstype, REPO, tmp_path, origin, FULL_RUN)
    verdicts = [recover_and_inspect(fstype, one.copy, one.acknowledged, tmp_path) for one in cuts]
    lost = sum(len(verdict.lost) for verdict in verdicts)
    with capsys.disabled():
        print(
            f"\npower-cut suite ({fstype}): {len(cuts)} cuts, {sum(v.checked for v in verdicts)} acknowledged"
            f" postbacks checked (per cut {[v.checked for v in verdicts]}; not yet filed at the cut"
            f" {[v.waiting for v in verdicts]}), lost {lost}; duplicates filed {[v.duplicates for v in verdicts]};"
            f" {ledger.sent} requests sent, {ledger.resent} resent after a 200; seed {SEED};"
            f" {time.monotonic() - started:.1f}s"
        )
    assert len(cuts) == FULL_RUN.cuts
    for number, verdict in enumerate(verdicts):
        assert verdict.checked > 0, f"cut {number}: nothing acknowledged before it, nothing proven"
        assert verdict.lost == [], f"cut {number}: acknowledged but lost: {verdict.lost[:5]}"
        assert verdict.doubled == [], f"cut {number}: processed twice: {verdict.doubled[:5]}"
        assert verdict.altered == [], f"cut {number}: body not byte-exact: {verdict.altered[:5]}"
        assert verdict.broken == [], f"cut {number}: {verdict.broken[:5]}"
    assert verdicts[-1].checked > verdicts[0].checked  # the load ran across the cuts


@dataclass(frozen=True)
class Mutant:
    """The project's source with one textual change that breaks durability."""

    name: str
    file: str
    original: str
    replacement: str
    run: Run

    def source(self, tmp_path: Path) -> Path:
        source = tmp_path / "mutant"
        source.mkdir()
        for name in ("app.py", "spool_worker.py"):
            shutil.copy2(REPO / name, source / name)
        shutil.copytree(REPO / "mospool", source / "mospool", ignore=shutil.ignore_patterns("__pycache__"))
        path = source / self.file
        text = path.read_text()
        assert text.count(self.original) == 1, (
            f"{self.file} changed: point the {self.name} mutation at it again"
        )
        path.write_text(text.replace(self.original, self.replacement))
        return source


MUTANTS = [
    # The worker does not run: its fsyncs would make the receiver's files durable by the way and hide the
    # fault. With writeback off nothing else writes a file's data before the cut, so every acknowledged file
    # still waiting is empty after it.
    Mutant(
        "receiver without its file fsync",
        "mospool/durable.py",
        "        os.fsync(fd)\n    except BaseException:",
        "        pass\n    except BaseException:",
        Run(cuts=1, with_worker=False),
    ),
    # Without the directory fsync a rename reaches the disk only with the next fsync on the filesystem, which
    # on ext4 and XFS commits every earlier metadata change: under load another postback's fsync covers it.
    # One connection that pauses after each 200, no worker: the cut finds the last acknowledged rename
    # uncommitted (its file, fsynced, stays in tmp/) unless it falls in the short spell of the next request.
    # No resends: a resend's fsync would commit the rename before it, and its own loss would not show.
    Mutant(
        "receiver without its directory fsync",
        "mospool/store/spool.py",
        "        self._incoming_sync.sync()\n        return postback_id\n",
        "        return postback_id\n",
        Run(cuts=3, with_worker=False, senders=1, pace_seconds=0.5, resend_share=0.0),
    ),
    # A worker that files records without syncing them (no fsync, no syncfs): they are published (the
    # receiver's and the index's fsyncs commit the renames), but their files' data never reached the disk.
    # Patched at the entry point so it holds however the worker's filing is written inside.
    Mutant(
        "worker without fsyncs",
        "spool_worker.py",
        'log = logging.getLogger("mospool.spool_worker")\n',
        'log = logging.getLogger("mospool.spool_worker")\nos.fsync = os.fdatasync = lambda fd: None\n'
        "import mospool.durable\nmospool.durable.FilesystemSync.sync = lambda self: None  # the filer's syncfs\n",
        Run(cuts=1, with_worker=True),
    ),
]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda mutant: mutant.name.replace(" ", "-"))
@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_power_cut_finds_a_missing_fsync(
    fstype: str,
    mutant: Mutant,
    sysctls: None,
    origin: Origin,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same cuts, run with a mutant of the source, find acknowledged postbacks lost or altered."""
    cuts, _ = power_cuts(fstype, mutant.source(tmp_path), tmp_path, origin, mutant.run)
    verdicts = [recover_and_inspect(fstype, one.copy, one.acknowledged, tmp_path) for one in cuts]
    with capsys.disabled():
        print(
            f"\npower-cut suite ({fstype}, {mutant.name}): {len(cuts)} cuts, acknowledged"
            f" {[v.checked for v in verdicts]}, lost {[len(v.lost) for v in verdicts]},"
            f" altered {[len(v.altered) for v in verdicts]}, other faults {[len(v.broken) for v in verdicts]}"
        )
    assert all(verdict.checked > 0 for verdict in verdicts)
    assert any(verdict.lost or verdict.altered for verdict in verdicts), f"{mutant.name} went unnoticed"
