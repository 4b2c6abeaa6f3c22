"""Worker metrics in Prometheus text format, written to a file for node_exporter's textfile collector.

The core metrics are here; each output adds its own (``counter``, ``gauge``) when it is built.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, write_to_textfile

log = logging.getLogger(__name__)


class Metrics:
    """Counters live in memory (they restart at zero with the worker, as Prometheus expects)."""

    def __init__(self, textfile: Path | None) -> None:
        self.textfile = textfile
        self.registry = CollectorRegistry()
        self.postbacks = Counter(
            "mospool_postbacks",
            "Postbacks handled, by kind and outcome",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.media_bytes = Counter("mospool_media_bytes", "Media bytes downloaded", registry=self.registry)
        self.media_retries = Counter(
            "mospool_media_retries", "Postbacks deferred for a media retry", registry=self.registry
        )
        self.latency = Histogram(
            "mospool_processing_seconds",
            "Time to file one postback",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.commits = Counter(
            "mospool_filing_commits",
            "Group commits of record folders: one sync shared by every record filed in it",
            registry=self.registry,
        )
        self.backlog = Gauge(
            "mospool_backlog",
            "Postbacks waiting to be filed (received, not yet claimed)",
            registry=self.registry,
        )
        self.oldest = Gauge(
            "mospool_backlog_oldest_seconds", "Age of the oldest waiting postback", registry=self.registry
        )
        self.index_up = Gauge(
            "mospool_index_up",
            "1 while the worker reaches the index and claims postbacks, 0 while it holds them in the spool",
            registry=self.registry,
        )
        self.free_bytes = Gauge(
            "mospool_free_bytes", "Free space on the spool's filesystem", registry=self.registry
        )
        self.filing_paused = Gauge(
            "mospool_filing_paused",
            "1 while the worker files nothing because free space is below [worker] min_free_bytes",
            registry=self.registry,
        )
        self.media_waiting = Gauge(
            "mospool_media_waiting", "Postbacks waiting for their media parts", registry=self.registry
        )
        self._extra: dict[str, Any] = {}
        self._lock = threading.Lock()

    def handled(self, kind: str, outcome: str, seconds: float) -> None:
        self.postbacks.labels(kind=kind, outcome=outcome).inc()
        self.latency.observe(seconds)
        if outcome == "deferred":
            self.media_retries.inc()

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A counter an output adds (the same one however often it is asked for)."""
        return self._metric(Counter, name, documentation, labels)  # type: ignore[no-any-return]

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        """A gauge an output adds (the same one however often it is asked for)."""
        return self._metric(Gauge, name, documentation, labels)  # type: ignore[no-any-return]

    def _metric(self, kind: Any, name: str, documentation: str, labels: Sequence[str]) -> Any:
        with self._lock:
            if name not in self._extra:
                self._extra[name] = kind(name, documentation, list(labels), registry=self.registry)
            return self._extra[name]

    def set_backlog(self, count: int, oldest_seconds: float) -> None:
        self.backlog.set(count)
        self.oldest.set(oldest_seconds)

    def set_space(self, free_bytes: int, paused: bool) -> None:
        self.free_bytes.set(free_bytes)
        self.filing_paused.set(1 if paused else 0)

    def write(self) -> None:
        """Atomically replace the textfile (prometheus_client writes a temp file and renames it)."""
        if self.textfile is None:
            return
        try:
            write_to_textfile(str(self.textfile), self.registry)
        except OSError as exc:
            log.warning("could not write metrics to %s: %s", self.textfile, exc)
