"""The worker on a small real disk (a tmpfs, so root, as CI runs): what a record costs, and the free space
it keeps ([worker] min_free_bytes): below it nothing is filed, it says so, and it resumes by itself."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mospool.cli import main as cli_main
from mospool.store import SUFFIX, Spool, State
from tests.build import publish, sms
from tests.disk import fill, free_bytes, small_tmpfs
from tests.servers import worker_process, write_config

pytestmark = pytest.mark.slow  # tmpfs mounts and the worker as a process

MIB = 1024 * 1024


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def metric(path: Path, name: str) -> float:
    for line in path.read_text().splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in {path}")


def test_the_worker_keeps_min_free_bytes_says_so_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = tmp_path / "mospool.prom"
    with small_tmpfs(tmp_path / "disk", "16m") as disk:
        spool = Spool(disk / "spool")
        sections: dict[str, dict[str, object]] = {
            "worker": {"rescan_seconds": 1, "min_free_bytes": 4 * MIB},
            "monitor": {"metrics_textfile": metrics},
        }
        config = write_config(tmp_path / "config.ini", spool.root, sections)
        log = tmp_path / "worker.log"
        with worker_process(config, log):
            # What one record costs: a 300 KB SMS (its text in body.json, message.json and, cut, the page)
            body = sms("big", "x" * 300_000)
            big = publish(spool, body)
            assert wait_for(lambda: spool.record_dir(State.PROCESSED, big).is_dir(), 15)
            record = spool.record_dir(State.PROCESSED, big)
            size = sum(path.stat().st_size for path in record.iterdir())
            with capsys.disabled():
                print(f"\na {len(body)}-byte SMS made a {size}-byte record ({size / len(body):.2f}x)")
            assert size <= 2.5 * len(body)

            # Then the disk fills up to below the worker's threshold: five postbacks arrive meanwhile
            staging = Spool(disk / "staging")  # same disk, not watched: a rename from it needs no space
            staging.create()
            waiting = [publish(staging, sms(f"wait-{n}")) for n in range(5)]
            filler = fill(disk, leave=2 * MIB)
            time.sleep(0.5)  # longer than the worker's free space check is kept (space.CHECK_EVERY_SECONDS)
            for postback_id in waiting:
                (staging.incoming / f"{postback_id}{SUFFIX}").rename(
                    spool.incoming / f"{postback_id}{SUFFIX}"
                )
            assert wait_for(lambda: "below [worker] min_free_bytes" in log.read_text(), 10)
            time.sleep(3)  # three rescans: none of them may claim a postback
            assert sorted(p.name for p in spool.incoming.iterdir()) == sorted(f"{i}{SUFFIX}" for i in waiting)
            assert wait_for(lambda: metric(metrics, "mospool_filing_paused") == 1.0, 10)
            code = cli_main(["--config", str(config), "--json", "status"])
            status = json.loads(capsys.readouterr().out)
            assert code == 1
            assert any("below [worker] min_free_bytes (4194304)" in line for line in status["attention"])
            assert free_bytes(disk) > 0  # the worker left the rest for the receiver

            # Space is back: everything waiting is filed, and the worker says so
            filler.unlink()
            assert wait_for(lambda: all(spool.record_dir(State.PROCESSED, i).is_dir() for i in waiting), 20)
            assert wait_for(lambda: metric(metrics, "mospool_filing_paused") == 0.0, 10)
        text = log.read_text()
        assert text.count("below [worker] min_free_bytes") == 1  # said once, not at every claim
        assert "free space is back" in text


def test_status_says_when_the_spool_cannot_be_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        spool = Spool(disk / "spool")
        spool.create()
        config = write_config(tmp_path / "config.ini", spool.root, {"worker": {"min_free_bytes": 0}})
        assert cli_main(["--config", str(config), "--json", "status"]) == 0
        capsys.readouterr()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        code = cli_main(["--config", str(config), "--json", "status"])
        status = json.loads(capsys.readouterr().out)
    assert code == 1
    assert status["attention"] == [f"cannot write in {spool.tmp}: Read-only file system"]
