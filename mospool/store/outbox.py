"""Deliveries waiting in the spool: one file per message to send, for each destination of an output.

```
outbox/<spool_id>.<NNN>.entry              an entry: a metadata line, then the exact bytes that are sent
outbox/<spool_id>.<NNN>.retry.json         its schedule once a try failed (attempts, next_try_epoch, errors)
undelivered/<spool_id>.<NNN>.entry         an entry that gave up (refused, or retries ran out)
undelivered/<spool_id>.<NNN>.retry.json    its history and the reason
```

``NNN`` is the notice's position in its postback (001 for a single one). The webhooks keep their entries
at the top of ``outbox/`` and ``undelivered/``; any other destination in ``outbox/<name>/`` and
``undelivered/<name>/``. An entry is written by the filer with its record (same sync), or by ``add`` for a
record filed earlier (`mospool resend`: temp files, one sync, renames), and never modified:
every retry sends the same bytes under the same id. A schedule is replaced whole, parking and redelivery are
renames, so a crash leaves either the old or the new state. Removing an entry after delivery is not synced:
a crash may bring it back, and the repeat carries the same id, which the receiving end uses to drop it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mospool.durable import (
    FilesystemSync,
    fsync_dir,
    make_private_dir,
    owned_like,
    replace_file,
    write_file,
    write_new,
)
from mospool.store.postback import decode_frame, encode, sealed
from mospool.store.record import read_json

OUTBOX = "outbox"
UNDELIVERED = "undelivered"
ENTRY_SUFFIX = ".entry"
SCHEDULE_SUFFIX = ".retry.json"
LEGACY_SUFFIX = ".json"  # entries written before 2026-12: the body as a JSON string inside JSON
TEMP_SUFFIX = ".tmp"
STALE_TEMP_SECONDS = 60.0
ADD_GROUP = 512  # entries add() makes durable with one sync: bounds the temp files a crash can leave


def entry_name(spool_id: str, position: int) -> str:
    return f"{spool_id}.{position:03d}"


def entry_spool_id(name: str) -> str:
    return name.rsplit(".", 1)[0]


@dataclass(frozen=True)
class Entry:
    """One message to deliver: what is sent, byte for byte, on every try, and whose it is."""

    id: str  # sent with every try (a webhook's webhook-id): stable, so repeats can be dropped
    spool_id: str
    position: int
    state: str
    body: bytes
    record: str = ""  # the record folder, relative to the spool, where the filer publishes it

    @property
    def name(self) -> str:
        return entry_name(self.spool_id, self.position)

    def to_bytes(self) -> bytes:
        meta = {
            "id": self.id,
            "spool_id": self.spool_id,
            "position": self.position,
            "state": self.state,
            "record": self.record,
        }
        return encode(sealed(meta, self.body), self.body)

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> Entry:
        """Raises ValueError when the file is not a whole entry."""
        try:
            meta, body = decode_frame(name, data)
            return cls(
                meta["id"], meta["spool_id"], int(meta["position"]), meta["state"], body, meta["record"]
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an outbox entry: {exc}") from exc


class Outbox:
    """Paths and atomic moves of one destination's outbox and undelivered folders inside one spool."""

    def __init__(self, spool_root: Path, destination: str = "") -> None:
        self.root = Path(spool_root)
        self.destination = destination
        self.pending = self.root / OUTBOX / destination if destination else self.root / OUTBOX
        self.undelivered = self.root / UNDELIVERED / destination if destination else self.root / UNDELIVERED

    @property
    def pending_label(self) -> str:
        """The outbox folder as a person finds it in the spool (outbox, or outbox/<name>)."""
        return self.pending.relative_to(self.root).as_posix()

    @property
    def parked_label(self) -> str:
        return self.undelivered.relative_to(self.root).as_posix()

    def create(self) -> None:
        for folder in (self.pending, self.undelivered):
            make_private_dir(folder, parents=True)
        self._migrate()

    def exists(self) -> bool:
        """Whether this destination ever had an outbox (its output was switched on once)."""
        return self.pending.is_dir()

    def entry_path(self, name: str, folder: Path | None = None) -> Path:
        return (folder or self.pending) / (name + ENTRY_SUFFIX)

    def schedule_path(self, name: str, folder: Path | None = None) -> Path:
        return (folder or self.pending) / (name + SCHEDULE_SUFFIX)

    # --- reading

    @staticmethod
    def names(folder: Path) -> Iterator[str]:
        """The entries in ``folder`` (outbox or undelivered), streamed in directory order."""
        if not folder.is_dir():
            return
        with os.scandir(folder) as found:
            for item in found:
                if _is_entry(item.name):
                    yield item.name.removesuffix(ENTRY_SUFFIX)

    def scan(self) -> tuple[list[str], set[str]]:
        """The waiting entries, and those of them that have a schedule (were tried before), in one pass."""
        entries, scheduled = [], set()
        with os.scandir(self.pending) as found:
            for item in found:
                if _is_entry(item.name):
                    entries.append(item.name.removesuffix(ENTRY_SUFFIX))
                elif item.name.endswith(SCHEDULE_SUFFIX):
                    scheduled.add(item.name.removesuffix(SCHEDULE_SUFFIX))
        return entries, scheduled & set(entries)

    def count(self, folder: Path) -> int:
        return sum(1 for _ in self.names(folder))

    def read(self, name: str, folder: Path | None = None) -> Entry:
        """Raises FileNotFoundError when gone, ValueError when not a whole entry."""
        return Entry.from_bytes(name, _read_whole(f"{folder or self.pending}/{name}{ENTRY_SUFFIX}"))

    def schedule(self, name: str, folder: Path | None = None) -> dict[str, Any]:
        return read_json(self.schedule_path(name, folder)) or {}

    # --- changing

    def add(self, entries: Iterable[Entry]) -> list[str]:
        """Queue entries of records filed earlier; returns the names queued, leaving out any entry waiting
        already. Each appears whole or not at all: written to a hidden temp file, made durable with its
        group by one ``syncfs``, renamed into place; the outbox folder is fsynced before this returns."""
        queued: list[str] = []
        group: list[tuple[Path, Entry]] = []
        filesystem = FilesystemSync(self.pending)
        for entry in entries:
            if not self.entry_path(entry.name).exists():
                temp = self.pending / f".{entry.name}.{os.urandom(4).hex()}{TEMP_SUFFIX}"
                write_file(temp, entry.to_bytes(), sync=False)
                owned_like(temp, self.pending)
                group.append((temp, entry))
            if len(group) >= ADD_GROUP:
                queued += self._publish(group, filesystem)
                group = []
        queued += self._publish(group, filesystem)
        return queued

    def _publish(self, group: list[tuple[Path, Entry]], filesystem: FilesystemSync) -> list[str]:
        if not group:
            return []
        filesystem.sync()
        for temp, entry in group:
            os.rename(temp, self.entry_path(entry.name))
        fsync_dir(self.pending)
        return [entry.name for _, entry in group]

    def set_schedule(self, name: str, state: dict[str, Any], folder: Path | None = None) -> None:
        """Replace the schedule whole: a crash leaves the old one or the new one."""
        data = json.dumps(state, indent=2).encode() + b"\n"
        replace_file(self.schedule_path(name, folder), data, TEMP_SUFFIX)

    def remove(self, name: str, scheduled: bool = True) -> None:
        """Delivered (or not to be delivered): the entry first, so a crash leaves at most a stray schedule."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self.pending}/{name}{ENTRY_SUFFIX}")  # noqa: PTH108 (once per delivery: no pathlib)
        if scheduled:
            self.schedule_path(name).unlink(missing_ok=True)

    def park(self, name: str, schedule: dict[str, Any], reason: str) -> None:
        """Give up on an entry: its history and reason, then the entry itself, into undelivered."""
        parked = {**schedule, "reason": reason, "parked_at": time.time()}
        self.set_schedule(name, parked, self.undelivered)
        os.rename(self.entry_path(name), self.entry_path(name, self.undelivered))
        self.schedule_path(name).unlink(missing_ok=True)

    def redeliver(self, name: str) -> None:
        """Back into the outbox with a fresh schedule. Raises FileNotFoundError when it is not undelivered."""
        self.schedule_path(name).unlink(missing_ok=True)
        os.rename(self.entry_path(name, self.undelivered), self.entry_path(name))
        self.schedule_path(name, self.undelivered).unlink(missing_ok=True)

    def clean(self) -> int:
        """Remove schedules whose entry is gone (a crash between two steps) and stale temp files."""
        removed = 0
        for folder in (self.pending, self.undelivered):
            with os.scandir(folder) as found:
                stray = [Path(item.path) for item in found if self._stray(folder, item)]
            for path in stray:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        return removed

    def _stray(self, folder: Path, item: os.DirEntry[str]) -> bool:
        if item.name.endswith(TEMP_SUFFIX):
            return item.stat().st_mtime < time.time() - STALE_TEMP_SECONDS
        if item.name.endswith(SCHEDULE_SUFFIX):
            return not self.entry_path(item.name.removesuffix(SCHEDULE_SUFFIX), folder).exists()
        return False

    def _migrate(self) -> None:
        """Entries of an older release (<name>.json, the body a JSON string) become <name>.entry."""
        for folder in (self.pending, self.undelivered):
            with os.scandir(folder) as found:
                legacy = [item.name for item in found if _is_legacy_entry(item.name)]
            for file_name in legacy:
                old = folder / file_name
                name = file_name.removesuffix(LEGACY_SUFFIX)
                try:
                    entry = _legacy_entry(old.read_bytes())
                except ValueError:
                    continue  # damaged: left as it is, for a person to look at
                with contextlib.suppress(FileExistsError):
                    write_new(self.entry_path(name, folder), entry.to_bytes())
                old.unlink()


def _legacy_entry(data: bytes) -> Entry:
    try:
        value = json.loads(data)
        return Entry(
            value["webhook_id"],
            value["spool_id"],
            int(value["position"]),
            value["state"],
            value["body"].encode(),
            value.get("record", ""),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not an outbox entry: {exc}") from exc


def _read_whole(path: str) -> bytes:
    """A small file's bytes with three system calls: once per delivery, where pathlib's cost shows."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _is_entry(file_name: str) -> bool:
    return file_name.endswith(ENTRY_SUFFIX) and not file_name.startswith(".")


def _is_legacy_entry(file_name: str) -> bool:
    return (
        file_name.endswith(LEGACY_SUFFIX)
        and not file_name.endswith(SCHEDULE_SUFFIX)
        and not file_name.startswith(".")
    )
