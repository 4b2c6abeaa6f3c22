"""The CLI's commands that only read: status, list, show and find. Each returns (result, exit code)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mospool.cli.text import Report
from mospool.config import COMMAND, Settings
from mospool.english import counted
from mospool.index import Index
from mospool.outputs import outboxes, status_parts
from mospool.space import shortage
from mospool.store import FILED_STATES, Outbox, Spool, State, id_time
from mospool.store.layout import PAGE, WAITING_STATES
from mospool.store.outbox import entry_spool_id
from mospool.store.postback import CorruptPostback
from mospool.store.spool import postback_id

REASON_WIDTH = 80


class CommandError(Exception):
    """A request the CLI cannot carry out; the message says why."""


def status(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[Report, int]:
    records = spool.records
    counts = {str(state): records.count(state) for state in (*WAITING_STATES, *FILED_STATES)}
    waiting = sorted(postback_id(path) for path in records.waiting(State.INCOMING))
    oldest = _age_seconds(waiting[0]) if waiting else 0.0
    reasons: Counter[str] = Counter()
    for folder in records.folders(State.FAILED):
        error = records.read(folder).error or {}
        reasons[_ellipsized(f"{error.get('stage', '?')}: {error.get('error', '?')}", REASON_WIDTH)] += 1
    processed = list(records.folders(State.PROCESSED))
    last = max((p.stat().st_mtime for p in processed[-50:]), default=None)
    alerts = []
    free = spool.free_bytes()
    for problem in (spool.write_problem(), shortage(free, settings.worker.min_free_bytes)):
        if problem:
            alerts.append(problem)
    if oldest > settings.monitor.backlog_alert_seconds:
        alerts.append(f"oldest waiting postback is {oldest:.0f}s old")
    if counts[State.FAILED]:
        alerts.append(f"{counted(counts[State.FAILED], 'postback')} in {State.FAILED}/")
    parts = status_parts(settings, spool)
    for part in parts:
        alerts += part.alerts
    result = {
        "counts": counts,
        "oldest_waiting_seconds": round(oldest, 1),
        "failures": dict(reasons.most_common()),
        "last_processed_at": dt.datetime.fromtimestamp(last, dt.UTC).isoformat() if last else None,
        "free_bytes": free,
        **{part.key: part.counts for part in parts},
        "attention": alerts,
    }
    lines = [f"{part.key + ':':<15} {part.line}" for part in parts]
    return Report(result, lines), 1 if alerts else 0


def _ellipsized(text: str, width: int) -> str:
    """On one line, at most ``width`` characters, with … where it was cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _age_seconds(wanted: str) -> float:
    return max((dt.datetime.now(dt.UTC) - id_time(wanted)).total_seconds(), 0.0)


def list_state(
    settings: Settings, spool: Spool, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], int]:
    if args.state in outboxes(spool):
        return undelivered_rows(spool, args.state, args.limit), 0
    state = State(args.state)
    if state in WAITING_STATES:
        rows = [
            {"id": postback_id(p), **located(spool, p), **_retry_summary(spool, p)}
            for p in spool.records.waiting(state)
        ]
        return rows[: args.limit], 0
    rows = []
    for folder in spool.records.folders(state, args.since):
        rows.append({"id": folder.name, **located(spool, folder), **_summary(spool, folder)})
        if len(rows) >= args.limit:
            break
    return rows, 0


@dataclass(frozen=True)
class Parked:
    """An entry that gave up, as `list undelivered` shows it and `redeliver` finds it."""

    name: str  # <spool id>.<NNN>, its file's name
    spool_id: str
    delivery_id: str  # sent with every try (a webhook's webhook-id, as the log prints it); "" if unreadable
    whose: dict[str, Any]  # from, to, tracking_id, as its body has them

    def row(self) -> dict[str, Any]:
        ids = {"entry": self.name, "delivery_id": self.delivery_id or None, "id": self.spool_id}
        return {**ids, **self.whose}


def parked_entries(outbox: Outbox, limit: int | None = None) -> list[Parked]:
    """The undelivered entries of one destination, oldest first, each read for its ids and whose it is."""
    return [_parked(outbox, name) for name in sorted(outbox.names(outbox.undelivered))[:limit]]


def _parked(outbox: Outbox, name: str) -> Parked:
    try:
        entry = outbox.read(name, outbox.undelivered)
    except (OSError, ValueError):  # damaged: still listed, and found by its name
        return Parked(name, entry_spool_id(name), "", {})
    return Parked(name, entry.spool_id, entry.id, whose(entry.body))


def whose(body: bytes) -> dict[str, Any]:
    """Who sent it to whom, when the body is a JSON notice (the webhooks'); nothing otherwise."""
    try:
        notice = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(notice, dict):
        return {}
    return {key: notice[key] for key in ("from", "to", "tracking_id") if notice.get(key)}


def undelivered_rows(spool: Spool, label: str, limit: int) -> list[dict[str, Any]]:
    outbox = outboxes(spool)[label]
    rows = []
    for parked in parked_entries(outbox, limit):
        schedule = outbox.schedule(parked.name, outbox.undelivered)
        attempts, reason = schedule.get("attempts", 1), schedule.get("reason")
        rows.append({**parked.row(), "attempts": attempts, "reason": reason})
    return rows


