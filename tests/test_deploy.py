"""The shipped deploy/ files, for real: systemd-analyze, nginx -t, and end to end through nginx + gunicorn.

nginx and systemd-analyze must be installed (scripts/test installs them); a missing one fails the suite.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mospool.store import Spool
from tests.nginx_stack import DEPLOY, nginx_and_gunicorn, render, render_nginx
from tests.origin import Origin, Reply
from tests.servers import REPO, free_port, worker_once, write_config

UNITS = [
    "mo-spool-receiver.service",
    "mo-spool-worker.service",
    "mo-spool-purge.service",
    "mo-spool-purge.timer",
]
SEED_XML = (REPO / "tests" / "postbacks" / "good" / "xml_lower_seed.xml").read_bytes()
JPEG = b"\xff\xd8\xff\xe0" + b"seed photo " * 300


# --- systemd


def test_units_verify_without_a_single_line_of_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = {"/opt/mo-spool/venv": str(Path(sys.executable).parent.parent), "/opt/mo-spool/app": str(REPO)}
    for unit in UNITS:
        render(DEPLOY / "systemd" / unit, tmp_path / unit, paths if unit.endswith(".service") else {})
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *UNITS], cwd=tmp_path, capture_output=True, text=True
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    for unit in UNITS[:3]:
        security = subprocess.run(
            ["systemd-analyze", "security", "--offline=yes", unit],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        overall = [line for line in security.stdout.splitlines() if "Overall exposure level" in line]
        with capsys.disabled():  # recorded in the test log, past pytest's capture
            print(f"\nsystemd-analyze security {unit}: {overall[0] if overall else security.stdout[-300:]}")
        assert overall, security.stdout + security.stderr
        score = float(overall[0].split(":")[-1].split()[0])
        assert score < 2.0, overall[0]


def test_units_are_hardened_as_documented() -> None:
    receiver = (DEPLOY / "systemd" / "mo-spool-receiver.service").read_text()
    worker = (DEPLOY / "systemd" / "mo-spool-worker.service").read_text()
    for unit in (receiver, worker):
        for line in (
            "User=mospool", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes",
            "PrivateDevices=yes", "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service", "UMask=0027",
            "StateDirectory=mo-spool",
        ):  # fmt: skip
            assert line in unit
    assert "RestrictAddressFamilies=AF_UNIX\n" in receiver and "IPAddressDeny=any" in receiver
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" in worker
    assert (
        "Type=notify" in receiver and "KillMode=mixed" in receiver and "ExecReload=/bin/kill -HUP" in receiver
    )
    assert "Restart=always" in worker and "TimeoutStopSec=30" in worker  # above stop_timeout_seconds = 20


# --- nginx


@dataclass
class Stack:
    root: Path
    spool: Spool
    https_port: int
    http_port: int
    browse_port: int
    origin: Origin

    def https(self, source: str = "127.0.0.1") -> http.client.HTTPSConnection:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection(
            "127.0.0.1", self.https_port, context=context, timeout=10, source_address=(source, 0)
        )


@pytest.mark.slow
def test_nginx_accepts_the_shipped_sites(tmp_path: Path) -> None:
    main = render_nginx(tmp_path, tmp_path / "spool", (free_port(), free_port(), free_port()))
    result = subprocess.run(["nginx", "-t", "-c", str(main)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The shipped nginx site in front of the shipped gunicorn config: every test taking it is marked slow."""
    root = tmp_path_factory.mktemp("deploy")
    spool = root / "spool"
    config = write_config(
        root / "config.ini",
        spool,
        {"receiver": {"trusted_proxy_count": 1}, "media": {"allow_private_networks": "yes"}},
    )
    ports = (free_port(), free_port(), free_port())
    with (
        nginx_and_gunicorn(root, spool, ports, "app:app", {"MOSPOOL_CONFIG": str(config)}),
        Origin() as origin,
    ):
        yield Stack(root, Spool(spool), ports[0], ports[1], ports[2], origin)


def stored_bodies(stack: Stack) -> list[bytes]:
    return sorted(stack.spool.read(Path(entry.path)).body for entry in stack.spool.waiting())


