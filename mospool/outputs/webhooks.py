"""Webhooks: every filed message POSTed, signed, to the business's own application, at least once.

An output of the registry (config section ``[forward]``, on while ``url`` is set) and a transport of the
delivery engine (``mospool.outputs.delivery``). For each filed record in a forwarded state it builds one JSON
body per notice and enqueues it: the entry holds the exact bytes that are signed and sent, under a stable
``webhook-id``. Requests are signed per Standard Webhooks: an HMAC-SHA256 over ``id.timestamp.body`` with the
secret, fresh at each try.

Their settings, what is sent, and the output's stages, which `mospool resend` shares (``entries``); how one
try is made is ``mospool.outputs.webhook_client``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mospool import retry
from mospool.config import Section
from mospool.filer import Batch
from mospool.metrics import Metrics
from mospool.outputs.delivery import Delivery
from mospool.outputs.destination import Route, delivery_status
from mospool.outputs.registry import BaseOutput, Context, Spec, StatusPart, register
from mospool.outputs.webhook_client import WebhookClient, secret_key
from mospool.store import Entry, Folder, Spool, State
from mospool.store.outbox import entry_name
from mospool.store.record import SCHEMA
from mospool.values import DAY, http_url, seconds, whole, words

DESTINATION = ""  # the webhooks keep the spool's own outbox/ and undelivered/, as before outputs had names
ROUTE_NAME = "webhook"
FORWARDABLE_STATES = (State.PROCESSED, State.FAILED, State.DUPLICATES)


@dataclass(frozen=True)
class ForwardSettings:
    """Webhook delivery of each filed message to the business's application; off while ``url`` is empty."""

    url: str = ""
    secret: str = ""  # whsec_<base64>, the Standard Webhooks form
    timeout_seconds: float = 10.0
    concurrency: int = 4
    attempts: int = 12
    retry_base_seconds: float = 30.0
    give_up_after_seconds: float = 24 * 3600.0
    states: tuple[str, ...] = (State.PROCESSED,)
    media_base_url: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.url)


def webhook_secret(raw: str) -> str:
    """The Standard Webhooks form: ``whsec_`` then the base64 of at least 24 random bytes."""
    if raw and len(secret_key(raw)) < 24:
        raise ValueError(
            "must be whsec_ followed by the base64 of at least 24 random bytes; make one with: "
            "python3 -c 'import base64,os; print(\"whsec_\" + base64.b64encode(os.urandom(32)).decode())'"
        )
    return raw


def forwarded_states(raw: str) -> tuple[str, ...]:
    states = words(raw)
    if not states or any(state not in FORWARDABLE_STATES for state in states):
        raise ValueError(f"must be one or more of {', '.join(FORWARDABLE_STATES)}")
    return states


def _secret_with_url(settings: ForwardSettings) -> str | None:
    if settings.url and not settings.secret:
        return "[forward] secret is required when [forward] url is set"
    return None


SECTION = Section(
    "forward",
    ForwardSettings,
    {
        "url": http_url,
        "secret": webhook_secret,
        "timeout_seconds": seconds(0.1, 300),
        "concurrency": whole(1, 256),
        "attempts": whole(1, 1000),
        "retry_base_seconds": seconds(0.01, DAY),
        "give_up_after_seconds": seconds(0.01, 365 * DAY),
        "states": forwarded_states,
        "media_base_url": http_url,
    },
    secret_keys=frozenset({"secret"}),
    check=_secret_with_url,
)


# --- what is sent


def webhook_id(state: State, notice: Mapping[str, Any], spool_id: str, position: int) -> str:
    """One id per Sinch notice wherever it was received, so an application that drops repeats by
    ``webhook-id`` drops a repeat from another VM too: a processed notice's is ``msg_`` and 32 hex digits of
    the SHA-256 of its dedup key. A failed or duplicate postback's report is about that one reception:
    ``msg_<spool id>_<NNN>``, NNN its place in the postback."""
    key = notice.get("dedup_key")
    if state is State.PROCESSED and key:
        return "msg_" + hashlib.sha256(str(key).encode()).hexdigest()[:32]
    return f"msg_{spool_id}_{position:03d}"


def entries(folder: Folder, settings: ForwardSettings, spool: Spool) -> list[Entry]:
    """One outbox entry per notice of a published (or about to be) record folder: what is sent, under its
    stable webhook-id. The filer's prepare and `mospool resend` both build them here, so they are the same."""
    bodies = request_bodies(folder, settings.media_base_url, spool.root)
    record = spool.records.relative(folder.path)
    spool_id, state = folder.spool_id, folder.state
    notices = folder.notices or [{}]
    return [
        Entry(webhook_id(state, notice, spool_id, position), spool_id, position, state, body, record)
        for position, (notice, body) in enumerate(zip(notices, bodies, strict=True), 1)
    ]