def located(spool: Spool, path: Path) -> dict[str, str]:
    """Where a postback is, relative to the spool (the first line of the output names the spool): its
    ``folder`` (a record, or one waiting for a retry), or its ``file`` (a spool file waiting in a queue)."""
    return {"folder" if path.is_dir() else "file": spool.records.relative(path)}


def _retry_summary(spool: Spool, path: Path) -> dict[str, Any]:
    """A deferred postback's next try and why it waits, from its retry schedule."""
    retry = spool.retry_schedule(path) if path.is_dir() else {}
    if not retry:
        return {}
    last = (retry.get("errors") or [{}])[-1]
    reason = retry.get("postponed") or "; ".join(str(part.get("error")) for part in last.get("parts", []))
    attempts = retry.get("attempts", 0)
    return {"next_try_at": retry.get("next_try_at"), "attempts": attempts, "reason": reason}


def _summary(spool: Spool, folder: Path) -> dict[str, Any]:
    """Who sent what (the first notice, in any state), and why it failed or what it duplicates."""
    record = spool.records.read(folder)
    first = record.notices[0] if record.notices else {}
    summary = {key: first.get(key) for key in ("kind", "from", "to", "tracking_id") if first.get(key)}
    if len(record.notices) > 1:
        summary["notices"] = len(record.notices)
    if record.error:
        summary["error"] = f"{record.error.get('stage')}: {record.error.get('error')}"
    if record.duplicate:
        summary["duplicate_of"] = record.duplicate.get("duplicate_of")
    return summary


def show(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    found = spool.records.find(args.id)
    result: dict[str, Any] = {"id": found.id, "state": str(found.state), **located(spool, found.path)}
    if found.path.is_file():
        try:
            result["request"] = spool.read(found.path).meta
        except CorruptPostback as exc:
            raise CommandError(str(exc)) from exc
        return result, 0
    return {**result, **spool.records.contents(found)}, 0


# What find shows of each notice (qualified: the search table has a subject and a text too).
FOUND_COLUMNS = (
    "messages.spool_id AS id, messages.state, messages.received_at, messages.kind, "
    'messages.sender AS "from", messages.recipient AS "to", messages.keyword, messages.tracking_id, '
    "messages.subject, messages.text, messages.reason, messages.duplicate_of, messages.folder"
)


def find(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    """Filed notices matching every filter given: newest first, or with --text best match first."""
    where, params = notice_filters(args)
    index = open_index(spool)
    try:
        if args.text is not None:
            found = index.search_text(args.text, FOUND_COLUMNS, where, params, args.limit)
        else:
            # The clauses are the constants of notice_filters; only their values are parameters.
            sql = (
                f"SELECT {FOUND_COLUMNS} FROM messages WHERE 1 = 1"  # noqa: S608
                + "".join(f" AND {clause}" for clause in where)
                + " ORDER BY received_at DESC LIMIT ?"
            )
            found = index.query(sql, (*params, args.limit))
    finally:
        index.close()
    return [_hit(dict(row)) for row in found], 0


def notice_filters(args: argparse.Namespace) -> tuple[list[str], tuple[Any, ...]]:
    """SQL clauses over the index's messages table for the filters given (``find``, ``resend``), and their
    values; an option a command does not have is no filter."""
    given = {name: getattr(args, name, None) for name in FILTERS}
    since, until = given["since"], given["until"]
    filters: dict[str, tuple[Any, ...] | None] = {
        "sender IN (?, ?)": _number_forms(given["sender"]),
        "recipient IN (?, ?)": _number_forms(given["recipient"]),
        "keyword = ? COLLATE NOCASE": _given(given["keyword"]),
        "tracking_id = ?": _given(given["tracking_id"]),
        "kind = ?": _given(given["kind"]),
        "messages.state = ?": _given(given["state"]),
        "messages.received_at >= ?": _given(since and since.isoformat()),
        "messages.received_at < ?": _given(until and (until + dt.timedelta(days=1)).isoformat()),
    }
    where = [clause for clause, values in filters.items() if values is not None]
    params = tuple(value for values in filters.values() if values is not None for value in values)
    return where, params


FILTERS = ("sender", "recipient", "keyword", "tracking_id", "kind", "state", "since", "until")


def _hit(row: dict[str, Any]) -> dict[str, Any]:
    """A row of find: the notice, its folder, its day and its page (relative to the spool, as the browse
    site serves them), and with --text the words it matched in their context."""
    matched = row.pop("matched", None)
    folder = PurePosixPath(row["folder"])
    hit = {**row, "day": str(folder.parent / PAGE), "page": str(folder / PAGE)}
    return {**hit, "matched": matched} if matched is not None else hit


def _given(value: Any) -> tuple[Any, ...] | None:
    return None if value is None else (value,)


def _number_forms(raw: str | None) -> tuple[str, str] | None:
    """+1 (774) 555-0001 as Sinch writes it (17745550001), and with a leading + in case a record has one."""
    if raw is None:
        return None
    digits = raw.translate(str.maketrans("", "", "+ -()"))
    return digits, "+" + digits


def open_index(spool: Spool) -> Index:
    if not spool.index_file.is_file():
        name = spool.index_file.name
        raise CommandError(
            f"no {name} in {spool.root}: the worker makes it at start (or run {COMMAND} reindex)"
        )
    return Index(spool.root)
