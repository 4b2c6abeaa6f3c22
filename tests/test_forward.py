"""Webhook delivery against a real local application server that verifies with the standardwebhooks library."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mospool.cli import main as cli_main
from mospool.config import Settings, replace
from mospool.index import open_index
from mospool.metrics import Metrics
from mospool.outputs import Context, build_outputs, webhooks
from mospool.outputs.delivery import Delivery
from mospool.outputs.destination import QuietLog
from mospool.outputs.webhooks import ForwardSettings, Webhooks
from mospool.store import Entry, Outbox, Spool
from mospool.worker import Worker
from tests.build import BATCH, JPEG, LOCAL_MEDIA, SMS_MO, STATUS_XML, mms, notice_id, publish, read_json, sms
from tests.origin import Origin
from tests.origin import Reply as MediaReply
from tests.servers import free_port, write_config
from tests.webhook_app import SECRET, App, Reply, always, fail_first

FAR_FUTURE = time.time() + 10 * 365 * 86400  # deliver_due(now=...): every scheduled retry is due


def forward_settings(url: str, **changes: Any) -> ForwardSettings:
    base = ForwardSettings(
        url=url, secret=SECRET, timeout_seconds=3, concurrency=2, attempts=5, retry_base_seconds=60
    )
    return dataclasses.replace(base, **changes)


@dataclasses.dataclass
class Rig:
    worker: Worker
    forwarder: Webhooks
    outbox: Outbox

    @property
    def delivery(self) -> Delivery:
        return self.forwarder.delivery

    @property
    def spool(self) -> Spool:
        return self.worker.spool

    def message(self, postback_id: str, name: str = "message.json") -> dict[str, Any]:
        return read_json(self.spool.record_dir("processed", postback_id) / name)

    def hook_id(self, postback_id: str, name: str = "message.json") -> str:
        """The webhook-id of a processed notice: from its dedup key."""
        return notice_id(self.message(postback_id, name)["dedup_key"])


def rig(tmp_path: Path, url: str, metrics: Metrics | None = None, **changes: Any) -> Rig:
    settings = Settings.for_spool(
        tmp_path / "spool", forward=forward_settings(url, **changes), media=LOCAL_MEDIA
    )
    spool = Spool(settings.spool.dir)
    spool.create()
    forwarder = webhooks.create(settings.output(webhooks.SECTION), spool, metrics, background=False)
    worker = Worker(settings, outputs=[forwarder])
    return Rig(worker, forwarder, Outbox(spool.root))


def cli(tmp_path: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    config = write_config(tmp_path / "cli.ini", tmp_path / "spool")
    code = cli_main(["--config", str(config), "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_every_processed_notice_is_posted_signed_with_its_record(app: App, tmp_path: Path) -> None:
    r = rig(tmp_path, app.url)
    sms = publish(r.spool, SMS_MO)
    batch = publish(r.spool, BATCH, "text/xml")
    status = publish(r.spool, STATUS_XML, "text/xml")
    assert r.worker.drain() == 3
    assert app.received == []  # filing only writes the outbox
    assert r.outbox.count(r.outbox.pending) == 5

    assert r.delivery.deliver_due() == {"delivered": 5}
    delivered = app.delivered()
    assert all(item.verified for item in app.received)  # Webhook.verify of the standardwebhooks library
    batch_ids = [r.hook_id(batch, f"message-{n:03d}.json") for n in (1, 2, 3)]
    assert sorted(delivered) == sorted([r.hook_id(sms), r.hook_id(status), *batch_ids])
    assert r.hook_id(sms) == notice_id("SMS_MO|N401|sms-1")
    assert delivered[r.hook_id(sms)].payload == {**r.message(sms), "state": "processed"}
    for n in (1, 2, 3):
        payload = delivered[batch_ids[n - 1]].payload
        assert payload == {**r.message(batch, f"message-{n:03d}.json"), "state": "processed"}
        assert payload["tracking_id"] == f"batch-{n}"
    assert r.outbox.count(r.outbox.pending) == 0
    assert list(r.outbox.pending.iterdir()) == []


def test_the_entry_is_written_with_the_record_and_names_its_media(
    app: App, origin: Origin, tmp_path: Path
) -> None:
    r = rig(tmp_path, app.url, media_base_url="https://files.example.com/spool/")
    photo = origin.serve("/mmsmo/p/photo.jpg", MediaReply(body=JPEG, content_type="image/jpeg"))
    postback_id = publish(r.spool, mms("mo-media", photo))
    r.worker.drain()
    entry = r.outbox.read(f"{postback_id}.001")
    assert entry.id == notice_id("MMS_MO|N401|mo-media")
    assert r.outbox.entry_path(f"{postback_id}.001").stat().st_mode & 0o777 == 0o640
    r.delivery.deliver_due()
    (payload,) = [item.payload for item in app.received]
    assert json.loads(entry.body) == payload
    record = r.spool.record_dir("processed", postback_id)
    part = payload["media"][0]
    assert part["url"] == photo  # the message record's own field: where Sinch had it
    assert part["file"] == "media/01-photo.jpg"
    assert Path(part["path"]) == record / "media" / "01-photo.jpg"
    assert Path(part["path"]).read_bytes() == JPEG
    date = record.parent.name
    assert part["download_url"] == (
        f"https://files.example.com/spool/processed/{date}/{postback_id}/media/01-photo.jpg"
    )


def test_5xx_is_retried_with_the_same_id_and_bytes_until_a_2xx(tmp_path: Path) -> None:
    with App(fail_first(3, Reply(503))) as app:
        r = rig(tmp_path, app.url)
        postback_id = publish(r.spool, SMS_MO)
        r.worker.drain()
        name = f"{postback_id}.001"
        assert r.delivery.deliver_due() == {"retry": 1}
        schedule = r.outbox.schedule(name)
        assert schedule["attempts"] == 1
        assert "HTTP 503" in schedule["errors"][0]["parts"][0]["error"]
        assert schedule["next_try_epoch"] >= time.time() + 59  # retry_base_seconds = 60
        assert r.delivery.deliver_due() == {}  # not due yet
        assert r.delivery.deliver_due(now=FAR_FUTURE) == {"retry": 1}
        assert r.outbox.schedule(name)["attempts"] == 2
        assert r.delivery.deliver_due(now=FAR_FUTURE) == {"retry": 1}
        assert r.delivery.deliver_due(now=FAR_FUTURE) == {"delivered": 1}
        tries = app.tries(r.hook_id(postback_id))
    assert [item.status for item in tries] == [503, 503, 503, 200]
    assert len({item.body for item in tries}) == 1
    assert all(item.verified for item in tries)
    assert list(r.outbox.pending.iterdir()) == []  # entry and schedule gone


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    with App(fail_first(1, Reply(429, headers={"Retry-After": "3600"}))) as app:
        r = rig(tmp_path, app.url, retry_base_seconds=1)
        postback_id = publish(r.spool, SMS_MO)
        r.worker.drain()
        assert r.delivery.deliver_due() == {"retry": 1}
    assert r.outbox.schedule(f"{postback_id}.001")["next_try_epoch"] >= time.time() + 3590


def test_a_timeout_is_retried(tmp_path: Path) -> None:
    with App(fail_first(1, Reply(504, stall_seconds=3))) as app:
        r = rig(tmp_path, app.url, timeout_seconds=0.5)
        postback_id = publish(r.spool, SMS_MO)
        r.worker.drain()
        assert r.delivery.deliver_due() == {"retry": 1}
        error = r.outbox.schedule(f"{postback_id}.001")["errors"][0]["parts"][0]["error"]
        assert "timed out" in error.lower() or "timeout" in error.lower()
        assert r.delivery.deliver_due(now=FAR_FUTURE) == {"delivered": 1}
        assert [item.seen_before for item in app.tries(r.hook_id(postback_id))] == [0, 1]


def test_an_unreachable_application_is_retried(tmp_path: Path) -> None:
    r = rig(tmp_path, f"http://127.0.0.1:{free_port()}/hooks")
    postback_id = publish(r.spool, SMS_MO)
    r.worker.drain()
    assert r.delivery.deliver_due() == {"retry": 1}
    error = r.outbox.schedule(f"{postback_id}.001")["errors"][0]["parts"][0]["error"]
    assert "refused" in error.lower() or "connection" in error.lower()


def test_a_4xx_is_parked_shown_and_redeliverable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with App(always(Reply(400))) as app:
        metrics = Metrics(tmp_path / "metrics.prom")
        r = rig(tmp_path, app.url, metrics=metrics)
        postback_id = publish(r.spool, SMS_MO)
        other = publish(r.spool, sms("sms-2"))
        r.worker.drain()
        assert r.delivery.deliver_due() == {"undelivered": 2}
        assert r.outbox.count(r.outbox.pending) == 0
        parked = r.outbox.schedule(f"{postback_id}.001", r.outbox.undelivered)
        assert parked["reason"].startswith("HTTP 400")

        metrics.write()
        text = (tmp_path / "metrics.prom").read_text()
        assert 'mospool_deliveries_total{destination="webhook",outcome="undelivered"} 2.0' in text
        assert 'mospool_undelivered{destination="webhook"} 2.0' in text

        code, status = cli(tmp_path, "status", capsys=capsys)
        assert code == 1
        assert status["webhooks"] == {"outbox": 0, "undelivered": 2}
        assert any("undelivered" in alert for alert in status["attention"])
        code, rows = cli(tmp_path, "list", "undelivered", capsys=capsys)
        assert sorted(row["entry"] for row in rows) == sorted([f"{postback_id}.001", f"{other}.001"])
        assert all(row["reason"].startswith("HTTP 400") for row in rows)

        app.script = always(Reply(200))
        code, moved = cli(tmp_path, "redeliver", postback_id, capsys=capsys)
        assert code == 0 and [row["entry"] for row in moved] == [f"{postback_id}.001"]
        assert moved[0]["file"] == f"outbox/{postback_id}.001.entry"
        assert r.delivery.deliver_due() == {"delivered": 1}
        code, moved = cli(tmp_path, "redeliver", "--all", capsys=capsys)
        assert [row["entry"] for row in moved] == [f"{other}.001"]
        assert r.delivery.deliver_due() == {"delivered": 1}
        code, status = cli(tmp_path, "status", capsys=capsys)
        assert code == 0 and status["webhooks"] == {"outbox": 0, "undelivered": 0}
        tries = app.tries(r.hook_id(postback_id))
    assert [item.status for item in tries] == [400, 200]
    assert tries[0].body == tries[1].body


def test_list_undelivered_shows_each_entry_and_whose_message_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with App(always(Reply(410))) as app:
        r = rig(tmp_path, app.url)
        batch = publish(r.spool, BATCH, "text/xml")
        r.worker.drain()
        assert r.delivery.deliver_due() == {"undelivered": 3}
    _, rows = cli(tmp_path, "list", "undelivered", capsys=capsys)
    assert [
        (row["entry"], row["delivery_id"], row["id"], row["from"], row["to"], row["tracking_id"])
        for row in rows
    ] == [
        (f"{batch}.{n:03d}", notice_id(f"SMS_MO|N401|batch-{n}"), batch, f"1555000{n}", "28444", f"batch-{n}")
        for n in (1, 2, 3)
    ]
    config = write_config(tmp_path / "cli.ini", tmp_path / "spool")
    assert cli_main(["--config", str(config), "list", "undelivered"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert lines[0].startswith(
        f"entry={batch}.001  delivery_id={notice_id('SMS_MO|N401|batch-1')}  id={batch}  from=15550001  to=28444"
    )
    assert "tracking_id=batch-1  attempts=1  reason=" in lines[0]


def test_redeliver_takes_the_webhook_id_the_log_prints_and_unique_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with App(always(Reply(410))) as app:
        r = rig(tmp_path, app.url)
        first = publish(r.spool, sms("sms-1"))
        second = publish(r.spool, sms("sms-2"))
        batch = publish(r.spool, BATCH, "text/xml")
        r.worker.drain()
        assert r.delivery.deliver_due() == {"undelivered": 5}
    config = write_config(tmp_path / "cli.ini", tmp_path / "spool")

    def redeliver(*wanted: str) -> list[str]:
        code, rows = cli(tmp_path, "redeliver", *wanted, capsys=capsys)
        assert code == 0
        return [row["entry"] for row in rows]

    assert cli_main(["--config", str(config), "redeliver", "msg_"]) == 2  # the start of every one of them
    error = capsys.readouterr().err
    assert "msg_ is the start of entries of 3 postbacks" in error and first in error and batch in error
    assert r.outbox.count(r.outbox.undelivered) == 5  # nothing moved
    assert redeliver(notice_id("SMS_MO|N401|sms-1")) == [f"{first}.001"]  # as the log prints it
    assert redeliver(notice_id("SMS_MO|N401|batch-2")[:12]) == [f"{batch}.002"]  # a unique start of one
    assert redeliver(batch) == [f"{batch}.001", f"{batch}.003"]  # a postback's entries, by its id
    assert redeliver(second[:-4]) == [f"{second}.001"]  # the start of a postback id
    assert r.outbox.count(r.outbox.undelivered) == 0
    assert r.outbox.count(r.outbox.pending) == 5


def test_redeliver_names_what_is_not_undelivered(
    spool: Spool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Outbox(spool.root).create()
    config = write_config(tmp_path / "cli.ini", tmp_path / "spool")
    assert cli_main(["--config", str(config), "redeliver", "20260101T000000.000000Z-000000000000"]) == 2
    assert "not in undelivered/" in capsys.readouterr().err


def test_retries_give_up_after_attempts(tmp_path: Path) -> None:
    with App(always(Reply(503))) as app:
        r = rig(tmp_path, app.url, attempts=2)
        postback_id = publish(r.spool, SMS_MO)
        r.worker.drain()
        assert r.delivery.deliver_due() == {"retry": 1}
        assert r.delivery.deliver_due(now=FAR_FUTURE) == {"undelivered": 1}
    parked = r.outbox.schedule(f"{postback_id}.001", r.outbox.undelivered)
    assert parked["reason"].startswith("gave up after 2 attempts: HTTP 503")
    assert len(parked["errors"]) == 2


def test_an_entry_waits_for_its_record_and_is_dropped_if_not_forwarded(app: App, tmp_path: Path) -> None:
    r = rig(tmp_path, app.url)
    failed = publish(r.spool, b"<postback><origin>MMS_MO</orig", "text/xml")
    waiting = publish(r.spool, SMS_MO)  # not filed yet: the worker has not run
    for postback_id in (failed, waiting):  # as if prepare() ran before a crash
        entry = Entry(f"msg_{postback_id}_001", postback_id, 1, "processed", b'{"x":1}')
        r.outbox.entry_path(entry.name).write_bytes(entry.to_bytes())
    r.worker.drain()  # failed goes to failed/; waiting's own filing rewrites its entry
    assert r.worker.spool.filed(failed) == r.spool.record_dir("failed", failed)
    assert r.delivery.deliver_due() == {"dropped": 1, "delivered": 1}
    assert [item.payload["spool_id"] for item in app.received] == [waiting]
    assert r.outbox.count(r.outbox.pending) == 0

    unfiled_id = "20260101T000000.000000Z-0123456789ab"
    unfiled = Entry(f"msg_{unfiled_id}_001", unfiled_id, 1, "processed", b"{}")
    r.outbox.entry_path(unfiled.name).write_bytes(unfiled.to_bytes())
    assert r.delivery.deliver_due() == {"not filed": 1}
    assert r.outbox.count(r.outbox.pending) == 1


def test_failed_records_are_forwarded_when_configured(app: App, tmp_path: Path) -> None:
    r = rig(tmp_path, app.url, states=("processed", "failed"))
    postback_id = publish(r.spool, b"<postback><origin>MMS_MO</orig", "text/xml")
    r.worker.drain()
    assert r.delivery.deliver_due() == {"delivered": 1}
    (received,) = app.received
    assert received.payload["state"] == "failed"
    assert received.payload["spool_id"] == postback_id
    assert received.payload["error"]["stage"] == "parse"
    assert received.webhook_id == f"msg_{postback_id}_001"  # a report about one reception: its spool id


def test_one_notice_has_one_webhook_id_wherever_it_was_received(app: App, tmp_path: Path) -> None:
    """Two VMs that each processed the same notice (two islands, each with its own index) send it under one
    webhook-id, so the application's repeat check drops the second; its failed report has an id of its own."""
    first, second = rig(tmp_path / "a", app.url), rig(tmp_path / "b", app.url, states=("processed", "failed"))
    ids = [publish(first.spool, SMS_MO), publish(second.spool, sms(text="hello (resent)"))]
    broken = publish(second.spool, b"<postback><origin>SMS_MO</orig", "text/xml")
    for each in (first, second):
        each.worker.drain()
        assert each.delivery.deliver_due().get("delivered")
    assert [item.webhook_id for item in app.received if item.payload["spool_id"] in ids] == [
        notice_id("SMS_MO|N401|sms-1")
    ] * 2
    assert {first.hook_id(ids[0]), second.hook_id(ids[1])} == {notice_id("SMS_MO|N401|sms-1")}
    assert len(app.delivered()) == 2  # the notice once, the failed report once
    assert f"msg_{broken}_001" in app.delivered()


