"""Hostile bodies: each parses to records or fails with a clear error, fast and small, and the worker files
every one of them (processed/ or failed/) without stopping."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import pytest

from mospool.parse import ParseError, parse_postback
from mospool.worker import Worker
from tests.build import publish

BAD_SAMPLES = Path(__file__).parent / "postbacks" / "bad"


def nasty_bodies() -> dict[str, bytes]:
    bodies = {f"sample {path.name}": path.read_bytes() for path in sorted(BAD_SAMPLES.iterdir())}
    copy_to = ",".join(f'{{"number":"1555{n:07d}"}}' for n in range(100_000))
    notifications = b"".join(
        b"<NOTIFICATION><ORIGIN>SMS_MO</ORIGIN><TRACKINGID>h%d</TRACKINGID><TEXT>x</TEXT></NOTIFICATION>" % n
        for n in range(1000)
    )
    bodies.update(
        {
            "deep JSON": b"[" * 100_000 + b"]" * 100_000,
            "deep XML": b"<a>" * 20_000 + b"</a>" * 20_000,
            "100k copy-to": f'{{"origin":"MMS_MO","tracking-id":"wide","copy-to":[{copy_to}]}}'.encode(),
            "huge numbers": b'{"origin":"SMS_MO","tracking-id":' + b"9" * 100_000 + b',"x":1e999999}',
            "invalid UTF-16": b"\xff\xfe" + b"{\x00" + b"\x00\xd8" * 10,
            "NUL bytes": b'{"origin":"SMS_MO","tracking-id":"nul","message-text":"a\\u0000b"}\x00\x00',
            "processing instruction": b'<?xml version="1.0"?><?evil run?><postback><origin>SMS_MO</origin>'
            b"<tracking-id>pi</tracking-id></postback>",
            "namespaces": b'<p:postback xmlns:p="urn:x"><p:origin>SMS_MO</p:origin><p:tracking-id>ns</p:tracking-id>'
            b"</p:postback>",
            "CDATA": b"<postback><origin>SMS_MO</origin><tracking-id><![CDATA[cd]]></tracking-id>"
            b"<message-text><![CDATA[<b>not markup</b>]]></message-text></postback>",
            "mixed case and duplicates": b"<PoStBaCk><ORIGIN>SMS_MO</ORIGIN><origin>MMS_MO</origin>"
            b"<Tracking-ID>dup</Tracking-ID><tracking_id>other</tracking_id></PoStBaCk>",
            "1,000 notifications": b"<POSTBACK>" + notifications + b"</POSTBACK>",
            "entity in attribute": b'<!DOCTYPE p [<!ENTITY e "x">]><postback a="&e;"><origin>SMS_MO</origin></postback>',
            "parameter entity": b'<!DOCTYPE p [<!ENTITY % pe SYSTEM "http://169.254.169.254/">%pe;]><postback/>',
        }
    )
    return bodies


NASTY = nasty_bodies()


def parse_outcome(body: bytes) -> str:
    try:
        return f"{len(parse_postback(body, None).records)} records"
    except ParseError as exc:
        assert str(exc), "a parse error must say why"
        return str(exc)


@pytest.mark.parametrize("name", sorted(NASTY))
def test_each_nasty_body_is_fast_small_and_clear(name: str) -> None:
    started = time.perf_counter()
    outcome = parse_outcome(NASTY[name])
    elapsed = time.perf_counter() - started  # timed apart: tracemalloc's hooks make parsing ~4x slower
    tracemalloc.start()
    try:
        parse_outcome(NASTY[name])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"{name}: {outcome[:80]} ({elapsed * 1000:.0f} ms, {peak / 2**20:.1f} MB)")
    assert elapsed < 1.0
    assert peak < 100 * 2**20


def test_the_worker_files_every_nasty_body_and_keeps_running(worker: Worker) -> None:
    ids = {name: publish(worker.spool, body, content_type=None) for name, body in NASTY.items()}
    worker.drain()
    for name, postback_id in ids.items():
        failed = worker.spool.record_dir("failed", postback_id)
        processed = worker.spool.record_dir("processed", postback_id)
        duplicate = worker.spool.record_dir("duplicates", postback_id)
        assert failed.is_dir() or processed.is_dir() or duplicate.is_dir(), name
        if failed.is_dir():
            error = json.loads((failed / "error.json").read_bytes())
            assert error["stage"] == "parse" and error["error"], name
            assert (failed / "request.json").is_file()
            assert any(failed.glob("body.*")), name
    assert list(worker.spool.incoming.iterdir()) == [] and list(worker.spool.work.iterdir()) == []
    worker.close()
