"""The operator CLI on a spool built by the real receiver (gunicorn) and the real worker."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mospool.cli import main
from mospool.spool import Spool
from tests.origin import Origin, Reply
from tests.servers import REPO, Gunicorn, write_config

POSTBACKS = [
    (
        b'{"origin":"SMS_MO","code":"N401","from":"15550001","to":"28444","keyword":"INFO",'
        b'"tracking-id":"cli-1","message-text":"INFO please"}',
        "application/json",
    ),
    (
        b"<postback><origin>SMS_MO</origin><code>N401</code><from>15550002</from><to>28444</to>"
        b"<keyword>STOP</keyword><tracking-id>cli-2</tracking-id><message-text>stop</message-text></postback>",
        "text/xml",
    ),
    (
        b"origin=SMS_MO&code=N401&from=15550001&to=99999&tracking-id=cli-3&text=form",
        "application/x-www-form-urlencoded",
    ),
    (b"<postback><origin>MMS_MO</origin><broken", "text/xml"),
]
DUPLICATE = POSTBACKS[0]


def run_worker(config: Path) -> None:
    subprocess.run(
        [sys.executable, "spool_worker.py", "--config", str(config), "--once"], cwd=REPO, check=True
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A spool filled by posting through gunicorn, then drained by `spool_worker.py --once`."""
    root = tmp_path_factory.mktemp("cli")
    metrics = root / "mospool.prom"
    config = write_config(root / "config.ini", root / "spool", {"monitor": {"metrics_textfile": metrics}})
    server = Gunicorn(config).start()
    try:
        for body, content_type in [*POSTBACKS, DUPLICATE]:
            assert server.post("/postback", body, {"Content-Type": content_type})[0] == 200
    finally:
        server.stop()
    run_worker(config)
    yield config


def cli(config: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    code = main(["--config", str(config), "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_status_counts_and_attention(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, status = cli(built, "status", capsys=capsys)
    assert status["counts"] == {
        "incoming": 0, "work": 0, "deferred": 0, "processed": 3, "failed": 1, "duplicates": 1,
    }  # fmt: skip
    assert code == 1  # a non-empty failed/ needs attention
    assert status["attention"] == ["1 postbacks in failed/"]
    assert list(status["failures"]) == [next(iter(status["failures"]))]
    assert next(iter(status["failures"])).startswith("parse: ")
    assert status["last_processed_at"] is not None
    assert status["free_bytes"] > 0


def test_status_for_people_is_not_json(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(built), "status"]) == 1
    out = capsys.readouterr().out
    assert "processed" in out and "failed" in out


def test_a_worker_killed_mid_download_leaves_one_postback_in_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """work/ holds the claimed spool file and its build folder: status and list count the postback once."""
    with Origin() as origin:
        url = origin.serve("/slow.jpg", Reply(body=b"x", content_type="image/jpeg", stall_seconds=5))
        config = write_config(
            tmp_path / "config.ini", tmp_path / "spool", {"media": {"allow_private_networks": "yes"}}
        )
        server = Gunicorn(config).start()
        try:
            body = json.dumps({"origin": "MMS_MO", "tracking-id": "slow-1", "content": [{"file": url}]})
            assert server.post("/postback", body.encode(), {"Content-Type": "application/json"})[0] == 200
        finally:
            server.stop()
        worker = subprocess.Popen([sys.executable, "spool_worker.py", "--config", str(config)], cwd=REPO)
        try:
            deadline = time.monotonic() + 20
            while not origin.seen("/slow.jpg") and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            worker.kill()
            worker.wait()
    work = sorted(p.name for p in (tmp_path / "spool" / "work").iterdir())
    assert len(work) == 2 and work[1] == work[0] + ".postback"  # the build folder and the spool file
    _, status = cli(config, "status", capsys=capsys)
    assert status["counts"]["work"] == 1 and status["counts"]["incoming"] == 0
    _, listed = cli(config, "list", "work", capsys=capsys)
    assert [row["id"] for row in listed] == [work[0]]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--from", "15550001"], {"cli-1", "cli-3"}),
        (["--to", "99999"], {"cli-3"}),
        (["--keyword", "stop"], {"cli-2"}),
        (["--tracking-id", "cli-2"], {"cli-2"}),
        (["--kind", "sms_mo"], {"cli-1", "cli-2", "cli-3"}),
        (["--kind", "mms_mo"], set()),
        (["--since", dt.date.today().isoformat()], {"cli-1", "cli-2", "cli-3"}),
        (["--until", "2000-01-01"], set()),
    ],
)
def test_find_filters(
    built: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: set[str]
) -> None:
    code, rows = cli(built, "find", *args, capsys=capsys)
    assert code == 0
    assert {row["tracking_id"] for row in rows} == expected


