"""Pages made stale by a change the worker did not make: the CLI's notes to the worker's pages output.

```
stale-pages/<time>-<random>.json   {"days": [["failed", "2026-11-24"], ...]}: these days' pages, and
                                   the front page, no longer show the spool as it is
```

The worker writes the day and front pages from what it files; a retry, dismiss, purge, redeliver or resend
run from the CLI changes the spool behind its back. The CLI leaves a note (written whole, fsynced, renamed
into place, the folder fsynced), and the pages output rewrites those pages at its next tick and only then
removes the note, so a crash at any point leaves the note for the next run. Notes are owned like the spool,
so a worker running as the spool's owner can read and remove what root's CLI wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

from mospool.durable import fsync_dir, make_private_dir, owned_like, write_new
from mospool.store.layout import FILED_STATES, State, is_day

STALE_PAGES = "stale-pages"
NOTE_SUFFIX = ".json"
TEMP_PREFIX = "."  # a note being written: never read, and removed if a crash left it
TEMP_SECONDS = 60.0


class StalePages:
    """The notes of one spool (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.folder = self.root / STALE_PAGES

    def create(self) -> None:
        if make_private_dir(self.folder):
            owned_like(self.folder, self.root)
            fsync_dir(self.root)

    def note(self, days: Iterable[tuple[State, str]] = ()) -> None:
        """Leave a note: the pages of ``days`` and the front page are stale."""
        self.create()
        name = f"{time.time_ns()}-{os.urandom(4).hex()}{NOTE_SUFFIX}"
        temp = self.folder / (TEMP_PREFIX + name)
        write_new(temp, json.dumps({"days": sorted({(str(state), day) for state, day in days})}).encode())
        owned_like(temp, self.root)
        os.rename(temp, self.folder / name)
        fsync_dir(self.folder)

    def read(self) -> tuple[list[str], set[tuple[State, str]]]:
        """(the notes, the days they name); a note that cannot be read names no day, and is removed too."""
        if not self.folder.is_dir():
            return [], set()
        with os.scandir(self.folder) as entries:
            names = sorted(e.name for e in entries if _is_note(e.name))
        days: set[tuple[State, str]] = set()
        for name in names:
            days |= _days(self.folder / name)
        return names, days

    def done(self, names: Iterable[str]) -> None:
        """The pages the notes named are rewritten: remove them, and any note a crash left half written."""
        with os.scandir(self.folder) as entries:
            cut_short = [
                e.name for e in entries if e.name.startswith(TEMP_PREFIX) and _older(e, TEMP_SECONDS)
            ]
        for name in [*names, *cut_short]:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / name).unlink()


def _is_note(name: str) -> bool:
    return name.endswith(NOTE_SUFFIX) and not name.startswith(TEMP_PREFIX)


def _older(entry: os.DirEntry[str], seconds: float) -> bool:
    try:
        return entry.stat().st_mtime < time.time() - seconds
    except FileNotFoundError:
        return False


def _days(note: Path) -> set[tuple[State, str]]:
    try:
        listed = json.loads(note.read_bytes()).get("days", [])
        return {(State(state), day) for state, day in listed if State(state) in FILED_STATES and is_day(day)}
    except (OSError, ValueError, TypeError, AttributeError):
        return set()
