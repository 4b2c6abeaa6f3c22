"""The download lanes and the fetcher's admission: a stuck origin holds only its own downloads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from mospool.config import MediaSettings
from mospool.media import Fetcher
from mospool.media.lanes import CONGESTED_PARALLEL, Job, Lanes
from tests.hostile import NEVER_ANSWERS, Hostile
from tests.origin import Origin, Reply


class Counted(Job):
    """A part that waits for ``release`` (or ends at once), counting how many of its origin run at once."""

    def __init__(
        self, board: Board, origin: str, release: threading.Event | None, timed_out: bool = False
    ) -> None:
        self.board, self.origin, self.release, self.timed_out = board, origin, release, timed_out

    def run(self) -> bool:
        self.board.enter(self.origin)
        try:
            if self.release is not None:
                self.release.wait(10)
            return self.timed_out
        finally:
            self.board.leave(self.origin)

    def cancel(self) -> None:
        self.board.cancelled += 1


class Board:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.cancelled = 0

    def enter(self, origin: str) -> None:
        with self.lock:
            self.running[origin] = self.running.get(origin, 0) + 1
            self.most[origin] = max(self.most.get(origin, 0), self.running[origin])

    def leave(self, origin: str) -> None:
        with self.lock:
            self.running[origin] -= 1
            self.done[origin] = self.done.get(origin, 0) + 1

    def wait_done(self, origin: str, count: int) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self.lock:
                if self.done.get(origin, 0) >= count:
                    return True
            time.sleep(0.01)
        return False


def test_a_stuck_origin_holds_only_its_own_lane() -> None:
    lanes, board, stuck = Lanes(threads=4, per_origin=2), Board(), threading.Event()
    for _ in range(6):
        lanes.submit("http://stuck:80", Counted(board, "stuck", stuck))
    for _ in range(20):
        lanes.submit("http://fine:80", Counted(board, "fine", None))
    assert board.wait_done("fine", 20)  # while the stuck origin's parts all wait
    assert board.most["stuck"] == 2 and board.most["fine"] <= 2 and board.done.get("stuck", 0) == 0
    stuck.set()
    assert board.wait_done("stuck", 6)
    lanes.close()


def test_a_lane_that_ran_into_a_deadline_runs_only_a_few_parts_until_one_comes_back() -> None:
    lanes, board, release = Lanes(threads=8, per_origin=8), Board(), threading.Event()
    lanes.submit("http://slow:80", Counted(board, "first", None, timed_out=True))
    assert board.wait_done("first", 1)
    assert lanes.congested("http://slow:80")
    for _ in range(8):
        lanes.submit("http://slow:80", Counted(board, "slow", release))
    time.sleep(0.3)
    assert board.most.get("slow") == CONGESTED_PARALLEL
    release.set()
    assert board.wait_done("slow", 8)
    assert not lanes.congested("http://slow:80")  # its parts came back: an ordinary lane again
    lanes.close()


def test_closing_cancels_the_parts_that_did_not_start() -> None:
    lanes, board, release = Lanes(threads=1, per_origin=1), Board(), threading.Event()
    for _ in range(3):
        lanes.submit("http://one:80", Counted(board, "one", release))
    time.sleep(0.2)
    lanes.close()
    release.set()
    assert board.cancelled == 2 and board.wait_done("one", 1)


def test_a_stuck_origin_gets_no_more_postbacks_once_enough_wait_on_it(tmp_path: Path, origin: Origin) -> None:
    settings = MediaSettings(allow_private_networks=True, timeout_seconds=1, per_host_downloads=1)
    good = origin.serve("/ok.jpg", Reply(body=b"ok", content_type="image/jpeg"))
    with Hostile(NEVER_ANSWERS) as stuck, Fetcher(settings) as fetcher:
        for n in range(3):
            (tmp_path / str(n)).mkdir()
            fetcher.start([stuck.url(f"/{n}.jpg")], tmp_path / str(n), lambda results: None)
        deadline = time.monotonic() + 10
        while fetcher.admit([stuck.url()]) is None and time.monotonic() < deadline:
            time.sleep(0.05)  # until its first part ran into the 1 s deadline
        reason = fetcher.admit([stuck.url("/another.jpg")])
        assert reason is not None and "is not answering" in reason
        assert fetcher.admit([good]) is None  # another origin is not held to it
        assert not fetcher.saturated()  # the stuck origin's postbacks do not pause the worker's claims
