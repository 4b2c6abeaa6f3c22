"""The CLI's commands that only read: status, list, show and find. Each returns (result, exit code)."""

from __future__ import annotations

import argparse
import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

from mospool.cli.text import Report
from mospool.config import Settings
from mospool.index import Index
from mospool.outputs import outboxes, status_parts
from mospool.space import shortage
from mospool.store import FILED_STATES, Spool, State, id_time
from mospool.store.layout import WAITING_STATES
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
        alerts.append(f"{counts[State.FAILED]} postbacks in {State.FAILED}/")
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
        return _undelivered_rows(spool, args.state, args.limit), 0
    state = State(args.state)
    if state in WAITING_STATES:
        rows = [
            {"id": postback_id(p), "path": str(p), **_retry_summary(spool, p)}
            for p in spool.records.waiting(state)
        ]
        return rows[: args.limit], 0
    rows = []
    for folder in spool.records.folders(state, args.since):
        rows.append({"id": folder.name, "path": str(folder), **_summary(spool, folder)})
        if len(rows) >= args.limit:
            break
    return rows, 0


def _undelivered_rows(spool: Spool, state: str, limit: int) -> list[dict[str, Any]]:
    outbox = outboxes(spool)[state]
    rows = []
    for name in sorted(outbox.names(outbox.undelivered))[:limit]:
        parked = outbox.schedule(name, outbox.undelivered)
        reason, attempts = parked.get("reason"), parked.get("attempts", 1)
        rows.append({"id": name, "attempts": attempts, "reason": reason, "path": str(outbox.undelivered)})
    return rows


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
    result: dict[str, Any] = {"id": found.id, "state": str(found.state), "path": str(found.path)}
    if found.path.is_file():
        try:
            result["request"] = spool.read(found.path).meta
        except CorruptPostback as exc:
            raise CommandError(str(exc)) from exc
        return result, 0
    return {**result, **spool.records.contents(found)}, 0


def find(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    filters: dict[str, tuple[Any, ...] | None] = {
        "sender IN (?, ?)": _number_forms(args.sender),
        "recipient IN (?, ?)": _number_forms(args.recipient),
        "keyword = ? COLLATE NOCASE": _given(args.keyword),
        "tracking_id = ?": _given(args.tracking_id),
        "kind = ?": _given(args.kind),
        "state = ?": _given(args.state),
        "received_at >= ?": _given(args.since and args.since.isoformat()),
        "received_at < ?": _given(args.until and (args.until + dt.timedelta(days=1)).isoformat()),
    }
    where = [clause for clause, values in filters.items() if values is not None]
    params = tuple(value for values in filters.values() if values is not None for value in values)
    # The clauses are the constants above; only their values are parameters.
    sql = (
        'SELECT spool_id, state, received_at, kind, sender AS "from", recipient AS "to", keyword, '  # noqa: S608
        "tracking_id, subject, text, reason, duplicate_of, folder FROM messages WHERE 1 = 1"
        + "".join(f" AND {clause}" for clause in where)
        + " ORDER BY received_at DESC LIMIT ?"
    )
    index = open_index(spool)
    try:
        rows = [dict(row) for row in index.query(sql, (*params, args.limit))]
    finally:
        index.close()
    return rows, 0


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
        raise CommandError(f"no {name} in {spool.root}: the worker makes it at start (or run reindex)")
    return Index(spool.root)
