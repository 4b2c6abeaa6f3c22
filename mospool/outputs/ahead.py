"""Entries in memory ahead of their try, so a sender thread seldom reads one from disk.

An entry the filer writes is kept as it was written until its record is published (the filer says so:
``published``), and is then ready, its record known to be in place: no read and no stat at its try. Entries
found by a rescan (a backlog, after a restart) are read ahead by the rescan thread, off the senders' path. The
disk stays the truth: a sender reads an entry that is not here, and anything not taken within ``limit``
entries is simply read later.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from mospool.store import Entry, Outbox


class Ahead:
    def __init__(self, outbox: Outbox, limit: int = 4096) -> None:
        self.outbox = outbox
        self.limit = limit
        self._lock = threading.Lock()
        self._written: dict[str, Entry] = {}  # written with a record that is not published yet
        self._ready: dict[str, tuple[Entry, bool]] = {}  # name -> (entry, its record known published)

    def written(self, entry: Entry) -> None:
        with self._lock:
            if len(self._written) < self.limit:
                self._written[entry.name] = entry

    def published(self, names: Iterable[str]) -> list[str]:
        """The records of these entries are published: their entries are ready. Returns the names."""
        names = list(names)
        with self._lock:
            for name in names:
                entry = self._written.pop(name, None)
                if entry is not None and len(self._ready) < self.limit:
                    self._ready[name] = (entry, True)
        return names

    def read_ahead(self, names: Iterable[str]) -> None:
        """Read the entries not ready yet (their records not checked: the sender does), up to the limit."""
        for name in names:
            with self._lock:
                if name in self._ready or len(self._ready) >= self.limit:
                    continue
            try:
                entry = self.outbox.read(name)
            except (OSError, ValueError):  # gone meanwhile, or damaged: the sender finds out on disk
                continue
            with self._lock:
                self._ready.setdefault(name, (entry, False))

    def take(self, name: str) -> tuple[Entry, bool] | None:
        with self._lock:
            return self._ready.pop(name, None)

    def keep_only(self, waiting: Iterable[str]) -> None:
        """After a rescan: forget what is no longer waiting (delivered or parked meanwhile)."""
        waiting = set(waiting)
        with self._lock:
            self._ready = {name: ready for name, ready in self._ready.items() if name in waiting}
            self._written = {name: entry for name, entry in self._written.items() if name in waiting}
