"""The CLI's commands that only read: status, list, show and find. Each returns (result, exit code)."""

from __future__ import annotations

import argparse
import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

from mospool.cli.text import Report
from mospool.config import Settings
from mospool.index import Index, IndexUnavailable, Search, open_index, where
from mospool.outputs import outboxes, status_parts
from mospool.store import FILED_STATES, NotFound, Spool, State, id_time
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
    if oldest > settings.monitor.backlog_alert_seconds:
        alerts.append(f"oldest waiting postback is {oldest:.0f}s old")
    if counts[State.FAILED]:
        alerts.append(f"{counts[State.FAILED]} postbacks in {State.FAILED}/")
    parts = status_parts(settings, spool)
    for part in parts:
        alerts += part.alerts
    index = _index_report(settings)
    if index.get("reachable") is False:
        alerts.append(
            f"the index cannot be reached ({index['error']}): the worker holds postbacks in "
            f"{State.INCOMING}/ until it is back"
        )
    result = {
        "node": settings.spool.node,
        "index": index,
        "counts": counts,
        "oldest_waiting_seconds": round(oldest, 1),
        "failures": dict(reasons.most_common()),
        "last_processed_at": dt.datetime.fromtimestamp(last, dt.UTC).isoformat() if last else None,
        "free_bytes": spool.free_bytes(),
        **{part.key: part.counts for part in parts},
        "attention": alerts,
    }
    lines = [f"{part.key + ':':<15} {part.line}" for part in parts]
    return Report(result, lines), 1 if alerts else 0


def _index_report(settings: Settings) -> dict[str, Any]:
    """Where the index is; a shared one is asked whether it answers now, and which VMs file into it."""
    report: dict[str, Any] = {"backend": "postgresql" if settings.index.shared else "sqlite"}
    report["where"] = where(settings)
    if not settings.index.shared:
        return report
    index = open_index(settings, connections=1)
    try:
        index.ping()
        report["reachable"] = True
        report["nodes"] = [str(row["node"]) for row in index.nodes()]
    except IndexUnavailable as exc:
        report["reachable"], report["error"] = False, str(exc)
    finally:
        index.close()
    return report


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
    state, node = State(args.state), settings.spool.node
    if state in WAITING_STATES:
        rows = [
            {"id": postback_id(p), "node": node, "path": str(p), **_retry_summary(spool, p)}
            for p in spool.records.waiting(state)
        ]
        return rows[: args.limit], 0
    rows = []
    for folder in spool.records.folders(state, args.since):
        rows.append({"id": folder.name, "node": node, "path": str(folder), **_summary(spool, folder)})
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
    reason = "; ".join(str(part.get("error")) for part in last.get("parts", []))
    return {"next_try_at": retry.get("next_try_at"), "attempts": retry.get("attempts"), "reason": reason}


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
        summary["duplicate_of_node"] = record.duplicate.get("duplicate_of_node")
    return summary


def show(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    try:
        found = spool.records.find(args.id)
    except NotFound as here:
        if not settings.index.shared:
            raise
        return _elsewhere(settings, spool, args.id, here), 0
    result: dict[str, Any] = {
        "id": found.id,
        "node": settings.spool.node,
        "state": str(found.state),
        "path": str(found.path),
    }
    if found.path.is_file():
        try:
            result["request"] = spool.read(found.path).meta
        except CorruptPostback as exc:
            raise CommandError(str(exc)) from exc
        return result, 0
    return {**result, **spool.records.contents(found)}, 0


def _elsewhere(settings: Settings, spool: Spool, wanted: str, here: NotFound) -> dict[str, Any]:
    """A postback this spool does not hold, as the shared index knows it: which VM holds it, and where.
    ``here``: what this spool said (none, or several), which stands unless only other VMs hold the id."""
    index = cli_index(settings, spool)
    try:
        rows = index.locate(wanted)
    finally:
        index.close()
    if not rows or any(row["node"] == settings.spool.node for row in rows):
        raise here
    if len({row["spool_id"] for row in rows}) > 1:
        names = ", ".join(sorted({str(row["spool_id"]) for row in rows}))
        raise NotFound(f"{wanted} is the start of several ids in the index: {names}; give more of the id")
    row = rows[0]
    return {
        "id": row["spool_id"],
        "node": row["node"],
        "state": row["state"],
        "folder": row["folder"],
        "elsewhere": f"on the VM {row['node']}, in its spool's {row['folder']}: run `mospool show` there",
        **{key: row[key] for key in ("received_at", "kind", "from", "to", "tracking_id") if row.get(key)},
    }


def find(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    search = Search(
        senders=_number_forms(args.sender),
        recipients=_number_forms(args.recipient),
        keyword=args.keyword,
        tracking_id=args.tracking_id,
        kind=args.kind,
        state=args.state,
        since=args.since,
        until=args.until,
        limit=args.limit,
    )
    index = cli_index(settings, spool)
    try:
        return index.find(search), 0
    finally:
        index.close()


def _number_forms(raw: str | None) -> tuple[str, str] | None:
    """+1 (774) 555-0001 as Sinch writes it (17745550001), and with a leading + in case a record has one."""
    if raw is None:
        return None
    digits = raw.translate(str.maketrans("", "", "+ -()"))
    return digits, "+" + digits


def cli_index(settings: Settings, spool: Spool, create: bool = False) -> Index:
    """The index, for one command: the SQLite file must exist unless ``create``; a shared one must answer."""
    if not settings.index.shared and not create and not spool.index_file.is_file():
        name = spool.index_file.name
        raise CommandError(f"no {name} in {spool.root}: the worker makes it at start (or run reindex)")
    index = open_index(settings, connections=2)
    try:
        index.ping()
    except IndexUnavailable as exc:
        index.close()
        raise CommandError(str(exc)) from exc
    return index
