"""Postbacks for tests, built in one place: the SMS, MMS, status and batch bodies Sinch sends, publish() to put
one in a spool as the receiver would, the media settings of a worker that fetches from a local Origin, and
read_json() for the JSON files the worker writes.

Every field a test does not name has one fixed value, so a call says only what its test is about. (The sample
files Sinch documents are in tests/postbacks/; the load generators of the crash and power-cut suites keep their
own numbered mix of dialects.)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mospool.config import MediaSettings
from mospool.store import Spool, new_id

SENDER = "17745550001"  # the customer's phone
NUMBER = "18885551234"  # the business's number the message was sent to
REMOTE_ADDR = "192.0.2.1"  # where the receiver saw it come from (TEST-NET-1)
JPEG = b"\xff\xd8\xff\xe0" + b"jpeg data " * 500  # a JPEG's magic, then filler

# Media from the tests' own origin on 127.0.0.1 (which production refuses), with a deadline a test can wait out.
LOCAL_MEDIA = MediaSettings(allow_private_networks=True, timeout_seconds=3)


def local_media(**changes: Any) -> MediaSettings:
    return dataclasses.replace(LOCAL_MEDIA, **changes)


def _json(fields: dict[str, Any]) -> bytes:
    """Fields in the order given, those set to None left out."""
    return json.dumps({name: value for name, value in fields.items() if value is not None}).encode()


def sms(
    tracking_id: str = "sms-1",
    text: str = "hello",
    *,
    sender: str = SENDER,
    to: str = NUMBER,
    keyword: str | None = None,
    timestamp: str | None = None,
) -> bytes:
    """An SMS MO in Sinch's JSON (keyword and timestamp only when given)."""
    return _json(
        {"origin": "SMS_MO", "code": "N401", "from": sender, "to": to, "keyword": keyword,
         "tracking-id": tracking_id, "timestamp": timestamp, "message-text": text}
    )  # fmt: skip


def mms(
    tracking_id: str,
    *urls: str,
    subject: str | None = "Hi",
    text: str | None = None,
    sender: str = SENDER,
    to: str = NUMBER,
    copy_to: Sequence[str] = (),
    keyword: str | None = None,
    timestamp: str | None = None,
) -> bytes:
    """An MMS MO in Sinch's JSON with one content part per URL (copy-to, keyword, timestamp, text when given,
    the subject unless None)."""
    return _json(
        {"origin": "MMS_MO", "code": "N401", "from": sender, "to": to, "copy-to": list(copy_to) or None,
         "keyword": keyword, "tracking-id": tracking_id, "timestamp": timestamp, "message-subject": subject,
         "content": [{"file": url} for url in urls], "message-text": text}
    )  # fmt: skip


def batch(*tracking_ids: str, text: str = "text {n}") -> bytes:
    """Sinch's XML batch: one SMS MO notification per tracking id, the nth from 1555000<n> with text.format(n)."""
    notices = "".join(
        f"<NOTIFICATION><ORIGIN>SMS_MO</ORIGIN><CODE>N401</CODE><FROM>1555000{n}</FROM><TO>28444</TO>"
        f"<TRACKINGID>{tracking_id}</TRACKINGID><TEXT>{text.format(n=n)}</TEXT></NOTIFICATION>"
        for n, tracking_id in enumerate(tracking_ids, 1)
    )
    return f"<POSTBACK>{notices}</POSTBACK>".encode()


SMS_MO = sms()
BATCH = batch("batch-1", "batch-2", "batch-3")
STATUS_XML = (
    b"<postback><origin>MMS_MT</origin><code>N101</code><to>17745550001</to>"
    b"<tracking-id>mt-1</tracking-id><status-details>Delivered to handset</status-details></postback>"
)


def publish(
    spool: Spool,
    body: bytes,
    content_type: str | None = "application/json",
    when: dt.datetime | None = None,
    remote_addr: str = REMOTE_ADDR,
) -> str:
    """Spool a postback as the receiver does, received now unless ``when`` says otherwise; returns its id."""
    received = when or dt.datetime.now(dt.UTC)
    meta = {"received_at": received.isoformat(), "content_type": content_type, "remote_addr": remote_addr}
    return spool.publish(meta, body, new_id(received))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file the worker wrote (message.json, error.json, ...)."""
    value = json.loads(path.read_bytes())
    assert isinstance(value, dict)
    return value


def notice_id(dedup_key: str) -> str:
    """The webhook-id of a processed notice as docs/consuming.md defines it: msg_ and 32 hex digits of the
    SHA-256 of its dedup key (written out here, not taken from the code under test)."""
    return "msg_" + hashlib.sha256(dedup_key.encode()).hexdigest()[:32]
