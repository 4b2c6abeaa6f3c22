"""The receiver through a real gunicorn (gthread, 2 workers) on a loopback port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mospool.store import Spool
from tests.servers import Gunicorn, write_config

pytestmark = pytest.mark.slow  # a real gunicorn

TOKEN = "s3cret-Token_1"
SEEDS = {
    "json": (b'{"origin":"MMS_MO","code":"N401","tracking-id":"mo123xyz"}', "application/json"),
    "xml": (b"<POSTBACK><ORIGIN>MMS_MO</ORIGIN><TRACKINGID>x</TRACKINGID></POSTBACK>", "text/xml"),
    "form": (b"origin=SMS_MO&from=1555&text=hi+there%21", "application/x-www-form-urlencoded"),
    "garbage": (b"\x00\xff\xfe not a postback at all", "application/octet-stream"),
}


def start(tmp_path: Path, name: str, **receiver: object) -> Gunicorn:
    spool_dir = tmp_path / name / "spool"
    config = write_config(tmp_path / name / "config.ini", spool_dir, {"receiver": receiver})
    return Gunicorn(config).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    tmp = tmp_path_factory.mktemp("receiver")
    gunicorn = start(tmp, "open", token=TOKEN, max_body_bytes=65536, allowed_networks="127.0.0.0/8")
    yield gunicorn
    gunicorn.stop()


@pytest.fixture(scope="module")
def walled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    tmp = tmp_path_factory.mktemp("walled")
    gunicorn = start(tmp, "walled", allowed_networks="10.0.0.0/8, 192.0.2.0/24")
    yield gunicorn
    gunicorn.stop()


def spool_of(server: Gunicorn) -> Spool:
    return Spool(server.config.parent / "spool")


def stored(server: Gunicorn) -> dict[str, tuple[dict[str, object], bytes]]:
    spool = spool_of(server)
    found = {}
    for entry in spool.waiting():
        postback = spool.read(Path(entry.path))
        found[postback.id] = (postback.meta, postback.body)
    return found


@pytest.mark.parametrize("kind", sorted(SEEDS))
def test_any_body_is_stored_byte_exact(server: Gunicorn, kind: str) -> None:
    body, content_type = SEEDS[kind]
    before = set(stored(server))
    status, _, reply = server.post(
        f"/postback/{TOKEN}?a=1", body, {"Content-Type": content_type, "User-Agent": "Sinch/1"}
    )
    assert (status, reply) == (200, b"OK\n")
    new = {k: v for k, v in stored(server).items() if k not in before}
    assert len(new) == 1
    meta, saved = next(iter(new.values()))
    assert saved == body
    assert meta["content_type"] == content_type
    assert meta["remote_addr"] == "127.0.0.1"
    assert meta["query_string"] == "a=1"
    assert meta["user_agent"] == "Sinch/1"
    assert meta["content_length"] == len(body)
    assert meta["path"] == "/postback"  # the token is never written down
    assert TOKEN not in json.dumps(meta)


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("POST", "/postback/wrong-token", b"x", 404),
        ("POST", "/postback", b"x", 404),
        ("POST", f"/postback/{TOKEN}x", b"x", 404),
        ("GET", f"/postback/{TOKEN}", b"", 405),
        ("PUT", f"/postback/{TOKEN}", b"x", 405),
        ("POST", f"/postback/{TOKEN}", b"", 400),
        ("POST", f"/postback/{TOKEN}", b"x" * 65537, 413),
        ("POST", "/elsewhere", b"x", 404),
    ],
)
def test_refusals_store_nothing(server: Gunicorn, method: str, path: str, body: bytes, expected: int) -> None:
    before = set(stored(server))
    status, headers, _ = server.post(path, body, method=method)
    assert status == expected
    if expected == 405:
        assert headers["Allow"] == "POST"
    assert set(stored(server)) == before


def test_body_of_exactly_max_body_bytes_is_accepted(server: Gunicorn) -> None:
    status, _, _ = server.post(f"/postback/{TOKEN}", b"y" * 65536)
    assert status == 200


def test_chunked_body_over_the_limit_gets_413(server: Gunicorn) -> None:
    before = set(stored(server))
    conn = server.connection()
    chunks = (b"z" * 8192 for _ in range(10))  # 80 KiB, no Content-Length
    conn.request("POST", f"/postback/{TOKEN}", body=chunks, encode_chunked=True)
    assert conn.getresponse().status == 413
    conn.close()
    assert set(stored(server)) == before


def test_address_outside_allowed_networks_gets_403(walled: Gunicorn) -> None:
    assert walled.post("/postback", b"x")[0] == 403
    # trusted_proxy_count = 0: a client cannot claim an allowed address through X-Forwarded-For.
    assert walled.post("/postback", b"x", {"X-Forwarded-For": "10.1.2.3"})[0] == 403
    assert stored(walled) == {}


def test_healthz_reports_backlog(server: Gunicorn) -> None:
    status, _, reply = server.post("/healthz", b"", method="GET")
    health = json.loads(reply)
    assert status == 200
    assert health["spool_writable"] is True
    assert health["waiting"] == len(stored(server)) > 0
    assert health["free_bytes"] > 0
    assert 0 <= health["oldest_waiting_seconds"] < 600


def test_thousand_postbacks_over_one_keepalive_connection(tmp_path: Path) -> None:
    server = start(tmp_path, "keepalive")
    try:
        conn = server.connection()
        statuses = []
        for number in range(1000):
            conn.request("POST", "/postback", body=b'{"tracking-id":"%d"}' % number)
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
        sock_reused = conn.sock is not None
        conn.close()
        bodies = sorted(body for _, body in stored(server).values())
    finally:
        server.stop()
    assert statuses == [200] * 1000
    assert sock_reused
    assert bodies == sorted(b'{"tracking-id":"%d"}' % n for n in range(1000))


def test_low_free_space_threshold_answers_503_with_retry_after(tmp_path: Path) -> None:
    server = start(tmp_path, "threshold", min_free_bytes=2**50, retry_after_seconds=300)
    try:
        status, headers, _ = server.post("/postback", b"x")
        health_status = server.post("/healthz", b"", method="GET")[0]
    finally:
        server.stop()
    assert (status, headers["Retry-After"]) == (503, "300")
    assert health_status == 503
    assert stored(server) == {}
    assert list(spool_of(server).tmp.iterdir()) == []
