"""Parse a spooled postback body into records. Pure: bytes and a content type in, records out.

Accepts every dialect Sinch sends: JSON, lowercase XML `<postback>` with hyphenated tags, the legacy
uppercase `<POSTBACK>` (with or without `<NOTIFICATION>` wrappers, several of which make a batch), and
form-encoded bodies. Field names match case-insensitively and with or without `-`/`_`. A JSON list of
objects is treated as a batch, like several `<NOTIFICATION>`s. Anything else raises ParseError, and no
other exception ever escapes `parse_postback`.
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
import re
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import defusedxml
import defusedxml.ElementTree as SafeET

Fields = dict[str, Any]


class ParseError(ValueError):
    """The body is not a postback we can read; the message says why."""


@dataclass(frozen=True)
class Record:
    kind: str
    origin: str | None
    code: str | None
    sender: str | None
    to: str | None
    copy_to: tuple[str, ...]
    keyword: str | None
    tracking_id: str | None
    operator_id: str | None
    timestamp: str | None
    subject: str | None
    text: str | None
    status: str | None
    media_urls: tuple[str, ...]
    fields: Fields

    def to_message(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "origin": self.origin,
            "code": self.code,
            "from": self.sender,
            "to": self.to,
            "copy_to": list(self.copy_to),
            "keyword": self.keyword,
            "tracking_id": self.tracking_id,
            "operator_id": self.operator_id,
            "timestamp": self.timestamp,
            "subject": self.subject,
            "text": self.text,
            "status": self.status,
            "media": [{"url": url} for url in self.media_urls],
            "fields": self.fields,
        }


@dataclass(frozen=True)
class Parsed:
    format: str
    records: tuple[Record, ...]


# Field names as sent, folded (lowercase, no '-' or '_'), to the record attribute they fill.
ALIASES = {
    "origin": "origin",
    "code": "code",
    "from": "sender",
    "to": "to",
    "copyto": "copy_to",
    "keyword": "keyword",
    "trackingid": "tracking_id",
    "operatorid": "operator_id",
    "spid": "operator_id",
    "timestamp": "timestamp",
    "received": "timestamp",
    "messagesubject": "subject",
    "subject": "subject",
    "messagetext": "text",
    "text": "text",
    "status": "status",
    "statusdetails": "status",
    "description": "status",
    "content": "content",
    "file": "file",
}
POSTBACK_KEYS = {"origin", "code", "sender", "to", "tracking_id"}
KINDS = {"MMS_MO": "mms_mo", "SMS_MO": "sms_mo", "MMS_MT": "status", "SMS_MT": "status"}
STATUS_CODE = re.compile(r"^[NE]\d{3}$")
TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,9}))?\s*(Z|[+-]\d{2}(?::?\d{2})?)$",
    re.IGNORECASE,
)
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def parse_postback(body: bytes, content_type: str | None) -> Parsed:
    try:
        return _parse(body, content_type or "")
    except ParseError:
        raise
    except RecursionError as exc:
        raise ParseError("nested too deeply to be a postback") from exc
    except (ValueError, LookupError, TypeError, SyntaxError) as exc:
        raise ParseError(f"unreadable body: {exc}") from exc


def body_extension(body: bytes, content_type: str | None) -> str:
    """json, xml, txt or bin: the extension to keep the raw body under."""
    try:
        text = _decode(body, content_type or "").lstrip()
    except (UnicodeDecodeError, LookupError):
        return "bin"
    if text.startswith(("{", "[")):
        return "json"
    if text.startswith("<"):
        return "xml"
    printable = all(c.isprintable() or c in "\r\n\t" for c in text)
    return "txt" if printable and text else "bin"


def _parse(body: bytes, content_type: str) -> Parsed:
    if not body.strip():
        raise ParseError("empty body")
    media_type = content_type.split(";")[0].strip().lower()
    start = _decode(body[:64], content_type, errors="replace").lstrip()
    if start.startswith(("{", "[")) or media_type.endswith("json"):
        return _records("json", _json_objects(_decode(body, content_type)))
    if start.startswith("<"):
        return _records("xml", _xml_objects(body))
    if media_type == "application/x-www-form-urlencoded" or re.match(r"^[\w.%+-]+=", start):
        return _records("form", [_form_fields(_decode(body, content_type))])
    raise ParseError(f"not JSON, XML or form-encoded (content type {content_type or 'none'})")


def _decode(body: bytes, content_type: str, errors: str = "strict") -> str:
    for bom, encoding in BOMS:
        if body.startswith(bom):
            return body.decode(encoding, errors)
    charset = re.search(r"charset=[\"']?([\w.:-]+)", content_type, re.IGNORECASE)
    return body.decode(charset.group(1) if charset else "utf-8", errors)


def _records(fmt: str, objects: Iterable[Fields]) -> Parsed:
    records = tuple(_record(fields) for fields in objects)
    if not records:
        raise ParseError(f"{fmt} body holds no notification")
    return Parsed(fmt, records)


# --- dialects: each yields one dict of fields as sent per notification


def _json_objects(text: str) -> list[Fields]:
    value = json.loads(text, parse_int=str, parse_float=str, parse_constant=str)
    objects = value if isinstance(value, list) else [value]
    if not objects or not all(isinstance(item, dict) for item in objects):
        raise ParseError("JSON body is not an object (or a list of objects)")
    return objects


def _xml_objects(body: bytes) -> list[Fields]:
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except defusedxml.DefusedXmlException as exc:
        raise ParseError(f"XML with a DTD or entities is refused: {exc!r}") from exc
    except ET.ParseError as exc:
        raise ParseError(f"malformed XML: {exc}") from exc
    notifications = [child for child in root if _fold(_local(child.tag)) == "notification"]
    return [_element_fields(element) for element in notifications or [root]]


def _element_fields(element: ET.Element) -> Fields:
    fields: Fields = {f"@{_local(name)}": value for name, value in element.attrib.items()}
    for child in element:
        name = _local(child.tag)
        value: Any = _element_fields(child) if len(child) else (child.text or "").strip()
        if name in fields:
            previous = fields[name]
            fields[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            fields[name] = value
    return fields


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _form_fields(text: str) -> Fields:
    pairs = urllib.parse.parse_qs(text.strip(), keep_blank_values=True, strict_parsing=True)
    return {name: values[0] if len(values) == 1 else values for name, values in pairs.items()}


# --- one notification's fields to a record


def _fold(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def _record(fields: Fields) -> Record:
    found: dict[str, Any] = {}
    for name, value in fields.items():
        attribute = ALIASES.get(_fold(name))
        if attribute and attribute not in found:
            found[attribute] = value
    if not POSTBACK_KEYS & {key for key, value in found.items() if _scalar(value)}:
        raise ParseError("no postback fields (origin, code, from, to, tracking-id) found")
    origin, code = _scalar(found.get("origin")), _scalar(found.get("code"))
    kind = _kind(origin, code)
    status = _scalar(found.get("status")) or (code if kind == "status" else None)
    return Record(
        kind=kind,
        origin=origin,
        code=code,
        sender=_scalar(found.get("sender")),
        to=_scalar(found.get("to")),
        copy_to=tuple(_strings(found.get("copy_to"))),
        keyword=_scalar(found.get("keyword")),
        tracking_id=_scalar(found.get("tracking_id")),
        operator_id=_scalar(found.get("operator_id")),
        timestamp=normalize_timestamp(_scalar(found.get("timestamp"))),
        subject=_scalar(found.get("subject")),
        text=_scalar(found.get("text")),
        status=status,
        media_urls=tuple(_strings([found.get("content"), found.get("file")])),
        fields=fields,
    )


def _kind(origin: str | None, code: str | None) -> str:
    kind = KINDS.get((origin or "").upper())
    if kind:
        return kind
    if origin is None and code and STATUS_CODE.match(code) and code.upper() != "N401":
        return "status"
    return "other"


def _scalar(value: Any) -> str | None:
    """A field's text; for a repeated field, the first one's."""
    if isinstance(value, list) and value:
        return _scalar(value[0])
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value.strip() or None
    return None


def _strings(value: Any) -> list[str]:
    """Every non-empty string in a value, depth first: `[{"number": "1"}, "2"]` gives ["1", "2"]."""
    if isinstance(value, (str, bool)):
        text = _scalar(value)
        return [text] if text else []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


def normalize_timestamp(raw: str | None) -> str | None:
    """ISO 8601 with offset, or None when the value is absent or has no readable offset."""
    match = TIMESTAMP.match(raw or "")
    if not match:
        return None
    date, clock, fraction, offset = match.groups()
    clock = clock if clock.count(":") == 2 else clock + ":00"
    micros = f".{(fraction or '')[:6].ljust(6, '0')}" if fraction else ""
    offset = "+00:00" if offset.upper() == "Z" else _offset(offset)
    try:
        return dt.datetime.fromisoformat(f"{date}T{clock}{micros}{offset}").isoformat()
    except ValueError:
        return None


def _offset(raw: str) -> str:
    digits = raw[1:].replace(":", "")
    return f"{raw[0]}{digits[:2]}:{digits[2:4] or '00'}"