def test_list_and_show(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, failed = cli(built, "list", "failed", capsys=capsys)
    assert len(failed) == 1 and failed[0]["error"].startswith("parse: ")
    _, duplicates = cli(built, "list", "duplicates", capsys=capsys)
    _, processed = cli(built, "list", "processed", "--limit", "2", capsys=capsys)
    assert len(processed) == 2
    _, shown = cli(built, "show", duplicates[0]["id"], capsys=capsys)
    assert shown["state"] == "duplicates"
    assert shown["duplicate"]["duplicate_of"] == duplicates[0]["duplicate_of"]
    _, original = cli(built, "show", shown["duplicate"]["duplicate_of"], capsys=capsys)
    assert original["message"]["tracking_id"] == "cli-1"
    assert "body.json" in original["files"]
    assert main(["--config", str(built), "show", "no-such-id"]) == 2


def test_metrics_textfile_parses(built: Path) -> None:
    text = (built.parent / "mospool.prom").read_text()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    handled = {
        (sample.labels["kind"], sample.labels["outcome"]): sample.value
        for sample in families["mospool_postbacks"].samples
        if sample.name == "mospool_postbacks_total"
    }
    assert handled[("sms_mo", "processed")] == 3
    assert handled[("sms_mo", "duplicate")] == 1
    assert handled[("unknown", "failed")] == 1
    assert "mospool_processing_seconds" in families
    assert "mospool_backlog" in families


def test_reindex_reproduces_the_index(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, before = cli(built, "find", capsys=capsys)
    os.unlink(built.parent / "spool" / "index.sqlite3")
    code, result = cli(built, "reindex", capsys=capsys)
    assert (code, result) == (0, {"records": 3})
    _, after = cli(built, "find", capsys=capsys)
    assert after == before


def test_retry_puts_a_failed_postback_back_through(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "config.ini", tmp_path / "spool")
    spool = Spool(tmp_path / "spool")
    spool.create()
    spool.publish({"received_at": dt.datetime.now(dt.UTC).isoformat(), "content_type": "text/xml"}, b"<oops")
    run_worker(config)
    _, failed = cli(config, "list", "failed", capsys=capsys)
    code, requeued = cli(config, "retry", failed[0]["id"], capsys=capsys)
    assert code == 0 and requeued[0]["id"] == failed[0]["id"]
    assert [p.name for p in spool.incoming.iterdir()] == [failed[0]["id"] + ".postback"]
    run_worker(config)
    _, shown = cli(config, "show", failed[0]["id"], capsys=capsys)
    assert shown["state"] == "failed"
    assert shown["error"]["attempts"] == 1
    assert len(shown["error"]["history"]) == 1  # the first failure is kept
    assert main(["--config", str(config), "retry"]) == 2


def test_purge_dry_run_then_purge_removes_exactly_the_old_folders(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "spool"
    shutil.copytree(built.parent / "spool", copy)
    config = write_config(tmp_path / "config.ini", copy)
    old_day = copy / "processed" / "2001-01-01"
    (copy / "processed").joinpath(dt.date.today().isoformat()).rename(old_day)
    cli(config, "reindex", capsys=capsys)
    code, dry = cli(config, "purge", "--older-than", "30", "--dry-run", capsys=capsys)
    assert code == 0 and len(dry["removed"]["processed"]) == 3
    assert old_day.is_dir()
    _, purged = cli(config, "purge", "--older-than", "30", capsys=capsys)
    assert purged["removed"] == dry["removed"]
    assert not old_day.exists()
    _, left = cli(config, "find", capsys=capsys)
    assert left == []
    _, status = cli(config, "status", capsys=capsys)
    assert status["counts"]["duplicates"] == 1 and status["counts"]["failed"] == 1


def test_purge_older_than_zero_means_before_today_not_the_default(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "spool"
    shutil.copytree(built.parent / "spool", copy)
    config = write_config(tmp_path / "config.ini", copy)  # [retention] duplicates_days = 30 by default
    ten_days_ago = (dt.date.today() - dt.timedelta(days=10)).isoformat()
    (copy / "duplicates" / dt.date.today().isoformat()).rename(copy / "duplicates" / ten_days_ago)
    _, default = cli(config, "purge", "--state", "duplicates", "--dry-run", capsys=capsys)
    assert default["removed"]["duplicates"] == []
    _, zero = cli(config, "purge", "--state", "duplicates", "--older-than", "0", "--dry-run", capsys=capsys)
    assert len(zero["removed"]["duplicates"]) == 1
    assert zero["removed"]["duplicates"][0].startswith(f"duplicates/{ten_days_ago}/")
