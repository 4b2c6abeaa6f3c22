"""A destination of the delivery engine: where its entries wait, how a try is made, and what it reports.

An output that delivers describes its destination with a ``Route``: a name (for the log and the metrics'
``destination`` label), the address its retry schedules name, its outbox in the spool, a ``Transport`` that
makes one try and says how it went (an ``Answer``), its retry policy, its number of sender threads, and the
record states it takes. ``delivery_status`` is what a destination adds to `mospool status` and the front
page; ``QuietLog`` keeps a failing destination's log to a line a minute.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mospool import retry
from mospool.config import COMMAND
from mospool.english import counted
from mospool.metrics import Metrics
from mospool.outputs.registry import StatusPart
from mospool.store import Entry, Outbox
from mospool.store.outbox import OUTBOX, UNDELIVERED


@dataclass(frozen=True)
class Answer:
    """What one try got: delivered, or not and whether to try again, and what to say about it."""

    delivered: bool
    detail: str
    transient: bool = False  # not delivered, but worth another try later
    retry_after: float | None = None


class Transport(Protocol):
    """How a destination is reached: one call per try, from any sender thread."""

    def send(self, entry: Entry) -> Answer: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Route:
    """One destination: where its entries live, how they are sent, how often tried, and what it takes."""

    name: str  # in the log and the metrics' destination label
    address: str  # where it goes (a URL), as its retry schedules name it
    outbox: Outbox
    transport: Transport
    policy: retry.Policy
    concurrency: int
    states: tuple[str, ...]  # record states whose messages it takes


class QuietLog:
    """A destination's failed tries in the log: the first after it was delivering at once, then at most one
    line a minute, saying how many tries it stands for; and a line (at most one a minute) once it delivers
    again. A destination retrying 20,000 entries every few seconds writes a few lines, not 100,000."""

    def __init__(
        self,
        logger: logging.Logger,
        name: str,
        level: int = logging.WARNING,
        every_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.name, self.level = logger, name, level
        self.every = every_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._last_line = self._last_recovery = float("-inf")
        self._left_out = 0  # failed tries not written one by one since the last line
        self._failing = False

    def failed(self, message: str, *args: Any) -> None:
        with self._lock:
            now = self.clock()
            self._failing = True
            if now - self._last_line < self.every:
                self._left_out += 1
                return
            left_out, self._left_out, self._last_line = self._left_out, 0, now
        if left_out:
            message += " (and %d more like it since the last line)"
            args = (*args, left_out)
        self.logger.log(self.level, message, *args)

    def delivered(self) -> None:
        with self._lock:
            now = self.clock()
            if not self._failing or now - self._last_recovery < self.every:
                return
            self._failing, self._last_recovery = False, now
            left_out, self._left_out = self._left_out, 0
        self.logger.info(
            "%s: delivering again (%d failed tries since the last failure line)", self.name, left_out
        )


class DeliveryMetrics:
    """Every destination's tries and waiting entries, told apart by the ``destination`` label."""

    OUTCOMES = ("delivered", "retry", "undelivered", "dropped")

    def __init__(self, metrics: Metrics, destination: str) -> None:
        self.destination = destination
        self.tries = metrics.counter(
            "mospool_deliveries",
            "Delivery tries, by destination and outcome (delivered, retry, undelivered, dropped)",
            ["destination", "outcome"],
        )
        self.pending = metrics.gauge(
            "mospool_outbox_pending", "Deliveries waiting in the outbox", ["destination"]
        )
        self.parked = metrics.gauge(
            "mospool_undelivered", "Deliveries parked as undelivered", ["destination"]
        )

    def tried(self, outcome: str) -> None:
        if outcome in self.OUTCOMES:
            self.tries.labels(destination=self.destination, outcome=outcome).inc()

    def waiting(self, pending: int, undelivered: int) -> None:
        self.pending.labels(destination=self.destination).set(pending)
        self.parked.labels(destination=self.destination).set(undelivered)


def delivery_status(key: str, outbox: Outbox, one: str) -> StatusPart:
    """What a destination adds to `mospool status` and the front page: waiting and undelivered entries.
    ``key`` names them in `status` (plural), ``one`` is one of them ("webhook")."""
    waiting = outbox.count(outbox.pending)
    undelivered = outbox.count(outbox.undelivered)
    alerts = []
    if undelivered:
        label = outbox.parked_label
        alerts.append(
            f"{counted(undelivered, one, key)} in {label}/ "
            f"({COMMAND} list {label}; {COMMAND} redeliver ID… or --all)"
        )
    return StatusPart(
        key=key,
        counts={OUTBOX: waiting, UNDELIVERED: undelivered},
        line=f"{waiting} in {outbox.pending_label}/, {undelivered} undelivered",
        alerts=alerts,
        active=outbox.exists(),
    )