def test_a_stuck_application_never_holds_up_filing(tmp_path: Path) -> None:
    release = threading.Event()

    def stuck(webhook_id: str, seen: int) -> Reply:
        release.wait(30)
        return Reply(200)

    with App(stuck) as app:
        r = rig(tmp_path, app.url, timeout_seconds=60, concurrency=2)
        r.delivery.start()  # the senders run while the worker files
        try:
            ids = [publish(r.spool, sms(f"sms-{n}")) for n in range(20)]
            assert r.worker.drain() == 20  # while both senders are stuck in a request
            assert all(r.spool.filed(postback_id) for postback_id in ids)
            assert len(app.received) <= 2
            release.set()
            deadline = time.monotonic() + 30
            while len(app.delivered()) < 20 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            release.set()
            r.delivery.close()
    assert sorted(app.delivered()) == sorted(r.hook_id(postback_id) for postback_id in ids)
    assert r.outbox.count(r.outbox.pending) == 0


def test_the_registry_builds_the_webhooks_only_when_configured(spool: Spool) -> None:
    off = Settings.for_spool(spool.root)
    index = open_index(off)
    built = build_outputs(Context(off, spool, index, Metrics(None)))
    assert not any(isinstance(output, Webhooks) for output in built)
    on = replace(off, "forward", **dataclasses.asdict(forward_settings("http://127.0.0.1:9/hooks")))
    built = build_outputs(Context(on, spool, index, Metrics(None)))
    assert len([output for output in built if isinstance(output, Webhooks)]) == 1
    assert (spool.root / "outbox").is_dir() and (spool.root / "undelivered").is_dir()


