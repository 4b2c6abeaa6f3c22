"""Webhook delivery: every filed message is POSTed, signed, to the business's own application, at least once.

``Forwarder`` is an ``Output`` of the filer. ``prepare`` writes one outbox entry per notice, through the
filer's batch, so the entry is as durable as the record. The entry is written before its record folder is
published, and names where it will be: the sender delivers it only once the folder is there (and drops it if
``spool.filed`` finds the record elsewhere, in a state that is not forwarded). ``published`` only wakes the
sender. Delivery runs on
``concurrency`` threads of its own, fed by those hints and by a rescan of outbox/ at start and every
``rescan_seconds``: the directory is the truth. Requests are signed per Standard Webhooks by the
``standardwebhooks`` library; the entry is removed after a 2xx, retried with backoff on a 5xx, 408, 429,
connection error or timeout (``mospool.retry``), and parked in undelivered/ otherwise.
"""

from __future__ import annotations

import collections
import datetime as dt
import heapq
import json
import logging
import os
import queue
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from standardwebhooks import Webhook

from mospool import retry
from mospool.config import ForwardSettings
from mospool.filer import Batch
from mospool.metrics import Metrics
from mospool.outbox import Entry, Outbox
from mospool.record import SCHEMA, Filing, Folder
from mospool.spool import Spool

log = logging.getLogger(__name__)

RESPONSE_LIMIT = 4096  # bytes of the application's answer kept for the log and undelivered/
USER_AGENT = "mo-spool-webhook/1"
CLOSE_WAIT_SECONDS = 5.0


# --- what is sent