def request_bodies(folder: Folder, media_base_url: str, spool_root: Path) -> list[bytes]:
    """One JSON body per notice of a record folder, as it is once published at ``folder.path``."""
    notices = folder.notices or [{}]
    bodies = []
    for notice in notices:
        body = dict(notice) if folder.messages else _summary_body(folder, notice)
        body["state"] = str(folder.state)
        if isinstance(body.get("media"), list):
            body["media"] = [_located(p, folder.path, media_base_url, spool_root) for p in body["media"]]
        bodies.append(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
    return bodies


def _summary_body(folder: Folder, notice: dict[str, Any]) -> dict[str, Any]:
    """A failed or duplicate postback's notice: who sent what, and why it is not processed."""
    body: dict[str, Any] = {
        "schema": SCHEMA,
        "spool_id": folder.spool_id,
        "received_at": (folder.request or {}).get("received_at"),
        **notice,
    }
    if folder.error is not None:
        body["error"] = {key: value for key, value in folder.error.items() if key != "notices"}
    if folder.duplicate is not None:
        body["duplicate_of"] = folder.duplicate.get("duplicate_of")
    return body


def _located(part: Any, record_dir: Path, media_base_url: str, spool_root: Path) -> Any:
    """A media part plus its ``path`` on this VM and, when configured, its ``download_url``."""
    if not isinstance(part, dict) or not part.get("file"):
        return part
    path = record_dir / part["file"]
    located = {**part, "path": str(path)}
    if media_base_url:
        relative = urllib.parse.quote(path.relative_to(spool_root).as_posix())
        located["download_url"] = f"{media_base_url.rstrip('/')}/{relative}"
    return located


# --- the output


class Webhooks(BaseOutput):
    """The filer output: each filed record in a forwarded state becomes one delivery per notice."""

    def __init__(self, settings: ForwardSettings, spool: Spool, delivery: Delivery) -> None:
        self.settings = settings
        self.spool = spool
        self.delivery = delivery

    def prepare(self, folder: Folder, batch: Batch) -> None:
        if folder.state not in self.settings.states:
            return
        self.delivery.enqueue(batch, entries(folder, self.settings, self.spool))

    def published(self, folders: Sequence[Folder]) -> None:
        self.delivery.hint(
            entry_name(folder.spool_id, position)
            for folder in folders
            if folder.state in self.settings.states
            for position in range(1, max(len(folder.notices), 1) + 1)
        )

    def tick(self) -> None:
        self.delivery.tick()

    def close(self) -> None:
        self.delivery.close()


def route(settings: ForwardSettings, spool: Spool) -> Route:
    return Route(
        name=ROUTE_NAME,
        address=settings.url,
        outbox=spool.outbox(DESTINATION),
        transport=WebhookClient(settings),
        policy=retry.Policy.of(settings),
        concurrency=settings.concurrency,
        states=settings.states,
    )


def create(
    settings: ForwardSettings,
    spool: Spool,
    metrics: Metrics | None = None,
    rescan_seconds: float = 30.0,
    background: bool = True,
) -> Webhooks:
    """The output on its own delivery engine; ``background=False``: nothing is sent but by deliver_due()."""
    delivery = Delivery(route(settings, spool), spool, metrics, rescan_seconds, background)
    return Webhooks(settings, spool, delivery)


def build(settings: ForwardSettings, context: Context) -> Webhooks:
    return create(settings, context.spool, context.metrics, context.settings.worker.rescan_seconds)


def status(settings: ForwardSettings, spool: Spool) -> StatusPart:
    return delivery_status("webhooks", spool.outbox(DESTINATION), one="webhook")


def risks(settings: ForwardSettings) -> list[str]:
    """Plain http to another host: every message, and its signature's timestamp, readable on the way."""
    parts = urllib.parse.urlsplit(settings.url)
    if parts.scheme != "http" or _loopback(parts.hostname or ""):
        return []
    return [
        f"[forward] url {settings.url} is plain http to another host: every message crosses the network "
        "unencrypted (the signature only proves who sent it); use https://"
    ]


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


SPEC = register(
    Spec(
        SECTION,
        build,
        enabled=lambda settings: settings.enabled,
        status=status,
        destination=DESTINATION,
        risks=risks,
    )
)
