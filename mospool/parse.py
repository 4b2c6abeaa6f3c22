"""Parse a spooled postback body into records. Pure: bytes and a content type in, records out.

Accepts every layout Sinch (formerly Skycore) has published: JSON, lowercase XML `<postback>` with hyphenated
tags, the legacy uppercase `<POSTBACK>` (with or without `<NOTIFICATION>` wrappers, several of which make a
batch), the older `<NOTIFICATION ID=.. CREATED=..>` root with its fields inside `<BODY>`, form-encoded
bodies, and XML sent inside a form field (`XML=`, `xml=`, `XMLDATA=`). Field names match
case-insensitively and with or without `-`/`_`. A JSON list of objects is a batch, like several
`<NOTIFICATION>`s. `fields` keeps everything sent, XML attributes included (see `_element_value`).
Anything else raises ParseError, and no other exception ever escapes `parse_postback`.
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
import re
import urllib.parse
import xml.etree.ElementTree as ET
from collections import Counter
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
    status_details: str | None = None
    mms_id: str | None = None
    sent_as: str | None = None
    operator_name: str | None = None
    from_mask: str | None = None
    client_reference: str | None = None

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
            "status_details": self.status_details,
            "mms_id": self.mms_id,
            "sent_as": self.sent_as,
            "operator_name": self.operator_name,
            "from_mask": self.from_mask,
            "client_reference": self.client_reference,
            "media": [{"url": url} for url in self.media_urls],
            "fields": self.fields,
        }


@dataclass(frozen=True)
class Parsed:
    format: str
    records: tuple[Record, ...]


# Record attribute -> the field names that fill it, folded (lowercase, no '-' or '_'), in priority order: the
# first one with a value wins. A notification's own fields come before those inside its <BODY>.
FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "origin": ("origin",),
    "code": ("code", "statuscode"),  # STATUSCODE: the pass notice (N801)
    "sender": ("from", "mobile", "email"),  # MOBILE/EMAIL: the subscriber of a SUB/EMAIL_SUB notice
    "to": ("to", "shortcode"),
    "keyword": ("keyword",),
    "tracking_id": ("trackingid", "transactionid"),  # TRANSACTIONID: the SMS MO's id (N211)
    "operator_id": ("operatorid", "spid"),
    "timestamp": ("timestamp", "received"),
    "subject": ("messagesubject", "subject"),
    "text": ("messagetext", "text"),
    "status": ("status", "statusdetails", "description"),
    "status_details": ("statusdetails",),
    "mms_id": ("mmsid",),
    "sent_as": ("sentas",),
    "operator_name": ("operatorname",),
    "from_mask": ("frommask",),
    "client_reference": ("clientreference",),
}
# The same, inverted: folded field name -> (record attribute, rank among that attribute's names).
NAME_RANKS: dict[str, list[tuple[str, int]]] = {
    name: [(attribute, names.index(name)) for attribute, names in FIELD_NAMES.items() if name in names]
    for name in {name for names in FIELD_NAMES.values() for name in names}
}
MEDIA_NAMES = ("content", "file")
POSTBACK_KEYS = ("origin", "code", "sender", "to", "tracking_id")
ORIGIN_KINDS = {"MMS_MO": "mms_mo", "SMS_MO": "sms_mo", "MMS_MT": "status", "SMS_MT": "status"}
# Without an origin, the code decides; a code not listed here (N301-N304, N801, anything new) gives `other`.
CODE_KINDS = {
    "N401": "mms_mo",
    "N211": "sms_mo",
    **dict.fromkeys(("N101", "N102", "N103", "N013", "N003", "N201", "N202", "N501", "N502"), "status"),
}
ERROR_CODE = re.compile(r"^E(?:[0125]\d{2}|999)$")
EMBEDDED_XML_FIELDS = ("xml", "xmldata")
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
        return _form(_form_fields(_decode(body, content_type)))
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


def _xml_objects(body: bytes | str) -> list[Fields]:
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except defusedxml.DefusedXmlException as exc:
        raise ParseError(f"XML with a DTD or entities is refused: {exc!r}") from exc
    except ET.ParseError as exc:
        raise ParseError(f"malformed XML: {exc}") from exc
    notifications = [child for child in root if _fold(_local(child.tag)) == "notification"]
    return [_notification_fields(element) for element in notifications or [root]]


def _notification_fields(element: ET.Element) -> Fields:
    value = _element_value(element)
    if isinstance(value, dict):
        return value
    return {"#text": value} if value else {}


def _element_value(element: ET.Element) -> Any:
    """A plain leaf gives its text. An element with children or attributes gives a dict: `@name` per
    attribute, one key per child tag (a list when the tag repeats), and `#text` for its own text (always for
    a leaf with attributes, for a parent only when it has some)."""
    if not len(element) and not element.attrib:
        return (element.text or "").strip()
    value = _attribute_fields(element.attrib) if element.attrib else {}
    for child in element:
        _add_field(value, _local(child.tag), _element_value(child))
    own_text = "".join([element.text or "", *(child.tail or "" for child in element)]).strip()
    if own_text or not len(element):
        value["#text"] = own_text
    return value


def _attribute_fields(attributes: dict[str, str]) -> Fields:
    local_names = Counter(_local(name) for name in attributes)
    fields: Fields = {}
    for name, text in attributes.items():
        local = _local(name)
        fields[f"@{local if local == name or local_names[local] == 1 else name}"] = text
    return fields


def _add_field(fields: Fields, name: str, value: Any) -> None:
    if name not in fields:
        fields[name] = value
    elif isinstance(fields[name], list):
        fields[name].append(value)
    else:
        fields[name] = [fields[name], value]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _form_fields(text: str) -> Fields:
    pairs = urllib.parse.parse_qs(text.strip(), keep_blank_values=True, strict_parsing=True)
    return {name: values[0] if len(values) == 1 else values for name, values in pairs.items()}


def _form(fields: Fields) -> Parsed:
    """A form, or XML sent inside one of its fields: then each notification keeps the other form fields
    under `form:<name>`."""
    embedded = next((name for name in fields if _embedded_xml(name, fields[name])), None)
    if embedded is None:
        return _records("form", [fields])
    others = {f"form:{name}": value for name, value in fields.items() if name != embedded}
    notifications = _xml_objects(fields[embedded].strip())
    return _records("form-xml", [{**notification, **others} for notification in notifications])


def _embedded_xml(name: str, value: Any) -> bool:
    return _fold(name) in EMBEDDED_XML_FIELDS and isinstance(value, str) and value.lstrip().startswith("<")


# --- one notification's fields to a record


def _fold(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def _record(fields: Fields) -> Record:
    sent = _values_by_name(fields)
    found = _normalized(sent)
    if not any(found[key] for key in POSTBACK_KEYS):
        raise ParseError("no postback fields (origin, code, from, to, tracking-id) found")
    kind = _kind(found["origin"], found["code"])
    media = [value for name in MEDIA_NAMES for value in sent.get(name, [])[:1]]
    return Record(
        kind=kind,
        origin=found["origin"],
        code=found["code"],
        sender=found["sender"],
        to=found["to"],
        copy_to=tuple(_strings(sent.get("copyto", [])[:1])),
        keyword=found["keyword"],
        tracking_id=found["tracking_id"],
        operator_id=found["operator_id"],
        timestamp=normalize_timestamp(found["timestamp"]),
        subject=found["subject"],
        text=found["text"],
        status=found["status"] or (found["code"] if kind == "status" else None),
        media_urls=tuple(_strings(media)),
        fields=fields,
        status_details=found["status_details"],
        mms_id=found["mms_id"],
        sent_as=found["sent_as"],
        operator_name=found["operator_name"],
        from_mask=found["from_mask"],
        client_reference=found["client_reference"],
    )


def _values_by_name(fields: Fields) -> dict[str, list[Any]]:
    """Folded field name -> its values: the notification's own, then those inside its <BODY>."""
    scopes = [
        fields,
        *(value for name, value in fields.items() if _fold(name) == "body" and isinstance(value, dict)),
    ]
    values: dict[str, list[Any]] = {}
    for scope in scopes:
        for name, value in scope.items():
            values.setdefault(_fold(name), []).append(value)
    return values