def request_bodies(filing: Filing, record_dir: Path, media_base_url: str, spool_root: Path) -> list[bytes]:
    """One JSON body per notice of the filing, as its folder will be once published at ``record_dir``."""
    folder = filing.as_folder(record_dir)
    notices = folder.notices or [{}]
    bodies = []
    for notice in notices:
        body = dict(notice) if filing.messages else _summary_body(folder, notice)
        body["state"] = str(filing.state)
        if isinstance(body.get("media"), list):
            body["media"] = [_located(part, record_dir, media_base_url, spool_root) for part in body["media"]]
        bodies.append(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
    return bodies


def _summary_body(folder: Folder, notice: dict[str, Any]) -> dict[str, Any]:
    """A failed or duplicate postback's notice: who sent what, and why it is not processed."""
    body: dict[str, Any] = {
        "schema": SCHEMA,
        "spool_id": folder.spool_id,
        "received_at": (folder.request or {}).get("received_at"),
        **notice,
    }
    if folder.error is not None:
        body["error"] = {key: value for key, value in folder.error.items() if key != "notices"}
    if folder.duplicate is not None:
        body["duplicate_of"] = folder.duplicate.get("duplicate_of")
    return body


def _located(part: Any, record_dir: Path, media_base_url: str, spool_root: Path) -> Any:
    """A media part plus its ``path`` on this VM and, when configured, its ``download_url``."""
    if not isinstance(part, dict) or not part.get("file"):
        return part
    path = record_dir / part["file"]
    located = {**part, "path": str(path)}
    if media_base_url:
        relative = urllib.parse.quote(path.relative_to(spool_root).as_posix())
        located["download_url"] = f"{media_base_url.rstrip('/')}/{relative}"
    return located


# --- one POST


@dataclass(frozen=True)
class Answer:
    """What one try got: a status (None: no HTTP answer at all) and what to say about it."""

    status: int | None
    detail: str
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def transient(self) -> bool:
        return self.status is None or self.status in (408, 429) or self.status >= 500


class WebhookClient:
    """One pooled HTTP client for every sender thread; signs each try with a fresh timestamp.

    Every request goes to the one configured URL, so the senders use its connection pool directly, skipping
    the PoolManager's per-request URL parsing and pool look-up (a tenth of a delivery's CPU in the bench).
    """

    def __init__(self, settings: ForwardSettings) -> None:
        self.url = settings.url
        self.signer = Webhook(settings.secret)
        self.manager = urllib3.PoolManager(
            num_pools=1,
            maxsize=settings.concurrency,
            retries=False,
            timeout=urllib3.Timeout(total=settings.timeout_seconds),
        )
        self.pool = self.manager.connection_from_url(settings.url)
        parts = urllib.parse.urlsplit(settings.url)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def headers(self, entry: Entry, now: float) -> dict[str, str]:
        stamp = dt.datetime.fromtimestamp(int(now), dt.UTC)
        return {
            "User-Agent": USER_AGENT,
            "Content-Type": "application/json",
            "webhook-id": entry.webhook_id,
            "webhook-timestamp": str(int(now)),
            "webhook-signature": self.signer.sign(entry.webhook_id, stamp, entry.body.decode()),
        }

    def post(self, entry: Entry) -> Answer:
        try:
            response = self.pool.urlopen(
                "POST",
                self.target,
                body=entry.body,
                headers=self.headers(entry, time.time()),
                redirect=False,
                preload_content=False,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return Answer(None, f"{type(exc).__name__}: {exc}")
        try:
            text = (
                ""
                if response.length_remaining == 0
                else response.read(RESPONSE_LIMIT).decode("utf-8", "replace")
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            text = f"(answer unreadable: {type(exc).__name__})"
        finally:
            if response.length_remaining != 0:  # more than we read, or unknown: do not reuse the connection
                response.close()
            response.release_conn()
        detail = f"HTTP {response.status} {response.reason or ''}".strip()
        if text.strip():
            detail += f": {text.strip()[:200]}"
        if 200 <= response.status < 300:
            return Answer(response.status, detail)
        return Answer(response.status, detail, retry.retry_after_seconds(response.headers.get("Retry-After")))

    def close(self) -> None:
        self.manager.clear()


# --- the output


class Forwarder:
    """The filer output that turns filed records into webhook deliveries (see the module docstring)."""

    def __init__(
        self,
        settings: ForwardSettings,
        spool: Spool,
        metrics: Metrics | None = None,
        rescan_seconds: float = 30.0,
        background: bool = True,
    ) -> None:
        self.settings = settings
        self.background = background  # False: nothing is sent but by deliver_due() (tests)
        self.spool = spool
        self.metrics = metrics
        self.rescan_seconds = rescan_seconds
        self.outbox = Outbox(spool.root)
        self.outbox.create()
        self.client = WebhookClient(settings)
        self.policy = retry.Policy.for_forward(settings)
        self._cond = threading.Condition()
        self._due: list[tuple[float, str]] = []  # (epoch, entry name), a heap
        self._known: set[str] = set()  # scheduled or in flight
        self._in_flight: set[str] = set()
        self._hinted: set[str] = set()  # hinted while in flight: try again right after
        self._retried: set[str] = set()  # entries with a schedule file (the others need no read or unlink)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._removals: queue.SimpleQueue[str | None] | None = None  # set while the threads run

    # --- Output

    def prepare(self, filing: Filing, build: Path, batch: Batch) -> None:
        if filing.state not in self.settings.states:
            return
        record_dir = self.spool.record_dir(filing.state, filing.spool_id)
        bodies = request_bodies(filing, record_dir, self.settings.media_base_url, self.spool.root)
        record = record_dir.relative_to(self.spool.root).as_posix()
        for position, body in enumerate(bodies, 1):
            entry = Entry(filing.spool_id, position, str(filing.state), body, record)
            batch.write(self.outbox.entry_path(entry.name), entry.to_bytes())

    def published(self, folders: Sequence[Folder]) -> None:
        for folder in folders:
            if folder.state in self.settings.states:
                for position in range(1, max(len(folder.notices), 1) + 1):
                    self._schedule(Entry(folder.spool_id, position, folder.state, b"").name, 0.0)

    def tick(self) -> None:
        """The worker's loop calls this: the first call starts the sender threads."""
        if self.background and not self._threads and not self._stop.is_set():
            self.start()

    def close(self) -> None:
        """Stop the senders, letting a try in flight end for a few seconds; anything left waits on disk.

        A try cut short by the exit is sent again at the next start, with the same webhook-id; waiting longer
        would push the worker's stop past systemd's TimeoutStopSec.
        """
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        deadline = time.monotonic() + min(self.settings.timeout_seconds + 1, CLOSE_WAIT_SECONDS)
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        if self._removals is not None:
            self._removals.put(None)
            self._remover.join(max(deadline - time.monotonic(), 1.0))
        self.client.close()

    def scheduled(self) -> int:
        """Entries this forwarder knows of and has not finished with (waiting for a try, or in flight)."""
        with self._cond:
            return len(self._known)

    # --- background delivery

    def start(self) -> None:
        self.rescan()
        self._removals = queue.SimpleQueue()
        self._remover = threading.Thread(target=self._remove_loop, name="webhook-remove", daemon=True)
        self._remover.start()
        for number in range(self.settings.concurrency):
            self._spawn(self._send_loop, f"webhook-{number}")
        self._spawn(self._rescan_loop, "webhook-rescan")

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _send_loop(self) -> None:
        while (name := self._next_due()) is not None:
            self._attempt(name)

    def _rescan_loop(self) -> None:
        while not self._stop.wait(self.rescan_seconds):
            try:
                self.rescan()
            except OSError as exc:
                log.error("outbox rescan failed: %s", exc)

    def _next_due(self) -> str | None:
        """Block until an entry is due (None once stopped), and mark it in flight."""
        with self._cond:
            while not self._stop.is_set():
                now = time.time()
                if self._due and self._due[0][0] <= now:
                    return self._take()
                self._cond.wait(self._due[0][0] - now if self._due else None)
        return None

    def _take(self) -> str:
        _, name = heapq.heappop(self._due)
        self._in_flight.add(name)
        return name

    # --- scheduling

    def rescan(self) -> None:
        """Schedule every entry of outbox/ not known yet, at its stored next try; refresh the gauges."""
        self.outbox.clean()
        entries, scheduled = self.outbox.scan()
        with self._cond:
            self._retried |= scheduled
            new = [name for name in entries if name not in self._known]
        for name in new:
            when = self.outbox.schedule(name).get("next_try_epoch", 0.0) if name in scheduled else 0.0
            self._schedule(name, float(when))
        self._set_gauges(len(entries))

    def _schedule(self, name: str, when: float) -> None:
        with self._cond:
            if name in self._in_flight:
                self._hinted.add(name)
                return
            if name in self._known:
                return
            self._known.add(name)
            heapq.heappush(self._due, (when, name))
            self._cond.notify()

    def _finished(self, name: str, again_at: float | None) -> None:
        """A try is over: schedule it again at ``again_at``, or forget it (hinted meanwhile: retry now)."""
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

    # --- batch mode (tests, --once)

    def deliver_due(self, now: float | None = None) -> collections.Counter[str]:
        """Rescan, try once every entry due at ``now`` (default: now), and return the outcomes."""
        self.rescan()
        now = time.time() if now is None else now
        with self._cond:
            due = []
            while self._due and self._due[0][0] <= now:
                due.append(self._take())
        outcomes = collections.Counter(self._attempt(name) for name in due)
        self._set_gauges(self.outbox.count(self.outbox.pending))
        return outcomes

    # --- one try

    def _attempt(self, name: str) -> str:
        """Try one entry, keep the bookkeeping right whatever happens; returns the outcome."""
        try:
            outcome, again_at = self._deliver(name)
        except Exception:  # one bad entry must never stop a sender thread
            log.exception("webhook %s: unexpected error; tried again at the next rescan", name)
            outcome, again_at = "error", None
        if self.metrics is not None and outcome in ("delivered", "retry", "undelivered", "dropped"):
            self.metrics.delivered(outcome)
        if outcome == "delivered" and self._removals is not None:
            self._removals.put(name)  # the remover thread deletes it, then forgets it
            return outcome
        try:
            if outcome == "delivered":
                self._remove(name)
        finally:
            self._finished(name, again_at)
        return outcome

    def _remove(self, name: str) -> None:
        """After a 2xx: the entry (and its schedule, if it has one) go."""
        with self._cond:
            retried = name in self._retried
        self.outbox.remove(name, scheduled=retried)
        self._forget_schedule(name)

    def _remove_loop(self) -> None:
        """Deletes delivered entries off the senders' path: on a busy disk an unlink can take longer than
        a POST. An entry stays known (never sent again) until it is gone."""
        assert self._removals is not None
        while (name := self._removals.get()) is not None:
            try:
                self._remove(name)
            except OSError as exc:  # it stays in outbox/: sent again later, with the same webhook-id
                log.error("webhook %s: delivered, but the entry could not be removed: %s", name, exc)
            finally:
                self._finished(name, None)

    def _deliver(self, name: str) -> tuple[str, float | None]:
        """(outcome, when to try again or None)."""
        try:
            entry = self.outbox.read(name)
        except FileNotFoundError:
            return "gone", None
        except ValueError as exc:
            return self._unreadable(name, exc), None
        published = entry.record and os.path.isdir(f"{self.spool.root}/{entry.record}")  # noqa: PTH112
        if not published:  # not (yet) where prepare() expected it
            folder = self.spool.filed(entry.spool_id)
            if folder is None:
                return "not filed", None
            state = folder.parent.parent.name
            if entry.record or state not in self.settings.states:
                log.info("webhook %s: record is in %s/, not forwarded; dropped", entry.webhook_id, state)
                self.outbox.remove(name)
                return "dropped", None
        return self._post(name, entry)

    def _unreadable(self, name: str, error: ValueError) -> str:
        """Half written by a crash before its record was published (it is written again when the postback
        is filed); but once the record is filed, a damaged entry can only be parked."""
        if self.spool.filed(name.rsplit(".", 1)[0]) is None:
            return "not filed"
        log.error("webhook entry %s is damaged, parked in undelivered/: %s", name, error)
        self.outbox.park(name, {}, f"damaged outbox entry: {error}")
        self._forget_schedule(name)
        return "undelivered"

    def _post(self, name: str, entry: Entry) -> tuple[str, float | None]:
        with self._cond:
            retried = name in self._retried
        schedule = self.outbox.schedule(name) if retried else {}
        started = time.monotonic()
        answer = self.client.post(entry)
        attempt = retry.attempts_so_far(schedule) + 1
        elapsed_ms = (time.monotonic() - started) * 1000
        if answer.delivered:
            log.info(
                "webhook %s delivered: %s attempt=%d ms=%.1f",
                entry.webhook_id,
                answer.detail,
                attempt,
                elapsed_ms,
            )
            return "delivered", None
        if not answer.transient:
            return self._park(name, entry, schedule, f"{answer.detail} (not retried)"), None
        failure = {"url": self.settings.url, "error": answer.detail, "permanent": False}
        waits = [answer.retry_after] if answer.retry_after else []
        step = retry.after_failure(schedule, [failure], waits, self.policy, dt.datetime.now(dt.UTC))
        if step.give_up:
            reason = f"gave up after {step.attempts} attempts: {answer.detail}"
            return self._park(name, entry, step.state, reason), None
        self.outbox.set_schedule(name, step.state)
        with self._cond:
            self._retried.add(name)
        log.warning(
            "webhook %s: %s attempt=%d ms=%.1f; next try at %s",
            entry.webhook_id,
            answer.detail,
            attempt,
            elapsed_ms,
            step.state["next_try_at"],
        )
        return "retry", float(step.state["next_try_epoch"])

    def _park(self, name: str, entry: Entry, schedule: dict[str, Any], reason: str) -> str:
        self.outbox.park(name, schedule, reason)
        self._forget_schedule(name)
        log.error("webhook %s undelivered, parked in undelivered/: %s", entry.webhook_id, reason)
        return "undelivered"

    def _forget_schedule(self, name: str) -> None:
        with self._cond:
            self._retried.discard(name)

    def _set_gauges(self, pending: int) -> None:
        if self.metrics is not None:
            self.metrics.set_outbox(pending, self.outbox.count(self.outbox.undelivered))
