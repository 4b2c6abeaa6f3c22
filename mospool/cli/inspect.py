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
from mospool.english import counted, shortened
from mospool.index import Index, IndexUnavailable, Search, open_index, where
from mospool.outputs import outboxes, status_parts
from mospool.space import shortage
from mospool.store import FILED_STATES, NotFound, Outbox, Spool, State, id_age_seconds
from mospool.store.layout import PAGE, WAITING_STATES
from mospool.store.outbox import entry_spool_id
from mospool.store.postback import CorruptPostback
from mospool.store.spool import postback_id

REASON_WIDTH = 80


class CommandError(Exception):
    """A request the CLI cannot carry out; the message says why."""


def status(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[Report, int]:
    records = spool.records
    found = {state: list(records.waiting(state)) for state in WAITING_STATES}  # each folder listed once
    found.update((state, list(records.folders(state))) for state in FILED_STATES)
    counts = {str(state): len(paths) for state, paths in found.items()}
    waiting = found[State.INCOMING]  # oldest first
    oldest = id_age_seconds(postback_id(waiting[0]) if waiting else None)
    reasons: Counter[str] = Counter()
    for folder in found[State.FAILED]:
        error = records.read(folder).error or {}
        reasons[shortened(f"{error.get('stage', '?')}: {error.get('error', '?')}", REASON_WIDTH)] += 1
    last = max((p.stat().st_mtime for p in found[State.PROCESSED][-50:]), default=None)
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
        "free_bytes": free,
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


def list_state(
    settings: Settings, spool: Spool, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], int]:
    if args.state in outboxes(spool):
        return undelivered_rows(spool, args.state, args.limit), 0
    state, node = State(args.state), settings.spool.node
    if state in WAITING_STATES:
        rows = [
            {"id": postback_id(p), "node": node, **located(spool, p), **_retry_summary(spool, p)}
            for p in spool.records.waiting(state)
        ]
        return rows[: args.limit], 0
    rows = []
    for folder in spool.records.folders(state, args.since):
        rows.append({"id": folder.name, "node": node, **located(spool, folder), **_summary(spool, folder)})
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
        **located(spool, found.path),
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
    """Filed notices matching every filter given, on any VM: newest first, or with --text best match first."""
    index = cli_index(settings, spool)
    try:
        return [_hit(row) for row in index.find(search(args, limit=args.limit))], 0
    finally:
        index.close()


def search(args: argparse.Namespace, **more: Any) -> Search:
    """The filters given to ``find`` or ``resend``; an option a command does not have is no filter."""

    def option(name: str) -> Any:
        return getattr(args, name, None)

    return Search(
        senders=_number_forms(option("sender")),
        recipients=_number_forms(option("recipient")),
        keyword=option("keyword"),
        tracking_id=option("tracking_id"),
        kind=option("kind"),
        state=option("state"),
        since=option("since"),
        until=option("until"),
        text=option("text"),
        **more,
    )


def _hit(row: dict[str, Any]) -> dict[str, Any]:
    """A row of find: the notice, its folder, its day and its page (relative to its VM's spool, as the
    browse site serves them), and with --text the words it matched in their context."""
    matched = row.pop("matched", None)
    row.pop("position", None)
    folder = PurePosixPath(row["folder"])
    hit = {**row, "day": str(folder.parent / PAGE), "page": str(folder / PAGE)}
    return {**hit, "matched": matched} if matched is not None else hit


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
        raise CommandError(
            f"no {name} in {spool.root}: the worker makes it at start (or run {COMMAND} reindex)"
        )
    index = open_index(settings, connections=2)
    try:
        index.ping()
    except IndexUnavailable as exc:
        index.close()
        raise CommandError(str(exc)) from exc
    return index
