"""The spool worker: claim each waiting postback, parse it, fetch its media, and file it.

Every postback ends in exactly one folder: processed/, duplicates/, failed/ (or deferred/ while a media
download waits for a retry). watchdog events are only hints that something arrived: a start-up scan and a
periodic rescan find what inotify dropped, and a claim is an atomic rename, so nothing is done twice.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from mospool import media
from mospool.config import Settings
from mospool.index import Index
from mospool.metrics import Metrics
from mospool.parse import Parsed, ParseError, Record, body_extension, parse_postback
from mospool.spool import SUFFIX, CorruptPostback, Postback, Spool, id_time, write_file, write_json

log = logging.getLogger(__name__)

# The startup scan and each rescan take the oldest this-many waiting files: oldest first, flat memory.
SCAN_BATCH = 5000
RETRY_FILE = "retry.json"
METRICS_EVERY_SECONDS = 5.0
# Failures of our own storage: the postback goes back to incoming/ and is tried again later.
STORAGE_ERRORS = (OSError, sqlite3.Error)
EXIT_OBSERVER_DIED = 3


class Deferred(Exception):
    """Some media parts failed transiently; the postback waits in deferred/ for its next try."""


class Failed(Exception):
    """The postback cannot be processed; it is filed under failed/ with this stage and error."""

    def __init__(self, stage: str, error: str, parts: list[dict[str, Any]] | None = None) -> None:
        super().__init__(error)
        self.stage = stage
        self.parts = parts or []


@dataclass
class Claimed:
    """One postback being processed: its work file, build folder and what we know so far."""

    work_file: Path
    build: Path
    postback: Postback | None = None
    parsed: Parsed | None = None
    keys: list[str] = field(default_factory=list)
    retry: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.build.name


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def dedup_key(record: Record, body_sha256: str, position: int) -> str:
    """(origin, code, tracking-id); without a tracking id, the body itself (and its place in a batch)."""
    if record.tracking_id:
        return f"{record.origin or ''}|{record.code or ''}|{record.tracking_id}"
    return f"sha256:{body_sha256}" + (f"#{position}" if position > 1 else "")


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.spool = Spool(settings.spool.dir)
        self.spool.create()
        self.index = Index(self.spool.root)
        self.metrics = Metrics(settings.monitor.metrics_textfile)
        self.media = media.Fetcher(settings.media)  # shared by every postback thread: one download pool
        self._in_flight: set[str] = set()
        # Released after a storage error: skipped until the next drain() or periodic rescan, not retried hot.
        self._released: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def close(self) -> None:
        self.media.close()
        self.index.close()

    # --- batch mode

    def recover(self) -> None:
        released = self.spool.recover()
        removed = self.spool.clean_tmp(self.settings.spool.tmp_grace_seconds)
        if released or removed:
            log.info("recovered %d claimed postbacks, removed %d stale tmp files", released, removed)

    def drain(self) -> int:
        """Process everything waiting (and every retry that is due), then return how many were handled."""
        handled = 0
        self._released.clear()
        with ThreadPoolExecutor(self.settings.worker.concurrency) as pool:
            while batch := self.next_batch():
                handled += sum(1 for _ in pool.map(self.process, batch))
        self.write_metrics()
        return handled

    def write_metrics(self) -> None:
        count, oldest = self.spool.backlog(SCAN_BATCH)
        age = (utc_now() - id_time(oldest)).total_seconds() if oldest else 0.0
        self.metrics.set_backlog(count, max(age, 0.0))
        self.metrics.write()

    def next_batch(self) -> list[Path]:
        """The oldest waiting files not already in flight, then the deferred folders that are due."""
        with self._lock:
            busy = self._in_flight | self._released
        names = (e.name for e in self.spool.waiting() if e.name.removesuffix(SUFFIX) not in busy)
        oldest = heapq.nsmallest(SCAN_BATCH, names)
        if oldest:
            return [self.spool.incoming / name for name in oldest]
        return [folder for folder in self.due_retries() if folder.name not in busy][:SCAN_BATCH]

    def due_retries(self) -> Iterable[Path]:
        now = time.time()
        with os.scandir(self.spool.deferred) as entries:
            for entry in entries:
                retry = _read_json(Path(entry.path) / RETRY_FILE)
                if retry.get("next_try_epoch", 0) <= now:
                    yield Path(entry.path)

    # --- one postback: the single catch boundary

    def process(self, path: Path) -> str:
        """Claim and file one postback (a file in incoming/ or a folder in deferred/); returns the outcome."""
        postback_id = path.name.removesuffix(SUFFIX)
        with self._lock:
            if postback_id in self._in_flight or postback_id in self._released:
                return "busy"  # released after a storage error: the next rescan tries it, not its own event
            self._in_flight.add(postback_id)
        started = time.monotonic()
        try:
            work_file = (
                self.spool.undefer(path) if path.parent == self.spool.deferred else self.spool.claim(path)
            )
            if work_file is None:
                return "gone"
            claimed = Claimed(work_file, self.spool.build_dir(postback_id))
            try:
                outcome = self._handle(claimed)
            except STORAGE_ERRORS as exc:  # disk full, I/O error: not the postback's fault
                log.error(
                    "postback %s: storage error, back to incoming/ for a later pass: %s", postback_id, exc
                )
                self._release(claimed)
                return "released"
            self._log(claimed, outcome, started)
            return outcome
        finally:
            with self._lock:
                self._in_flight.discard(postback_id)

    def _handle(self, claimed: Claimed) -> str:
        try:
            return self._file(claimed)
        except Deferred:
            return "deferred"
        except Failed as failure:
            self._fail(claimed, failure)
            return "failed"
        except STORAGE_ERRORS:
            raise
        except Exception as exc:  # one bad postback must never stop the worker
            log.exception("postback %s: unexpected error", claimed.id)
            self._fail(claimed, Failed("internal", f"{type(exc).__name__}: {exc}"))
            return "failed"

    def _release(self, claimed: Claimed) -> None:
        """Put the postback back in incoming/, wherever a failed step left its file."""
        self._released.add(claimed.id)
        for candidate in (claimed.work_file, claimed.build / claimed.work_file.name):
            if candidate.exists():
                self.spool.release(candidate)
                return

    def _file(self, claimed: Claimed) -> str:
        if self.spool.filed(claimed.id):  # filed before a crash that left the work file behind
            claimed.work_file.unlink()
            _remove_tree(claimed.build)
            return "already filed"
        claimed.retry = _read_json(claimed.build / RETRY_FILE)
        claimed.postback = self._read(claimed)
        claimed.parsed = self._parse(claimed.postback)
        records = claimed.parsed.records
        sha = claimed.postback.meta["body_sha256"]
        claimed.keys = [dedup_key(record, sha, n) for n, record in enumerate(records, 1)]
        received_at = claimed.postback.meta["received_at"]
        owners = [self.index.claim(key, claimed.id, received_at) for key in claimed.keys]
        if all(owner != claimed.id for owner in owners):
            return self._file_duplicate(claimed, owners[0])
        messages = self._messages(claimed, owners)
        self._fetch_media(claimed, messages)
        return self._file_processed(claimed, messages)

    def _read(self, claimed: Claimed) -> Postback:
        try:
            return self.spool.read(claimed.work_file)
        except CorruptPostback as exc:
            raise Failed("read", str(exc)) from exc

    @staticmethod
    def _parse(postback: Postback) -> Parsed:
        try:
            return parse_postback(postback.body, postback.content_type)
        except ParseError as exc:
            raise Failed("parse", str(exc)) from exc

    def _messages(self, claimed: Claimed, owners: list[str]) -> list[dict[str, Any]]:
        assert claimed.postback is not None and claimed.parsed is not None
        messages = []
        for position, (record, key, owner) in enumerate(
            zip(claimed.parsed.records, claimed.keys, owners, strict=True), 1
        ):
            message: dict[str, Any] = {
                "schema": 1,
                "spool_id": claimed.id,
                "received_at": claimed.postback.meta["received_at"],
                "format": claimed.parsed.format,
                **record.to_message(),
                "dedup_key": key,
                "duplicate_of": owner if owner != claimed.id else None,
            }
            if len(owners) > 1:
                message["batch_position"] = position
            messages.append(message)
        return messages

    # --- media

    def _fetch_media(self, claimed: Claimed, messages: list[dict[str, Any]]) -> None:
        """Fetch the parts of every new MMS record; raises Deferred or Failed when a part is missing."""
        wanted = [m for m in messages if m["kind"] == "mms_mo" and m["duplicate_of"] is None and m["media"]]
        urls = [part["url"] for message in wanted for part in message["media"]]
        if not urls:
            return
        results = self.media.fetch_all(urls, claimed.build)
        errors = [result for result in results if isinstance(result, media.MediaError)]
        if errors:
            self._media_failed(claimed, errors)
        self.metrics.media_bytes.inc(sum(r.bytes for r in results if isinstance(r, media.MediaFile)))
        files = iter(results)
        for message in wanted:
            parts = [next(files) for _ in message["media"]]
            message["media"] = [part.to_json() for part in parts if isinstance(part, media.MediaFile)]
            texts = [
                part.text for part in parts if isinstance(part, media.MediaFile) and part.text is not None
            ]
            if texts and not message["text"]:
                message["text"] = "\n".join(texts)

    def _media_failed(self, claimed: Claimed, errors: Sequence[media.MediaError]) -> None:
        parts = [{"url": error.url, "error": str(error), "permanent": error.permanent} for error in errors]
        if any(error.permanent for error in errors):
            raise Failed("media", "; ".join(str(error) for error in errors if error.permanent), parts)
        settings = self.settings.media
        now = utc_now()
        attempts = int(claimed.retry.get("attempts", 0)) + 1
        first = dt.datetime.fromisoformat(claimed.retry.get("first_failure_at", now.isoformat()))
        delay = settings.retry_base_seconds * 2 ** (attempts - 1)
        delay = max([delay, *(error.retry_after or 0 for error in errors)])
        next_try = now + dt.timedelta(seconds=delay)
        gave_up = (
            attempts >= settings.attempts
            or (next_try - first).total_seconds() > settings.give_up_after_seconds
        )
        history = [*claimed.retry.get("errors", []), {"at": now.isoformat(), "parts": parts}]
        claimed.retry = {
            "attempts": attempts,
            "first_failure_at": first.isoformat(),
            "next_try_at": next_try.isoformat(),
            "next_try_epoch": next_try.timestamp(),
            "errors": history,
        }
        if gave_up:
            raise Failed("media", f"gave up after {attempts} attempts: {parts[0]['error']}", parts)
        self.index.set_state(claimed.keys, claimed.id, "deferred")
        write_json(claimed.build / RETRY_FILE, claimed.retry)
        self.spool.defer(claimed.build, claimed.work_file)
        raise Deferred

    # --- filing

    def _write_common(self, claimed: Claimed) -> None:
        postback = claimed.postback
        if postback is None:  # unreadable file: keep it whole
            write_file(claimed.build / "spool-file.postback", claimed.work_file.read_bytes())
            return
        extension = body_extension(postback.body, postback.content_type)
        write_file(claimed.build / f"body.{extension}", postback.body)
        write_json(claimed.build / "request.json", postback.meta)

    def _file_processed(self, claimed: Claimed, messages: list[dict[str, Any]]) -> str:
        self._write_common(claimed)
        _remove(claimed.build / RETRY_FILE)
        single = len(messages) == 1
        folder = str(self.spool.record_dir("processed", claimed.id).relative_to(self.spool.root))
        for position, message in enumerate(messages, 1):
            name = "message.json" if single else f"message-{position:03d}.json"
            write_json(claimed.build / name, message)
            if message["duplicate_of"] is None:
                self.index.record(message["dedup_key"], claimed.id, folder, message)
        self.spool.file_record(claimed.build, "processed")
        claimed.work_file.unlink()
        return "processed"

    def _file_duplicate(self, claimed: Claimed, original: str) -> str:
        assert claimed.postback is not None
        self._write_common(claimed)
        note = {
            "spool_id": claimed.id,
            "received_at": claimed.postback.meta["received_at"],
            "duplicate_of": original,
            "key": claimed.keys[0],
        }
        write_json(claimed.build / "duplicate.json", note)
        folder = self.spool.record_dir("duplicates", claimed.id).relative_to(self.spool.root)
        self.index.duplicate(claimed.id, claimed.keys[0], original, note["received_at"], str(folder))
        self.spool.file_record(claimed.build, "duplicates")
        claimed.work_file.unlink()
        return "duplicate"

    def _fail(self, claimed: Claimed, failure: Failed) -> None:
        if claimed.keys:
            self.index.release(claimed.keys, claimed.id)
        self._write_common(claimed)
        earlier = claimed.postback.meta.get("previous_failures", []) if claimed.postback else []
        error = {
            "stage": failure.stage,
            "error": str(failure),
            "parts": failure.parts,
            "attempts": int(claimed.retry.get("attempts", 0)) + 1,
            "history": [*earlier, *claimed.retry.get("errors", [])],
            "failed_at": utc_now().isoformat(),
        }
        _remove(claimed.build / RETRY_FILE)
        write_json(claimed.build / "error.json", error)
        self.spool.file_record(claimed.build, "failed")
        claimed.work_file.unlink()

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

    def _serve(self, hints: queue.SimpleQueue[Path], observer: Any) -> int:
        settings = self.settings.worker
        pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="postback")
        running: set[Future[str]] = set()
        next_scan, backlog, next_metrics = 0.0, False, 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_metrics:
                self.write_metrics()
                next_metrics = time.monotonic() + METRICS_EVERY_SECONDS
            if not observer.is_alive():
                log.critical("the inotify observer thread died; exiting so systemd restarts the worker")
                return EXIT_OBSERVER_DIED
            running = {future for future in running if not future.done()}
            if hints.empty() and (time.monotonic() >= next_scan or (backlog and not running)):
                if time.monotonic() >= next_scan:
                    self._housekeeping()
                batch = self.next_batch()
                backlog = len(batch) >= SCAN_BATCH
                next_scan = time.monotonic() + settings.rescan_seconds
                for path in batch:
                    hints.put(path)
            if len(running) >= settings.concurrency * 2:
                time.sleep(0.01)
                continue
            try:
                path = hints.get(timeout=0.2)
            except queue.Empty:
                continue
            running.add(pool.submit(self.process, path))
        pool.shutdown(wait=False, cancel_futures=True)
        return self._finish(running)

    def _housekeeping(self) -> None:
        """At every periodic rescan: retry what a storage error released, and drop stale tmp/ files.

        A receiver killed mid-write leaves a file in tmp/; a worker that runs for months must not wait for its
        next restart to remove it.
        """
        self._released.clear()
        removed = self.spool.clean_tmp(self.settings.spool.tmp_grace_seconds)
        if removed:
            log.info("removed %d stale tmp files", removed)

    def _finish(self, running: set[Future[str]]) -> int:
        deadline = time.monotonic() + self.settings.worker.stop_timeout_seconds
        while any(not future.done() for future in running) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = sum(1 for future in running if not future.done())
        if left:
            log.warning(
                "%d postbacks still in flight at stop; they go back to incoming/ at the next start", left
            )
        return 0


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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _remove_tree(path: Path) -> None:
    if not path.is_dir():
        return
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()
