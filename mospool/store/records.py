"""Finding and moving postbacks by key: the one walker of ``<state>/YYYY-MM-DD/<id>/``, and what an operator
does to a record (requeue a failed one, dismiss it, purge old days). What ``postsuper`` asks of Postfix's
queue code, for the spool.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mospool.durable import fsync_dir, make_private_dir, owned_like, write_new
from mospool.english import listed
from mospool.store.layout import (
    ERROR,
    FILED_STATES,
    MEDIA,
    REQUEST,
    RETRY,
    SPOOL_FILE,
    SUFFIX,
    WAITING_STATES,
    State,
    id_day,
    is_body_file,
    is_day,
    is_id,
    is_message_file,
)
from mospool.store.postback import encode, sealed
from mospool.store.record import Folder, read_folder, read_json

# show's JSON files, in the order it prints them, under these keys.
SHOWN_FILES = ("message", "request", "error", "duplicate", "retry")


class NotFound(LookupError):
    """No postback has that id, or the id's start names several; the message says which."""


class NotMovable(ValueError):
    """A record that cannot be moved the way it was asked (not failed, or cannot be rebuilt)."""


@dataclass(frozen=True)
class Located:
    """A postback found by id: its state and where it is (a spool file, or a folder)."""

    state: State
    path: Path

    @property
    def id(self) -> str:
        return self.path.name.removesuffix(SUFFIX)