def _normalized(sent: dict[str, list[Any]]) -> dict[str, str | None]:
    """Each record attribute's text from the best-ranked field sent with a value (see FIELD_NAMES)."""
    best: dict[str, tuple[int, str]] = {}
    for name, values in sent.items():
        for attribute, rank in NAME_RANKS.get(name, ()):
            if attribute not in best or rank < best[attribute][0]:
                text = next((text for value in values if (text := _scalar(value))), None)
                if text:
                    best[attribute] = (rank, text)
    return {attribute: best[attribute][1] if attribute in best else None for attribute in FIELD_NAMES}


def _kind(origin: str | None, code: str | None) -> str:
    if origin is not None:
        return ORIGIN_KINDS.get(origin.upper(), "other")
    code = (code or "").upper()
    return CODE_KINDS.get(code) or ("status" if ERROR_CODE.match(code) else "other")


def _scalar(value: Any) -> str | None:
    """A field's text; for a repeated field, the first one's; for an element with attributes, its text or
    else its TEXT attribute (`<STATUS TEXT="Retrieved"/>`)."""
    if isinstance(value, list) and value:
        return _scalar(value[0])
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, dict):
        text_attribute = next((v for k, v in value.items() if k.lower() == "@text"), None)
        return _scalar(value.get("#text")) or _scalar(text_attribute)
    return None


def _strings(value: Any) -> list[str]:
    """Every non-empty string in a value, depth first, attributes left out: `[{"number": "1"}, "2"]` gives
    ["1", "2"]."""
    if isinstance(value, (str, bool)):
        text = _scalar(value)
        return [text] if text else []
    if isinstance(value, dict):
        value = [item for key, item in value.items() if key[:1] != "@"]
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
