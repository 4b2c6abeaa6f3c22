"""Parse a spooled postback body into records. Pure: bytes and a content type in, records out.

Accepts every layout Sinch (formerly Skycore) has published: JSON, lowercase XML `<postback>` with hyphenated
tags, the legacy uppercase `<POSTBACK>` (with or without `<NOTIFICATION>` wrappers, several of which make a
batch), the older `<NOTIFICATION ID=.. CREATED=..>` root with its fields inside `<BODY>`, form-encoded
bodies, and XML sent inside a form field (`XML=`, `xml=`, `XMLDATA=`). A JSON list of objects is a batch,
like several `<NOTIFICATION>`s. `fields` keeps everything sent, XML attributes included (see
`_element_value`); ``mospool.parse.message`` turns each notification's fields into a record. Anything else
raises ParseError, and no other exception ever escapes `parse_postback`.
"""

from __future__ import annotations

import codecs
import json
import re
import urllib.parse
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from typing import Any

import defusedxml
import defusedxml.ElementTree as SafeET

from mospool.parse.message import Fields, Parsed, ParseError, fold, record_from_fields

EMBEDDED_XML_FIELDS = ("xml", "xmldata")
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
    records = tuple(record_from_fields(fields) for fields in objects)
    if not records:
        raise ParseError(f"{fmt} body holds no notification")
    return Parsed(fmt, records)


# --- dialects: each yields one dict of fields as sent per notification


def _json_objects(text: str) -> list[Fields]:
    value = json.loads(text, parse_int=str, parse_float=str, parse_constant=str)
    if ESCAPED_SURROGATE.search(text):
        value = _whole_characters(value)
    objects = value if isinstance(value, list) else [value]
    if not objects or not all(isinstance(item, dict) for item in objects):
        raise ParseError("JSON body is not an object (or a list of objects)")
    return objects


# JSON may escape half of a surrogate pair alone ("\\ud800"), which is no character: no UTF-8 file or
# database takes it. Each such half becomes U+FFFD, as a UTF-8 decoder does with bytes it cannot read.
ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _whole_characters(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings (keys too) replaced by U+FFFD; without recursion,
    whatever its depth."""
    root = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        container, key = stack.pop()
        item = container[key]
        if isinstance(item, str):
            container[key] = LONE_SURROGATE.sub("\ufffd", item)
        elif isinstance(item, list):
            stack.extend((item, n) for n in range(len(item)))
        elif isinstance(item, dict):
            whole = {LONE_SURROGATE.sub("\ufffd", name): part for name, part in item.items()}
            item.clear()
            item.update(whole)
            stack.extend((item, name) for name in item)
    return root[0]


def _xml_objects(body: bytes | str) -> list[Fields]:
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except defusedxml.DefusedXmlException as exc:
        raise ParseError(f"XML with a DTD or entities is refused: {exc!r}") from exc
    except ET.ParseError as exc:
        raise ParseError(f"malformed XML: {exc}") from exc
    notifications = [child for child in root if fold(_local(child.tag)) == "notification"]
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
    return fold(name) in EMBEDDED_XML_FIELDS and isinstance(value, str) and value.lstrip().startswith("<")
