"""Risky settings are logged as a WARNING once when the worker or the receiver starts (issue 22, item 8)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mospool.config import Settings
from mospool.outputs.webhooks import ForwardSettings
from mospool.risks import risks
from tests.disk import small_tmpfs
from tests.servers import REPO, free_port, receiver_commands, wait_for_http, worker_once, write_config
from tests.webhook_app import SECRET

ELSEWHERE = Path("/proc/mospool-spool")  # /proc is never the filesystem of /: a spool that shares nothing
SSRF = "allow_private_networks = yes: the SSRF guard is off"
CLEAR_TEXT = "is plain http to another host"
SHARED = "is on the filesystem of /"


def settings(spool: Path = ELSEWHERE, private: bool = False, url: str = "") -> Settings:
    base = Settings.for_spool(spool, forward=ForwardSettings(url=url, secret=SECRET if url else ""))
    return dataclasses.replace(base, media=dataclasses.replace(base.media, allow_private_networks=private))


def test_the_defaults_on_a_filesystem_of_their_own_are_not_risky() -> None:
    assert risks(settings()) == []


def test_the_ssrf_guard_off_is_risky() -> None:
    (risk,) = risks(settings(private=True))
    assert SSRF in risk and "169.254.169.254" in risk


@pytest.mark.parametrize(
    ("url", "risky"),
    [
        ("http://192.0.2.10/hooks", True),
        ("http://app.example.com/hooks", True),
        ("https://app.example.com/hooks", False),
        ("http://127.0.0.1:9000/hooks", False),
        ("http://[::1]:9000/hooks", False),
        ("http://localhost/hooks", False),
        ("", False),  # forwarding off
    ],
)
def test_forwarding_over_plain_http_is_risky_unless_it_stays_on_this_host(url: str, risky: bool) -> None:
    found = risks(settings(url=url))
    assert (found != []) is risky
    assert all(CLEAR_TEXT in risk and url in risk for risk in found)


def test_a_spool_on_the_filesystem_of_root_is_risky(tmp_path: Path) -> None:
    assert Path("/").stat().st_dev == tmp_path.stat().st_dev  # where the tests' spools are, here and in CI
    (risk,) = risks(settings(spool=tmp_path / "spool"))  # not made yet: its parent decides
    assert SHARED in risk and str(tmp_path / "spool") in risk


def risky_config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "config.ini",
        tmp_path / "spool",
        {
            "media": {"allow_private_networks": "yes"},
            "forward": {"url": "http://192.0.2.10/hooks", "secret": SECRET},
        },
    )


def warnings_in(log: str) -> list[str]:
    return [line for line in log.splitlines() if "WARNING" in line and "risky setting" in line]


def assert_each_once(log: str) -> None:
    found = warnings_in(log)
    assert len(found) == 3, log[-3000:]
    for words in (SSRF, CLEAR_TEXT, SHARED):
        assert sum(words in line for line in found) == 1, (words, found)


@pytest.mark.slow
def test_the_worker_warns_once_of_each_at_start(tmp_path: Path) -> None:
    config = risky_config(tmp_path)
    assert_each_once(worker_once(config))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["python app.py", "gunicorn as deployed"])
def test_the_receiver_warns_once_of_each_at_start_not_once_per_gunicorn_worker(
    tmp_path: Path, how: str
) -> None:
    config = risky_config(tmp_path)
    port = free_port()
    env = {**os.environ, "MOSPOOL_CONFIG": str(config), "MOSPOOL_BIND": f"127.0.0.1:{port}"}
    command = receiver_commands(port)[how]
    log = tmp_path / "receiver.log"
    with log.open("w") as output:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stderr=output, start_new_session=True)
    built = {"python app.py": 3, "gunicorn as deployed": 2}[how]  # app.py builds it once more, to check it
    try:
        wait_for_http("127.0.0.1", port)
        deadline = time.monotonic() + 30
        while log.read_text().count("ready: postbacks to /postback") < built:  # each gunicorn worker's app
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert_each_once(log.read_text())


@pytest.mark.slow
@pytest.mark.root
def test_safe_settings_on_a_spool_of_its_own_warn_of_nothing(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "16m") as disk:
        config = write_config(tmp_path / "config.ini", disk / "spool")
        log = worker_once(config)
    assert warnings_in(log) == []
    assert "handled 0 postbacks" in log
