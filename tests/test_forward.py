"""Webhook delivery against a real local application server that verifies with the standardwebhooks library."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mospool.cli import main as cli_main
from mospool.config import Settings, replace
from mospool.index import Index
from mospool.metrics import Metrics
from mospool.outputs import Context, build_outputs, webhooks
from mospool.outputs.delivery import Delivery
from mospool.outputs.destination import QuietLog
from mospool.outputs.webhooks import ForwardSettings, Webhooks
from mospool.store import Entry, Outbox, Spool
from mospool.worker import Worker
from tests.build import BATCH, JPEG, LOCAL_MEDIA, SMS_MO, STATUS_XML, mms, publish, read_json, sms
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
    assert sorted(delivered) == sorted(
        [f"msg_{sms}_001", f"msg_{status}_001", *(f"msg_{batch}_{n:03d}" for n in (1, 2, 3))]
    )
    assert delivered[f"msg_{sms}_001"].payload == {**r.message(sms), "state": "processed"}
    for n in (1, 2, 3):
        payload = delivered[f"msg_{batch}_{n:03d}"].payload
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
    assert entry.id == f"msg_{postback_id}_001"
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
        tries = app.tries(f"msg_{postback_id}_001")
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
        assert [item.seen_before for item in app.tries(f"msg_{postback_id}_001")] == [0, 1]


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
        assert sorted(row["id"] for row in rows) == sorted([f"{postback_id}.001", f"{other}.001"])
        assert all(row["reason"].startswith("HTTP 400") for row in rows)

        app.script = always(Reply(200))
        code, moved = cli(tmp_path, "redeliver", postback_id, capsys=capsys)
        assert code == 0 and [row["id"] for row in moved] == [f"{postback_id}.001"]
        assert r.delivery.deliver_due() == {"delivered": 1}
        code, moved = cli(tmp_path, "redeliver", "--all", capsys=capsys)
        assert [row["id"] for row in moved] == [f"{other}.001"]
        assert r.delivery.deliver_due() == {"delivered": 1}
        code, status = cli(tmp_path, "status", capsys=capsys)
        assert code == 0 and status["webhooks"] == {"outbox": 0, "undelivered": 0}
        tries = app.tries(f"msg_{postback_id}_001")
    assert [item.status for item in tries] == [400, 200]
    assert tries[0].body == tries[1].body


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
    (payload,) = [item.payload for item in app.received]
    assert payload["state"] == "failed"
    assert payload["spool_id"] == postback_id
    assert payload["error"]["stage"] == "parse"


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
    assert sorted(app.delivered()) == sorted(f"msg_{postback_id}_001" for postback_id in ids)
    assert r.outbox.count(r.outbox.pending) == 0


def test_the_registry_builds_the_webhooks_only_when_configured(spool: Spool) -> None:
    off = Settings.for_spool(spool.root)
    index = Index(spool.root)
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
    assert r.delivery.deliver_due() == {"undelivered": 1}
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