@pytest.mark.slow
def test_seed_postbacks_over_one_https_keepalive_connection_end_to_end(stack: Stack) -> None:
    photo = stack.origin.serve("/mmsmo/abc123/123wqe.jpeg", Reply(body=JPEG, content_type="image/jpeg"))
    text = stack.origin.serve("/mmsmo/abc123/123w12e.txt", Reply(body=b"hello", content_type="text/plain"))
    seed = json.loads((REPO / "tests" / "postbacks" / "good" / "json_group_copy_to_seed.json").read_bytes())
    seed["content"] = [{"file": photo}, {"file": text}]
    seed_json = json.dumps(seed).encode()
    part = stack.origin.serve("/xml/part.png", Reply(body=b"png", content_type="image/png"))
    seed_xml = SEED_XML.replace(b"URL of Content Here", part.encode())
    conn = stack.https()
    statuses, sockets = [], []
    for body, content_type in ((seed_json, "application/json"), (seed_xml, "text/xml")):
        conn.request("POST", "/postback", body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
        sockets.append(conn.sock)
    conn.close()
    assert statuses == [200, 200]
    assert sockets[0] is sockets[1] is not None, "the keep-alive connection was not reused"
    assert stored_bodies(stack) == sorted([seed_json, seed_xml])
    config = stack.root / "config.ini"
    worker_once(config)
    records = sorted((stack.spool.root / "processed").glob("*/*/message.json"))
    messages = {json.loads(path.read_bytes())["tracking_id"]: path.parent for path in records}
    assert set(messages) == {"MMSMOabcd123", "MMS_MO_iLnCRrL6"}
    record = messages["MMSMOabcd123"]
    assert (record / "media" / "01-123wqe.jpg").read_bytes() == JPEG
    request = json.loads((record / "request.json").read_bytes())
    assert request["remote_addr"] == "127.0.0.1"
    check_browsing(stack, record)


def check_browsing(stack: Stack, record: Path) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.browse_port, timeout=10)
    relative = record.relative_to(stack.spool.root)
    conn.request("GET", f"/{relative.parent}/")
    listing = conn.getresponse()
    assert listing.status == 200
    assert record.name in listing.read().decode()
    conn.request("GET", f"/{relative}/message.json")
    message = conn.getresponse()
    assert message.getheader("Content-Type") == "application/json; charset=utf-8"
    assert json.loads(message.read())["tracking_id"] == "MMSMOabcd123"
    conn.request("GET", f"/{relative}/media/01-123wqe.jpg")
    photo = conn.getresponse()
    assert (photo.getheader("Content-Type"), photo.read()) == ("image/jpeg", JPEG)
    conn.request("GET", "/dismissed/")  # what `mospool dismiss` moved out of failed/
    dismissed = conn.getresponse()
    assert dismissed.status == 200 and "Index of /dismissed/" in dismissed.read().decode()
    for forbidden in ("/incoming/", "/index.sqlite3", "/tmp/"):
        conn.request("GET", forbidden)
        response = conn.getresponse()
        response.read()
        assert response.status == 404, forbidden
    conn.request("DELETE", f"/{relative}/message.json")
    response = conn.getresponse()
    response.read()
    assert response.status == 403
    conn.close()


