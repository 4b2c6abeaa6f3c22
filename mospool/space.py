"""The free space the worker keeps: below ``[worker] min_free_bytes`` it files nothing until space is back.

Filing writes several times what the receiver stored (the record's files, its page, the media), so a worker
that went on filing on a filling disk would take the last bytes the receiver needs to store what Sinch
sends. Below the threshold the worker claims nothing: postbacks wait in incoming/ as they are, nothing is
lost, and the receiver (which stops at its own, lower ``[receiver] min_free_bytes``) keeps storing. The
worker says so once in its log, in its metrics (``mospool_filing_paused``) and through `mospool status`,
and resumes by itself when space is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from mospool.metrics import Metrics
from mospool.store import State

log = logging.getLogger(__name__)

CHECK_EVERY_SECONDS = 0.1  # statfs is cheap: checked before about every claim


def shortage(free_bytes: int, min_free_bytes: int) -> str | None:
    """What `status` and the log say while the worker waits for space, or None."""
    if free_bytes >= min_free_bytes:
        return None
    return (
        f"free space {free_bytes} bytes is below [worker] min_free_bytes ({min_free_bytes}): "
        "the worker files nothing until space is freed"
    )


class SpaceWatch:
    """Whether the spool's filesystem has room to file; checked at most every CHECK_EVERY_SECONDS."""

    def __init__(self, free_bytes: Callable[[], int], min_free_bytes: int, metrics: Metrics) -> None:
        self.free_bytes = free_bytes
        self.min_free_bytes = min_free_bytes
        self.metrics = metrics
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._low = False

    def low(self) -> bool:
        """True while the free space is below the threshold (the worker then files nothing)."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked_at >= CHECK_EVERY_SECONDS:
                self._checked_at = now
                self._check()
            return self._low

    def _check(self) -> None:
        try:
            free = self.free_bytes()
        except OSError as exc:
            log.error("cannot read the spool's free space: %s", exc)
            return
        problem = shortage(free, self.min_free_bytes)
        self.metrics.set_space(free, paused=problem is not None)
        if problem and not self._low:
            log.error("%s; postbacks wait in %s/", problem, State.INCOMING)
        elif self._low and not problem:
            log.warning("free space is back (%d bytes): filing again", free)
        self._low = problem is not None
