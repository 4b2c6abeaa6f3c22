"""scripts/run-local for real: the receiver and the worker on a config under tmp_path, then Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.servers import REPO, free_port, wait_for_http, write_config

pytestmark = pytest.mark.slow  # scripts/run-local: gunicorn and the worker


def wait_for_line(log: Path, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text!r} not in:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


COMMAND = REPO / ".venv" / "bin" / "mospool"


@pytest.mark.parametrize("how", ["sigterm-to-the-script", "ctrl-c-to-the-terminal-group"])
def test_run_local_names_the_real_spool_and_stops_cleanly(tmp_path: Path, how: str) -> None:
    spool = tmp_path / "my-spool"
    config = write_config(tmp_path / "config.ini", spool)
    COMMAND.unlink(missing_ok=True)  # run-local installs the mospool command the README uses
    port = free_port()
    env = {**os.environ, "MOSPOOL_CONFIG": str(config), "BIND": f"127.0.0.1:{port}"}
    log = tmp_path / "run-local.log"
    with log.open("w") as output:
        proc = subprocess.Popen(
            ["scripts/run-local"], cwd=REPO, env=env, stdout=output, stderr=output, start_new_session=True
        )
    try:
        wait_for_http("127.0.0.1", port, timeout=120)
        wait_for_line(log, f"watching {spool / 'incoming'}")
        assert f"the spool is {spool} (from {config})" in log.read_text()
        status = subprocess.run(
            [str(COMMAND), "--config", str(config), "status"], capture_output=True, text=True, check=True
        )
        assert status.stdout.startswith(f"spool: {spool}\n")
        if how == "sigterm-to-the-script":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C: the whole foreground group
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            left = subprocess.run(
                ["ps", "-o", "pid,stat,args", "-s", str(proc.pid)], capture_output=True, text=True
            )
            pytest.fail(f"still running after 60 s:\n{left.stdout}\n{log.read_text()[-3000:]}")
        assert code == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert "received: stopping" in text and "stopped (exit status 0)" in text, text[-3000:]
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass  # the receiver went with it
