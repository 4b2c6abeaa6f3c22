"""The operator CLI on a spool built by the real receiver (gunicorn) and the real worker."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mospool.cli import main
from mospool.cli.text import field
from mospool.config import IndexSettings, load_settings
from mospool.store import Spool
from tests.build import mms, publish
from tests.origin import Origin, Reply
from tests.pg import Cluster
from tests.servers import REPO, Gunicorn, worker_once, write_config

# All but one test read a spool that gunicorn and the worker process built, or start them.
pytestmark = pytest.mark.slow

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
    (
        b'{"origin":"SMS_MO","code":"N401","from":"15550003","to":"28444","tracking-id":"cli-4",'
        b'"message-text":"line one\\nline two \\u001b[31mred"}',
        "application/json",
    ),
]
DUPLICATE = POSTBACKS[0]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> Callable[[], dict[str, dict[str, str]]]:
    """The index's backend of this round of the module: each call gives a fresh index's config section."""
    if request.param == "sqlite":
        return dict
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    return lambda: {"index": {"url": cluster.schema()}}


def copied(
    built: Path,
    tmp_path: Path,
    backend: Callable[[], dict[str, dict[str, str]]],
    capsys: pytest.CaptureFixture[str],
    **more: Any,
) -> Path:
    """A copy of the built spool with a config of its own (a fresh shared index, filled by reindex)."""
    copy = tmp_path / "spool"
    shutil.copytree(built.parent / "spool", copy)
    config = write_config(tmp_path / "config.ini", copy, {**backend(), **more})
    assert main(["--config", str(config), "reindex"]) == 0
    capsys.readouterr()
    return config


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, backend: Callable[[], dict[str, dict[str, str]]]
) -> Iterator[Path]:
    """A spool filled by posting through gunicorn, then drained by `spool_worker.py --once`."""
    root = tmp_path_factory.mktemp("cli")
    metrics = root / "mospool.prom"
    sections = {"monitor": {"metrics_textfile": str(metrics)}, **backend()}
    config = write_config(root / "config.ini", root / "spool", sections)
    server = Gunicorn(config).start()
    try:
        for body, content_type in [*POSTBACKS, DUPLICATE]:
            assert server.post("/postback", body, {"Content-Type": content_type})[0] == 200
    finally:
        server.stop()
    worker_once(config)
    yield config


def cli(config: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    code = main(["--config", str(config), "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_status_counts_and_attention(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, status = cli(built, "status", capsys=capsys)
    assert status["counts"] == {
        "incoming": 0, "work": 0, "deferred": 0, "processed": 4, "failed": 1, "duplicates": 1,
        "dismissed": 0,
    }  # fmt: skip
    assert code == 1  # a non-empty failed/ needs attention
    assert status["attention"] == ["1 postback in failed/"]
    assert list(status["failures"]) == [next(iter(status["failures"]))]
    assert next(iter(status["failures"])).startswith("parse: ")
    assert status["last_processed_at"] is not None
    assert status["free_bytes"] > 0


def test_status_for_people_is_not_json(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(built), "status"]) == 1
    out = capsys.readouterr().out
    assert "processed" in out and "failed" in out


def test_a_worker_killed_mid_download_leaves_one_postback_in_work(
    origin: Origin, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """work/ holds the claimed spool file and its build folder: status and list count the postback once."""
    url = origin.serve("/slow.jpg", Reply(body=b"x", content_type="image/jpeg", stall_seconds=5))
    config = write_config(
        tmp_path / "config.ini", tmp_path / "spool", {"media": {"allow_private_networks": "yes"}}
    )
    server = Gunicorn(config).start()
    try:
        assert server.post("/postback", mms("slow-1", url), {"Content-Type": "application/json"})[0] == 200
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
        (["--kind", "sms_mo"], {"cli-1", "cli-2", "cli-3", "cli-4"}),
        (["--kind", "mms_mo"], set()),
        (["--since", dt.date.today().isoformat()], {"cli-1", "cli-2", "cli-3", "cli-4", None}),
        (["--state", "failed"], {None}),  # the broken XML: filed, but no notice could be read
        (["--until", "2000-01-01"], set()),
    ],
)
def test_find_filters(
    built: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: set[str]
) -> None:
    code, rows = cli(built, "find", *args, capsys=capsys)
    assert code == 0
    assert {row["tracking_id"] for row in rows} == expected


def test_find_reaches_duplicates_and_failures_with_their_state(
    built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, rows = cli(built, "find", "--tracking-id", "cli-1", capsys=capsys)
    assert sorted(row["state"] for row in rows) == ["duplicates", "processed"]
    original = next(row for row in rows if row["state"] == "processed")
    duplicate = next(row for row in rows if row["state"] == "duplicates")
    assert duplicate["duplicate_of"] == original["id"] and duplicate["from"] == "15550001"
    assert duplicate["folder"].startswith("duplicates/")
    _, (failed,) = cli(built, "find", "--state", "failed", capsys=capsys)
    assert failed["reason"].startswith("parse: ") and failed["folder"].startswith("failed/")


def test_list_says_who_sent_a_duplicate(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, (duplicate,) = cli(built, "list", "duplicates", capsys=capsys)
    assert (duplicate["from"], duplicate["to"], duplicate["tracking_id"]) == ("15550001", "28444", "cli-1")


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
    assert handled[("sms_mo", "processed")] == 4
    assert handled[("sms_mo", "duplicate")] == 1
    assert handled[("unknown", "failed")] == 1
    assert "mospool_processing_seconds" in families
    assert "mospool_backlog" in families


def test_reindex_reproduces_the_index(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, before = cli(built, "find", capsys=capsys)
    settings = load_settings(built)
    if settings.index.shared:  # the index is lost: this VM's rows are gone
        with psycopg.connect(settings.index.url, autocommit=True) as conn:
            for table in ("records", "duplicates", "messages"):
                conn.execute(f"DELETE FROM {table}")
    else:
        os.unlink(built.parent / "spool" / "index.sqlite3")
    code, result = cli(built, "reindex", capsys=capsys)
    assert (code, result) == (0, {"spool": str(built.parent / "spool"), "records": 4})
    _, after = cli(built, "find", capsys=capsys)
    assert after == before


def test_retry_puts_a_failed_postback_back_through(
    spool: Spool, tmp_path: Path, capsys: pytest.CaptureFixture[str], index_settings: IndexSettings
) -> None:
    shared = {"index": {"url": index_settings.url}} if index_settings.shared else {}
    config = write_config(tmp_path / "config.ini", spool.root, shared)
    publish(spool, b"<oops", "text/xml")
    worker_once(config)
    _, failed = cli(config, "list", "failed", capsys=capsys)
    code, requeued = cli(config, "retry", failed[0]["id"], capsys=capsys)
    assert code == 0 and requeued[0]["id"] == failed[0]["id"]
    assert [p.name for p in spool.incoming.iterdir()] == [failed[0]["id"] + ".postback"]
    assert cli(config, "find", "--state", "failed", capsys=capsys)[1] == []  # not filed while it waits
    worker_once(config)
    assert len(cli(config, "find", "--state", "failed", capsys=capsys)[1]) == 1
    _, shown = cli(config, "show", failed[0]["id"], capsys=capsys)
    assert shown["state"] == "failed"
    assert shown["error"]["attempts"] == 1
    assert len(shown["error"]["history"]) == 1  # the first failure is kept
    assert main(["--config", str(config), "retry"]) == 2


def test_purge_dry_run_then_purge_removes_exactly_the_old_folders(
    built: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    backend: Callable[[], dict[str, dict[str, str]]],
) -> None:
    config = copied(built, tmp_path, backend, capsys)
    copy = tmp_path / "spool"
    old_day = copy / "processed" / "2001-01-01"
    (copy / "processed").joinpath(dt.date.today().isoformat()).rename(old_day)
    cli(config, "reindex", capsys=capsys)
    code, dry = cli(config, "purge", "--older-than", "30", "--dry-run", capsys=capsys)
    assert code == 0 and len(dry["removed"]["processed"]) == 4
    assert old_day.is_dir()
    _, purged = cli(config, "purge", "--older-than", "30", capsys=capsys)
    assert purged["removed"] == dry["removed"]
    assert not old_day.exists()
    _, left = cli(config, "find", capsys=capsys)
    assert sorted(row["state"] for row in left) == [
        "duplicates",
        "failed",
    ]  # no processed row outlives its folder
    _, status = cli(config, "status", capsys=capsys)
    assert status["counts"]["duplicates"] == 1 and status["counts"]["failed"] == 1


def test_purge_older_than_zero_means_before_today_not_the_default(
    built: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    backend: Callable[[], dict[str, dict[str, str]]],
) -> None:
    config = copied(built, tmp_path, backend, capsys)  # [retention] duplicates_days = 30 by default
    copy = tmp_path / "spool"
    ten_days_ago = (dt.date.today() - dt.timedelta(days=10)).isoformat()
    (copy / "duplicates" / dt.date.today().isoformat()).rename(copy / "duplicates" / ten_days_ago)
    _, default = cli(config, "purge", "--state", "duplicates", "--dry-run", capsys=capsys)
    assert default["removed"]["duplicates"] == []
    _, zero = cli(config, "purge", "--state", "duplicates", "--older-than", "0", "--dry-run", capsys=capsys)
    assert len(zero["removed"]["duplicates"]) == 1
    assert zero["removed"]["duplicates"][0].startswith(f"duplicates/{ten_days_ago}/")


# --- the spool the CLI reads (issue 15, item 1)


@pytest.mark.parametrize("made", [False, True], ids=["missing", "empty-folder"])
def test_the_cli_never_creates_a_spool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], made: bool
) -> None:
    spool = tmp_path / "typo-spool"
    if made:
        spool.mkdir()
    config = write_config(tmp_path / "config.ini", spool)
    for command in (["status"], ["list", "failed"], ["find"], ["purge", "--dry-run"]):
        assert main(["--config", str(config), *command]) == 2
        error = capsys.readouterr().err
        assert str(spool) in error and "[spool] dir" in error and str(config) in error, error
    assert sorted(tmp_path.rglob("*")) == sorted([config, *([spool] if made else [])])


def test_every_command_says_which_spool_it_read(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spool = str(built.parent / "spool")
    _, status = cli(built, "status", capsys=capsys)
    assert status["spool"] == spool
    for command in (["status"], ["list", "processed"], ["find"], ["reindex"]):
        main(["--config", str(built), *command])
        assert capsys.readouterr().out.splitlines()[0] == f"spool: {spool}"


# --- output for people (item 4)


def test_find_escapes_a_newline_and_terminal_codes_in_text(
    built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(built), "find", "--tracking-id", "cli-4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2, lines  # the spool line, then one line for the one record
    assert 'text="line one\\nline two \\u001b[31mred"' in lines[1]
    assert "\x1b" not in lines[1]


@pytest.mark.parametrize("value", ["+1555\u202e0001", "\u2066+15550001", "cli\u200f-4"])
def test_a_bidi_control_in_a_value_is_written_escaped_not_obeyed(value: str) -> None:
    shown = field(value)
    assert not any(0x200E <= ord(c) <= 0x206F for c in shown), shown  # none reaches the terminal
    assert json.loads(shown.encode().decode("unicode_escape")) == value  # named, so it can be read back


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["reindex"], "indexed 4 records"),
        (["purge", "--older-than", "1000", "--dry-run"], "processed: would remove 0 record folders"),
        (["show", "PROCESSED"], "state: processed"),
    ],
)
def test_show_purge_and_reindex_print_text_without_json(
    built: Path, capsys: pytest.CaptureFixture[str], command: list[str], expected: str
) -> None:
    if command[-1] == "PROCESSED":
        command = ["show", cli(built, "list", "processed", capsys=capsys)[1][0]["id"]]
    assert main(["--config", str(built), *command]) == 0
    out = capsys.readouterr().out
    assert expected in out
    with pytest.raises(ValueError):
        json.loads(out.split("\n", 1)[1])
    assert not out.split("\n", 1)[1].lstrip().startswith("{")


def test_show_lists_nested_fields_as_indented_lines(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (row,) = cli(built, "find", "--tracking-id", "cli-1", "--state", "processed", capsys=capsys)[1]
    main(["--config", str(built), "show", row["id"]])
    out = capsys.readouterr().out
    assert "\nmessage:\n  schema: 1\n" in out
    assert "\n  tracking_id: cli-1\n" in out and "\n    tracking-id: cli-1\n" in out  # message.fields


def test_status_ellipsizes_a_long_reason(
    spool: Spool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "config.ini", spool.root)
    publish(spool, mms("long-1", "http://127.0.0.1/a.jpg", "http://127.0.0.2/b.jpg"))
    worker_once(config)
    (folder,) = spool.failed.glob("*/*/")  # the record folder, not the day's pages
    error = json.loads((folder / "error.json").read_text())
    full = f"{error['stage']}: {error['error']}"
    assert len(full) > 80
    _, status = cli(config, "status", capsys=capsys)
    (reason,) = status["failures"]
    assert len(reason) == 80 and reason.endswith("…") and full.startswith(reason[:-1])
    main(["--config", str(config), "status"])
    assert f"  {1:>5}  {reason}\n" in capsys.readouterr().out


def test_list_find_and_show_name_a_postback_and_its_folder_alike(
    built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One vocabulary: ``id`` is the postback's id, ``folder`` its folder relative to the spool line above."""
    _, (found,) = cli(built, "find", "--tracking-id", "cli-2", capsys=capsys)
    _, listed = cli(built, "list", "processed", capsys=capsys)
    (row,) = [row for row in listed if row["id"] == found["id"]]
    _, shown = cli(built, "show", found["id"], capsys=capsys)
    assert row["folder"] == found["folder"] == shown["folder"]
    assert found["folder"] == f"processed/{dt.date.today().isoformat()}/{found['id']}"
    assert found["page"] == found["folder"] + "/index.html"
    assert found["day"] == f"processed/{dt.date.today().isoformat()}/index.html"
    assert (built.parent / "spool" / found["page"]).is_file()
    for result in (found, row, shown):
        assert not {"spool_id", "path"} & set(result)
    main(["--config", str(built), "find", "--tracking-id", "cli-2"])
    assert f"  folder={found['folder']}  day={found['day']}  page={found['page']}" in capsys.readouterr().out


