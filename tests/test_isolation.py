"""One stuck remote stalls nothing else: the real worker process, a hostile media origin and a hostile
application (tests/hostile.py), and the postbacks that have nothing to do with them.

The measure is a count within a window: every unrelated postback is filed within WINDOW seconds, which is
far less than the hostile remote's deadline, so a worker whose threads waited on it (as the issue found:
16 stuck MMS stopped all filing) could not pass.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mospool.store import Spool, State
from tests.build import JPEG, mms, publish, read_json, sms
from tests.hostile import SLOW_HEADERS, Hostile
from tests.origin import Origin, Reply
from tests.servers import worker_process, write_config
from tests.webhook_app import SECRET

pytestmark = pytest.mark.slow  # the worker as a process, and remotes that wait out their deadlines

STUCK_DEADLINE = 20  # seconds: [media] and [forward] timeout_seconds
WINDOW = 10.0  # every unrelated postback is filed within this, well before a stuck one could end


def filed(spool: Spool, ids: list[str]) -> int:
    return sum(1 for postback_id in ids if spool.record_dir(State.PROCESSED, postback_id).is_dir())


def count_within(spool: Spool, ids: list[str], seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while filed(spool, ids) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return filed(spool, ids)


def test_fifty_postbacks_at_a_stuck_origin_hold_up_no_other_filing(tmp_path: Path, origin: Origin) -> None:
    spool = Spool(tmp_path / "spool")
    media = {"allow_private_networks": "yes", "timeout_seconds": STUCK_DEADLINE, "retry_base_seconds": 600}
    config = write_config(
        tmp_path / "config.ini", spool.root, {"worker": {"rescan_seconds": 1}, "media": media}
    )
    photo = origin.serve("/good/photo.jpg", Reply(body=JPEG, content_type="image/jpeg"))
    with Hostile(SLOW_HEADERS, interval=2.0) as stuck, worker_process(config, tmp_path / "worker.log"):
        stuck_ids = [publish(spool, mms(f"stuck-{n}", stuck.url(f"/{n}.jpg"))) for n in range(50)]
        waited = time.monotonic() + 30
        while stuck.accepted < 8 and time.monotonic() < waited:  # its lane is full: the worst moment
            time.sleep(0.05)
        assert stuck.accepted >= 8
        started = time.monotonic()
        sms_ids = [publish(spool, sms(f"sms-{n}", f"text {n}")) for n in range(20)]
        mms_ids = [publish(spool, mms(f"good-{n}", photo)) for n in range(20)]
        within = count_within(spool, sms_ids + mms_ids, WINDOW)
        elapsed = time.monotonic() - started
        assert filed(spool, stuck_ids) == 0  # none of the stuck ones could be filed meanwhile
        assert within == 40, f"{within} of 40 unrelated postbacks filed in {WINDOW:.0f} s"
        # and the stuck parts were cut at their deadline: they wait in deferred/ for their next try
        closes = stuck.wait_for_closes(8, timeout=STUCK_DEADLINE + 15)
        deferred = count_deferred_as_timed_out(spool, stuck_ids, timeout=10)
    print(f"\n40 unrelated postbacks filed in {elapsed:.1f} s while 50 waited on a stuck origin")
    assert len(closes) >= 8 and max(closes[:8]) < STUCK_DEADLINE + 5
    assert deferred >= 8
    for postback_id in mms_ids:
        message = read_json(spool.record_dir(State.PROCESSED, postback_id) / "message.json")
        assert message["media"][0]["bytes"] == len(JPEG)


def count_deferred_as_timed_out(spool: Spool, ids: list[str], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        count = 0
        for postback_id in ids:
            schedule = spool.deferred / postback_id / "retry.json"
            if schedule.is_file():
                errors = read_json(schedule)["errors"]
                count += any("timed out" in part["error"] for part in errors[-1]["parts"])
        if count >= 8 or time.monotonic() > deadline:
            return count
        time.sleep(0.2)


def test_an_application_that_trickles_its_answer_delays_only_its_webhooks(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    with Hostile(SLOW_HEADERS, interval=2.0) as app:
        forward = {
            "url": app.url("/hooks"),
            "secret": SECRET,
            "timeout_seconds": 5,
            "retry_base_seconds": 600,
        }
        config = write_config(
            tmp_path / "config.ini", spool.root, {"worker": {"rescan_seconds": 1}, "forward": forward}
        )
        with worker_process(config, tmp_path / "worker.log"):
            first = [publish(spool, sms(f"first-{n}")) for n in range(4)]
            waited = time.monotonic() + 30
            while app.accepted < 4 and time.monotonic() < waited:  # every sender is in a trickling request
                time.sleep(0.05)
            assert app.accepted >= 4
            later = [publish(spool, sms(f"later-{n}")) for n in range(30)]
            assert count_within(spool, later, WINDOW) == 30
            closes = app.wait_for_closes(4, timeout=20)
    assert len(closes) >= 4 and max(closes[:4]) < 5 + 5  # each try cut at its 5 s deadline
    outbox = spool.root / "outbox"
    schedules = [read_json(path) for path in outbox.glob("*.retry.json")]
    assert len(schedules) >= 4
    assert all("timed out" in s["errors"][-1]["parts"][0]["error"] for s in schedules)
    assert filed(spool, first) == 4
