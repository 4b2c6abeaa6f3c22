"""A spool filed by the real worker with every kind of record a page must show, media from a local origin."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from mospool.config import Settings
from mospool.store import Spool
from mospool.worker import Worker
from tests import build
from tests.build import local_media
from tests.origin import Origin, Reply

MEDIA = Path(__file__).resolve().parent / "media"
JPEG = (MEDIA / "photo.jpg").read_bytes()
# A delivery-status notice as Sinch documents it: a status, its details, an MMS id, Sinch's timestamp.
STATUS = (Path(__file__).resolve().parent / "postbacks" / "good" / "xml_mms_mt_n101_xhtml.xml").read_bytes()
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
    status: str


def publish(spool: Spool, body: bytes, content_type: str = "application/json", seconds: int = 0) -> str:
    """Received today at 10:00:00 plus ``seconds``, so the records sort in the order they are filed here."""
    ten = dt.datetime.now(dt.UTC).replace(hour=10, minute=0, second=0)
    return build.publish(spool, body, content_type, ten + dt.timedelta(seconds=seconds), "203.0.113.7")


def mms(
    tracking_id: str, urls: list[str], subject: str, text: str | None = None, sender: str = "17745550001"
) -> bytes:
    return build.mms(
        tracking_id, *urls, subject=subject, text=text, sender=sender, copy_to=["10000123434"],
        keyword="PHOTO", timestamp="2026-11-24T10:00:00Z",
    )  # fmt: skip


def sms(tracking_id: str, text: str, sender: str = "17745550002") -> bytes:
    return build.sms(
        tracking_id, text, sender=sender, to="28444", keyword="INFO", timestamp="2026-11-24T10:00:00Z"
    )


BATCH_XML = build.batch("batch-1", "batch-2", text="&lt;script&gt;text {n}")


def worker_for(root: Path) -> Worker:
    return Worker(Settings.for_spool(root, media=local_media(timeout_seconds=5, attempts=1)))


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
    first_mms = publish(
        spool, mms("mms-1", photo_urls, "The crack in my screen", "Here it is, see the photo"), seconds=1
    )
    first_sms = publish(spool, sms("sms-1", "Where is my order? 📦"), seconds=2)
    worker.drain()  # filed before its resend comes: in one drain the two race, and either can be the original
    ids = Filed(
        mms=first_mms,
        sms=first_sms,
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
        status=publish(spool, STATUS, "text/xml", seconds=10),
    )
    worker.drain()
    worker.close()
    return ids
