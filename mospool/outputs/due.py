"""The delivery engine's queue: entry names by when they are due, each known once, one try at a time."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Iterable


class DueQueue:
    """Entries waiting for a try (a heap by due time) or in flight; safe for every sender thread.

    An entry hinted while its try is in flight is tried again right after, so a redelivery that lands during
    a try is not lost. ``retried`` remembers which entries have a schedule file: the others need no read or
    unlink of one.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, str]] = []  # (epoch, entry name), a heap
        self._known: set[str] = set()  # waiting or in flight
        self._in_flight: set[str] = set()
        self._hinted: set[str] = set()
        self._retried: set[str] = set()
        self._stopped = False

    def add(self, name: str, when: float) -> None:
        with self._cond:
            if name in self._in_flight:
                self._hinted.add(name)
                return
            if name in self._known:
                return
            self._known.add(name)
            heapq.heappush(self._due, (when, name))
            self._cond.notify()

    def unknown(self, names: Iterable[str]) -> list[str]:
        with self._cond:
            return [name for name in names if name not in self._known]

    def __len__(self) -> int:
        with self._cond:
            return len(self._known)

    def next_due(self) -> str | None:
        """Block until an entry is due (None once stopped), and mark it in flight."""
        with self._cond:
            while not self._stopped:
                now = time.time()
                if self._due and self._due[0][0] <= now:
                    return self._take()
                self._cond.wait(self._due[0][0] - now if self._due else None)
        return None

    def take_due(self, now: float) -> list[str]:
        """Every entry due at ``now``, marked in flight, without waiting."""
        with self._cond:
            taken = []
            while self._due and self._due[0][0] <= now:
                taken.append(self._take())
            return taken

    def _take(self) -> str:
        _, name = heapq.heappop(self._due)
        self._in_flight.add(name)
        return name

    def finished(self, name: str, again_at: float | None) -> None:
        """A try is over: due again at ``again_at``, or forgotten (hinted meanwhile: due now)."""
        with self._cond:
            self._in_flight.discard(name)
            hinted = name in self._hinted
            self._hinted.discard(name)
            if again_at is None and hinted:
                again_at = time.time()
            if again_at is None:
                self._known.discard(name)
                return
            heapq.heappush(self._due, (again_at, name))
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    # --- which entries have a schedule file

    def retried(self, name: str) -> bool:
        with self._cond:
            return name in self._retried

    def set_retried(self, names: Iterable[str]) -> None:
        with self._cond:
            self._retried.update(names)

    def forget_retried(self, name: str) -> None:
        with self._cond:
            self._retried.discard(name)
