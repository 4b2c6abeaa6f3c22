"""The delivery engine: every filed message sent, at least once, to one destination, through a transport.

An output that delivers (the webhooks, or any other) builds a ``Delivery`` with its transport. ``enqueue``
writes one outbox entry per message through the filer's batch, so the entry is as durable as its record;
the entry names the record folder it belongs to, and is sent only once that folder is published (it is
dropped if the record ended in a state this destination does not take). ``hint`` wakes the senders.

Delivery runs on ``concurrency`` sender threads of its own (one pool per destination), fed by those hints and
by a rescan of the outbox at start and every ``rescan_seconds``: the directory is the truth. After a
delivered answer the entry is removed (off the senders' path, by a thread of its own); after a transient
failure it is tried again on the retry policy's schedule (``mospool.retry``), kept in its schedule file; a
refused one, or one whose retries ran out, is parked in undelivered, from where ``redeliver`` puts it back.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable
from typing import Any

from mospool import retry
from mospool.english import counted
from mospool.filer import Batch
from mospool.metrics import Metrics
from mospool.outputs.ahead import Ahead
from mospool.outputs.destination import DeliveryMetrics, QuietLog, Route
from mospool.outputs.due import DueQueue
from mospool.store import Entry, Spool
from mospool.store.outbox import entry_spool_id

log = logging.getLogger(__name__)

CLOSE_WAIT_SECONDS = 5.0


class Delivery:
    """The sender side of one destination (see the module docstring)."""

    def __init__(
        self,
        route: Route,
        spool: Spool,
        metrics: Metrics | None = None,
        rescan_seconds: float = 30.0,
        background: bool = True,
    ) -> None:
        self.route = route
        self.outbox = route.outbox
        self.spool = spool
        self.background = background  # False: nothing is sent but by deliver_due() (tests)
        self.rescan_seconds = rescan_seconds
        self.outbox.create()
        self._metrics = DeliveryMetrics(metrics, route.name) if metrics is not None else None
        self._queue = DueQueue()
        self._ahead = Ahead(self.outbox)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._removals: queue.SimpleQueue[str | None] | None = None  # set while the threads run
        self._retrying = QuietLog(log, route.name)
        self._parking = QuietLog(log, route.name, logging.ERROR)

    # --- what the output calls

    def enqueue(self, batch: Batch, entries: Iterable[Entry]) -> None:
        """Write entries with the record being filed: durable with it, sent once it is published."""
        for entry in entries:
            batch.write(self.outbox.entry_path(entry.name), entry.to_bytes())
            self._ahead.written(entry)

    def hint(self, names: Iterable[str]) -> None:
        """These entries' records are published (the filer's word): due now, and ready in memory."""
        for name in self._ahead.published(names):
            self._queue.add(name, 0.0)

    def tick(self) -> None:
        """The worker's loop calls this: the first call starts the sender threads."""
        if self.background and not self._threads and not self._stop.is_set():
            self.start()

    def close(self) -> None:
        """Stop the senders, letting a try in flight end for a few seconds; anything left waits on disk.

        A try cut short by the exit is sent again at the next start, with the same id; waiting longer would
        push the worker's stop past systemd's TimeoutStopSec.
        """
        self._stop.set()
        self._queue.stop()
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        if self._removals is not None:
            self._removals.put(None)
            self._remover.join(max(deadline - time.monotonic(), 1.0))
        self.route.transport.close()

    def scheduled(self) -> int:
        """Entries this engine knows of and has not finished with (waiting for a try, or in flight)."""
        return len(self._queue)

    # --- background delivery

    def start(self) -> None:
        found = self.rescan()
        self._removals = queue.SimpleQueue()
        self._remover = threading.Thread(
            target=self._remove_loop, name=f"{self.route.name}-remove", daemon=True
        )
        self._remover.start()
        for number in range(self.route.concurrency):
            self._spawn(self._send_loop, f"{self.route.name}-{number}")
        self._spawn(lambda: self._rescan_loop(found), f"{self.route.name}-rescan")

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _send_loop(self) -> None:
        while (name := self._queue.next_due()) is not None:
            self._attempt(name)

    def _rescan_loop(self, found: list[str]) -> None:
        """Reads ahead what the start's rescan found, then rescans every rescan_seconds and reads ahead."""
        self._ahead.read_ahead(sorted(found))
        while not self._stop.wait(self.rescan_seconds):
            try:
                self._ahead.read_ahead(sorted(self.rescan()))
            except OSError as exc:
                log.error("%s: outbox rescan failed: %s", self.route.name, exc)

    # --- scheduling

    def rescan(self) -> list[str]:
        """Schedule every waiting entry not known yet, at its stored next try; refresh the gauges. Returns
        the entries it scheduled."""
        self.outbox.clean()
        entries, scheduled = self.outbox.scan()
        self._queue.set_retried(scheduled)
        self._ahead.keep_only(entries)
        new = self._queue.unknown(entries)
        for name in new:
            when = self.outbox.schedule(name).get("next_try_epoch", 0.0) if name in scheduled else 0.0
            self._queue.add(name, float(when))
        self._set_gauges(len(entries))
        return new

    # --- batch mode (tests, --once)

    def deliver_due(self, now: float | None = None) -> collections.Counter[str]:
        """Rescan, try once every entry due at ``now`` (default: now), and return the outcomes."""
        self.rescan()
        due = self._queue.take_due(time.time() if now is None else now)
        outcomes = collections.Counter(self._attempt(name) for name in due)
        self._set_gauges(self.outbox.count(self.outbox.pending))
        return outcomes

    # --- one try

    def _attempt(self, name: str) -> str:
        """Try one entry, keep the bookkeeping right whatever happens; returns the outcome."""
        try:
            outcome, again_at = self._deliver(name)
        except Exception:  # one bad entry must never stop a sender thread
            log.exception("%s %s: unexpected error; tried again at the next rescan", self.route.name, name)
            outcome, again_at = "error", None
        if self._metrics is not None:
            self._metrics.tried(outcome)
        if outcome == "delivered" and self._removals is not None:
            self._removals.put(name)  # the remover thread deletes it, then forgets it
            return outcome
        try:
            if outcome == "delivered":
                self._remove(name)
        finally:
            self._queue.finished(name, again_at)
        return outcome

    def _remove(self, name: str) -> None:
        """After delivery: the entry (and its schedule, if it has one) go."""
        self.outbox.remove(name, scheduled=self._queue.retried(name))
        self._forget_schedule(name)

    def _remove_loop(self) -> None:
        """Deletes delivered entries off the senders' path: on a busy disk an unlink can take longer than a
        try. An entry stays known (never sent again) until it is gone."""
        assert self._removals is not None
        while (name := self._removals.get()) is not None:
            try:
                self._remove(name)
            except OSError as exc:  # it stays in the outbox: sent again later, with the same id
                log.error(
                    "%s %s: delivered, but the entry could not be removed: %s", self.route.name, name, exc
                )
            finally:
                self._queue.finished(name, None)

    def _deliver(self, name: str) -> tuple[str, float | None]:
        """(outcome, when to try again or None)."""
        ready = self._ahead.take(name)
        if ready is None:
            try:
                ready = self.outbox.read(name), False
            except FileNotFoundError:
                return "gone", None
            except ValueError as exc:
                return self._unreadable(name, exc), None
        entry, known = ready
        published = known or (entry.record and os.path.isdir(f"{self.spool.root}/{entry.record}"))  # noqa: PTH112
        if not published:  # not (yet) where it was written to be
            folder = self.spool.filed(entry.spool_id)
            if folder is None:
                return "not filed", None
            state = self.spool.records.filed_state(folder)
            if entry.record or state not in self.route.states:
                log.info("%s %s: record is in %s/, not forwarded; dropped", self.route.name, entry.id, state)
                self.outbox.remove(name)
                return "dropped", None
        return self._send(name, entry)

    def _unreadable(self, name: str, error: ValueError) -> str:
        """Half written by a crash before its record was published (it is written again when the postback
        is filed); but once the record is filed, a damaged entry can only be parked."""
        if self.spool.filed(entry_spool_id(name)) is None:
            return "not filed"
        log.error(
            "%s entry %s is damaged, parked in %s/: %s",
            self.route.name,
            name,
            self.outbox.parked_label,
            error,
        )
        self.outbox.park(name, {}, f"damaged outbox entry: {error}")
        self._forget_schedule(name)
        return "undelivered"

    def _send(self, name: str, entry: Entry) -> tuple[str, float | None]:
        schedule = self.outbox.schedule(name) if self._queue.retried(name) else {}
        started = time.monotonic()
        answer = self.route.transport.send(entry)
        attempt = retry.attempts_so_far(schedule) + 1
        elapsed_ms = (time.monotonic() - started) * 1000
        if answer.delivered:
            self._retrying.delivered()
            log.info(
                "%s %s delivered: %s attempt=%d ms=%.1f",
                self.route.name,
                entry.id,
                answer.detail,
                attempt,
                elapsed_ms,
            )
            return "delivered", None
        if not answer.transient:
            return self._park(name, entry, schedule, f"{answer.detail} (not retried)"), None
        failure = {"url": self.route.address, "error": answer.detail, "permanent": False}
        waits = [answer.retry_after] if answer.retry_after else []
        step = retry.after_failure(schedule, [failure], waits, self.route.policy, dt.datetime.now(dt.UTC))
        if step.give_up:
            reason = f"gave up after {counted(step.attempts, 'attempt')}: {answer.detail}"
            return self._park(name, entry, step.state, reason), None
        self.outbox.set_schedule(name, step.state)
        self._queue.set_retried([name])
        self._retrying.failed(
            "%s %s: %s attempt=%d ms=%.1f; next try at %s",
            self.route.name,
            entry.id,
            answer.detail,
            attempt,
            elapsed_ms,
            step.state["next_try_at"],
        )
        return "retry", float(step.state["next_try_epoch"])

    def _park(self, name: str, entry: Entry, schedule: dict[str, Any], reason: str) -> str:
        self.outbox.park(name, schedule, reason)
        self._forget_schedule(name)
        self._parking.failed(
            "%s %s undelivered, parked in %s/: %s",
            self.route.name,
            entry.id,
            self.outbox.parked_label,
            reason,
        )
        return "undelivered"

    def _forget_schedule(self, name: str) -> None:
        self._queue.forget_retried(name)

    def _set_gauges(self, pending: int) -> None:
        if self._metrics is not None:
            self._metrics.waiting(pending, self.outbox.count(self.outbox.undelivered))
