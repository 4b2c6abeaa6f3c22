"""scripts/run-local for real: the receiver and the worker on a config under tmp_path, then Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.local_run import run_local
from tests.servers import REPO

pytestmark = pytest.mark.slow  # scripts/run-local: gunicorn and the worker


def wait_for_line(log: Path, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text!r} not in:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


COMMAND = REPO / ".venv" / "bin" / "mospool"


@pytest.mark.parametrize("how", ["sigterm-to-the-script", "ctrl-c-to-the-terminal-group"])
def test_run_local_names_the_real_spool_and_stops_cleanly(tmp_path: Path, how: str) -> None:
    COMMAND.unlink(missing_ok=True)  # run-local installs the mospool command the README uses
    with run_local(tmp_path, spool_name="my-spool") as local:
        spool, config = local.spool, local.config
        wait_for_line(local.log, f"watching {spool / 'incoming'}")
        assert f"the spool is {spool} (from {config})" in local.log.read_text()
        status = subprocess.run(
            [str(COMMAND), "--config", str(config), "status"], capture_output=True, text=True, check=True
        )
        assert status.stdout.startswith(f"spool: {spool}\n")
        # a terminal's Ctrl-C is SIGINT to the whole foreground group
        code = local.stop(None if how == "sigterm-to-the-script" else signal.SIGINT)
        assert code == 0, local.log.read_text()[-3000:]
    text = local.log.read_text()
    assert "received: stopping" in text and "stopped (exit status 0)" in text, text[-3000:]
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", local.port), timeout=5),
    ):
        pass  # the receiver went with it
