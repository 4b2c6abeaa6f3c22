"""The pages follow every change to the spool within a few seconds, whoever made it (issue 22, items 3 and 6):
the worker's own filing, and what the CLI does behind its back (retry, dismiss, purge, redeliver, resend)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mospool.cli import main as cli_main
from mospool.filer import IndexStage
from mospool.outputs import webhooks
from mospool.outputs.pages import Pages
from mospool.store import Spool
from mospool.worker import Worker
from tests.build import notice_id, publish, sms
from tests.pages_html import links_of, shown_text
from tests.servers import REPO, worker_process, write_config
from tests.webhook_app import SECRET, App, Reply, always

BROKEN = b"<postback><origin>SMS_MO</orig"  # filed in failed/ (stage parse)


@dataclasses.dataclass
class Rig:
    worker: Worker
    pages: Pages
    config: Path

    @property
    def spool(self) -> Spool:
        return self.worker.spool

    def cli(self, *args: str) -> int:
        return cli_main(["--config", str(self.config), *args])

    def front(self) -> str:
        return shown_text(self.spool.front_page)


def rig(make_worker: Callable[..., Worker], tmp_path: Path, **sections: object) -> Rig:
    """A worker whose pages output ticks on a clock 5 s apart at each call: the views' debounce passes at
    every tick, the front page's 30 s refresh only at every sixth."""
    worker = make_worker(outputs=[], **sections)
    seconds = itertools.count(0, 5)
    pages = Pages(worker.spool, worker.index, worker.settings, clock=lambda: float(next(seconds)))
    worker.filer.outputs = [IndexStage(worker.index), pages]
    config = write_config(tmp_path / "config.ini", worker.spool.root)
    return Rig(worker, pages, config)


