"""The page server of scripts/run-local: nginx with the shipped browse site, or the same rules in Python.

Both answer the same requests the same way: a test asks each for what a browser may and may not reach and
compares the status, the security headers and the type of every answer.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mospool.outputs.pages.serve import PagesServer, read_rules, render_nginx
from mospool.store import Spool
from tests.build import publish, sms
from tests.nginx_stack import wait_for_port
from tests.servers import free_port

CSP = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox"
XHTML = (
    b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title>x</title></head>'
    b"<body><script>document.title = 'ran'</script></body></html>"
)
REQUESTS = [
    ("GET", "/"),
    ("GET", "/index.html"),
    ("HEAD", "/index.html"),
    ("GET", "/processed/"),
    ("GET", "/processed/2026-01-02/"),
    ("GET", "/processed/2026-01-02"),  # a folder without its slash: sent to it
    ("GET", "/processed/2026-01-02/r1/body.xml"),
    ("GET", "/processed/2026-01-02/r1/message.json"),
    ("GET", "/processed/2026-01-02/r1/note.txt"),
    ("GET", "/processed/2026-01-02/r1/photo.jpg"),
    ("GET", "/processed/2026-01-02/r1/unknown.xyz"),
    ("GET", "/processed/2026-01-02/r1/missing.jpg"),
    ("GET", "/index.sqlite3"),
    ("GET", "/incoming/"),
    ("GET", "/tmp/"),
    ("GET", "/work/"),
    ("GET", "/deferred/"),
    ("GET", "/outbox/"),
    ("GET", "/undelivered/"),
    ("GET", "/processed/../index.sqlite3"),
    ("GET", "/processed/%2e%2e/index.sqlite3"),
    ("POST", "/processed/2026-01-02/r1/body.xml"),
    ("POST", "/incoming/"),
]


@pytest.fixture(scope="module")
def spool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spool = Spool(tmp_path_factory.mktemp("served") / "spool")
    spool.create()
    publish(spool, sms("waiting"))
    (spool.root / "index.html").write_text("<!doctype html><title>front</title>")
    (spool.root / "index.sqlite3").write_bytes(b"SQLite format 3\0")
    (spool.root / "outbox").mkdir()
    (spool.root / "undelivered").mkdir()
    record = spool.root / "processed" / "2026-01-02" / "r1"
    record.mkdir(parents=True)
    (record / "body.xml").write_bytes(XHTML)
    (record / "message.json").write_text('{"text": "hi"}')
    (record / "note.txt").write_text("a text part")
    (record / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0jpeg")
    (record / "unknown.xyz").write_bytes(b"?")
    for folder in (spool.root, spool.root / "processed", record.parent, record):
        os.chmod(folder, 0o755)  # nginx's workers run as its user when not started as root
    return spool.root


def answers(port: int) -> dict[tuple[str, str], tuple[int, str | None, str | None, str | None, str | None]]:
    found = {}
    for method, path in REQUESTS:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(method, path)
        response = conn.getresponse()
        response.read()
        found[method, path] = (
            response.status,
            response.getheader("Content-Security-Policy"),
            response.getheader("X-Content-Type-Options"),
            response.getheader("Content-Type") if response.status == 200 else None,
            (response.getheader("Location") or "").replace(f":{port}/", ":PORT/") or None,
        )
        conn.close()
    return found


@contextmanager
def python_server(spool: Path) -> Iterator[int]:
    server = PagesServer(spool, 0, read_rules())
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def nginx_server(spool: Path) -> Iterator[int]:
    folder = Path(tempfile.mkdtemp(prefix="mospool-pages-test-"))
    port = free_port()
    nginx = subprocess.Popen(
        ["nginx", "-c", str(render_nginx(folder, spool, port)), "-g", "daemon off;"], start_new_session=True
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        os.killpg(nginx.pid, signal.SIGTERM)
        nginx.wait(20)
        shutil.rmtree(folder, ignore_errors=True)


def test_the_python_server_keeps_the_browse_sites_rules(spool_dir: Path) -> None:
    with python_server(spool_dir) as port:
        found = answers(port)
    statuses = {request: answer[0] for request, answer in found.items()}
    assert all(answer[1] == CSP and answer[2] == "nosniff" for answer in found.values()), found
    assert statuses["GET", "/processed/2026-01-02/r1/body.xml"] == 200
    assert found["GET", "/processed/2026-01-02/r1/body.xml"][3] == "application/xml; charset=utf-8"
    assert found["GET", "/processed/2026-01-02"][4] == "http://127.0.0.1:PORT/processed/2026-01-02/"
    for hidden in (
        "/index.sqlite3",
        "/incoming/",
        "/tmp/",
        "/work/",
        "/deferred/",
        "/outbox/",
        "/undelivered/",
    ):
        assert statuses["GET", hidden] == 404, hidden
    assert statuses["POST", "/processed/2026-01-02/r1/body.xml"] == 403
    assert statuses["POST", "/incoming/"] == 404


@pytest.mark.slow
def test_nginx_and_the_python_server_answer_alike(spool_dir: Path) -> None:
    with nginx_server(spool_dir) as port:
        by_nginx = answers(port)
    with python_server(spool_dir) as port:
        by_python = answers(port)
    assert by_python == by_nginx


def test_the_rules_are_read_from_the_shipped_site() -> None:
    rules = read_rules()
    assert rules.headers == {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": CSP}
    assert rules.types["xml"] == "application/xml" and rules.types["jpg"] == "image/jpeg"
    assert rules.default_type == "application/octet-stream"
