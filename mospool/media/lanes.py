"""Download threads shared by every media origin, one lane per origin, so a stuck origin holds only its own.

An origin is a URL's scheme, host and port. Each has a lane: its parts wait in order, at most
``per_origin`` of them run at once, and the ``threads`` download threads take the lanes in turn (round
robin), so a busy origin never keeps the others waiting behind it.

A lane is *congested* when it stops making progress: a part of it ran into its deadline (and nothing of it
has come back whole or answered since), or its parts have been running for ``CONGESTED_AFTER_SECONDS``
without one finishing. A congested lane runs only ``CONGESTED_PARALLEL`` parts at once, leaving the threads
to the origins that answer; the fetcher also stops counting its waiting postbacks as work that should pause
the worker's claims (``mospool.media.fetcher``).
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

CONGESTED_AFTER_SECONDS = 5.0
CONGESTED_PARALLEL = 2
IDLE_LANES_KEPT = 1024  # stuck origins remembered while idle, at most


class Job:
    """One part: ``run()`` returns True when it ran into its deadline (the origin is stuck, not merely
    saying no); ``cancel()`` is called instead when the lanes close before it starts."""

    def run(self) -> bool:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError


@dataclass
class _Lane:
    waiting: collections.deque[Job] = field(default_factory=collections.deque)
    running: int = 0
    progress_at: float = 0.0  # the last part that made progress, or when the lane last got busy
    stalled: bool = False  # a part ran into its deadline, and none made progress since


class Lanes:
    def __init__(self, threads: int, per_origin: int, name: str = "media") -> None:
        self.threads = threads
        self.per_origin = per_origin
        self.name = name
        self._cond = threading.Condition()
        self._lanes: dict[str, _Lane] = {}
        self._turns: collections.deque[str] = collections.deque()  # origins with parts waiting, in turn
        self._started = 0
        self._closed = False

    def submit(self, origin: str, job: Job) -> None:
        """Queue a part on its origin's lane; RuntimeError once closed."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the download lanes are closed")
            lane = self._lanes.setdefault(origin, _Lane())
            lane.waiting.append(job)
            if origin not in self._turns:
                self._turns.append(origin)
            if self._started < self.threads:
                self._started += 1
                thread = threading.Thread(
                    target=self._serve, name=f"{self.name}-{self._started}", daemon=True
                )
                thread.start()
            self._cond.notify()

    def close(self) -> None:
        """Take no more parts; the parts not started are cancelled, those running end on their deadline."""
        with self._cond:
            self._closed = True
            dropped = [job for lane in self._lanes.values() for job in lane.waiting]
            for lane in self._lanes.values():
                lane.waiting.clear()
            self._turns.clear()
            self._cond.notify_all()
        for job in dropped:
            job.cancel()

    def congested(self, origin: str) -> bool:
        with self._cond:
            lane = self._lanes.get(origin)
            return lane is not None and self._is_congested(lane, time.monotonic())

    def _is_congested(self, lane: _Lane, now: float) -> bool:
        return lane.stalled or (lane.running > 0 and now - lane.progress_at > CONGESTED_AFTER_SECONDS)

    # --- the download threads

    def _serve(self) -> None:
        while (taken := self._take()) is not None:
            origin, job = taken
            timed_out = True
            try:
                timed_out = job.run()
            finally:
                self._done(origin, timed_out)

    def _take(self) -> tuple[str, Job] | None:
        """The next part of the next lane in turn with room; blocks until there is one (None once closed)."""
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                for _ in range(len(self._turns)):
                    origin = self._turns[0]
                    self._turns.rotate(-1)
                    lane = self._lanes[origin]
                    room = CONGESTED_PARALLEL if self._is_congested(lane, now) else self.per_origin
                    if lane.running < room:
                        return origin, self._start(origin, lane)
                self._cond.wait(CONGESTED_AFTER_SECONDS)  # a lane may stop being congested meanwhile
            return None

    def _start(self, origin: str, lane: _Lane) -> Job:
        job = lane.waiting.popleft()
        if not lane.waiting:
            self._turns.remove(origin)
        if lane.running == 0:
            lane.progress_at = time.monotonic()
        lane.running += 1
        return job

    def _done(self, origin: str, timed_out: bool) -> None:
        with self._cond:
            lane = self._lanes[origin]
            lane.running -= 1
            if timed_out:
                lane.stalled = True
            else:
                lane.progress_at, lane.stalled = time.monotonic(), False
            if lane.running == 0 and not lane.waiting and not lane.stalled:
                del self._lanes[origin]  # an idle origin that answers needs no memory
            if len(self._lanes) > IDLE_LANES_KEPT:
                self._forget_idle()
            self._cond.notify_all()

    def _forget_idle(self) -> None:
        """Idle stalled lanes are kept to remember the origin is stuck; past a bound, they are forgotten."""
        for origin in [o for o, lane in self._lanes.items() if lane.running == 0 and not lane.waiting]:
            del self._lanes[origin]
