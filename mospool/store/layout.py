"""Every name in the spool directory, in one place: its folders, a record folder's files, the ids and days.

```
tmp/  incoming/<id>.postback  work/<id>.postback  work/<id>/  deferred/<id>/
<state>/YYYY-MM-DD/<id>/     a record folder (processed, failed, duplicates, dismissed)
<state>/YYYY-MM-DD/index.html, page-NNNN.html    the day's pages
outbox/  undelivered/        deliveries (mospool.store.outbox)
index.html  index.sqlite3    the front page, the record index
```

Only the store (this package) builds paths from these names; the rest of the project asks it by key.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import secrets

SUFFIX = ".postback"
ID_TIME = re.compile(r"(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)\.(\d{6})Z(?:-|$)")


class State(enum.StrEnum):
    """The spool's folders, in the order a postback moves through them: a file's folder is its state."""

    TMP = "tmp"
    INCOMING = "incoming"
    WORK = "work"
    DEFERRED = "deferred"
    PROCESSED = "processed"
    FAILED = "failed"
    DUPLICATES = "duplicates"
    DISMISSED = "dismissed"  # failed ones an operator has handled


STATES = tuple(State)
# States whose postbacks are finished record folders under <state>/YYYY-MM-DD/<id>/.
FILED_STATES = (State.PROCESSED, State.FAILED, State.DUPLICATES, State.DISMISSED)
# States whose postbacks are a spool file (incoming/, work/) or a folder holding one (deferred/).
WAITING_STATES = (State.INCOMING, State.WORK, State.DEFERRED)
# What makes a folder a spool: the receiver and the worker create these (dismissed/ may come later).
SPOOL_FOLDERS = (State.TMP, *WAITING_STATES, State.PROCESSED, State.FAILED, State.DUPLICATES)

# A record folder's files.
REQUEST = "request.json"
MESSAGE = "message.json"
ERROR = "error.json"
DUPLICATE = "duplicate.json"
RETRY = "retry.json"
SPOOL_FILE = "spool-file.postback"
MEDIA = "media"
BODY_STEM = "body"
PAGE = "index.html"  # a record's page; also a day folder's and the spool root's

INDEX_FILE = "index.sqlite3"


def message_name(position: int, count: int) -> str:
    """message.json for a single notice; message-001.json, message-002.json, … for a batch."""
    return MESSAGE if count == 1 else f"message-{position:03d}.json"


def is_message_file(name: str) -> bool:
    """message.json, or one of a batch's message-NNN.json."""
    return name == MESSAGE or (name.startswith("message-") and name.endswith(".json"))


def body_name(extension: str) -> str:
    return f"{BODY_STEM}.{extension}"


def is_body_file(name: str) -> bool:
    return name.startswith(f"{BODY_STEM}.")


def day_page_name(number: int) -> str:
    """A day's older notifications, ROWS_PER_PAGE a page: page-0001.html holds the oldest."""
    return f"page-{number:04d}.html"


def media_entry(name: str) -> str:
    """How message.json names a media file: media/<name>, relative to its record folder."""
    return f"{MEDIA}/{name}"


def media_file_name(entry: str) -> str | None:
    """The file name of a message's ``media/NN-name.ext`` entry, or None if it is anything else."""
    inner = entry.removeprefix(f"{MEDIA}/")
    if not entry.startswith(f"{MEDIA}/") or "/" in inner or inner.strip(".") == "":
        return None
    return inner


# --- ids and days


def new_id(now: dt.datetime | None = None) -> str:
    """A name that sorts by receive time and is unique across processes, threads and hosts."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%dT%H%M%S.%fZ-") + secrets.token_hex(6)


def id_time(postback_id: str) -> dt.datetime:
    """The receive time encoded in an id (UTC); ValueError for a name that is not an id."""
    match = ID_TIME.match(postback_id)
    if not match:
        raise ValueError(f"not a postback id: {postback_id!r}")
    year, month, day, hour, minute, second, micros = map(int, match.groups())  # 10x cheaper than strptime
    return dt.datetime(year, month, day, hour, minute, second, micros, tzinfo=dt.UTC)


def id_age_seconds(postback_id: str | None) -> float:
    """How long ago the postback of an id was received (0 for None, or an id from a clock ahead of ours)."""
    if postback_id is None:
        return 0.0
    return max((dt.datetime.now(dt.UTC) - id_time(postback_id)).total_seconds(), 0.0)


def is_id(name: str) -> bool:
    try:
        id_time(name)
    except ValueError:
        return False
    return True


def id_day(postback_id: str) -> str:
    """YYYY-MM-DD, the UTC receive date of an id: the name of its day folder."""
    if not ID_TIME.match(postback_id):
        raise ValueError(f"not a postback id: {postback_id!r}")
    return f"{postback_id[:4]}-{postback_id[4:6]}-{postback_id[6:8]}"


def is_day(name: str) -> bool:
    """A day folder's name: YYYY-MM-DD."""
    if len(name) != 10:
        return False
    try:
        dt.date.fromisoformat(name)
    except ValueError:
        return False
    return True


# --- a record's media/ folder, as the fetcher fills it

MEDIA_TEMP_PATTERN = ".*.part"


def media_part(index: int, stem: str, extension: str) -> str:
    """NN-<name>.<ext>: the NN keeps the parts in their order."""
    return f"{index:02d}-{stem}.{extension}"


def media_part_pattern(index: int) -> str:
    return f"{index:02d}-*"


def media_temp(index: int) -> str:
    """Where a part is written until it is whole: hidden, so media/ never shows half a file."""
    return f".{index:02d}.part"
