"""The worker's media step against a real local origin: records with media, failures, the retry schedule."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mospool.cli import main as cli_main
from mospool.worker import Worker
from tests.build import JPEG, local_media, mms, publish, read_json
from tests.origin import Origin, Reply
from tests.servers import worker_once, write_config


def test_mms_with_photo_and_text_is_filed_with_its_media(origin: Origin, worker: Worker) -> None:
    photo = origin.serve("/mmsmo/abc/123wqe.jpeg", Reply(body=JPEG, content_type="image/jpeg"))
    text = origin.serve("/mmsmo/abc/123w12e.txt", Reply(body=b"See you at 5", content_type="text/plain"))
    smil = origin.serve("/mmsmo/abc/layout.smil", Reply(body=b"<smil/>", content_type="application/smil"))
    postback_id = publish(worker.spool, mms("mo1", photo, text, smil))
    worker.drain()
    record = worker.spool.record_dir("processed", postback_id)
    message = read_json(record / "message.json")
    assert [part["file"] for part in message["media"]] == [
        "media/01-123wqe.jpg", "media/02-123w12e.txt", "media/03-layout.smil",
    ]  # fmt: skip
    assert message["media"][0]["sha256"] == hashlib.sha256(JPEG).hexdigest()
    assert message["media"][0]["bytes"] == len(JPEG)
    assert (record / "media" / "01-123wqe.jpg").read_bytes() == JPEG
    assert message["text"] == "See you at 5"  # the SMIL part is kept as media, not shown as text
    assert message["subject"] == "Hi"


def test_missing_part_fails_at_once_naming_it(origin: Origin, worker: Worker) -> None:
    good = origin.serve("/ok.jpg", Reply(body=JPEG, content_type="image/jpeg"))
    postback_id = publish(worker.spool, mms("mo2", good, origin.url("/gone.jpg")))
    worker.drain()
    record = worker.spool.record_dir("failed", postback_id)
    error = read_json(record / "error.json")
    assert error["stage"] == "media"
    assert error["parts"] == [
        {"url": origin.url("/gone.jpg"), "error": "HTTP 404 Not Found", "permanent": True}
    ]
    assert (record / "media" / "01-ok.jpg").read_bytes() == JPEG  # what was fetched is kept
    assert list(worker.spool.deferred.iterdir()) == []


def test_transient_failures_are_retried_on_schedule_without_refetching(
    origin: Origin, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(media=local_media(retry_base_seconds=0.2))
    flaky = origin.serve("/flaky.jpg", Reply(503), Reply(503), Reply(body=JPEG, content_type="image/jpeg"))
    steady = origin.serve("/steady.txt", Reply(body=b"hello", content_type="text/plain"))
    postback_id = publish(worker.spool, mms("mo3", flaky, steady))
    worker.drain()
    retry = read_json(worker.spool.deferred / postback_id / "retry.json")
    assert retry["attempts"] == 1
    assert worker.drain() == 0  # not due yet: nothing to do
    time.sleep(0.25)
    worker.drain()
    assert read_json(worker.spool.deferred / postback_id / "retry.json")["attempts"] == 2
    time.sleep(0.45)
    worker.drain()
    message = read_json(worker.spool.record_dir("processed", postback_id) / "message.json")
    assert message["text"] == "hello"
    assert (origin.seen("/flaky.jpg"), origin.seen("/steady.txt")) == (3, 1)
    assert list(worker.spool.deferred.iterdir()) == []


def test_retries_give_up_after_the_configured_attempts(
    origin: Origin, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(media=local_media(retry_base_seconds=0.05, attempts=2))
    postback_id = publish(worker.spool, mms("mo4", origin.serve("/down.jpg", Reply(500))))
    worker.drain()
    time.sleep(0.1)
    worker.drain()
    error = read_json(worker.spool.record_dir("failed", postback_id) / "error.json")
    assert error["stage"] == "media"
    assert error["error"].startswith("gave up after 2 attempts")
    assert len(error["history"]) == 2


def test_retry_after_header_stretches_the_delay(origin: Origin, make_worker: Callable[..., Worker]) -> None:
    worker = make_worker(media=local_media(retry_base_seconds=0.05))
    postback_id = publish(
        worker.spool, mms("mo5", origin.serve("/busy.jpg", Reply(429, headers={"Retry-After": "120"})))
    )
    worker.drain()
    retry = read_json(worker.spool.deferred / postback_id / "retry.json")
    assert retry["next_try_epoch"] - time.time() > 100


@pytest.mark.slow
def test_a_restart_keeps_the_retry_schedule(
    origin: Origin, tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    # 2 s: long enough for a new process to start and scan on a busy machine, well before the retry is due
    worker = make_worker(media=local_media(retry_base_seconds=2.0))
    url = origin.serve("/later.jpg", Reply(503), Reply(body=JPEG, content_type="image/jpeg"))
    postback_id = publish(worker.spool, mms("mo6", url))
    worker.drain()
    worker.close()
    due = read_json(worker.spool.deferred / postback_id / "retry.json")["next_try_epoch"]
    config = write_config(
        tmp_path / "config.ini", tmp_path / "spool", {"media": {"allow_private_networks": "yes"}}
    )
    worker_once(config)  # a new process, before the retry is due
    assert (tmp_path / "spool" / "deferred" / postback_id).is_dir()
    time.sleep(max(0.0, due - time.time()) + 0.05)
    worker_once(config)
    assert (worker.spool.record_dir("processed", postback_id) / "media" / "01-later.jpg").read_bytes() == JPEG


def test_a_duplicate_mms_does_not_fetch_media_again(origin: Origin, worker: Worker) -> None:
    url = origin.serve("/once.jpg", Reply(body=JPEG, content_type="image/jpeg"))
    publish(worker.spool, mms("mo7", url))
    worker.drain()
    duplicate = publish(worker.spool, mms("mo7", url))
    worker.drain()
    assert worker.spool.record_dir("duplicates", duplicate).is_dir()
    assert origin.seen("/once.jpg") == 1


def test_cli_retry_succeeds_once_the_server_is_fixed(
    origin: Origin, tmp_path: Path, worker: Worker, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path / "config.ini", tmp_path / "spool", {"media": {"allow_private_networks": "yes"}}
    )
    postback_id = publish(worker.spool, mms("mo8", origin.url("/fixed-later.jpg")))
    worker.drain()
    assert worker.spool.record_dir("failed", postback_id).is_dir()
    origin.serve("/fixed-later.jpg", Reply(body=JPEG, content_type="image/jpeg"))
    assert cli_main(["--config", str(config), "retry", "--all-failed", "--stage", "media"]) == 0
    capsys.readouterr()
    worker.drain()
    record = worker.spool.record_dir("processed", postback_id)
    assert read_json(record / "message.json")["tracking_id"] == "mo8"
    assert not worker.spool.record_dir("failed", postback_id).exists()
    assert list(worker.spool.root.joinpath("duplicates").iterdir()) == []  # not a duplicate of itself


def test_postbacks_share_kept_alive_connections(origin: Origin, make_worker: Callable[..., Worker]) -> None:
    worker = make_worker(media=local_media(parallel_downloads=2))
    ids = []
    for n in range(6):
        photo = origin.serve(f"/{n}/photo.jpg", Reply(body=JPEG, content_type="image/jpeg"))
        note = origin.serve(f"/{n}/note.txt", Reply(body=b"note %d" % n, content_type="text/plain"))
        ids.append(publish(worker.spool, mms(f"pooled{n}", photo, note)))
    assert worker.drain() == 6
    worker.close()
    for n, postback_id in enumerate(ids):
        message = read_json(worker.spool.record_dir("processed", postback_id) / "message.json")
        assert message["text"] == f"note {n}"
    assert len(origin.requests) == 12
    assert origin.connections <= 2  # at most parallel_downloads, across all the worker's postbacks