class Records:
    """The postbacks of one spool by key: every state's walker, look-ups by id, and the operator's moves."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # --- walking

    def days(self, state: State) -> list[str]:
        """The day folders (YYYY-MM-DD) of a filed state, oldest first."""
        folder = self.root / state
        if not folder.is_dir():
            return []
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if is_day(e.name) and e.is_dir(follow_symlinks=False))

    def day_dir(self, state: State, day: str) -> Path:
        return self.root / state / day

    def in_day(self, state: State, day: str) -> list[Path]:
        """The record folders of one day, oldest first (not the day's pages)."""
        with os.scandir(self.day_dir(state, day)) as entries:
            return sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))

    def folders(self, state: State, since: dt.date | None = None) -> Iterator[Path]:
        """Every record folder of a filed state, oldest first, from the day ``since`` on."""
        for day in self.days(state):
            if since is None or day >= since.isoformat():
                yield from self.in_day(state, day)

    def waiting(self, state: State) -> Iterator[Path]:
        """Postbacks in incoming/ and work/ (spool files) or deferred/ (folders); not the build folders."""
        folder = self.root / state
        for path in sorted(folder.iterdir()):
            if path.name.endswith(SUFFIX) or (state is State.DEFERRED and path.is_dir()):
                yield path

    def count(self, state: State) -> int:
        if state in FILED_STATES:
            return sum(1 for _ in self.folders(state))
        return sum(1 for _ in self.waiting(state))

    def relative(self, path: Path) -> str:
        """A path inside the spool as the index records it: relative to the spool's root."""
        return os.fspath(path.relative_to(self.root))

    # --- look-ups

    def record_dir(self, state: State, postback_id: str) -> Path:
        return self.root / state / id_day(postback_id) / postback_id

    def filed_state(self, path: Path) -> State:
        """The state of a record folder, from where it is: <state>/YYYY-MM-DD/<id>."""
        return State(path.parent.parent.name)

    def read(self, path: Path) -> Folder:
        return read_folder(path, self.filed_state(path))

    def find(self, wanted: str) -> Located:
        """The postback with id ``wanted``, or the only one whose id starts with it; NotFound if none."""
        exact = self._exact(wanted)
        if exact:
            return exact
        matches: dict[str, Located] = {}
        for found in self._by_prefix(wanted):
            matches.setdefault(found.id, found)
        if len(matches) == 1:
            return next(iter(matches.values()))
        if not matches:
            raise NotFound(f"no postback with id {wanted}, nor one whose id starts with it")
        names = sorted(matches)
        raise NotFound(f"{wanted} is the start of {len(names)} ids: {listed(names)}; give more of the id")

    def _exact(self, postback_id: str) -> Located | None:
        if is_id(postback_id):
            for state in FILED_STATES:
                folder = self.record_dir(state, postback_id)
                if folder.is_dir():
                    return Located(state, folder)
        for state in WAITING_STATES:
            for candidate in (self.root / state / (postback_id + SUFFIX), self.root / state / postback_id):
                if candidate.exists():
                    return Located(state, candidate)
        return None

    def _by_prefix(self, prefix: str) -> Iterator[Located]:
        """Ids start with their receive date (YYYYMMDD), so only the matching day folders are read."""
        for state in FILED_STATES:
            for day in self.days(state):
                if day.replace("-", "").startswith(prefix[:8]):
                    for folder in self.in_day(state, day):
                        if folder.name.startswith(prefix):
                            yield Located(state, folder)
        for state in WAITING_STATES:
            yield from (Located(state, p) for p in self.waiting(state) if p.name.startswith(prefix))

    def retry_schedule(self, folder: Path) -> dict[str, Any]:
        """A deferred postback's retry schedule ({} if it has none)."""
        return read_json(folder / RETRY) or {}

    def contents(self, found: Located) -> dict[str, Any]:
        """Every JSON file of a record (or deferred) folder, its batch's messages, its files and media."""
        path = found.path
        result: dict[str, Any] = {}
        for key in SHOWN_FILES:
            value = read_json(path / f"{key}.json")
            if value is not None:
                result[key] = value
        batch = sorted(p for p in path.glob("message-*.json") if is_message_file(p.name))
        if batch:
            result["messages"] = [read_json(p) for p in batch]
        result["files"] = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
        media = path / MEDIA
        if media.is_dir():
            result["media"] = sorted(p.name for p in media.iterdir())
        return result

    # --- moving

    def requeue(self, folder: Path) -> Path:
        """failed/<date>/<id>/ back to incoming/<id>.postback, keeping its history and any media fetched.

        The folder moves to work/<id>/ first (so the worker cannot see it as filed), the rebuilt spool file is
        put inside it (where crash recovery finds it), and only then released to incoming/.
        """
        meta = read_json(folder / REQUEST)
        bodies = sorted(p for p in folder.iterdir() if is_body_file(p.name))
        if meta is None or not bodies:
            raise NotMovable(f"{folder} has no {REQUEST} and body: it cannot be rebuilt (see {SPOOL_FILE})")
        body = bodies[0].read_bytes()
        error = read_json(folder / ERROR) or {}
        meta["previous_failures"] = [*meta.get("previous_failures", []), error]
        build = self.root / State.WORK / folder.name
        folder.rename(build)
        work_file = build / (folder.name + SUFFIX)
        write_new(work_file, encode(sealed(meta, body), body))
        for leftover in build.iterdir():
            if leftover.is_file() and leftover != work_file:
                leftover.unlink()
        target = self.root / State.INCOMING / work_file.name
        work_file.rename(target)
        return target

    def dismiss(self, folder: Path) -> Path:
        """failed/<date>/<id>/ to dismissed/<date>/<id>/ whole, in one rename; both folders fsynced."""
        target = self.record_dir(State.DISMISSED, folder.name)
        if target.exists():
            raise NotMovable(f"{target} already exists")
        for new_dir in (target.parent.parent, target.parent):
            self._make_dir(new_dir)
        os.rename(folder, target)
        fsync_dir(target.parent)
        fsync_dir(folder.parent)
        return target

    def _make_dir(self, path: Path) -> None:
        """A folder owned like the spool, so the services (and purge, run as them) can still manage it."""
        if path.is_dir():
            return
        make_private_dir(path)
        owned_like(path, self.root)
        fsync_dir(path.parent)

    def days_before(self, state: State, cutoff: dt.date) -> list[str]:
        return [day for day in self.days(state) if day < cutoff.isoformat()]

    def purge_day(self, state: State, day: str) -> None:
        """Delete one day folder of a filed state, every record in it."""
        shutil.rmtree(self.day_dir(state, day))


def failed_only(found: Located, wanted: str, verb: str) -> Path:
    """The folder of a failed postback (asked for as ``wanted``); NotMovable naming where it is otherwise."""
    if found.state is not State.FAILED:
        raise NotMovable(
            f"{wanted} is in {found.state}/, not {State.FAILED}/: only failed postbacks can be {verb}"
        )
    return found.path


def day_prefix(state: State, day: str) -> str:
    """How the index names the folders of one day: every record folder of it starts with this."""
    return f"{state}/{day}/"


def day_range(state: State, day: str) -> tuple[str, str]:
    """(low, high): every record folder of one day sorts between them, as the index names folders."""
    return f"{state}/{day}/", f"{state}/{day}0"  # '0' follows '/'


def state_range(state: State) -> tuple[str, str]:
    """(low, high): every record folder of one state sorts between them, as the index names folders."""
    return f"{state}/", f"{state}0"


def files_of(folder: Path) -> Sequence[str]:
    return sorted(os.listdir(folder))  # noqa: PTH208 (names only, one system call)
