"""The record page: one record folder in, its HTML out (see ``render`` for what every page keeps to)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mospool.config import COMMAND
from mospool.outputs.pages.render import (
    AUDIOS,
    ENV,
    IMAGES,
    KINDS,
    VIDEOS,
    Shown,
    day_of,
    href,
    shown_time,
)
from mospool.store import Folder, State
from mospool.store.layout import BODY_STEM, ERROR, MEDIA, PAGE, SPOOL_FILE, media_file_name
from mospool.store.record import described_files
from mospool.store.records import files_of

TEXTS = {"txt"}
LABELS = {
    "amr": "AMR voice recording", "3gp": "3GP video", "3g2": "3GP2 video", "mov": "QuickTime video",
    "heic": "HEIC photo", "vcf": "vCard contact", "ics": "calendar entry", "smil": "SMIL layout",
    "pdf": "PDF document", "bin": "file of unknown type",
}  # fmt: skip
SHOWN = {"image": "picture, ", "video": "video, ", "audio": "audio, ", "text": "text part, "}
TEXT_PART_LIMIT = 64 * 1024  # a text part is shown up to this many bytes; the file holds all of it
TEXT_LIMIT = 16 * 1024  # characters of a subject or text shown; the body and message.json hold all of it

STAGES = {
    "read": f"The stored postback file is damaged (it is kept whole as {SPOOL_FILE}).",
    "parse": f"The body is not a postback mo-spool can read (see {BODY_STEM}.* for the exact bytes).",
    "media": "A media part of the MMS could not be downloaded.",
    "internal": "mo-spool hit a bug while filing it; the worker carried on.",
}


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
    fields: list[tuple[str, str | Shown]]
    subject: str | None
    text: str | None
    parts: list[Part] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)  # what was cut short on the page ("subject", "text")
    not_fetched: int = 0  # parts beyond [media] max_parts


def record_page(
    folder: Folder, located: Path | None = None, names: Sequence[str] | None = None, zone: dt.tzinfo = dt.UTC
) -> bytes:
    """The page of one record folder, built from what it holds; ``located``: where its files are now, if
    not yet at ``folder.path`` (the build folder, before it is published); ``names``: its files, when the
    caller knows them (else the folder is listed); times shown in ``zone``."""
    files_at = located or folder.path
    notices = folder.notices
    received_at = (folder.request or {}).get("received_at") or _first(notices, "received_at")
    html = ENV.get_template("record.html").render(
        id=folder.spool_id,
        state=folder.state.value,
        day=day_of(folder.spool_id) or "",
        title=_title(notices[0] if notices else {}, folder.state),
        received_at=shown_time(received_at, zone),
        remote_addr=(folder.request or {}).get("remote_addr"),
        notices=[_notice(files_at, n, notice, zone) for n, notice in enumerate(notices, 1)],
        batch=len(notices) > 1,
        failure=_failure(folder, zone),
        duplicate=_duplicate(folder),
        loose_media=_loose_media(folder, files_at) if not folder.messages else [],
        files=_files(files_of(files_at) if names is None else sorted(names)),
    )
    return html.encode()


def _title(notice: Mapping[str, Any], state: State) -> str:
    kind = KINDS.get(str(notice.get("kind")), "postback")
    sender = notice.get("from")
    return f"{kind} from {sender}" if sender else f"{kind} ({state.value})"


def _first(notices: Sequence[Mapping[str, Any]], key: str) -> Any:
    return next((notice.get(key) for notice in notices if notice.get(key)), None)


def _notice(files_at: Path, number: int, notice: Mapping[str, Any], zone: dt.tzinfo) -> Notice:
    copy_to = notice.get("copy_to") or []
    status, details = notice.get("status"), notice.get("status_details")
    rows: list[tuple[str, Any]] = [
        ("kind", KINDS.get(str(notice.get("kind")), str(notice.get("kind") or "?"))),
        ("from", notice.get("from")),
        ("to", notice.get("to")),
        ("copy to", ", ".join(str(number) for number in copy_to) if isinstance(copy_to, list) else copy_to),
        ("keyword", notice.get("keyword")),
        ("Sinch timestamp", shown_time(notice.get("timestamp"), zone)),
        ("tracking id", notice.get("tracking_id")),
        ("origin / code", " / ".join(str(v) for v in (notice.get("origin"), notice.get("code")) if v)),
        ("operator", notice.get("operator_id")),
        ("operator name", notice.get("operator_name")),
        ("status", status),
        ("status details", details if details != status else None),  # Sinch's status may be its details
        ("MMS id", notice.get("mms_id")),
        ("sent as", notice.get("sent_as")),
        ("client reference", notice.get("client_reference")),
    ]
    fields = [(name, value if isinstance(value, Shown) else str(value)) for name, value in rows if value]
    media = notice.get("media") or []
    parts = [_part(files_at, part) for part in media if isinstance(part, dict)]
    subject, text = _text(notice.get("subject")), _text(notice.get("text"))
    cut = [
        name for name, value in (("subject", subject), ("text", text)) if value and len(value) > TEXT_LIMIT
    ]
    not_fetched = notice.get("media_not_fetched")
    return Notice(
        number,
        fields,
        subject[:TEXT_LIMIT] if subject else None,
        text[:TEXT_LIMIT] if text else None,
        parts,
        cut,
        _count(not_fetched),
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _text(value: Any) -> str | None:
    return str(value) if value else None


def _part(files_at: Path, part: Mapping[str, Any]) -> Part:
    name = str(part.get("file") or "")
    url = str(part["url"]) if part.get("url") else None
    inner = media_file_name(name)
    if inner is None:
        return Part("link", None, "not downloaded", url=url)
    shown = _shown(files_at / MEDIA / inner, part.get("content_type"), part.get("bytes"))
    shown.url = url
    return shown


def _shown(path: Path, content_type: Any, size: Any) -> Part:
    extension = path.suffix.lstrip(".").lower()
    link = href(MEDIA, path.name)
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


def _loose_media(folder: Folder, files_at: Path) -> list[Part]:
    """Failed and duplicate folders: the media fetched so far, whatever the notices say."""
    return [_shown(path, None, path.stat().st_size) for path in folder.media_files(files_at)]


@dataclass
class Failure:
    stage: str
    explained: str
    error: str
    parts: list[tuple[str, str]]
    attempts: Any
    failed_at: Any
    retry: str | None  # a dismissed record was handled by an operator: no retry
    not_fetched: int = 0  # parts beyond [media] max_parts


def _failure(folder: Folder, zone: dt.tzinfo) -> Failure | None:
    if folder.state not in (State.FAILED, State.DISMISSED):
        return None
    error = folder.error or {}
    stage = str(error.get("stage") or "unknown")
    found = error.get("parts")
    parts: list[Any] = found if isinstance(found, list) else []
    return Failure(
        stage=stage,
        explained=STAGES.get(stage, "The postback could not be filed."),
        error=str(error.get("error") or f"no {ERROR} in the folder"),
        parts=[(str(p.get("url") or "?"), str(p.get("error") or "?")) for p in parts if isinstance(p, dict)],
        attempts=error.get("attempts"),
        failed_at=shown_time(error.get("failed_at"), zone),
        retry=f"{COMMAND} retry {folder.spool_id}" if folder.state is State.FAILED else None,
        not_fetched=_count(error.get("parts_not_fetched")),
    )


@dataclass
class Duplicate:
    original: str
    href: str | None
    elsewhere: str | None = None  # the VM that holds the original, when it is not this one


def _duplicate(folder: Folder) -> Duplicate | None:
    if folder.state is not State.DUPLICATES:
        return None
    note = folder.duplicate or {}
    original = str(note.get("duplicate_of") or "")
    holder, here = note.get("duplicate_of_node"), note.get("node")
    if holder and here and holder != here:  # filed on another VM: its page is in that VM's spool
        return Duplicate(original or "unknown", None, str(holder))
    day = day_of(original)
    link = "../../../" + href(State.PROCESSED, day, original, PAGE) if day else None
    return Duplicate(original or "unknown", link)


def _files(names: Sequence[str]) -> list[tuple[str, str]]:
    """(link, what it is) for each file of the folder a person may want to open."""
    return [(href(note.name), f"{note.name}: {note.what}") for note in described_files(names)]