def test_a_damaged_entry_of_a_filed_record_is_parked(app: App, tmp_path: Path) -> None:
    r = rig(tmp_path, app.url)
    postback_id = publish(r.spool, SMS_MO)
    r.worker.drain()
    r.outbox.entry_path(f"{postback_id}.001").write_bytes(b'{"webhook_id": "msg_')
    restarted = webhooks.create(r.forwarder.settings, r.spool, background=False).delivery  # reads the disk
    assert restarted.deliver_due() == {"undelivered": 1}
    parked = r.outbox.schedule(f"{postback_id}.001", r.outbox.undelivered)
    assert parked["reason"].startswith("damaged outbox entry")
    assert app.received == []


def test_a_failing_application_costs_the_log_a_line_a_minute_not_a_line_a_try(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with App(fail_first(4, Reply(503))) as app:
        r = rig(tmp_path, app.url)
        ids = [publish(r.spool, sms(f"sms-{n}")) for n in range(20)]
        r.worker.drain()
        caplog.clear()
        caplog.set_level(logging.INFO)
        for _ in range(4):  # 80 failed tries in all, well within a minute
            assert r.delivery.deliver_due(now=FAR_FUTURE) == {"retry": 20}
        failed = [record for record in caplog.records if record.levelno == logging.WARNING]
        assert len(failed) == 1, [record.getMessage() for record in failed]
        assert "HTTP 503" in failed[0].getMessage()
        assert r.delivery.deliver_due(now=FAR_FUTURE) == {"delivered": 20}
    again = [record.getMessage() for record in caplog.records if "delivering again" in record.getMessage()]
    assert again == ["webhook: delivering again (79 failed tries since the last failure line)"]
    assert len(app.delivered()) == len(ids)


def test_the_quiet_log_writes_a_line_a_minute_with_what_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    quiet = QuietLog(logging.getLogger("tests.quiet"), "hooks", clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="tests.quiet"):
        for second in range(0, 150):  # a failed try every second for two and a half minutes
            now[0] = float(second)
            quiet.failed("hooks %s: HTTP 503", f"entry-{second}")
        quiet.delivered()
        quiet.delivered()
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "hooks entry-0: HTTP 503",
        "hooks entry-60: HTTP 503 (and 59 more like it since the last line)",
        "hooks entry-120: HTTP 503 (and 59 more like it since the last line)",
        "hooks: delivering again (29 failed tries since the last failure line)",
    ]


