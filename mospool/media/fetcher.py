"""The media parts of every MMS MO, downloaded by one shared pool of threads, one lane per origin.

One `Fetcher` serves every postback: its download threads take the parts from one lane per origin
(``mospool.media.lanes``), so a stuck origin holds only its own downloads; each part is downloaded by
``mospool.media.download`` (SSRF guard, one total deadline, byte caps). A postback does not wait in a thread
for its parts: ``start`` queues them and calls back once the last one ended. ``admit`` says when a postback
should rather wait in deferred/ (its origin is stuck and already has enough postbacks waiting on it, or too
many wait in all), ``saturated`` when the worker should claim no more for now (enough postbacks wait on
origins that answer).
"""

from __future__ import annotations

import collections
import logging
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from mospool.config import MediaSettings
from mospool.durable import make_private_dir
from mospool.media.download import Budget, Downloader
from mospool.media.files import TYPES, MediaFile, describe
from mospool.media.guard import MediaError, Resolver, default_port, resolve_tcp
from mospool.media.lanes import Job, Lanes
from mospool.store.layout import MEDIA, MEDIA_TEMP_PATTERN, media_part_pattern

log = logging.getLogger(__name__)

# Postbacks waiting for their parts, as multiples of the settings (see the module docstring).
SATURATED_PER_DOWNLOAD = 4  # x parallel_downloads, on origins that answer: the worker claims no more
CONGESTED_PER_DOWNLOAD = 2  # x per_host_downloads, on one congested origin: more wait in deferred/
TOTAL_PER_DOWNLOAD = 16  # x parallel_downloads, in all: more wait in deferred/

Result = MediaFile | MediaError
Done = Callable[[list[Result]], None]


def origin_of(url: str) -> str:
    """scheme://host:port, the key of a download lane (a URL that does not parse has a lane of its own)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or default_port(parts.scheme.lower())
    except ValueError:
        return "(unparsable)"
    return f"{parts.scheme.lower()}://{(parts.hostname or '').rstrip('.')}:{port}"


class Fetcher:
    """Fetches media parts for any number of postbacks at once; build one, share it, close() it."""

    def __init__(self, settings: MediaSettings, resolve: Resolver = resolve_tcp) -> None:
        self.settings = settings
        self.downloader = Downloader(settings, resolve)
        self._lock = threading.Lock()
        self._lanes = Lanes(settings.parallel_downloads, settings.per_host_downloads)
        self._waiting: collections.Counter[str] = collections.Counter()  # postbacks, by origin
        self._postbacks = 0  # postbacks waiting for parts, in all

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop taking parts (those queued come back as transient failures); close idle connections. A
        download in flight ends on its own deadline."""
        self._lanes.close()
        self.downloader.close()

    # --- how many postbacks wait, and where

    def admit(self, urls: Sequence[str]) -> str | None:
        """Why a postback with these parts should wait in deferred/ rather than here, or None."""
        settings = self.settings
        with self._lock:
            if self._postbacks >= TOTAL_PER_DOWNLOAD * settings.parallel_downloads:
                return f"{self._postbacks} postbacks already wait for media"
            for origin in sorted({origin_of(url) for url in urls}):
                waiting = self._waiting[origin]
                enough = waiting >= CONGESTED_PER_DOWNLOAD * settings.per_host_downloads
                if enough and self._lanes.congested(origin):
                    return f"{origin} is not answering and {waiting} postbacks already wait on it"
        return None

    def saturated(self) -> bool:
        """Enough postbacks wait on origins that answer: claiming more would only queue them here."""
        with self._lock:
            healthy = sum(n for origin, n in self._waiting.items() if not self._lanes.congested(origin))
        return healthy >= SATURATED_PER_DOWNLOAD * self.settings.parallel_downloads

    def waiting(self) -> int:
        with self._lock:
            return self._postbacks

    # --- a postback's parts

    def start(self, urls: Sequence[str], record_dir: Path, done: Done) -> None:
        """Queue every part for record_dir/media/ and call ``done(results)`` (result i for urls[i]) from the
        thread that ends the last one. Parts already complete from an earlier try are reused."""
        media_dir = record_dir / MEDIA
        make_private_dir(media_dir)
        for leftover in media_dir.glob(MEDIA_TEMP_PATTERN):  # a download a crash cut short: fetched again
            leftover.unlink()
        origins = {origin_of(url) for url in urls}
        with self._lock:
            self._postbacks += 1
            self._waiting.update(origins)

        def finished(results: list[Result]) -> None:
            with self._lock:
                self._postbacks -= 1
                self._waiting.subtract(origins)
                self._waiting += collections.Counter()  # drop the origins at zero
            done(results)

        batch = _Postback(urls, media_dir, self.settings.max_total_bytes, finished)
        for index, url in enumerate(urls, 1):
            reused = batch.reuse(index)
            if reused is not None:
                batch.settle(index, reused)
                continue
            try:
                self._lanes.submit(origin_of(url), _Part(self, batch, index))
            except RuntimeError:  # close() came first
                batch.settle(index, _stopped(url))

    def fetch_all(self, urls: Sequence[str], record_dir: Path) -> list[Result]:
        """``start``, waiting for the results in this thread."""
        ended = threading.Event()
        found: list[Result] = []

        def done(results: list[Result]) -> None:
            found.extend(results)
            ended.set()

        self.start(urls, record_dir, done)
        ended.wait()
        return found

    def fetch_one(self, url: str, index: int, media_dir: Path, budget: Budget | None = None) -> MediaFile:
        """One part, in this thread (``mospool.media.download``)."""
        return self.downloader.fetch_one(url, index, media_dir, budget)


