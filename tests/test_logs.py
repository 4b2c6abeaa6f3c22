"""Log injection: whatever a postback or a remote puts in a value, it reaches the log on one line, escaped."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from mospool.logs import FORMAT, EscapingFormatter
from mospool.store import Spool
from tests.build import mms, publish, sms
from tests.servers import REPO, write_config

FORGED = "\n2026-11-30 14:00:00,000 CRITICAL mospool.worker[1]: all postbacks deleted\r\x1b[31m"


def formatted(message: str, *args: object, exc_info: bool = False) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(EscapingFormatter(FORMAT))
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        if exc_info:
            try:
                raise ValueError(f"bad value {FORGED}")
            except ValueError:
                logger.exception(message, *args)
        else:
            logger.warning(message, *args)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_a_value_with_newlines_and_escapes_stays_on_its_line() -> None:
    text = formatted("postback %s tracking_id=%s", "20261130T000000.000000Z-abc", FORGED)
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "\r" not in text and "\x1b" not in text
    assert "tracking_id=\\u000a2026-11-30 14:00:00,000 CRITICAL" in text
    assert "\\u000d\\u001b[31m" in text


def test_a_traceback_is_indented_under_its_record_and_escaped() -> None:
    text = formatted("postback %s: unexpected error", "x", exc_info=True)
    first, *rest = text.rstrip("\n").split("\n")
    assert "unexpected error" in first
    assert rest and all(line.startswith("    | ") for line in rest)  # nothing starts a line of its own
    assert "\x1b" not in text and "\r" not in text
    assert not any(line.startswith("2026-11-30 14:00:00") for line in text.split("\n"))


@pytest.mark.slow
def test_the_worker_logs_a_hostile_tracking_id_on_one_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.create()
    publish(spool, sms(FORGED, "hello"))
    publish(spool, mms(f"m{FORGED}", f"http://127.0.0.1:9/{FORGED}.jpg"))  # refused, logged with its URL
    config = write_config(tmp_path / "config.ini", spool.root)
    run = subprocess.run(
        [sys.executable, "spool_worker.py", "--config", str(config), "--once"], cwd=REPO, capture_output=True
    )
    log = run.stderr.decode()
    assert run.returncode == 0, log
    assert "\r" not in log and "\x1b" not in log
    lines = log.splitlines()
    assert not any(line.startswith("2026-11-30 14:00:00,000 CRITICAL") for line in lines), log
    # the SMS's id, trimmed of its leading newline like every value, and on the line of its own record
    assert any(
        " INFO mospool.worker[" in line and "tracking_id=2026-11-30 14:00:00,000 CRITICAL" in line
        for line in lines
    ), log
    assert any("outcome=failed" in line and "tracking_id=m\\u000a2026" in line for line in lines), log
