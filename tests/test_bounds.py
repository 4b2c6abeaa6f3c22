"""Bounds on everything a postback can ask for: media parts, media bytes, and the text a record keeps."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mospool import unprintable
from mospool.config import ConfigError, load_settings
from mospool.store import State
from mospool.store.record import REPEAT_LIMIT
from mospool.worker import Worker
from tests.build import JPEG, local_media, mms, publish, read_json, sms
from tests.origin import Origin, Reply


def test_a_postback_with_3000_parts_fetches_max_parts_and_counts_the_rest(
    origin: Origin, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker()
    urls = [origin.url(f"/p/{n}.jpg") for n in range(3000)]
    for n in range(40):
        origin.serve(f"/p/{n}.jpg", Reply(body=JPEG, content_type="image/jpeg"))
    body = mms("three-thousand", *urls)
    postback_id = publish(worker.spool, body)
    worker.drain()
    worker.close()
    record = worker.spool.record_dir(State.PROCESSED, postback_id)
    message = read_json(record / "message.json")
    assert [part["url"] for part in message["media"]] == urls[:32]
    assert message["media_not_fetched"] == 2968
    assert len(origin.requests) == 32  # not 3,000 downloads
    page = (record / "index.html").read_text()
    assert "2,968 more media parts were not downloaded: more than [media] max_parts" in page
    assert len(page.encode()) < 64 * 1024  # the issue found a 666 KB page
    assert len(body) > 130_000


def test_the_parts_beyond_max_parts_are_named_in_a_failed_record_too(
    origin: Origin, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(media=local_media(max_parts=2))
    urls = [origin.url(f"/gone/{n}.jpg") for n in range(5)]  # nothing served: 404
    postback_id = publish(worker.spool, mms("gone", *urls))
    worker.drain()
    worker.close()
    error = read_json(worker.spool.record_dir(State.FAILED, postback_id) / "error.json")
    assert error["parts_not_fetched"] == 3
    assert [part["url"] for part in error["parts"]] == urls[:2]
    assert (
        "3 more media parts were not tried"
        in (worker.spool.record_dir(State.FAILED, postback_id) / "index.html").read_text()
    )


def test_the_parts_of_one_postback_share_max_total_bytes(
    origin: Origin, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(media=local_media(max_total_bytes=100_000, parallel_downloads=1))
    urls = [
        origin.serve(f"/big/{n}.bin", Reply(body=bytes(40_000), content_type="image/jpeg")) for n in range(3)
    ]
    postback_id = publish(worker.spool, mms("heavy", *urls))
    worker.drain()
    worker.close()
    error = read_json(worker.spool.record_dir(State.FAILED, postback_id) / "error.json")
    assert error["stage"] == "media"
    assert "the postback's media exceeds max_total_bytes (100000)" in error["error"]
    media = worker.spool.record_dir(State.FAILED, postback_id) / "media"
    assert sorted(path.name for path in media.iterdir()) == ["01-0.jpg", "02-1.jpg"]  # no half file


def test_a_long_text_is_kept_once_and_the_record_says_schema_2(make_worker: Callable[..., Worker]) -> None:
    worker = make_worker()
    text = "word " * 60_000
    long_one = publish(worker.spool, sms("long", text))
    short_one = publish(worker.spool, sms("short", "a few words"))
    worker.drain()
    worker.close()
    message = read_json(worker.spool.record_dir(State.PROCESSED, long_one) / "message.json")
    assert message["text"] == text.strip()
    assert message["fields"]["message-text"] == {"same_as": "text"}
    assert message["schema"] == 2
    short = read_json(worker.spool.record_dir(State.PROCESSED, short_one) / "message.json")
    assert short["fields"]["message-text"] == "a few words" and short["schema"] == 1
    assert len("a few words") < REPEAT_LIMIT < len(text)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            "[media] timeout_seconds = inf",
            r"\[media\] timeout_seconds = 'inf': must be at least 0.1 and at most 3600",
        ),
        ("[media] timeout_seconds = nan", r"\[media\] timeout_seconds = 'nan'"),
        ("[media] timeout_seconds = 1e999", r"\[media\] timeout_seconds = '1e999'"),
        ("[forward] timeout_seconds = -inf", r"\[forward\] timeout_seconds = '-inf'"),
        (
            "[media] parallel_downloads = 99999999999",
            r"\[media\] parallel_downloads = '99999999999': must be at least 1 and at most 256",
        ),
        ("[worker] concurrency = 100000", r"\[worker\] concurrency"),
        ("[worker] rescan_seconds = 0", r"\[worker\] rescan_seconds"),
        ("[receiver] max_body_bytes = 1099511627776", r"\[receiver\] max_body_bytes"),
        ("[media] max_parts = 0", r"\[media\] max_parts = '0': must be at least 1"),
        ("[retention] processed_days = 1000000", r"\[retention\] processed_days"),
        ("[forward] attempts = 1e3", r"\[forward\] attempts = '1e3': must be a whole number"),
    ],
)
def test_every_count_and_duration_has_a_sane_range(tmp_path: Path, text: str, key: str) -> None:
    section, assignment = text.split(" ", 1)
    config = tmp_path / "config.ini"
    config.write_text(f"[spool]\ndir = spool\n{section}\n{assignment}\n")
    with pytest.raises(ConfigError, match=key):
        load_settings(config)


def test_the_escapes_name_every_character_that_must_not_be_obeyed() -> None:
    hostile = "a\nb\r\x1b[31m\u202e\u2066\x00\u0085\u2028"
    assert unprintable.escaped(hostile) == "a\\u000ab\\u000d\\u001b[31m\\u202e\\u2066\\u0000\\u0085\\u2028"
    assert unprintable.shown(hostile) == "a\nb\r[U+001B][31m[U+202E][U+2066][U+0000][U+0085][U+2028]"
    assert json.dumps(unprintable.escaped(hostile)).count("\\\\u") == 8


@pytest.mark.parametrize("code", unprintable.CODES)
def test_each_character_alone_in_a_text_is_escaped_and_shown(code: int) -> None:
    # A printable text is returned as it is (str.isprintable): each character must make a text unprintable.
    text = f"+4670{chr(code)}1234"
    assert unprintable.escaped(text) == f"+4670\\u{code:04x}1234"
    assert unprintable.shown(text) == (text if code in (0x0A, 0x0D) else f"+4670[U+{code:04X}]1234")