def post(stack: Stack, body: bytes, headers: dict[str, str] | None = None, source: str = "127.0.0.1") -> int:
    conn = stack.https(source)
    conn.request("POST", "/postback", body=body, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status


@pytest.mark.slow
def test_client_forwarded_for_cannot_spoof_the_recorded_address(stack: Stack) -> None:
    body = b'{"origin":"SMS_MO","tracking-id":"spoof-1"}'
    assert post(stack, body, {"X-Forwarded-For": "203.0.113.9"}) == 200
    metas = [stack.spool.read(Path(e.path)).meta for e in stack.spool.waiting()]
    (meta,) = [m for m in metas if m["body_bytes"] == len(body)]
    assert meta["remote_addr"] == "127.0.0.1"


@pytest.mark.slow
def test_nginx_refuses_unlisted_addresses_and_oversized_bodies(stack: Stack) -> None:
    before = stored_bodies(stack)
    assert post(stack, b'{"origin":"SMS_MO"}', source="127.0.0.2") == 403
    assert post(stack, b"x" * (1024 * 1024 + 1)) == 413
    assert post(stack, b"y" * (1024 * 1024)) == 200  # exactly max_body_bytes is fine
    assert len(stored_bodies(stack)) == len(before) + 1


@pytest.mark.slow
def test_healthz_only_from_localhost_and_nothing_else_exposed(stack: Stack) -> None:
    def get(path: str, source: str = "127.0.0.1") -> int:
        conn = stack.https(source)
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status

    assert get("/healthz") == 200
    assert get("/healthz", source="127.0.0.2") == 403
    assert get("/") == 404
    assert get("/postback/a/b") == 404


@pytest.mark.slow
def test_plain_http_redirects_to_https_except_acme(stack: Stack) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=10)
    conn.request("POST", "/postback", body=b"x")
    response = conn.getresponse()
    response.read()
    assert response.status == 301
    assert response.getheader("Location", "").startswith("https://")
    (stack.root / "acme" / ".well-known" / "acme-challenge").mkdir(parents=True)
    (stack.root / "acme" / ".well-known" / "acme-challenge" / "token123").write_text("proof")
    conn.request("GET", "/.well-known/acme-challenge/token123")
    challenge = conn.getresponse()
    assert (challenge.status, challenge.read()) == (200, b"proof")
    conn.close()


@pytest.mark.slow
def test_access_log_never_holds_the_token(stack: Stack) -> None:
    token = "tok3n-SECRET"
    conn = stack.https()
    conn.request("POST", f"/postback/{token}", body=b"x")
    conn.getresponse().read()
    conn.close()
    time.sleep(0.2)
    log = (stack.root / "mo-spool.access.log").read_text()
    assert "/postback" in log
    assert token not in log


def test_install_script_dry_run_prints_every_step() -> None:
    etc_existed = Path("/etc/mo-spool").exists()
    result = subprocess.run(
        ["bash", str(DEPLOY / "install.sh"), "--dry-run"], capture_output=True, text=True, check=True
    )
    out = result.stdout
    for step in (
        "+ apt-get install -y python3-venv nginx openssl",
        "+ openssl req -x509 -newkey ec",  # a placeholder, so nginx -t passes before certbot
        "useradd --system --user-group",
        "+ usermod -a -G mospool www-data",
        "python3 -m venv /opt/mo-spool/venv",
        "pip install --quiet -r /opt/mo-spool/app/requirements.txt",
        "/etc/mo-spool/config.ini",
        "+ install -d -m 0750 -o mospool -g mospool /var/lib/mo-spool /var/lib/mo-spool/spool",
        "+ systemctl enable --now mo-spool-receiver.service mo-spool-worker.service mo-spool-purge.timer",
        "+ nginx -t",
        "+ systemctl reload-or-restart nginx",
        "certbot certonly --webroot",
        "ln -sf /etc/letsencrypt/live/<your host>/fullchain.pem /etc/mo-spool/tls/fullchain.pem",
        "https://<your host>/postback/<token>",
    ):
        assert step in out, step
    assert Path("/etc/mo-spool").exists() == etc_existed  # a dry run changes nothing


@pytest.mark.slow
def test_slow_clients_do_not_tie_up_gunicorn(stack: Stack) -> None:
    """64 slow-loris connections (more than gunicorn's 2 x 8 threads) hold nginx, not gunicorn."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    slow = []
    for n in range(64):
        raw = socket.create_connection(("127.0.0.1", stack.https_port), timeout=10)
        conn = context.wrap_socket(raw)
        if n % 2:  # half stall inside the headers, half inside the body
            conn.sendall(b"POST /postback HTTP/1.1\r\nHost: x\r\nContent-Le")
        else:
            conn.sendall(b"POST /postback HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"a" * 10)
        slow.append(conn)
    try:
        started = time.monotonic()
        assert post(stack, b'{"origin":"SMS_MO","tracking-id":"while-slow"}') == 200
        assert time.monotonic() - started < 2.0
    finally:
        for conn in slow:
            conn.close()


@pytest.mark.slow
def test_oversized_headers_are_refused_by_nginx(stack: Stack) -> None:
    before = stored_bodies(stack)
    status = post(stack, b"x", {"X-Padding": "p" * 20_000})
    assert status in (400, 494)
    assert stored_bodies(stack) == before
