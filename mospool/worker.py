"""The spool worker's loop: find waiting postbacks, claim each one, and hand it to the processor.

It only schedules: what happens to one postback is ``mospool.process``, how a record is written and published
is ``mospool.filer``. watchdog events are only hints that something arrived: a start-up scan and a periodic
rescan find what inotify dropped, and a claim is an atomic rename, so nothing is done twice.

A postback waiting for its media holds no thread: the fetcher calls back when its parts are in, and the rest
of its filing goes back on the pool. Claims pause while the fetcher has enough waiting on origins that
answer (``Fetcher.saturated``) and while free space is below ``[worker] min_free_bytes`` (``mospool.space``).

One concept, scheduling, in some 390 lines: the batch mode (drain) and the daemon (run) share the claim,
its continuation after the media, and the bookkeeping of what is held (``mospool.inflight``).
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from mospool import media, retry
from mospool.config import Settings
from mospool.english import counted
from mospool.filer import Filer, IndexStage, Output
from mospool.index import STORAGE_ERRORS, IndexUnavailable, open_index, where
from mospool.index.watch import Watch
from mospool.inflight import InFlight, Queued
from mospool.metrics import Metrics
from mospool.outputs import Context, build_outputs
from mospool.process import Claimed, Fetch, Processor
from mospool.space import SpaceWatch
from mospool.store import Spool, State, id_age_seconds
from mospool.store.layout import SUFFIX
from mospool.store.spool import postback_id as id_of

log = logging.getLogger(__name__)

Part = media.MediaFile | media.MediaError

# The startup scan and each rescan take the oldest this-many waiting files: oldest first, flat memory.
SCAN_BATCH = 5000
METRICS_EVERY_SECONDS = 5.0
TICK_SECONDS = 1.0  # how often outputs may do their debounced work
EXIT_OBSERVER_DIED = 3
# What the processor hands to the filer, by the state it files in: logged once published.
OUTCOMES = {State.PROCESSED: "processed", State.DUPLICATES: "duplicate", State.FAILED: "failed"}
HANDED_TO_THE_FILER = set(OUTCOMES.values())


class Worker:
    def __init__(self, settings: Settings, outputs: Sequence[Output] | None = None) -> None:
        self.settings = settings
        self.spool = Spool(settings.spool.dir)
        self.spool.create()
        self.metrics = Metrics(settings.monitor.metrics_textfile)
        self.index = open_index(settings)
        self.watch = Watch(self.index, self.metrics, where(settings))
        self.watch.check_at_start()
        self.media = media.Fetcher(settings.media)  # shared by every postback thread: one download pool
        if outputs is None:
            outputs = build_outputs(Context(settings, self.spool, self.index, self.metrics))
        self.filer = Filer(self.spool, self.metrics, [IndexStage(self.index), *outputs])
        self.processor = Processor(settings, self.spool, self.index, self.filer, self.metrics, self.media)
        self.space = SpaceWatch(self.spool.free_bytes, settings.worker.min_free_bytes, self.metrics)
        self._pool = ThreadPoolExecutor(settings.worker.concurrency, thread_name_prefix="postback")
        self.held = InFlight()
        self.queued = Queued(settings.worker.concurrency * 2)  # two per thread: none waits for its next
        self._stop = threading.Event()
        self._stop_deadline: float | None = None
        self._ticker: threading.Thread | None = None  # set at stop: until then the filer may publish

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)  # first: what the fetcher hands back now waits
        self.media.close()
        self.filer.close()
        self.index.close()

    # --- batch mode

    def recover(self) -> None:
        released = self.spool.recover()
        for postback_id in released:
            # Published before the crash, but maybe not indexed: indexed now, before anything is claimed, so
            # a resend of it waiting beside it is found a duplicate (processing it again would index it late).
            folder = self.spool.filed(postback_id)
            if folder is not None:
                self.filer.refile(folder)
        removed = self.spool.clean_tmp(self.settings.spool.tmp_grace_seconds)
        if released or removed:
            log.info(
                "recovered %s, removed %s",
                counted(len(released), "claimed postback"),
                counted(removed, "stale tmp file"),
            )

    def drain(self) -> int:
        """Process everything waiting (and every retry that is due), then return how many were handled;
        stops early while free space is below [worker] min_free_bytes."""
        handled = 0
        self.held.next_pass()
        while self.watch.up and not self.space.low() and (batch := self.next_batch()):
            for path in batch:
                self._wait_for_room()
                self.queued.add(self._pool.submit(self.process, path))
            self.queued.wait_all()
            self.held.wait_for_fetches(None)
            handled += len(batch)
        self.filer.flush()
        self.filer.tick()
        self.write_metrics()
        return handled

    def _wait_for_room(self) -> None:
        """Until the queue has room for one more claim, and the fetcher is not saturated."""
        self.queued.wait_for_room()
        while self.media.saturated():
            time.sleep(0.01)

    def write_metrics(self) -> None:
        count, oldest = self.spool.backlog(SCAN_BATCH)
        self.metrics.set_backlog(count, id_age_seconds(oldest))
        self.metrics.media_waiting.set(self.media.waiting())
        self.metrics.write()

    def next_batch(self) -> list[Path]:
        """The oldest waiting files not already in flight, then the deferred folders that are due; nothing
        while the index cannot be reached (they wait where they are)."""
        if not self.watch.up:
            return []
        busy = self.held.busy()
        ids = (name for name in self.spool.waiting_ids() if name not in busy)
        oldest = heapq.nsmallest(SCAN_BATCH, ids)
        if oldest:
            return [self.spool.waiting_path(name) for name in oldest]
        return [folder for folder in self.due_retries() if folder.name not in busy][:SCAN_BATCH]

    def due_retries(self) -> Iterable[Path]:
        now = time.time()
        for folder in self.spool.deferred_folders():
            if retry.due(self.spool.retry_schedule(folder), now):
                yield folder

    # --- one postback: the single catch boundary

    def process(self, path: Path) -> str:
        """Claim and file one postback (a file in incoming/ or a folder in deferred/); returns the outcome, or
        "fetching" when it waits for its media (it is filed later, by another thread)."""
        postback_id = id_of(path)
        if not self.watch.up:
            return "held"  # the index cannot be reached: not claimed, it waits where it is
        if not self.held.take(postback_id):
            return "busy"  # released after a storage error: the next rescan tries it, not its own event
        started = time.monotonic()
        outcome = "gone"
        try:
            if self.space.low():
                outcome = "waiting for space"
                return outcome
            work_file = self.spool.undefer(path) if self.spool.is_deferred(path) else self.spool.claim(path)
            if work_file is None:
                return outcome
            build, new = self.spool.open_build(postback_id)
            claimed = Claimed(work_file, build, new_build=new)
            claimed.done = lambda state, error: self._filed(claimed, state, error, started)
            outcome = self._run(claimed, started, lambda: self.processor.handle(claimed))
            return outcome
        finally:
            if outcome != "fetching":
                self.held.done(postback_id)

    def _run(self, claimed: Claimed, started: float, step: Callable[[], str | Fetch]) -> str:
        """One step of a claimed postback: its outcome logged, or its media started ("fetching")."""
        try:
            result = step()
            if isinstance(result, Fetch):
                self._fetch(claimed, result, started)
                return "fetching"
        except STORAGE_ERRORS as exc:  # disk full, I/O error: not the postback's fault
            self._release(claimed, exc)
            return "released"
        if result not in HANDED_TO_THE_FILER:  # those are logged once published (_filed)
            self._log(claimed, result, started)
        return result

    def _fetch(self, claimed: Claimed, fetch: Fetch, started: float) -> None:
        self.held.fetching()
        try:
            self.media.start(
                fetch.urls, claimed.build, lambda results: self._resume_soon(claimed, results, started)
            )
        except BaseException:
            self.held.fetched(None)
            raise

    def _resume_soon(self, claimed: Claimed, results: Sequence[Part], started: float) -> None:
        """Called by the fetcher once the parts are in: the rest of the filing goes back on the pool."""
        try:
            self._pool.submit(self._resume, claimed, results, started)
        except RuntimeError:  # the worker is stopping: the postback stays in work/ until the next start
            log.info("postback %s: stopping; it is filed after the next start", claimed.id)
            self.held.fetched(claimed.id)

    def _resume(self, claimed: Claimed, results: Sequence[Part], started: float) -> None:
        try:
            self._run(claimed, started, lambda: self.processor.resume(claimed, results))
        finally:
            self.held.fetched(claimed.id)

    def _filed(self, claimed: Claimed, state: State, error: BaseException | None, started: float) -> None:
        """The filer's word on a record handed to it: published, or not known durable (a later pass)."""
        if error is not None:
            self._release(claimed, error)
        else:
            self._log(claimed, OUTCOMES[state], started)

    def _release(self, claimed: Claimed, error: BaseException) -> None:
        """Put the postback back in incoming/, wherever a failed step left its file: the disk, or the index
        gone (said once for the outage; each postback goes back quietly), is not the postback's fault."""
        if isinstance(error, IndexUnavailable):
            self.watch.lost(error)
            log.info("postback %s: back to %s/ until the index answers", claimed.id, State.INCOMING)
        else:
            log.error(
                "postback %s: storage error, back to %s/ for a later pass: %s",
                claimed.id,
                State.INCOMING,
                error,
            )
        self.held.release(claimed.id)
        for candidate in (claimed.work_file, claimed.build / claimed.work_file.name):
            if candidate.exists():
                self.spool.release(candidate)
                return

    def _log(self, claimed: Claimed, outcome: str, started: float) -> None:
        records = claimed.parsed.records if claimed.parsed else ()
        kind = records[0].kind if records else "unknown"
        self.metrics.handled(kind, outcome, time.monotonic() - started)
        log.info(
            "postback %s kind=%s tracking_id=%s outcome=%s ms=%.1f",
            claimed.id,
            ",".join(record.kind for record in records) or "-",
            ",".join(record.tracking_id or "-" for record in records) or "-",
            outcome,
            (time.monotonic() - started) * 1000,
        )

    # --- daemon mode

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        """Watch incoming/ until stop(); returns the exit code (non-zero if the observer died)."""
        self.recover()
        hints: queue.SimpleQueue[Path] = queue.SimpleQueue()
        observer = Observer()
        observer.schedule(_Hints(hints), str(self.spool.incoming), recursive=False)
        observer.start()
        self.observer = observer
        try:
            return self._serve(hints, observer)
        finally:
            observer.stop()
            self.media.close()  # parts still queued come back as transient: their postbacks are retried
            if self._stop_deadline is None:
                self._stop_deadline = time.monotonic() + self.settings.worker.stop_timeout_seconds
            self._stop.set()  # also when the observer died: the ticks stop
            if self._ticker is not None:  # a tick in progress ends before the outputs close
                self._ticker.join(max(self._stop_deadline - time.monotonic(), 0.0))
            self.filer.close(timeout=max(self._stop_deadline - time.monotonic(), 0.0))

    def _serve(self, hints: queue.SimpleQueue[Path], observer: Any) -> int:
        settings = self.settings.worker
        pool = self._pool
        next_scan, backlog = 0.0, False
        self._ticker = threading.Thread(target=self._tick_loop, name="tick", daemon=True)
        self._ticker.start()
        while not self._stop.is_set():
            if not observer.is_alive():
                log.critical("the inotify observer thread died; exiting so systemd restarts the worker")
                return EXIT_OBSERVER_DIED
            if self.watch.probe():
                next_scan = 0.0  # back: take everything that waited
            if not self.watch.up:
                _forget(hints)  # a rescan finds them once the index is back
                time.sleep(0.2)
                continue
            if hints.empty() and (time.monotonic() >= next_scan or (backlog and not self.queued)):
                if time.monotonic() >= next_scan:
                    self._housekeeping()
                batch = self.next_batch()
                backlog = len(batch) >= SCAN_BATCH
                next_scan = time.monotonic() + settings.rescan_seconds
                for path in batch:
                    hints.put(path)
            if self.queued.full():
                self.queued.wait_for_room(0.2)
                continue
            if self.media.saturated():
                time.sleep(0.01)
                continue
            if self.space.low():  # postbacks wait in incoming/; the hints stay queued till space is back
                time.sleep(0.2)
                continue
            try:
                path = hints.get(timeout=0.2)
            except queue.Empty:
                continue
            self.queued.add(pool.submit(self.process, path))
        pool.shutdown(wait=False, cancel_futures=True)
        return self._finish()

    def _tick_loop(self) -> None:
        """The outputs' debounced work (a day's pages rewritten) and the metrics, on a thread of their own:
        however long they take, the loop that hands postbacks to the threads never waits for them."""
        next_metrics = 0.0
        while not self._stop.wait(TICK_SECONDS):
            try:
                self.filer.tick()
                if time.monotonic() >= next_metrics:
                    self.write_metrics()
                    next_metrics = time.monotonic() + METRICS_EVERY_SECONDS
            except Exception:  # an output's bug must not stop the ticks, nor the worker
                log.exception("an output's tick failed; tried again at the next one")

    def _housekeeping(self) -> None:
        """At every periodic rescan: retry what a storage error released, and drop stale tmp/ files.

        A receiver killed mid-write leaves a file in tmp/; a worker that runs for months must not wait for its
        next restart to remove it.
        """
        self.held.next_pass()
        removed = self.spool.clean_tmp(self.settings.spool.tmp_grace_seconds)
        if removed:
            log.info("removed %s", counted(removed, "stale tmp file"))
        try:
            self.index.heartbeat()
        except IndexUnavailable as exc:
            self.watch.lost(exc)
        except STORAGE_ERRORS as exc:  # a full disk: it only says this VM is alive, the next rescan will
            log.warning("cannot note this worker in the index: %s", exc)

    def _finish(self) -> int:
        deadline = self._stop_deadline = time.monotonic() + self.settings.worker.stop_timeout_seconds
        left = self.queued.wait_all(self.settings.worker.stop_timeout_seconds)
        left += self.held.wait_for_fetches(deadline)
        if left:
            log.warning(
                "%s still in flight at stop; they go back to %s/ at the next start",
                counted(left, "postback"),
                State.INCOMING,
            )
        return 0


def _forget(hints: queue.SimpleQueue[Path]) -> None:
    while not hints.empty():
        hints.get_nowait()


class _Hints(FileSystemEventHandler):
    """Only enqueues: the real work happens in the pool, the truth is in the directory."""

    def __init__(self, hints: queue.SimpleQueue[Path]) -> None:
        self.hints = hints

    def on_created(self, event: FileSystemEvent) -> None:
        self._hint(event.src_path)

    def on_moved(self, event: FileSystemEvent) -> None:
        self._hint(event.dest_path)

    def _hint(self, raw: str | bytes) -> None:
        path = Path(os.fsdecode(raw))
        if path.name.endswith(SUFFIX):
            self.hints.put(path)