def test_entries_handed_over_by_the_filer_are_sent_without_reading_the_outbox(
    app: App, tmp_path: Path
) -> None:
    """The filer says which records are published: their entries go out as written, from memory."""
    r = rig(tmp_path, app.url)
    ids = [publish(r.spool, sms(f"sms-{n}")) for n in range(3)]
    r.worker.drain()
    for postback_id in ids:  # what is on disk now is not what a sender uses: the filer's copy is
        r.outbox.entry_path(f"{postback_id}.001").write_bytes(b"damaged after filing")
    assert r.delivery.deliver_due() == {"delivered": 3}
    assert sorted(app.delivered()) == sorted(r.hook_id(postback_id) for postback_id in ids)
    assert all(item.verified for item in app.received)


# --- resend (issue 22, item 9)


def resend_config(tmp_path: Path, url: str) -> Path:
    return write_config(
        tmp_path / "resend.ini", tmp_path / "spool", {"forward": {"url": url, "secret": SECRET}}
    )


def resend(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    code = cli_main(["--config", str(config), "--json", "resend", *args])
    out = capsys.readouterr().out
    return code, json.loads(out) if out else None


def test_resend_sends_records_filed_before_forwarding_was_on(
    app: App, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = Worker(Settings.for_spool(tmp_path / "spool", media=LOCAL_MEDIA))  # no [forward] yet
    day = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
    old = publish(before.spool, sms("old-1"), when=day - dt.timedelta(days=3))
    first = publish(before.spool, sms("sms-1", sender="15550001"), when=day)
    batch = publish(before.spool, BATCH, "text/xml", when=day + dt.timedelta(hours=1))
    status = publish(before.spool, STATUS_XML, "text/xml", when=day + dt.timedelta(hours=2))
    before.drain()
    before.close()
    r = rig(tmp_path, app.url)  # [forward] switched on: the worker sends what it files from now on
    assert r.outbox.count(r.outbox.pending) == 0
    config = resend_config(tmp_path, app.url)

    code, planned = resend(config, capsys, "--since", "2026-11-20", "--dry-run")
    assert code == 0 and planned["dry_run"] and (planned["matched"], planned["postbacks"]) == (5, 3)
    batch_ids = [r.hook_id(batch, f"message-{n:03d}.json") for n in (1, 2, 3)]
    assert [row["delivery_id"] for row in planned["notices"]] == [
        r.hook_id(first),
        *batch_ids,
        r.hook_id(status),
    ]
    assert planned["notices"][0]["from"] == "15550001"
    assert r.outbox.count(r.outbox.pending) == 0  # a dry run queues nothing

    code, done = resend(config, capsys, "--since", "2026-11-20", "--until", "2026-11-20", "--kind", "sms_mo")
    assert code == 0 and (done["matched"], done["queued"]) == (4, 4)
    assert r.delivery.deliver_due() == {"delivered": 4}
    assert sorted(app.delivered()) == sorted([r.hook_id(first), *batch_ids])
    assert all(item.verified for item in app.received)
    payload = app.delivered()[r.hook_id(first)].payload
    assert payload == {**r.message(first), "state": "processed"}  # the body the filer would have built
    assert old not in json.dumps(done)


def test_resend_sends_again_with_the_same_webhook_id_and_bytes(
    app: App, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What an application that lost its data asks for: the same id, so it must skip its dedup for it."""
    r = rig(tmp_path, app.url)
    postback_id = publish(r.spool, sms("sms-1"))
    r.worker.drain()
    assert r.delivery.deliver_due() == {"delivered": 1}
    config = resend_config(tmp_path, app.url)
    code, done = resend(config, capsys, "--since", dt.date.today().isoformat())
    assert code == 0 and done["queued"] == 1
    entry = r.outbox.read(f"{postback_id}.001")
    assert r.outbox.entry_path(entry.name).stat().st_mode & 0o777 == 0o640
    assert [p.name for p in r.outbox.pending.iterdir()] == [f"{postback_id}.001.entry"]  # no temp file left
    assert r.delivery.deliver_due() == {"delivered": 1}
    first, again = app.tries(r.hook_id(postback_id))
    assert again.body == first.body and again.seen_before == 1
    main = cli_main(["--config", str(config), "resend", "--since", dt.date.today().isoformat()])
    assert main == 0
    out = capsys.readouterr().out
    assert "1 notice of 1 postback match" in out and "queued 1 webhook in outbox/" in out


def test_resend_skips_what_waits_and_puts_parked_ones_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with App(always(Reply(400))) as app:
        r = rig(tmp_path, app.url)
        parked = publish(r.spool, sms("sms-1"))
        r.worker.drain()
        assert r.delivery.deliver_due() == {"undelivered": 1}
        waiting = publish(r.spool, sms("sms-2"))
        r.worker.drain()  # its entry waits in outbox/, not tried yet
        config = resend_config(tmp_path, app.url)
        code, done = resend(config, capsys, "--since", dt.date.today().isoformat())
    assert code == 0 and (done["queued"], done["redelivered"], done["waiting_already"]) == (1, 1, 1)
    assert sorted(r.outbox.names(r.outbox.pending)) == sorted([f"{parked}.001", f"{waiting}.001"])
    assert r.outbox.count(r.outbox.undelivered) == 0
    assert r.outbox.schedule(f"{parked}.001") == {}  # a fresh schedule


def test_resend_asks_for_yes_above_a_hundred_and_needs_forwarding_on(
    app: App, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = rig(tmp_path, app.url)
    for n in range(101):
        publish(r.spool, sms(f"sms-{n}"))
    r.worker.drain()
    r.delivery.deliver_due()
    config = resend_config(tmp_path, app.url)
    today = dt.date.today().isoformat()
    assert cli_main(["--config", str(config), "resend", "--since", today]) == 2
    error = capsys.readouterr().err
    assert "101 notices of 101 postbacks match: nothing was queued; run again with --yes" in error
    assert r.outbox.count(r.outbox.pending) == 0
    code, done = resend(config, capsys, "--since", today, "--yes")
    assert code == 0 and done["queued"] == 101 and len(done["notices"]) == 50
    assert r.outbox.count(r.outbox.pending) == 101
    off = write_config(tmp_path / "off.ini", tmp_path / "spool")
    assert cli_main(["--config", str(off), "resend", "--since", today]) == 2
    assert "[forward] url is not set" in capsys.readouterr().err


def test_resend_takes_a_state_the_webhooks_do_not_forward_when_asked(
    app: App, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = rig(tmp_path, app.url)
    failed = publish(r.spool, b"<postback><origin>MMS_MO</orig", "text/xml")
    publish(r.spool, SMS_MO)
    r.worker.drain()
    r.delivery.deliver_due()
    config = resend_config(tmp_path, app.url)
    code, done = resend(config, capsys, "--since", dt.date.today().isoformat(), "--state", "failed")
    assert code == 0 and [row["id"] for row in done["notices"]] == [failed]
    assert r.delivery.deliver_due() == {"delivered": 1}
    (item,) = app.tries(f"msg_{failed}_001")
    assert item.payload["state"] == "failed" and item.payload["error"]["stage"] == "parse"


@pytest.mark.root
def test_resend_run_as_root_writes_entries_the_worker_can_read(
    app: App, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a VM the worker runs as the spool's owner: an entry root's CLI queued must be its owner's too."""
    r = rig(tmp_path, app.url)
    postback_id = publish(r.spool, SMS_MO)
    r.worker.drain()
    r.delivery.deliver_due()
    service = 4242  # the spool's owner, as install.sh makes it (here a uid of no one)
    for path in [r.spool.root, *r.spool.root.rglob("*")]:
        os.chown(path, service, service)
    code, done = resend(resend_config(tmp_path, app.url), capsys, "--since", dt.date.today().isoformat())
    assert code == 0 and done["queued"] == 1
    entry = r.outbox.entry_path(f"{postback_id}.001").stat()
    assert (entry.st_uid, entry.st_gid) == (service, service)
