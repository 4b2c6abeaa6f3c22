"""The outbox: one file per message waiting to be POSTed to the business's application.

```
outbox/<spool_id>.<NNN>.json             an entry: the exact request body and its stable webhook-id
outbox/<spool_id>.<NNN>.retry.json       its schedule once a try failed (attempts, next_try_epoch, errors)
undelivered/<spool_id>.<NNN>.json        an entry that gave up (a 4xx, or retries ran out)
undelivered/<spool_id>.<NNN>.retry.json  its history and the reason
```

``NNN`` is the notice's position in its postback (001 for a single one). An entry is written by the filer
with the record (same sync) and never modified: every retry sends the same bytes with the same id. A
schedule is replaced whole (temp file, fsync, rename), parking and redelivery are renames, so a crash
leaves either the old or the new state. Deleting an entry after a 2xx is not synced: a crash may bring it
back, and the repeat carries the same webhook-id, which the application uses to drop it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mospool.spool import DIR_MODE, Spool

OUTBOX = "outbox"
UNDELIVERED = "undelivered"
ENTRY_SUFFIX = ".json"
SCHEDULE_SUFFIX = ".retry.json"
TEMP_SUFFIX = ".tmp"
STALE_TEMP_SECONDS = 60.0


def entry_name(spool_id: str, position: int) -> str:
    return f"{spool_id}.{position:03d}"


def webhook_id(spool_id: str, position: int) -> str:
    return f"msg_{spool_id}_{position:03d}"


@dataclass(frozen=True)
class Entry:
    """One message to deliver: what is sent, byte for byte, on every try."""

    spool_id: str
    position: int
    state: str
    body: bytes
    record: str = ""  # the record folder, relative to the spool, where the filer publishes it

    @property
    def name(self) -> str:
        return entry_name(self.spool_id, self.position)

    @property
    def webhook_id(self) -> str:
        return webhook_id(self.spool_id, self.position)

    def to_bytes(self) -> bytes:
        value = {
            "webhook_id": self.webhook_id,
            "spool_id": self.spool_id,
            "position": self.position,
            "state": self.state,
            "record": self.record,
            "body": self.body.decode(),
        }
        return json.dumps(value, indent=2, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> Entry:
        """Raises ValueError (or KeyError/TypeError as ValueError) when the file is not a whole entry."""
        try:
            value = json.loads(data)
            spool_id, position, state = value["spool_id"], int(value["position"]), value["state"]
            return cls(spool_id, position, state, value["body"].encode(), value.get("record", ""))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not an outbox entry: {exc}") from exc


class Outbox:
    """Paths and atomic moves of outbox/ and undelivered/ inside one spool."""

    def __init__(self, spool_root: Path) -> None:
        self.root = Path(spool_root)
        self.pending = self.root / OUTBOX
        self.undelivered = self.root / UNDELIVERED

    def create(self) -> None:
        for folder in (self.pending, self.undelivered):
            folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)

    def entry_path(self, name: str, folder: Path | None = None) -> Path:
        return (folder or self.pending) / (name + ENTRY_SUFFIX)

    def schedule_path(self, name: str, folder: Path | None = None) -> Path:
        return (folder or self.pending) / (name + SCHEDULE_SUFFIX)

    # --- reading

    @staticmethod
    def names(folder: Path) -> Iterator[str]:
        """The entries in ``folder`` (outbox/ or undelivered/), streamed in directory order."""
        if not folder.is_dir():
            return
        with os.scandir(folder) as found:
            for item in found:
                if _is_entry(item.name):
                    yield item.name.removesuffix(ENTRY_SUFFIX)

    def scan(self) -> tuple[list[str], set[str]]:
        """outbox/'s entries, and those of them that have a schedule (were tried before), in one pass."""
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
        return Entry.from_bytes(_read_whole(f"{folder or self.pending}/{name}{ENTRY_SUFFIX}"))

    def schedule(self, name: str, folder: Path | None = None) -> dict[str, Any]:
        try:
            value = json.loads(self.schedule_path(name, folder).read_bytes())
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    # --- changing

    def set_schedule(self, name: str, state: dict[str, Any], folder: Path | None = None) -> None:
        """Replace the schedule whole: a crash leaves the old one or the new one."""
        target = self.schedule_path(name, folder)
        temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        Spool.write_new(temp, json.dumps(state, indent=2).encode() + b"\n")
        os.rename(temp, target)

    def remove(self, name: str, scheduled: bool = True) -> None:
        """Delivered (or not to be delivered): the entry first, so a crash leaves at most a stray schedule."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self.pending}/{name}{ENTRY_SUFFIX}")  # noqa: PTH108 (once per delivery: no pathlib)
        if scheduled:
            self.schedule_path(name).unlink(missing_ok=True)

    def park(self, name: str, schedule: dict[str, Any], reason: str) -> None:
        """Give up on an entry: its history and reason, then the entry itself, into undelivered/."""
        parked = {**schedule, "reason": reason, "parked_at": time.time()}
        self.set_schedule(name, parked, self.undelivered)
        os.rename(self.entry_path(name), self.entry_path(name, self.undelivered))
        self.schedule_path(name).unlink(missing_ok=True)

    def redeliver(self, name: str) -> None:
        """Back into outbox/ with a fresh schedule. Raises FileNotFoundError when it is not undelivered."""
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
    return (
        file_name.endswith(ENTRY_SUFFIX)
        and not file_name.endswith(SCHEDULE_SUFFIX)
        and not file_name.startswith(".")
    )
