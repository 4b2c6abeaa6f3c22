"""The postbacks the worker holds right now, for its scans to skip: safe for every thread.

A postback is *in flight* from its claim until its outcome, whether a thread works on it or it waits for its
media in no thread at all (*fetching*). One released after a storage error is skipped until the next drain
or periodic rescan, so a full disk is not retried in a hot loop.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future


class InFlight:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: set[str] = set()
        self._released: set[str] = set()
        self._fetching = 0

    def take(self, postback_id: str) -> bool:
        """Hold a postback for a claim; False when it is held already, or was released since the last pass."""
        with self._cond:
            if postback_id in self._held or postback_id in self._released:
                return False
            self._held.add(postback_id)
            return True

    def done(self, postback_id: str) -> None:
        with self._cond:
            self._held.discard(postback_id)
            self._cond.notify_all()

    def busy(self) -> set[str]:
        """Every postback a scan should leave alone now."""
        with self._cond:
            return self._held | self._released

    def release(self, postback_id: str) -> None:
        with self._cond:
            self._released.add(postback_id)

    def next_pass(self) -> None:
        """The released ones may be tried again."""
        with self._cond:
            self._released.clear()

    # --- postbacks waiting for their media

    def fetching(self) -> None:
        with self._cond:
            self._fetching += 1

    def fetched(self, postback_id: str | None) -> None:
        """Its media are in (or its fetch never started: None, it stays held by its thread)."""
        with self._cond:
            self._fetching -= 1
            if postback_id is not None:
                self._held.discard(postback_id)
            self._cond.notify_all()

    def wait_for_fetches(self, until: float | None) -> int:
        """Until no postback waits for its media (or the monotonic time ``until``); returns how many do."""
        with self._cond:
            timeout = None if until is None else max(until - time.monotonic(), 0.0)
            self._cond.wait_for(lambda: not self._fetching, timeout)  # fetched() notifies
            return self._fetching


class Queued:
    """The postbacks handed to the thread pool and not finished, at most ``limit`` of them: a count kept by
    each future's completion, so the loop that hands them out never walks them to find room."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._cond = threading.Condition()
        self._futures: set[Future[str]] = set()

    def __len__(self) -> int:
        return len(self._futures)

    def add(self, future: Future[str]) -> None:
        with self._cond:
            self._futures.add(future)
        future.add_done_callback(self._finished)  # at once, in this thread, if it is done already

    def _finished(self, future: Future[str]) -> None:
        with self._cond:
            self._futures.discard(future)
            self._cond.notify_all()

    def full(self) -> bool:
        return len(self._futures) >= self._limit

    def wait_for_room(self, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self._futures) < self._limit, timeout)

    def wait_all(self, timeout: float | None = None) -> int:
        """Until every one has finished (or ``timeout`` seconds); returns how many have not."""
        with self._cond:
            self._cond.wait_for(lambda: not self._futures, timeout)
            return len(self._futures)
