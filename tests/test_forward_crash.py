"""kill -9 of the real worker (spool_worker.py) in the middle of webhook deliveries, then a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mospool.store import Outbox, Spool
from tests.build import batch, notice_id, publish, sms
from tests.servers import REPO, write_config
from tests.webhook_app import SECRET, App, Reply

pytestmark = pytest.mark.slow  # the worker process, killed -9 and restarted

HELD = 7  # the postback whose webhook the application holds until the worker is killed


def numbered_sms(n: int) -> bytes:
    return sms(f"crash-{n}", f"message {n}", to="28444")


def numbered_batch(n: int) -> bytes:
    return batch(*(f"crash-{n}-{k}" for k in (1, 2, 3)))


def start_worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "spool_worker.py", "--config", str(config)],
            cwd=REPO,
            stderr=handle,
            start_new_session=True,
        )


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_kill_9_mid_delivery_loses_nothing_and_repeats_keep_their_id(spool: Spool, tmp_path: Path) -> None:
    outbox = Outbox(spool.root)
    holding, release = threading.Event(), threading.Event()
    held_id: list[str] = []

    def script(webhook_id: str, seen: int) -> Reply:
        if seen == 0:
            return Reply(503)  # every message is retried once
        if held_id and webhook_id == held_id[0] and seen == 1:
            holding.set()
            release.wait(60)  # in flight when the worker dies: its entry must be sent again
            return Reply(200)
        return Reply(200, stall_seconds=0.05)

    expected: dict[str, list[str]] = {}  # postback id -> its notices' dedup keys
    for n in range(40):
        if n % 8 == 0:
            keys = [f"SMS_MO|N401|crash-{n}-{k}" for k in (1, 2, 3)]
            expected[publish(spool, numbered_batch(n), "text/xml")] = keys
        else:
            expected[publish(spool, numbered_sms(n))] = [f"SMS_MO|N401|crash-{n}"]
    held_id.append(notice_id(f"SMS_MO|N401|crash-{HELD}"))
    log = tmp_path / "worker.log"
    with App(script) as app:
        forward = {"url": app.url, "secret": SECRET, "concurrency": 4, "retry_base_seconds": 0.2}
        sections: dict[str, dict[str, object]] = {"worker": {"rescan_seconds": 1}, "forward": forward}
        config = write_config(tmp_path / "config.ini", spool.root, sections)
        first = start_worker(config, log)
        try:
            wait_until(lambda: holding.is_set() and len(app.delivered()) >= 10, 60, "deliveries to start")
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        release.set()
        for n in range(40, 60):
            expected[publish(spool, numbered_sms(n))] = [f"SMS_MO|N401|crash-{n}"]
        wanted = {notice_id(key) for keys in expected.values() for key in keys}
        second = start_worker(config, log)
        try:
            wait_until(
                lambda: wanted <= set(app.delivered()) and outbox.count(outbox.pending) == 0,
                90,
                "every message to be delivered and its entry removed",
            )
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0
        received = list(app.received)

    unverified = [(item.webhook_id, item.timestamp, item.body[:60]) for item in received if not item.verified]
    assert unverified == []  # every request passed standardwebhooks' own Webhook.verify
    bodies: dict[str, set[bytes]] = {}
    for item in received:
        bodies.setdefault(item.webhook_id, set()).add(item.body)
    assert set(bodies) == wanted
    assert all(len(versions) == 1 for versions in bodies.values())  # every repeat: same id, same bytes
    answered = [item.webhook_id for item in received if item.status == 200]
    assert answered.count(held_id[0]) == 2  # answered while the worker died, then sent again
    assert outbox.count(outbox.pending) == 0  # a kill may leave a temp file: removed after a minute
    assert outbox.count(outbox.undelivered) == 0
    lines = [line for line in log.read_text().splitlines() if "webhook msg_" in line]
    assert any("HTTP 503" in line and "next try" in line for line in lines)
    assert sum(" delivered: HTTP 200" in line for line in lines) >= len(wanted)
    print("\n".join(["", "delivery log (first 12 webhook lines):", *lines[:12]]), file=sys.__stderr__)
