"""Real processes for tests: a config file writer and a gunicorn receiver on a loopback port."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def receiver_commands(port: int) -> dict[str, list[str]]:
    """The receiver's two ways to start, bound to ``port``: on its own, and under gunicorn as deployed."""
    return {
        "python app.py": [sys.executable, "app.py", "--bind", f"127.0.0.1:{port}"],
        "gunicorn as deployed": [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "deploy/gunicorn.conf.py",
            "app:app",
        ],
    }


def write_config(path: Path, spool_dir: Path, sections: Mapping[str, Mapping[str, object]] = {}) -> Path:
    """A config.ini with the spool at spool_dir and the given keys set (everything else default)."""
    lines = ["[spool]", f"dir = {spool_dir}"]
    for key, value in sections.get("spool", {}).items():
        lines.append(f"{key} = {value}")
    for section, keys in sections.items():
        if section == "spool":
            continue
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in keys.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_for_http(host: str, port: int, path: str = "/healthz", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def worker_once(config: Path) -> str:
    """`spool_worker.py --once` on ``config``, as a process of its own; returns its log (stderr), which a
    failure shows."""
    done = subprocess.run(
        [sys.executable, "spool_worker.py", "--config", str(config), "--once"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


@contextlib.contextmanager
def worker_process(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`spool_worker.py` as systemd runs it, its log in ``log``; yielded once it watches, stopped after."""
    with log.open("wb") as output:
        worker = subprocess.Popen(
            [sys.executable, "spool_worker.py", "--config", str(config)], cwd=REPO, stderr=output
        )
    try:
        deadline = time.monotonic() + 30
        while "watching" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield worker
    finally:
        worker.terminate()
        worker.wait(60)


class KeepAlive:
    """One keep-alive connection to the receiver, as Sinch sends: a broken one is dropped and made anew."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port, self.timeout = port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes, content_type: str) -> int | None:
        """The status, or None when the connection broke (refused, reset, killed mid-answer)."""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self.conn.request("POST", "/postback", body=body, headers={"Content-Type": content_type})
            response = self.conn.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return None


class Gunicorn:
    """`gunicorn app:app` from the repo (or a copy of its source), gthread workers, on 127.0.0.1:<free port>."""

    def __init__(
        self,
        config: Path,
        workers: int = 2,
        threads: int = 4,
        extra: tuple[str, ...] = (),
        port: int = 0,
        source: Path = REPO,
    ) -> None:
        self.config = config
        self.source = source
        self.port = port or free_port()
        self.args = [
            sys.executable,
            "-m",
            "gunicorn",
            "--worker-class",
            "gthread",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--no-control-socket",
            "--keep-alive",
            "30",
            *extra,
            "app:app",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Gunicorn:
        env = {**os.environ, "MOSPOOL_CONFIG": str(self.config)}
        self.proc = subprocess.Popen(self.args, cwd=self.source, env=env, start_new_session=True)
        wait_for_http("127.0.0.1", self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def post(
        self, path: str, body: bytes, headers: Mapping[str, str] | None = None, method: str = "POST"
    ) -> tuple[int, dict[str, str], bytes]:
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def worker_pids(self) -> list[int]:
        """The arbiter's children (gunicorn workers), from /proc."""
        assert self.proc is not None
        return children(self.proc.pid)


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found
