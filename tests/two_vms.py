"""Two VMs on one machine, as docs/two-vms.md sets them up: each its own spool, receiver (gunicorn) and worker
(spool_worker.py), both pointing at one PostgreSQL index, with webhooks to one application. And what the tests
check afterwards: every notice processed exactly once across both spools, every other copy a duplicate naming
its owner, the application given each notice under one webhook-id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.build import notice_id, sms
from tests.servers import REPO, Gunicorn, KeepAlive, free_port, write_config
from tests.webhook_app import SECRET

JSON = "application/json"


def body(n: int, prefix: str) -> bytes:
    return sms(f"{prefix}-{n}", f"message {n}", sender=f"1774555{n:04d}")


class Vm:
    """One VM's stack: the receiver and the worker, started, killed -9 and restarted as systemd would."""

    def __init__(self, root: Path, node: str, index_url: str, hook_url: str | None = None) -> None:
        self.root, self.node = root, node
        self.spool = root / "spool"
        self.port = free_port()
        sections: dict[str, dict[str, object]] = {
            "spool": {"node": node},
            "index": {"url": index_url},
            "worker": {"rescan_seconds": 1, "concurrency": 4},
            "monitor": {"metrics_textfile": root / "metrics.prom"},
            "logging": {"level": "WARNING"},
        }
        if hook_url:
            sections["forward"] = {"url": hook_url, "secret": SECRET, "retry_base_seconds": 0.5}
        self.config = write_config(root / "config.ini", self.spool, sections)
        self.log = root / "worker.log"
        self.gunicorn: Gunicorn | None = None
        self.worker: subprocess.Popen[bytes] | None = None

    def start(self) -> Vm:
        self.gunicorn = Gunicorn(self.config, workers=2, threads=4, port=self.port).start()
        with self.log.open("ab") as log:
            args = [sys.executable, "spool_worker.py", "--config", str(self.config)]
            self.worker = subprocess.Popen(args, cwd=REPO, stderr=log)
        return self

    def kill(self) -> None:
        """kill -9 of the receiver (arbiter and workers) and of the spool worker."""
        assert self.gunicorn and self.gunicorn.proc and self.worker
        os.killpg(self.gunicorn.proc.pid, signal.SIGKILL)
        self.gunicorn.proc.wait()
        self.worker.kill()
        self.worker.wait()

    def stop(self) -> None:
        if self.worker and self.worker.poll() is None:
            self.worker.terminate()
            self.worker.wait(timeout=60)
        if self.gunicorn:
            self.gunicorn.stop()

    def signal_worker(self, signum: int) -> None:
        assert self.worker is not None
        self.worker.send_signal(signum)

    def client(self) -> KeepAlive:
        return KeepAlive(self.port, timeout=10)

    def waiting(self) -> int:
        """Postbacks not yet filed and webhooks not yet delivered."""
        folders = ("incoming", "work", "deferred", "outbox")
        return sum(
            1 for name in folders if (self.spool / name).is_dir() for _ in (self.spool / name).iterdir()
        )

    def said(self, text: str) -> int:
        return sum(1 for line in self.log.read_text(errors="replace").splitlines() if text in line)

    def cli(self, *args: str) -> tuple[int, Any]:
        """`mospool --json …` on this VM, in a process of its own."""
        run = subprocess.run(
            [sys.executable, "-m", "mospool", "--config", str(self.config), "--json", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        return run.returncode, json.loads(run.stdout) if run.stdout.strip() else None

    def index_up(self) -> float | None:
        """mospool_index_up in the worker's metrics file (rewritten every 5 s)."""
        path = self.root / "metrics.prom"
        found = [
            line.split()[1] for line in path.read_text().splitlines() if line.startswith("mospool_index_up ")
        ]
        return float(found[0]) if found else None

    def processed(self) -> int:
        return sum(1 for _ in (self.spool / "processed").glob("*/*/message.json"))


def deliver(client: KeepAlive, payload: bytes, tries: int = 400) -> None:
    """As Sinch does: again until it gets a 200 (a broken connection is made anew)."""
    for _ in range(tries):
        if client.post(payload, JSON) == 200:
            return
        time.sleep(0.05)
    raise AssertionError("never acknowledged")


def wait_until_drained(vms: list[Vm], seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while any(vm.waiting() for vm in vms):
        assert time.monotonic() < deadline, {vm.node: vm.waiting() for vm in vms}
        time.sleep(0.2)


@dataclass
class Filed:
    processed: dict[str, tuple[str, str]]  # tracking id -> (spool id, node)
    duplicates: int
    copies: int  # every stored copy: processed and duplicates


def filed_once(vms: list[Vm], tracking_ids: set[str]) -> Filed:
    """Each notice processed exactly once across the VMs; every other copy a duplicate naming its owner."""
    processed: dict[str, tuple[str, str]] = {}
    for vm in vms:
        for message in (vm.spool / "processed").glob("*/*/message.json"):
            record = json.loads(message.read_bytes())
            tracking = record["tracking_id"]
            assert tracking not in processed, f"{tracking} processed twice: {processed[tracking]}, {vm.node}"
            processed[tracking] = (record["spool_id"], vm.node)
            assert record["node"] == vm.node
    assert set(processed) == tracking_ids, sorted(tracking_ids ^ set(processed))[:5]
    duplicates = 0
    for vm in vms:
        assert not list((vm.spool / "failed").glob("*/*/")), f"failed postbacks on {vm.node}"
        for note_file in (vm.spool / "duplicates").glob("*/*/duplicate.json"):
            note = json.loads(note_file.read_bytes())
            tracking = note["key"].rsplit("|", 1)[1]
            assert (note["duplicate_of"], note["duplicate_of_node"]) == processed[tracking], note
            duplicates += 1
    return Filed(processed, duplicates, len(processed) + duplicates)


def delivered_once(received: list[Any], filed: Filed) -> None:
    """The application, dropping repeats by webhook-id, has each notice exactly once, under its own id."""
    first: dict[str, Any] = {}
    for item in received:
        assert item.verified
        if 200 <= item.status < 300:
            first.setdefault(item.webhook_id, item)
    per_notice = Counter(item.payload["tracking_id"] for item in first.values())
    assert set(per_notice) == set(filed.processed)
    assert max(per_notice.values()) == 1, per_notice.most_common(3)
    for webhook_id, item in first.items():
        assert webhook_id == notice_id(item.payload["dedup_key"])
        assert (item.payload["spool_id"], item.payload["node"]) == filed.processed[
            item.payload["tracking_id"]
        ]


def find_all(vm: Vm, expected: int) -> Counter[str]:
    """`mospool find` on this VM: every processed notice of every VM, with its node."""
    code, rows = vm.cli("find", "--state", "processed", "--limit", str(expected * 2))
    assert code == 0
    assert len(rows) == expected
    return Counter(row["node"] for row in rows)
