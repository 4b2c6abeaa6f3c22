"""The shipped nginx site and gunicorn config, rendered onto loopback ports and tmp paths for tests and bench."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"


def render(source: Path, target: Path, replacements: dict[str, str]) -> Path:
    """Copy a shipped file with paths and ports substituted; every replaced text must be in the file."""
    text = source.read_text()
    for old, new in replacements.items():
        assert old in text, f"{source.name} no longer contains {old!r}: update the test's rendering"
        text = text.replace(old, new)
    target.write_text(text)
    return target


def make_cert(folder: Path) -> None:
    folder.mkdir(parents=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(folder / "privkey.pem"), "-out", str(folder / "fullchain.pem")],
        check=True, capture_output=True,
    )  # fmt: skip


def loopback_listens(https_port: int, http_port: int) -> dict[str, str]:
    """The public site's listen lines moved to loopback ports (render() replacements)."""
    return {
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen [::]:80;": "",
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        "listen [::]:443 ssl;": "",
    }


def render_nginx(root: Path, spool: Path, ports: tuple[int, int, int]) -> Path:
    https_port, http_port, browse_port = ports
    make_cert(root / "certs")
    (root / "acme").mkdir()
    include = render(DEPLOY / "nginx" / "mo-spool-sinch-ips.conf", root / "sinch-ips.conf", {})
    site = render(
        DEPLOY / "nginx" / "mo-spool.conf",
        root / "mo-spool.conf",
        {
            **loopback_listens(https_port, http_port),
            "unix:/run/mo-spool/receiver.sock": f"unix:{root}/receiver.sock",
            "/etc/mo-spool/tls/": f"{root}/certs/",
            "/etc/nginx/mo-spool-sinch-ips.conf": str(include),
            "/var/log/nginx/": f"{root}/",
            "/var/www/letsencrypt": f"{root}/acme",
        },
    )
    browse = render(
        DEPLOY / "nginx" / "mo-spool-browse.conf",
        root / "mo-spool-browse.conf",
        {
            "listen 127.0.0.1:8025;": f"listen 127.0.0.1:{browse_port};",
            "/var/lib/mo-spool/spool": str(spool),
            "/var/log/nginx/": f"{root}/",
        },
    )
    return main_conf(root, f"  access_log {root}/access.log;\n  include {site};\n  include {browse};\n")


def main_conf(root: Path, http: str, worker_connections: int = 256) -> Path:
    """root/nginx.conf for an nginx of our own, run as root: its pid, error log and temp files in root, and
    ``http`` (lines of directives) in its http block."""
    main = root / "nginx.conf"
    main.write_text(
        f"user root;\nworker_processes 1;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\n"
        f"events {{ worker_connections {worker_connections}; }}\n"
        f"http {{\n  client_body_temp_path {root}/body;\n  proxy_temp_path {root}/proxy;\n"
        f"  fastcgi_temp_path {root}/fastcgi;\n  uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n"
        f"{http}}}\n"
    )
    return main


@contextmanager
def running_nginx(main: Path, port: int) -> Iterator[None]:
    """nginx with the config ``main``, in its own process group, once it accepts on ``port``; stopped after,
    its workers too (they outlive the master by a moment, and hold the files under root till then)."""
    nginx = subprocess.Popen(["nginx", "-c", str(main), "-g", "daemon off;"], start_new_session=True)
    try:
        wait_for_port(port)
        yield
    finally:
        os.killpg(nginx.pid, signal.SIGTERM)
        nginx.wait(timeout=20)
        wait_for_group_exit(nginx.pid)


def wait_for_group_exit(group: int, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def wait_for_unix_socket(path: Path, timeout: float = 20.0) -> None:
    _wait_until_it_connects(socket.AF_UNIX, str(path), timeout)


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    _wait_until_it_connects(socket.AF_INET, ("127.0.0.1", port), timeout)


def _wait_until_it_connects(family: int, address: str | tuple[str, int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(family) as probe:
                probe.settimeout(1)
                probe.connect(address)
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def nginx_and_gunicorn(
    root: Path, spool: Path, ports: tuple[int, int, int], app: str, env: Mapping[str, str]
) -> Iterator[None]:
    """The shipped gunicorn config serving ``app`` on a socket in root, behind the shipped nginx site."""
    main = render_nginx(root, spool, ports)
    environment = {**os.environ, **env, "MOSPOOL_BIND": f"unix:{root}/receiver.sock"}
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(DEPLOY / "gunicorn.conf.py"), app],
        cwd=REPO, env=environment, start_new_session=True,
    )  # fmt: skip
    try:
        with running_nginx(main, ports[0]):
            wait_for_unix_socket(root / "receiver.sock")
            yield
    finally:
        os.killpg(gunicorn.pid, signal.SIGTERM)
        gunicorn.wait(timeout=20)


@contextmanager
def browse_site(root: Path, spool: Path, ports: tuple[int, int, int]) -> Iterator[int]:
    """The shipped nginx sites alone (no receiver behind them), for browsing a spool; yields the browse port."""
    with running_nginx(render_nginx(root, spool, ports), ports[2]):
        yield ports[2]
