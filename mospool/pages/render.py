"""The HTML pages as pure functions: a record folder or index rows in, UTF-8 bytes out.

Every value a postback carries is hostile: it reaches the page only through Jinja2's autoescaping, never as
a link or a source. Links are built here, from names the spool itself chose, as relative paths with every
segment percent-encoded, so the pages work under any URL prefix and when opened as files. No page loads
anything from elsewhere or runs any script; the style is inline (the browse site's CSP allows inline styles
and nothing else).
"""

from __future__ import annotations

import datetime as dt
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from mospool import record
from mospool.record import Folder
from mospool.spool import State, id_time

ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("mospool", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

# By file extension, because the browse site's Content-Type comes from the extension (deploy/nginx).
IMAGES = {"jpg", "jpeg", "png", "gif", "bmp", "webp"}
VIDEOS = {"mp4", "webm"}
AUDIOS = {"mp3", "m4a", "aac", "ogg", "wav"}
TEXTS = {"txt"}
LABELS = {
    "amr": "AMR voice recording", "3gp": "3GP video", "3g2": "3GP2 video", "mov": "QuickTime video",
    "heic": "HEIC photo", "vcf": "vCard contact", "ics": "calendar entry", "smil": "SMIL layout",
    "pdf": "PDF document", "bin": "file of unknown type",
}  # fmt: skip
SHOWN = {"image": "picture, ", "video": "video, ", "audio": "audio, ", "text": "text part, "}
TEXT_PART_LIMIT = 64 * 1024  # a text part is shown up to this many bytes; the file holds all of it

STAGES = {
    "read": "The stored postback file is damaged (it is kept whole as spool-file.postback).",
    "parse": "The body is not a postback mo-spool can read (see body.* for the exact bytes).",
    "media": "A media part of the MMS could not be downloaded.",
    "internal": "mo-spool hit a bug while filing it; the worker carried on.",
}
KINDS = {"mms_mo": "MMS", "sms_mo": "SMS", "status": "delivery status", "other": "notice"}

# Day-page cells are cut to these lengths, so a row (and so a page) has a size bound whatever arrives.
KIND_CHARS = 16
CELL_CHARS = 32
SNIPPET_CHARS = 80


def href(*segments: str) -> str:
    """A relative link from spool-chosen names: each segment percent-encoded (no scheme can sneak in)."""
    return "/".join(urllib.parse.quote(segment, safe="") for segment in segments)


def media_name(name: str) -> str | None:
    """The file name of a message's ``media/NN-name.ext`` entry, or None if it is anything else."""
    inner = name.removeprefix(f"{record.MEDIA}/")
    if not name.startswith(f"{record.MEDIA}/") or "/" in inner or inner.strip(".") == "":
        return None
    return inner


def day_of(spool_id: str) -> str | None:
    """The YYYY-MM-DD folder of a spool id, or None if it is not one."""
    try:
        return id_time(spool_id).strftime("%Y-%m-%d")
    except ValueError:
        return None


# --- the record page


@dataclass
class Part:
    """One media part as shown: what to show it with, its local link, and what it was."""

    show: str  # image | video | audio | text | link
    href: str | None
    label: str
    url: str | None = None
    content_type: str | None = None
    size: int | None = None
    text: str | None = None
    error: str | None = None


@dataclass
class Notice:
    number: int
    fields: list[tuple[str, str]]
    subject: str | None
    text: str | None
    parts: list[Part] = field(default_factory=list)


def record_page(folder: Folder) -> bytes:
    """The index.html of one record folder (processed, failed or duplicates), built from what it holds."""
    notices = folder.notices
    html = ENV.get_template("record.html").render(
        id=folder.spool_id,
        state=folder.state.value,
        day=day_of(folder.spool_id) or "",
        title=_title(notices[0] if notices else {}, folder.state),
        received_at=(folder.request or {}).get("received_at") or _first(notices, "received_at"),
        remote_addr=(folder.request or {}).get("remote_addr"),
        notices=[_notice(folder, n, notice) for n, notice in enumerate(notices, 1)],
        batch=len(notices) > 1,
        failure=_failure(folder),
        duplicate=_duplicate(folder),
        loose_media=_loose_media(folder) if not folder.messages else [],
        files=_files(folder),
    )
    return html.encode()


def _title(notice: Mapping[str, Any], state: State) -> str:
    kind = KINDS.get(str(notice.get("kind")), "postback")
    sender = notice.get("from")
    return f"{kind} from {sender}" if sender else f"{kind} ({state.value})"


def _first(notices: Sequence[Mapping[str, Any]], key: str) -> Any:
    return next((notice.get(key) for notice in notices if notice.get(key)), None)


def _notice(folder: Folder, number: int, notice: Mapping[str, Any]) -> Notice:
    copy_to = notice.get("copy_to") or []
    rows = [
        ("kind", KINDS.get(str(notice.get("kind")), str(notice.get("kind") or "?"))),
        ("from", notice.get("from")),
        ("to", notice.get("to")),
        ("copy to", ", ".join(str(number) for number in copy_to) if isinstance(copy_to, list) else copy_to),
        ("keyword", notice.get("keyword")),
        ("Sinch timestamp", notice.get("timestamp")),
        ("tracking id", notice.get("tracking_id")),
        ("origin / code", " / ".join(str(v) for v in (notice.get("origin"), notice.get("code")) if v)),
        ("operator", notice.get("operator_id")),
        ("status", notice.get("status")),
    ]
    fields = [(name, str(value)) for name, value in rows if value]
    media = notice.get("media") or []
    parts = [_part(folder, part) for part in media if isinstance(part, dict)]
    return Notice(number, fields, _text(notice.get("subject")), _text(notice.get("text")), parts)


def _text(value: Any) -> str | None:
    return str(value) if value else None


def _part(folder: Folder, part: Mapping[str, Any]) -> Part:
    name = str(part.get("file") or "")
    url = str(part["url"]) if part.get("url") else None
    inner = media_name(name)
    if inner is None:
        return Part("link", None, "not downloaded", url=url)
    shown = _shown(folder.path / record.MEDIA / inner, part.get("content_type"), part.get("bytes"))
    shown.url = url
    return shown


def _shown(path: Path, content_type: Any, size: Any) -> Part:
    extension = path.suffix.lstrip(".").lower()
    link = href(record.MEDIA, path.name)
    kind = "image" if extension in IMAGES else "video" if extension in VIDEOS else None
    kind = kind or ("audio" if extension in AUDIOS else "text" if extension in TEXTS else "link")
    label = (
        LABELS.get(extension, f"{extension.upper()} file")
        if kind == "link"
        else SHOWN[kind] + extension.upper()
    )
    shown = Part(kind, link, label, content_type=str(content_type) if content_type else None)
    shown.size = size if isinstance(size, int) else None
    if kind == "text":
        shown.text = _read_text(path)
    return shown


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(TEXT_PART_LIMIT + 1)
    except OSError:
        return "(the file cannot be read)"
    more = "\n… (cut here; the file holds the rest)" if len(data) > TEXT_PART_LIMIT else ""
    return data[:TEXT_PART_LIMIT].decode("utf-8", errors="replace") + more


def _loose_media(folder: Folder) -> list[Part]:
    """Failed and duplicate folders: the media fetched so far, whatever the notices say."""
    return [_shown(path, None, path.stat().st_size) for path in folder.media_files()]


@dataclass
class Failure:
    stage: str
    explained: str
    error: str
    parts: list[tuple[str, str]]
    attempts: Any
    failed_at: Any
    retry: str | None  # a dismissed record was handled by an operator: no retry


def _failure(folder: Folder) -> Failure | None:
    if folder.state not in (State.FAILED, State.DISMISSED):
        return None
    error = folder.error or {}
    stage = str(error.get("stage") or "unknown")
    found = error.get("parts")
    parts: list[Any] = found if isinstance(found, list) else []
    return Failure(
        stage=stage,
        explained=STAGES.get(stage, "The postback could not be filed."),
        error=str(error.get("error") or "no error.json in the folder"),
        parts=[(str(p.get("url") or "?"), str(p.get("error") or "?")) for p in parts if isinstance(p, dict)],
        attempts=error.get("attempts"),
        failed_at=error.get("failed_at"),
        retry=f"python -m mospool retry {folder.spool_id}" if folder.state is State.FAILED else None,
    )


@dataclass
class Duplicate:
    original: str
    href: str | None


def _duplicate(folder: Folder) -> Duplicate | None:
    if folder.state is not State.DUPLICATES:
        return None
    original = str((folder.duplicate or {}).get("duplicate_of") or "")
    day = day_of(original)
    link = "../../../" + href(State.PROCESSED, day, original, record.PAGE) if day else None
    return Duplicate(original or "unknown", link)


def _files(folder: Folder) -> list[tuple[str, str]]:
    """(link, what it is) for each file of the folder a person may want to open: one listing, no globbing."""
    names = sorted(os.listdir(folder.path))  # noqa: PTH208 (names only, one system call)
    described = {
        record.REQUEST: "what the receiver recorded (time, client address, headers)",
        record.ERROR: "why it failed",
        record.DUPLICATE: "what it duplicates",
        record.SPOOL_FILE: "the damaged spool file, whole",
    }
    found = [
        (name, "the body exactly as received") for name in names if name.startswith(f"{record.BODY_STEM}.")
    ]
    for name in names:
        if record.is_message_file(name):
            found.append((name, "the normalized record"))
        elif name in described:
            found.append((name, described[name]))
    return [(href(name), f"{name}: {what}") for name, what in found]


# --- the day pages and the root page


@dataclass(frozen=True)
class Row:
    """One notice in a day listing, every text cut to a bound."""

    link: str
    time: str
    kind: str
    sender: str
    recipient: str
    snippet: str
    preview: str | None
    outcome: str


def day_row(row: Mapping[str, Any]) -> Row:
    """A messages-table row (index.py) as shown on its day page."""
    spool_id, position = str(row["spool_id"]), int(row["position"])
    anchor = f"#notice-{position}" if position > 1 else ""
    image = row["first_image"]
    preview = _media_link(spool_id, str(image)) if image else None
    return Row(
        link=href(spool_id, record.PAGE) + anchor,
        time=_clock(row["received_at"], spool_id),
        kind=KINDS.get(str(row["kind"]), _cut(row["kind"], KIND_CHARS) or "?"),
        sender=_cut(row["sender"], CELL_CHARS),
        recipient=_cut(row["recipient"], CELL_CHARS),
        snippet=_cut(row["subject"] or row["text"], SNIPPET_CHARS),
        preview=preview,
        outcome=_outcome(row),
    )


def _media_link(spool_id: str, name: str) -> str | None:
    inner = media_name(name)
    if inner is None or inner.rsplit(".", 1)[-1].lower() not in IMAGES:
        return None
    return href(spool_id, record.MEDIA, inner)


def _clock(received_at: Any, spool_id: str) -> str:
    try:
        return dt.datetime.fromisoformat(str(received_at)).strftime("%H:%M:%S")
    except ValueError:
        return id_time(spool_id).strftime("%H:%M:%S") if day_of(spool_id) else "?"


def _outcome(row: Mapping[str, Any]) -> str:
    if row["state"] == State.FAILED:
        return _cut(row["reason"], SNIPPET_CHARS) or "failed"
    if row["state"] == State.DUPLICATES:
        return f"duplicate of {_cut(row['duplicate_of'], CELL_CHARS)}"
    count = int(row["media_count"] or 0)
    return f"{count} media" if count else "filed"


def _cut(value: Any, limit: int) -> str:
    text = " ".join(str(value).split()) if value else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class PageLink:
    link: str
    label: str


def day_page(
    state: str, day: str, rows: Sequence[Row], pages: Sequence[PageLink], note: str, generated: str
) -> bytes:
    """One page of a day's listing, newest first, with links to the day's other pages."""
    html = ENV.get_template("day.html").render(
        state=state, day=day, rows=rows, pages=pages, note=note, generated=generated
    )
    return html.encode()


@dataclass(frozen=True)
class DayCount:
    link: str
    day: str
    count: int


@dataclass
class Overview:
    """What the spool root page shows."""

    counts: dict[str, int]
    waiting: int
    waiting_capped: bool
    oldest_waiting_seconds: float
    deferred: int
    days: dict[str, list[DayCount]]
    reasons: list[tuple[str, int]]
    generated: str
    webhooks: dict[str, int] | None = None  # outbox/ and undelivered/ counts, once [forward] has run


def root_page(overview: Overview) -> bytes:
    html = ENV.get_template("root.html").render(
        o=overview, reasons=[(_cut(r, 160), n) for r, n in overview.reasons]
    )
    return html.encode()
