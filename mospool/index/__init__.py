"""The record index: dedup claims and a searchable row per notice of every filed folder, behind one interface.

It answers "was this notification seen before, and who holds it?" (``claim``, keyed by (origin, code,
tracking-id) or the body's SHA-256) and the questions of the pages and the CLI (``mospool.index.reads``). It
is derived data: ``rebuild()`` recreates this VM's rows from its record folders. Two backends:

- ``sqlite`` (``[index] url`` empty, the default): ``index.sqlite3`` inside the spool, one VM;
- ``postgres`` (``[index] url = postgresql://…``): one database shared by every VM that points at it, so a
  notice received by two VMs is processed on one, and ``find`` sees every VM's records, each with its node.

The receiver never opens the index (a 200 means the spool holds the bytes, nothing more); only the worker
and the CLI do, through ``open_index``. When a shared index cannot be reached, its operations raise
``IndexUnavailable`` and the worker holds postbacks in incoming/ until it is back (``mospool.index.watch``).
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Sequence
from typing import Protocol

from mospool.config import ConfigError, Settings
from mospool.index.reads import Row, Search
from mospool.store import Folder, Owner, Spool


class IndexUnavailable(Exception):
    """The shared index cannot be reached (or refused an operation): that operation may not have happened."""


# Failures of our own storage (the spool's disk, the index): a postback is tried again later, never failed.
STORAGE_ERRORS = (OSError, sqlite3.Error, IndexUnavailable)


class Index(Protocol):
    """What the worker, the pages and the CLI ask of the index, whichever backend holds it."""

    node: str  # this VM, as its rows name it

    # --- dedup: a notice is processed by the one postback that claimed its key first, on any VM

    def claim(self, key: str, spool_id: str) -> Owner:
        """Reserve ``key`` for ``spool_id`` and return its owner: ``spool_id`` itself, or the earlier one."""

    def release(self, keys: Sequence[str], spool_id: str) -> None:
        """Give up the keys a failed postback held, so a later retry of it is not called a duplicate."""

    def defer(self, keys: Sequence[str], spool_id: str, received_at: str) -> None:
        """Keep the keys of a postback that waits in deferred/, across restarts."""

    # --- filing and the operator's moves

    def filed(self, folders: Sequence[Folder]) -> None:
        """Index published record folders, in one transaction."""

    def moved(self, spool_id: str, state: str, folder: str) -> None:
        """A filed folder an operator moved whole (dismiss): its notices follow it."""

    def unfiled(self, spool_id: str) -> None:
        """A failed folder put back through the worker (retry): not filed until the worker says so."""

    def forget_folders(self, prefix: str) -> int:
        """Drop this VM's rows of every record filed under ``prefix`` (a purge); returns how many."""

    def rebuild(self) -> int:
        """Recreate this VM's rows from its record folders; returns the processed records indexed."""

    # --- reading (mospool.index.reads)

    def message_count(self, low: str, high: str) -> int: ...
    def folder_count(self, low: str, high: str) -> int: ...
    def day_rows(
        self, low: str, high: str, limit: int, offset: int = 0, newest: bool = False
    ) -> list[Row]: ...
    def page_edges(self, low: str, high: str, rows: int, per_page: int) -> dict[int, str]: ...
    def failure_reasons(self, low: str, high: str, limit: int) -> list[tuple[str, int]]: ...
    def find(self, search: Search) -> list[Row]: ...
    def locate(self, wanted: str, limit: int = 11) -> list[Row]: ...
    def nodes(self) -> list[Row]: ...

    # search_text(words, limit) -> list[Row]: issue 22's full-text search (see mospool.index.reads).

    # --- the index itself

    def heartbeat(self) -> None:
        """Say this VM files into the index (its ``nodes`` row): at the worker's start and every rescan."""

    def ping(self) -> None:
        """Raise IndexUnavailable unless the index answers now (and its schema is in place)."""

    def close(self) -> None: ...


def open_index(settings: Settings, connections: int | None = None) -> Index:
    """The index ``[index]`` names, for this spool and node. A shared one is opened even when it cannot be
    reached: its operations then raise IndexUnavailable (``ping`` says when it is back). ``connections``:
    at most that many to PostgreSQL (default: one per worker thread, and a few for the outputs)."""
    if settings.index.shared:
        from mospool.index.postgres import PostgresIndex  # only what uses PostgreSQL loads psycopg

        return PostgresIndex(settings, connections or settings.worker.concurrency + 4)
    from mospool.index.sqlite import SqliteIndex

    return SqliteIndex(settings.spool.dir, settings.spool.node)


def where(settings: Settings) -> str:
    """The index's place for people: the SQLite file, or the PostgreSQL URL (which holds no password)."""
    if not settings.index.shared:
        return str(Spool(settings.spool.dir).index_file)
    parts = urllib.parse.urlsplit(settings.index.url)
    return urllib.parse.urlunsplit(parts._replace(query=""))


def read_password(settings: Settings) -> str | None:
    """The password in ``[index] password_file`` (its first line), refused if everyone may read the file."""
    path = settings.index.password_file
    if path is None:
        return None
    try:
        if path.stat().st_mode & 0o004:
            raise ConfigError(f"[index] password_file {path} is readable by everyone: chmod 0640 it")
        return path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""
    except OSError as exc:
        raise ConfigError(f"[index] password_file {path}: {exc.strerror}") from exc


__all__ = [
    "STORAGE_ERRORS",
    "Index",
    "IndexUnavailable",
    "Row",
    "Search",
    "open_index",
    "read_password",
    "where",
]
