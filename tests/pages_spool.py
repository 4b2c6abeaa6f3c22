"""A spool filed by the real worker with every kind of record a page must show, media from a local origin."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from mospool.config import MediaSettings, Settings
from mospool.spool import Spool, new_id
from mospool.worker import Worker
from tests.origin import Origin, Reply

MEDIA = Path(__file__).resolve().parent / "media"
JPEG = (MEDIA / "photo.jpg").read_bytes()
PNG = (MEDIA / "part.png").read_bytes()
AMR = b"#!AMR\n" + bytes(range(256)) * 4

SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE = '"><img src=x onerror=alert(1)>'
RTL_EMOJI = "مرحبا بالعالم \u202eevil\u202c 👍🏽 שלום 🇺🇦"
LONG_SUBJECT = "S" * 49_990 + "<b>end</b>"
HOSTILE_STRINGS = (SCRIPT, ATTRIBUTE, RTL_EMOJI)


@dataclass(frozen=True)
class Filed:
    mms: str
    sms: str
    hostile: str
    long_subject: str
    javascript_media: str
    missing_media: str
    duplicate: str
    batch: str
    unreadable: str


def publish(spool: Spool, body: bytes, content_type: str = "application/json", seconds: int = 0) -> str:
    now = dt.datetime.now(dt.UTC).replace(hour=10, minute=0, second=0) + dt.timedelta(seconds=seconds)
    meta = {"received_at": now.isoformat(), "content_type": content_type, "remote_addr": "203.0.113.7"}
    return spool.publish(meta, body, new_id(now))


def mms(
    tracking_id: str, urls: list[str], subject: str, text: str | None = None, sender: str = "17745550001"
) -> bytes:
    body: dict[str, object] = {
        "origin": "MMS_MO", "code": "N401", "from": sender, "to": "18885551234",
        "copy-to": ["10000123434"], "keyword": "PHOTO", "tracking-id": tracking_id,
        "timestamp": "2026-11-24T10:00:00Z", "message-subject": subject,
        "content": [{"file": url} for url in urls],
    }  # fmt: skip
    if text is not None:
        body["message-text"] = text
    return json.dumps(body).encode()


def sms(tracking_id: str, text: str, sender: str = "17745550002") -> bytes:
    body = {
        "origin": "SMS_MO", "code": "N401", "from": sender, "to": "28444", "keyword": "INFO",
        "tracking-id": tracking_id, "timestamp": "2026-11-24T10:00:00Z", "message-text": text,
    }  # fmt: skip
    return json.dumps(body).encode()


BATCH_XML = (
    b"<POSTBACK>"
    + b"".join(
        b"<NOTIFICATION><ORIGIN>SMS_MO</ORIGIN><CODE>N401</CODE><FROM>1555000%d</FROM><TO>28444</TO>"
        b"<TRACKINGID>batch-%d</TRACKINGID><TEXT>&lt;script&gt;text %d</TEXT></NOTIFICATION>" % (n, n, n)
        for n in (1, 2)
    )
    + b"</POSTBACK>"
)


def worker_for(root: Path) -> Worker:
    media = MediaSettings(allow_private_networks=True, timeout_seconds=5, attempts=1)
    return Worker(Settings.for_spool(root, media=media))


def fill(root: Path, origin: Origin) -> Filed:
    """File one of each record through the real worker (pages on, the default) and return their ids."""
    origin.serve("/m/photo.jpg", Reply(body=JPEG, content_type="image/jpeg"))
    origin.serve("/m/part.png", Reply(body=PNG, content_type="image/png"))
    origin.serve("/m/note.txt", Reply(body=f"a text part {SCRIPT}".encode(), content_type="text/plain"))
    origin.serve("/m/voice.amr", Reply(body=AMR, content_type="audio/amr"))
    origin.serve("/m/evil.jpg", Reply(body=JPEG, content_type="image/jpeg"))
    photo_urls = [origin.url(f"/m/{name}") for name in ("photo.jpg", "part.png", "note.txt", "voice.amr")]
    worker = worker_for(root)
    spool = worker.spool
    ids = Filed(
        mms=publish(
            spool, mms("mms-1", photo_urls, "The crack in my screen", "Here it is, see the photo"), seconds=1
        ),
        sms=publish(spool, sms("sms-1", "Where is my order? 📦"), seconds=2),
        hostile=publish(
            spool,
            mms(SCRIPT, [origin.url("/m/evil.jpg")], SCRIPT, f"{ATTRIBUTE}\n{RTL_EMOJI}", sender=ATTRIBUTE),
            seconds=3,
        ),
        long_subject=publish(spool, mms("long-1", [], LONG_SUBJECT), seconds=4),
        javascript_media=publish(spool, mms("js-1", ["javascript:alert(document.domain)"], "js"), seconds=5),
        missing_media=publish(spool, mms("gone-1", [origin.url("/m/gone.jpg")], "gone"), seconds=6),
        duplicate=publish(spool, sms("sms-1", "Where is my order? 📦"), seconds=7),
        batch=publish(spool, BATCH_XML, "application/xml", seconds=8),
        unreadable=publish(spool, b'{"origin": "SMS_MO", "from": "<script>', seconds=9),
    )
    worker.drain()
    worker.close()
    return ids
