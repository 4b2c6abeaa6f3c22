"""One claimed postback: read, parse, dedup, fetch its media, and hand the result to the filer.

Every postback ends in exactly one folder: processed/, duplicates/, failed/ (or deferred/ while a media
download waits for a retry). This module decides which and builds what the folder holds; the filer
(``mospool.filer``) writes and publishes it, the worker (``mospool.worker``) only schedules.

An MMS is processed in two steps, so that no thread waits for its media: ``handle`` returns ``Fetch`` (the
parts to download, at most ``[media] max_parts``; the rest are named in the record), the worker has the
fetcher download them, and ``resume`` files the record once the last part is in. Meanwhile the postback
stays claimed in work/, and only its ids are held in memory (it is read again to be filed).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mospool import media, retry
from mospool.config import Settings
from mospool.english import counted
from mospool.filer import Done, Filer
from mospool.index import STORAGE_ERRORS, Index
from mospool.metrics import Metrics
from mospool.parse import Parsed, ParseError, parse_postback
from mospool.store import CorruptPostback, Filing, Media, Owner, Postback, Spool, State, record

log = logging.getLogger(__name__)


class Deferred(Exception):
    """Some media parts failed transiently; the postback waits in deferred/ for its next try."""


class Postponed(Exception):
    """The media origin is not keeping up: the postback waits in deferred/, no try counted."""


POSTPONE_SECONDS = 10.0  # then tried at the worker's next rescan


@dataclass(frozen=True)
class Fetch:
    """What ``handle`` returns for a postback whose media must be downloaded before it is filed."""

    urls: list[str]


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
    owners: list[Owner] = field(default_factory=list)  # each key's: this postback, or the earlier one
    retry: dict[str, Any] = field(default_factory=dict)
    plan: dict[int, tuple[list[str], int]] = field(default_factory=dict)  # notice -> (URLs fetched, not)
    new_build: bool = False  # its build folder was made for this try: no schedule of an earlier one in it
    done: Done = field(default=lambda state, error: None)  # told when its record is published, or is not

    @property
    def id(self) -> str:
        return self.build.name


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Processor:
    """Turns one claimed postback into a filed record; ``handle`` is the single catch boundary."""

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        index: Index,
        filer: Filer,
        metrics: Metrics,
        fetcher: media.Fetcher,
    ) -> None:
        self.settings = settings
        self.fetcher = fetcher
        self.spool = spool
        self.index = index
        self.filer = filer
        self.metrics = metrics
        self.policy = retry.Policy.of(settings.media)
        self.node = settings.spool.node

    def handle(self, claimed: Claimed) -> str | Fetch:
        """The outcome (processed, duplicate, failed, deferred, postponed or already filed), or the parts to
        fetch before ``resume``. Storage errors propagate."""
        return self._guarded(claimed, self._file)

    def resume(self, claimed: Claimed, results: Sequence[media.MediaFile | media.MediaError]) -> str:
        """File a postback once its parts are in (``results[i]`` for the Fetch's ``urls[i]``)."""
        outcome = self._guarded(claimed, lambda again: self._file_with_media(again, results))
        assert isinstance(outcome, str)
        return outcome

    def _guarded(self, claimed: Claimed, step: Callable[[Claimed], str | Fetch]) -> str | Fetch:
        """The single catch boundary of every step."""
        try:
            return step(claimed)
        except Deferred:
            return "deferred"
        except Postponed:
            return "postponed"
        except Failed as failure:
            self._fail(claimed, failure)
            return "failed"
        except STORAGE_ERRORS:
            raise
        except Exception as exc:  # one bad postback must never stop the worker
            log.exception("postback %s: unexpected error", claimed.id)
            self._fail(claimed, Failed("internal", f"{type(exc).__name__}: {exc}"))
            return "failed"

    def _file(self, claimed: Claimed) -> str | Fetch:
        if self._already_filed(claimed):
            return "already filed"
        claimed.retry = {} if claimed.new_build else self.spool.retry_schedule(claimed.build)
        self._load(claimed)
        claimed.owners = [self.index.claim(key, claimed.id) for key in claimed.keys]
        if all(owner.spool_id != claimed.id for owner in claimed.owners):
            return self._file_duplicate(claimed, claimed.owners[0])
        urls = self._plan_media(claimed)
        if not urls:
            return self._file_processed(claimed, [])
        busy = self.fetcher.admit(urls)
        if busy:
            self._postpone(claimed, busy)
        claimed.postback = claimed.parsed = None  # read again to be filed: memory stays flat while it waits
        return Fetch(urls)

    def _load(self, claimed: Claimed) -> None:
        claimed.postback = self._read(claimed)
        claimed.parsed = self._parse(claimed.postback)
        sha = claimed.postback.meta["body_sha256"]
        claimed.keys = [record.dedup_key(r, sha, n) for n, r in enumerate(claimed.parsed.records, 1)]

    def _file_with_media(
        self, claimed: Claimed, results: Sequence[media.MediaFile | media.MediaError]
    ) -> str:
        self._load(claimed)
        return self._file_processed(claimed, self._media(claimed, results))

    def _file_processed(self, claimed: Claimed, fetched: Sequence[Media | None]) -> str:
        assert claimed.postback is not None and claimed.parsed is not None
        received_at = claimed.postback.meta["received_at"]
        messages = record.messages(
            claimed.id, received_at, claimed.parsed, claimed.keys, claimed.owners, fetched, self.node
        )
        self._publish(claimed, self._filing(claimed, State.PROCESSED, messages=messages))
        return "processed"

    def _already_filed(self, claimed: Claimed) -> bool:
        """Filed before a crash that left the work file behind: make sure it is indexed, drop the rest."""
        folder = self.spool.filed(claimed.id)
        if folder is None:
            return False
        self.filer.refile(folder)
        _remove_tree(claimed.build)  # before the work file: a crash in between must leave that, not this
        claimed.work_file.unlink()
        return True

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

    # --- media

    def _plan_media(self, claimed: Claimed) -> list[str]:
        """The URLs to fetch, of every new MMS notice in order, at most max_parts in all; the plan keeps which
        notice each belongs to and how many of its parts are left out."""
        assert claimed.parsed is not None
        budget = self.settings.media.max_parts
        urls: list[str] = []
        for n, (notice, owner) in enumerate(zip(claimed.parsed.records, claimed.owners, strict=True)):
            if notice.kind != "mms_mo" or owner.spool_id != claimed.id or not notice.media_urls:
                continue
            taken = list(notice.media_urls[: max(budget - len(urls), 0)])
            claimed.plan[n] = (taken, len(notice.media_urls) - len(taken))
            urls += taken
        return urls

    def _media(
        self, claimed: Claimed, results: Sequence[media.MediaFile | media.MediaError]
    ) -> list[Media | None]:
        """Each notice's parts (None for the notices without media); raises Deferred or Failed when a part
        is missing."""
        assert claimed.parsed is not None
        errors = [result for result in results if isinstance(result, media.MediaError)]
        if errors:
            self._media_failed(claimed, errors)
        files = [result for result in results if isinstance(result, media.MediaFile)]
        self.metrics.media_bytes.inc(sum(part.bytes for part in files))
        parts = iter(files)
        fetched: list[Media | None] = [None] * len(claimed.parsed.records)
        for n, (urls, left_out) in sorted(claimed.plan.items()):
            mine = [next(parts) for _ in urls]
            texts = [part.text for part in mine if part.text is not None]
            fetched[n] = Media([part.to_json() for part in mine], texts, left_out)
        return fetched

    def _postpone(self, claimed: Claimed, reason: str) -> None:
        """Wait in deferred/ for the next rescan, keeping the retry schedule's count as it is."""
        log.info("postback %s waits in %s/: %s", claimed.id, State.DEFERRED, reason)
        claimed.retry = retry.postponed(claimed.retry, reason, POSTPONE_SECONDS, utc_now())
        self._defer(claimed)
        raise Postponed

    def _defer(self, claimed: Claimed) -> None:
        """Into deferred/ with its retry schedule: the index's rows first (so its keys stay claimed), then the
        schedule, then the folder."""
        assert claimed.postback is not None
        self.index.defer(claimed.keys, claimed.id, claimed.postback.meta["received_at"])
        self.spool.set_retry_schedule(claimed.build, claimed.retry)
        self.spool.defer(claimed.build, claimed.work_file)

    def _media_failed(self, claimed: Claimed, errors: Sequence[media.MediaError]) -> None:
        parts = [{"url": error.url, "error": str(error), "permanent": error.permanent} for error in errors]
        if any(error.permanent for error in errors):
            raise Failed("media", "; ".join(str(error) for error in errors if error.permanent), parts)
        waits = [error.retry_after for error in errors if error.retry_after]
        step = retry.after_failure(claimed.retry, parts, waits, self.policy, utc_now())
        claimed.retry = step.state
        if step.give_up:
            tries = counted(step.attempts, "attempt")
            raise Failed("media", f"gave up after {tries}: {parts[0]['error']}", parts)
        self._defer(claimed)
        raise Deferred

    # --- filing

    def _filing(self, claimed: Claimed, state: State, **outcome: Any) -> Filing:
        postback = claimed.postback
        return Filing(
            state=state,
            spool_id=claimed.id,
            meta=postback.meta if postback else None,
            body=postback.body if postback else None,
            content_type=postback.content_type if postback else "",
            # an unreadable file is kept whole
            spool_file=None if postback else claimed.work_file.read_bytes(),
            **outcome,
        )

    def _publish(self, claimed: Claimed, filing: Filing) -> None:
        self.filer.file(filing, claimed.build, claimed.work_file, claimed.done)

    def _file_duplicate(self, claimed: Claimed, original: Owner) -> str:
        assert claimed.postback is not None
        note = {
            "spool_id": claimed.id,
            "node": self.node,
            "received_at": claimed.postback.meta["received_at"],
            "duplicate_of": original.spool_id,
            "duplicate_of_node": original.node,
            "key": claimed.keys[0],
            "notices": record.summaries(claimed.parsed),
        }
        self._publish(claimed, self._filing(claimed, State.DUPLICATES, duplicate=note))
        return "duplicate"

    def _fail(self, claimed: Claimed, failure: Failed) -> None:
        if claimed.keys:
            self.index.release(claimed.keys, claimed.id)
        earlier = claimed.postback.meta.get("previous_failures", []) if claimed.postback else []
        error = {
            "stage": failure.stage,
            "error": str(failure),
            "parts": failure.parts,
            "attempts": retry.attempts_so_far(claimed.retry) + 1,
            "history": [*earlier, *claimed.retry.get("errors", [])],
            "failed_at": utc_now().isoformat(),
            "notices": record.summaries(claimed.parsed),
        }
        if not_fetched := sum(left_out for _, left_out in claimed.plan.values()):
            error["parts_not_fetched"] = not_fetched
        self._publish(claimed, self._filing(claimed, State.FAILED, error=error))


def _remove_tree(path: Path) -> None:
    if not path.is_dir():
        return
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()