def test_dismiss_and_retry_by_the_cli_reach_the_day_and_front_pages_at_the_next_tick(
    make_worker: Callable[..., Worker], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = rig(make_worker, tmp_path)
    day = dt.datetime(2026, 11, 24, 9, tzinfo=dt.UTC)
    first = publish(r.spool, BROKEN, "text/xml", when=day)
    second = publish(r.spool, BROKEN, "text/xml", when=day + dt.timedelta(minutes=1))
    publish(r.spool, sms("s-1"), when=day + dt.timedelta(minutes=2))
    r.worker.drain()
    assert "failed/2026-11-24/index.html" in links_of(r.spool.front_page)
    failed_day = r.spool.failed / "2026-11-24" / "index.html"
    assert "2 notifications" in shown_text(failed_day)

    assert r.cli("dismiss", first) == 0
    assert r.cli("retry", second) == 0
    assert "2 notifications" in shown_text(failed_day)  # until the worker's next tick
    r.pages.tick()
    assert "0 notifications" in shown_text(failed_day)
    links = links_of(r.spool.front_page)
    assert not any(link.startswith("failed/20") for link in links)  # an emptied day is not linked
    assert "dismissed/2026-11-24/index.html" in links  # the day's page, written like any other
    dismissed_day = r.spool.root / "dismissed" / "2026-11-24" / "index.html"
    assert "1 notification;" in shown_text(dismissed_day)
    assert f"{first}/index.html" in links_of(dismissed_day)
    record = shown_text(r.spool.root / "dismissed" / "2026-11-24" / first / "index.html")
    assert "An operator has dismissed it" in record and "mospool retry" not in record
    assert os.listdir(r.spool.stale_pages.folder) == []  # the notes are done with
    capsys.readouterr()


@pytest.mark.root
def test_what_roots_cli_leaves_for_the_worker_is_the_spool_owners(
    make_worker: Callable[..., Worker], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The services run as the spool's owner: a note, a dismissed folder and its page written by root's CLI
    must be theirs, or the worker could not remove the note and the browse site could not read the page."""
    r = rig(make_worker, tmp_path)
    broken = publish(r.spool, BROKEN, "text/xml")
    r.worker.drain()
    service = 4242
    for path in [r.spool.root, *r.spool.root.rglob("*")]:
        os.chown(path, service, service)
    assert r.cli("dismiss", broken) == 0
    dismissed = next((r.spool.root / "dismissed").glob(f"*/{broken}"))
    (note,) = r.spool.stale_pages.folder.iterdir()
    for path in (dismissed.parent, dismissed / "index.html", note):
        assert (path.stat().st_uid, path.stat().st_gid) == (service, service), path
    capsys.readouterr()


def test_purge_by_the_cli_reaches_the_front_page(
    make_worker: Callable[..., Worker], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = rig(make_worker, tmp_path)
    publish(r.spool, sms("s-1"), when=dt.datetime(2001, 1, 1, tzinfo=dt.UTC))
    publish(r.spool, sms("s-2"))
    r.worker.drain()
    assert "processed/2001-01-01/index.html" in links_of(r.spool.front_page)
    assert r.cli("purge", "--older-than", "30") == 0
    r.pages.tick()
    links = links_of(r.spool.front_page)
    assert not any("2001-01-01" in link for link in links) and len([x for x in links if "/20" in x]) == 1
    capsys.readouterr()


def test_the_front_page_follows_deliveries_and_redeliver_with_nothing_filed(
    make_worker: Callable[..., Worker], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A webhook parked, then put back and delivered: no record is filed meanwhile, and the front page says
    each step at the next tick (it used to wait for its 30 s refresh, or for the next filing)."""
    with App(always(Reply(410))) as app:
        forward = webhooks.ForwardSettings(url=app.url, secret=SECRET, attempts=2)
        worker = make_worker(outputs=[], forward=forward)
        forwarder = webhooks.create(forward, worker.spool, background=False)
        seconds = itertools.count(0, 5)
        pages = Pages(worker.spool, worker.index, worker.settings, clock=lambda: float(next(seconds)))
        worker.filer.outputs = [IndexStage(worker.index), forwarder, pages]
        config = write_config(
            tmp_path / "config.ini", worker.spool.root, {"forward": {"url": app.url, "secret": SECRET}}
        )
        postback_id = publish(worker.spool, sms("s-1"))
        worker.drain()
        assert "Webhooks 1 in outbox/, 0 undelivered" in shown_text(worker.spool.front_page)
        assert forwarder.delivery.deliver_due() == {"undelivered": 1}
        pages.tick()
        assert "Webhooks 0 in outbox/, 1 undelivered" in shown_text(worker.spool.front_page)
        app.script = always(Reply(200))
        assert cli_main(["--config", str(config), "redeliver", postback_id]) == 0
        pages.tick()
        assert "Webhooks 1 in outbox/, 0 undelivered" in shown_text(worker.spool.front_page)
        assert forwarder.delivery.deliver_due() == {"delivered": 1}
        pages.tick()
        assert "Webhooks 0 in outbox/, 0 undelivered" in shown_text(worker.spool.front_page)
        written = worker.spool.front_page.stat().st_mtime_ns
        pages.tick()  # nothing changed: the page is left alone
        assert worker.spool.front_page.stat().st_mtime_ns == written
        worker.close()
    capsys.readouterr()


def test_a_note_is_left_where_the_worker_cannot_take_it_yet(spool: Spool) -> None:
    """Notes are durable files: the CLI's change waits for a stopped worker, and is not lost by a crash."""
    spool.stale_pages.note({("failed", "2026-11-24")})  # type: ignore[arg-type]
    spool.stale_pages.note()
    names, days = spool.stale_pages.read()
    assert len(names) == 2 and {(str(state), day) for state, day in days} == {("failed", "2026-11-24")}
    note = json.loads((spool.stale_pages.folder / names[0]).read_text())
    assert note == {"days": [["failed", "2026-11-24"]]}
    assert oct((spool.stale_pages.folder / names[0]).stat().st_mode & 0o777) == oct(0o640)
    (spool.stale_pages.folder / "garbage.json").write_text("{not json")
    names, days = spool.stale_pages.read()
    assert len(names) == 3 and len(days) == 1  # an unreadable note names nothing, and is done with too
    spool.stale_pages.done(names)
    assert os.listdir(spool.stale_pages.folder) == []


@pytest.mark.slow
def test_a_running_worker_shows_the_clis_changes_within_seconds(spool: Spool, tmp_path: Path) -> None:
    """The real worker process and the real mospool command: redeliver, then dismiss, each seen on the
    front page within the window (the worker rescans outbox/ every second here)."""
    with App(always(Reply(410))) as app:
        config = write_config(
            tmp_path / "config.ini",
            spool.root,
            {"worker": {"rescan_seconds": 1}, "forward": {"url": app.url, "secret": SECRET}},
        )
        good = publish(spool, sms("s-1"))
        broken = publish(spool, BROKEN, "text/xml")
        with worker_process(config, tmp_path / "worker.log"):
            front = spool.front_page
            wait_until(lambda: "Webhooks 0 in outbox/, 1 undelivered" in shown_text(front))
            app.script = always(Reply(200))
            command = REPO / ".venv" / "bin" / "mospool"
            for args in (["redeliver", good], ["dismiss", broken]):
                subprocess.run(
                    [str(command), "--config", str(config), *args], check=True, capture_output=True
                )
            wait_until(lambda: "Webhooks 0 in outbox/, 0 undelivered" in shown_text(front))
            wait_until(lambda: not any(link.startswith("failed/20") for link in links_of(front)))
            assert any(
                link.startswith("dismissed/") and link.endswith("/index.html") for link in links_of(front)
            )
    assert [item.status for item in app.tries(notice_id("SMS_MO|N401|s-1"))] == [410, 200]


def wait_until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    """A count within a window: the pages are rewritten every 5 s at most, outbox/ rescanned every 1 s."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if condition():
                return
        except FileNotFoundError:  # the page is being replaced, or not written yet
            pass
        assert time.monotonic() < deadline, "not seen within the window"
        time.sleep(0.2)
