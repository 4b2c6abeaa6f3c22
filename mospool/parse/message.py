"""One notification's fields, as sent, to a normalized record. Pure: dicts in, records out.

Field names match case-insensitively and with or without `-`/`_` (``fold``); the first field with a value
wins, in the priority ``FIELD_NAMES`` gives; a notification's own fields come before those inside its
`<BODY>`. The origin decides the kind; without an origin the code does.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

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
TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,9}))?\s*(Z|[+-]\d{2}(?::?\d{2})?)$",
    re.IGNORECASE,
)


def fold(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def record_from_fields(fields: Fields) -> Record:
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
        *(value for name, value in fields.items() if fold(name) == "body" and isinstance(value, dict)),
    ]
    values: dict[str, list[Any]] = {}
    for scope in scopes:
        for name, value in scope.items():
            values.setdefault(fold(name), []).append(value)
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
