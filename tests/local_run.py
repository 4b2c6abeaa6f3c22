"""scripts/run-local for real, on a config under a test's folder: every port its own, so two runs (or a
browse site on the default 8025) never meet, and a stop that takes too long names what is left."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.nginx_stack import wait_for_port
from tests.servers import REPO, free_port, wait_for_http, write_config

STOP_SECONDS = 60


@dataclass
class Local:
    proc: subprocess.Popen[bytes]
    port: int  # the receiver's
    pages: int  # the pages server's
    spool: Path
    config: Path
    log: Path

    def stop(self, group_signal: signal.Signals | None = None) -> int:
        """SIGTERM to the script, or ``group_signal`` to its whole process group (a terminal's Ctrl-C is
        SIGINT to the foreground group); returns its exit status."""
        if group_signal is None:
            self.proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(self.proc.pid, group_signal)
        try:
            return self.proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            ps = ["ps", "-o", "pid,stat,args", "-s", str(self.proc.pid)]
            left = subprocess.run(ps, capture_output=True, text=True).stdout
            pytest.fail(
                f"still running {STOP_SECONDS} s after the stop:\n{left}\n{self.log.read_text()[-3000:]}"
            )


@contextlib.contextmanager
def run_local(tmp_path: Path, pages_server: str = "", spool_name: str = "spool") -> Iterator[Local]:
    """Started and answering on both ports; killed at the end if the test did not stop it."""
    spool, log = tmp_path / spool_name, tmp_path / "run-local.log"
    config = write_config(tmp_path / "config.ini", spool)
    port, pages = free_port(), free_port()
    env = {**os.environ, "MOSPOOL_CONFIG": str(config), "BIND": f"127.0.0.1:{port}", "PAGES_PORT": str(pages)}
    if pages_server:
        env["PAGES_SERVER"] = pages_server
    with log.open("w") as output:
        proc = subprocess.Popen(
            ["scripts/run-local"], cwd=REPO, env=env, stdout=output, stderr=output, start_new_session=True
        )
    try:
        wait_for_http("127.0.0.1", port, timeout=120)
        wait_for_port(pages)
        yield Local(proc, port, pages, spool, config, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