class _Postback:
    """The parts of one postback: their results as they come, and the call once the last one is in."""

    def __init__(self, urls: Sequence[str], media_dir: Path, max_total: int, done: Done) -> None:
        self.urls = list(urls)
        self.media_dir = media_dir
        self.budget = Budget(max_total)
        self._results: list[Result | None] = [None] * len(urls)
        self._left = len(urls)
        self._lock = threading.Lock()
        self._done = done
        if not urls:
            done([])

    @property
    def record(self) -> str:
        return self.media_dir.parent.name

    def reuse(self, index: int) -> MediaFile | None:
        """A part a previous try completed (it counts against the budget too)."""
        whole = sorted(self.media_dir.glob(media_part_pattern(index)))
        if not whole:
            return None
        part = describe(whole[0], index, self.urls[index - 1], TYPES.get(whole[0].suffix.lstrip(".")))
        self.budget.add(part.bytes)
        return part

    def settle(self, index: int, result: Result) -> None:
        with self._lock:
            self._results[index - 1] = result
            self._left -= 1
            last = self._left == 0
        if last:
            self._done([result for result in self._results if result is not None])


class _Part(Job):
    def __init__(self, fetcher: Fetcher, postback: _Postback, index: int) -> None:
        self.fetcher = fetcher
        self.postback = postback
        self.index = index

    @property
    def url(self) -> str:
        return self.postback.urls[self.index - 1]

    def run(self) -> bool:
        try:
            result: Result = self.fetcher.fetch_one(
                self.url, self.index, self.postback.media_dir, self.postback.budget
            )
        except MediaError as error:
            log.warning("media part %d of %s: %s", self.index, self.postback.record, error)
            result = error
        except Exception as exc:  # a bug must not leave the postback waiting for ever
            log.exception("media part %d of %s: unexpected error", self.index, self.postback.record)
            result = MediaError(self.url, f"internal error: {type(exc).__name__}: {exc}", permanent=False)
        self.postback.settle(self.index, result)
        return isinstance(result, MediaError) and result.timed_out

    def cancel(self) -> None:
        self.postback.settle(self.index, _stopped(self.url))


# --- the response


def _stopped(url: str) -> MediaError:
    """A part close() dropped before it started: tried again later, like any transient failure."""
    return MediaError(url, "not fetched: the worker was stopping", permanent=False)