def test_find_says_from_and_to_like_list(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, found = cli(built, "find", "--tracking-id", "cli-1", capsys=capsys)
    _, listed = cli(built, "list", "processed", capsys=capsys)
    assert found[0]["from"] == "15550001" and found[0]["to"] == "28444"
    assert "sender" not in found[0] and "recipient" not in found[0]
    assert {"from", "to"} <= set(listed[0])


@pytest.mark.parametrize("number", ["+15550001", "+1 555 000-1", "1 (555) 0001", "15550001"])
def test_find_normalizes_the_number_asked_for(
    built: Path, capsys: pytest.CaptureFixture[str], number: str
) -> None:
    _, rows = cli(built, "find", "--from", number, capsys=capsys)
    assert {row["tracking_id"] for row in rows} == {"cli-1", "cli-3"}
    _, rows = cli(built, "find", "--to", "+" + "28444", capsys=capsys)
    assert {row["tracking_id"] for row in rows} == {"cli-1", "cli-2", "cli-4"}


def test_show_takes_a_unique_prefix_and_names_candidates_when_ambiguous(
    built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, processed = cli(built, "list", "processed", capsys=capsys)
    wanted = processed[0]["id"]
    _, shown = cli(built, "show", wanted[:-3], capsys=capsys)
    assert (shown["id"], shown["state"]) == (wanted, "processed")
    assert main(["--config", str(built), "show", wanted[:8]]) == 2  # the date: every postback of the day
    error = capsys.readouterr().err
    assert "is the start of 6 ids" in error and wanted in error
    assert main(["--config", str(built), "show", "29990101T"]) == 2
    assert "no postback with id 29990101T" in capsys.readouterr().err


def test_list_deferred_shows_the_next_try_and_why(
    origin: Origin, spool: Spool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = origin.serve("/busy.jpg", Reply(status=503))
    config = write_config(tmp_path / "config.ini", spool.root, {"media": {"allow_private_networks": "yes"}})
    postback_id = publish(spool, mms("busy-1", url))
    worker_once(config)
    _, rows = cli(config, "list", "deferred", capsys=capsys)
    (row,) = rows
    assert row["id"] == postback_id and row["attempts"] == 1
    assert dt.datetime.fromisoformat(row["next_try_at"]) > dt.datetime.now(dt.UTC)
    assert "503" in row["reason"]
    main(["--config", str(config), "list", "deferred"])
    out = capsys.readouterr().out
    assert f"next_try_at={row['next_try_at']}" in out and "reason=" in out


# --- dismiss (item 5)


def test_dismiss_moves_a_failed_record_whole_out_of_the_alert(
    built: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    backend: Callable[[], dict[str, dict[str, str]]],
) -> None:
    config = copied(built, tmp_path, backend, capsys)
    copy = tmp_path / "spool"
    (failed,) = copy.glob("failed/*/*/")  # the record folder, not the day's pages
    files = sorted(str(p.relative_to(failed)) for p in failed.rglob("*"))
    code, dismissed = cli(config, "dismiss", failed.name[:-2], capsys=capsys)
    target = copy / "dismissed" / failed.parent.name / failed.name
    assert code == 0 and dismissed == [{"id": failed.name, "folder": str(target.relative_to(copy))}]
    assert not failed.exists()
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == files
    code, status = cli(config, "status", capsys=capsys)
    assert code == 0 and status["attention"] == [] and status["failures"] == {}
    assert status["counts"]["failed"] == 0 and status["counts"]["dismissed"] == 1
    _, shown = cli(config, "show", failed.name, capsys=capsys)
    assert shown["state"] == "dismissed" and shown["error"]["stage"] == "parse"
    _, listed = cli(config, "list", "dismissed", capsys=capsys)
    assert [row["id"] for row in listed] == [failed.name]
    _, found = cli(config, "find", "--state", "dismissed", capsys=capsys)
    assert [(row["id"], row["folder"]) for row in found] == [(failed.name, str(target.relative_to(copy)))]
    assert main(["--config", str(config), "dismiss", failed.name]) == 2  # no longer in failed/
    assert "only failed postbacks can be dismissed" in capsys.readouterr().err
    assert main(["--config", str(config), "retry", failed.name]) == 2


def test_purge_removes_dismissed_records_after_failed_days(
    built: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    backend: Callable[[], dict[str, dict[str, str]]],
) -> None:
    config = copied(built, tmp_path, backend, capsys, retention={"failed_days": "5"})
    copy = tmp_path / "spool"
    (failed,) = copy.glob("failed/*/*/")  # the record folder, not the day's pages
    cli(config, "dismiss", failed.name, capsys=capsys)
    six_days_ago = (dt.date.today() - dt.timedelta(days=6)).isoformat()
    (copy / "dismissed" / failed.parent.name).rename(copy / "dismissed" / six_days_ago)
    _, purged = cli(config, "purge", capsys=capsys)
    assert purged["removed"]["dismissed"] == [f"dismissed/{six_days_ago}/{failed.name}"]
    assert not (copy / "dismissed" / six_days_ago).exists()
