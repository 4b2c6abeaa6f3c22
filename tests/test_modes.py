"""Files 0640 and folders 0750 whatever the umask: the group (mospool) reads everything, nobody else anything."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mospool.config import Settings
from mospool.outputs.webhooks import ForwardSettings
from mospool.store import State
from mospool.worker import Worker
from tests.build import JPEG, local_media, mms, publish, sms
from tests.origin import Origin, Reply
from tests.webhook_app import SECRET, App


@pytest.fixture(params=[0o000, 0o022, 0o077], ids=["umask 000", "umask 022", "umask 077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    before = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(before)


def test_every_file_and_folder_of_the_spool_has_its_mode_whatever_the_umask(
    umask: int, tmp_path: Path, origin: Origin, app: App
) -> None:
    forward = ForwardSettings(url=app.url, secret=SECRET)
    settings = Settings.for_spool(
        tmp_path / "spool", media=local_media(retry_base_seconds=600), forward=forward
    )
    worker = Worker(settings)
    photo = origin.serve("/photo.jpg", Reply(body=JPEG, content_type="image/jpeg"))
    flaky = origin.serve("/flaky.jpg", Reply(503))
    filed = publish(worker.spool, mms("with-media", photo))
    deferred = publish(worker.spool, mms("deferred", photo, flaky))
    publish(worker.spool, sms("plain"))
    publish(worker.spool, b"not a postback at all")
    worker.drain()
    modes = dict(every_mode(worker.spool.root))  # while the index is open: its -wal and -shm are there
    worker.close()
    modes.update(every_mode(worker.spool.root))
    assert worker.spool.record_dir(State.PROCESSED, filed).joinpath("media").is_dir()
    assert (worker.spool.deferred / deferred / "media").is_dir()
    names = {Path(path).name for path in modes}
    assert {"index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm", "index.html", "retry.json"} <= names
    assert {"outbox", "undelivered", "media", "deferred"} <= names
    wrong = {
        path: oct(mode) for path, (folder, mode) in modes.items() if mode != (0o750 if folder else 0o640)
    }
    assert wrong == {}


def every_mode(root: Path) -> Iterator[tuple[str, tuple[bool, int]]]:
    """(path, (is a folder, its mode)) of the spool and everything in it."""
    yield str(root), (True, stat.S_IMODE(root.stat().st_mode))
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            found = (Path(folder) / name).lstat()
            yield str(Path(folder) / name), (stat.S_ISDIR(found.st_mode), stat.S_IMODE(found.st_mode))


def test_a_worker_can_be_made_under_any_umask(make_worker: Callable[..., Worker], umask: int) -> None:
    worker = make_worker()
    worker.close()
    assert stat.S_IMODE(worker.spool.root.stat().st_mode) == 0o750
