"""Whether the worker may claim: the index's availability as the worker sees it.

While the index answers, the worker claims postbacks. When an operation raises ``IndexUnavailable`` the worker
stops claiming: postbacks wait in incoming/ (the receiver goes on storing them and answering 200), the ones in
flight go back there, the log says so once, ``mospool_index_up`` drops to 0 (``mospool status`` asks the
index itself and exits 1). The worker's loop then probes the index with ``ping`` every few seconds and, once
it answers, says so once and claims again: nothing is lost or filed twice, only later.
"""

from __future__ import annotations

import logging
import threading
import time

from mospool.index import Index, IndexUnavailable
from mospool.metrics import Metrics

log = logging.getLogger(__name__)

PROBE_SECONDS = (0.5, 1.0, 2.0, 5.0)  # between probes while the index is unreachable, then every 5 s


class Watch:
    def __init__(self, index: Index, metrics: Metrics, where: str) -> None:
        self.index = index
        self.metrics = metrics
        self.where = where
        self._lock = threading.Lock()
        self._up = True
        self._probes = 0
        self._next_probe = 0.0
        metrics.index_up.set(1)

    @property
    def up(self) -> bool:
        return self._up

    def lost(self, exc: Exception) -> None:
        """An operation failed because the index is unreachable: hold postbacks (said once per outage)."""
        with self._lock:
            if not self._up:
                return
            self._up = False
            self._probes = 0
            self._next_probe = time.monotonic() + PROBE_SECONDS[0]
        self.metrics.index_up.set(0)
        log.error(
            "the index cannot be reached (%s): claiming stops, postbacks wait in the spool until it is back",
            exc,
        )

    def probe(self) -> bool:
        """While down, when a probe is due: ping the index. Returns True when it has just come back."""
        with self._lock:
            if self._up or time.monotonic() < self._next_probe:
                return False
            self._probes += 1
            self._next_probe = time.monotonic() + PROBE_SECONDS[min(self._probes, len(PROBE_SECONDS) - 1)]
        try:
            self.index.ping()
        except IndexUnavailable:
            return False
        with self._lock:
            self._up = True
        self.metrics.index_up.set(1)
        log.warning("the index at %s answers again: claiming resumes", self.where)
        return True

    def check_at_start(self) -> None:
        """At the worker's start: a shared index that cannot be reached yet means holding from the start."""
        try:
            self.index.ping()
            self.index.heartbeat()
        except IndexUnavailable as exc:
            self.lost(exc)
