"""`mospool <command>` (or `python -m mospool`): what postqueue/postsuper give a Postfix admin, for the spool.

Every command prints for people by default and JSON with --json. `status` exits 1 when something needs
attention, so a monitor can run it. The CLI never creates a spool: it opens the one [spool] dir names, and
stops (exit 2) when that is not a spool.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mospool import logs, pages
from mospool.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    EXIT_CONFIG,
    ConfigError,
    Settings,
    config_path,
    installed_default,
    load_settings,
    spool_problem,
)
from mospool.index import FILE_NAME as INDEX_FILE
from mospool.index import Index
from mospool.outbox import Outbox
from mospool.record import FILED_STATES, read_folder
from mospool.spool import DIR_MODE, SUFFIX, Spool, SpoolError, State, encode, fsync_dir, id_time

FOLDER_STATES = tuple(state.value for state in FILED_STATES)
FILE_STATES = tuple(state.value for state in (State.INCOMING, State.WORK, State.DEFERRED))
DELIVERY_STATES = ("undelivered",)  # webhooks that gave up (mospool.forward)
# What makes a folder a spool (the receiver and the worker create these; dismissed/ may come later).
SPOOL_FOLDERS = ("tmp", *FILE_STATES, "processed", "failed", "duplicates")
REASON_WIDTH = 80
# Shown escaped in text output: control characters (newline, escape sequences) and line/paragraph separators.
UNPRINTABLE = {code: f"\\u{code:04x}" for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)}


class CommandError(Exception):
    """A request the CLI cannot carry out; the message says why."""


def installed() -> int:
    """The `mospool` console script: on a VM it finds /etc/mo-spool/config.ini without --config."""
    return main(default_config=installed_default(), prog="mospool")


def main(argv: list[str] | None = None, default_config: Path = DEFAULT_CONFIG, prog: str = "") -> int:
    args = _parser(prog or "python -m mospool", default_config).parse_args(argv)
    config = config_path(args.config, default_config)
    try:
        settings = load_settings(config)
        logs.configure("WARNING")
        spool = open_spool(settings)
        result, code = args.command(settings, spool, args)
        assert isinstance(code, int)
    except (ConfigError, CommandError) as exc:
        print(f"mospool: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SpoolError as exc:
        print(f"mospool: {spool_problem(exc, config)}", file=sys.stderr)
        return EXIT_CONFIG
    if args.json:
        tagged = {"spool": str(spool.root), **result} if isinstance(result, dict) else result
        print(json.dumps(tagged, indent=2, default=str))
    else:
        print(f"spool: {spool.root}")
        print(args.human(result))
    return code


def open_spool(settings: Settings) -> Spool:
    """The spool [spool] dir names, as it is: a missing or half-made one is an error, never created here."""
    spool = Spool(settings.spool.dir)
    if not spool.root.is_dir():
        raise SpoolError(f"no spool at {spool.root}")
    missing = [name for name in SPOOL_FOLDERS if not (spool.root / name).is_dir()]
    if missing:
        raise SpoolError(
            f"{spool.root} is not a spool (no {', '.join(f'{name}/' for name in missing)} in it; "
            "the receiver and the worker create them when they start)"
        )
    return spool


def _parser(prog: str, default_config: Path) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--config", help=f"config file (default: ${CONFIG_ENV}, else {default_config})")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    commands = parser.add_subparsers(required=True, metavar="command")

    def command(
        name: str, handler: Callable[..., Any], help_text: str, human: Callable[[Any], str] | None = None
    ) -> argparse.ArgumentParser:
        """``human`` renders the result for people; by default rows for a list, an outline for the rest."""
        sub = commands.add_parser(name, help=help_text)
        sub.set_defaults(command=handler, human=human or _human_default)
        # Also accepted after the command; SUPPRESS keeps the subparser from resetting them to None.
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sub.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return sub

    command(
        "status",
        status,
        "counts per state, backlog age, failures; exit 1 when attention is needed",
        _human_status,
    )
    listing = command("list", list_state, "list postbacks in one state", _human_rows)
    listing.add_argument("state", choices=FILE_STATES + FOLDER_STATES + DELIVERY_STATES)
    listing.add_argument("--since", type=_date, help="YYYY-MM-DD (UTC receive date)")
    listing.add_argument("--limit", type=int, default=50)
    show_cmd = command("show", show, "everything about one postback", _human_outline)
    show_cmd.add_argument("id", help="the id, or enough of its start to be unique")
    finder = command(
        "find", find, "search filed notices (processed, failed, duplicates, dismissed)", _human_rows
    )
    finder.add_argument("--from", dest="sender")
    finder.add_argument("--to", dest="recipient")
    finder.add_argument("--keyword")
    finder.add_argument("--tracking-id")
    finder.add_argument("--kind", choices=["mms_mo", "sms_mo", "status", "other"])
    finder.add_argument("--state", choices=FOLDER_STATES, help="default: every filed state")
    finder.add_argument("--since", type=_date)
    finder.add_argument("--until", type=_date)
    finder.add_argument("--limit", type=int, default=100)
    retrying = command("retry", retry, "put failed postbacks back through the worker", _human_rows)
    retrying.add_argument("ids", nargs="*")
    retrying.add_argument("--all-failed", action="store_true")
    retrying.add_argument("--stage", help="with --all-failed: only this stage (e.g. media)")
    dismissing = command(
        "dismiss", dismiss, "move handled failed postbacks to dismissed/, out of the alert", _human_rows
    )
    dismissing.add_argument("ids", nargs="+", metavar="ID")
    purging = command("purge", purge, "delete record folders older than the retention", _human_purge)
    purging.add_argument("--older-than", type=int, metavar="DAYS", help="default: [retention] per state")
    purging.add_argument("--state", choices=FOLDER_STATES, action="append")
    purging.add_argument("--dry-run", action="store_true")
    command("reindex", reindex, "rebuild the index from processed/ and duplicates/", _human_reindex)
    redelivering = command("redeliver", redeliver, "put undelivered webhooks back in the outbox", _human_rows)
    redelivering.add_argument("ids", nargs="*", help="postback ids, or entries <id>.<NNN>")
    redelivering.add_argument("--all", action="store_true", help="every undelivered webhook")
    command("pages", pages_command, "write every HTML page of the spool").add_argument(
        "--rebuild", action="store_true", required=True
    )
    return parser


def _date(raw: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {raw}") from exc


# --- reading the spool


def _record_folders(spool: Spool, state: str, since: dt.date | None = None) -> Iterator[Path]:
    root = spool.root / state
    for day in sorted(root.iterdir()) if root.is_dir() else []:
        if day.is_dir() and (since is None or day.name >= since.isoformat()):
            yield from _day_records(day)


def _day_records(day: Path) -> list[Path]:
    """The record folders of one day folder, not its pages."""
    return sorted(path for path in day.iterdir() if path.is_dir())


def _files(spool: Spool, state: str) -> Iterator[Path]:
    """Postbacks in incoming/ and work/ (spool files) or deferred/ (folders); not work/'s build folders."""
    for path in sorted((spool.root / state).iterdir()):
        if path.name.endswith(SUFFIX) or (state == "deferred" and path.is_dir()):
            yield path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def _find(spool: Spool, wanted: str) -> tuple[str, Path]:
    """The postback with id ``wanted``, or the only one whose id starts with it."""
    exact = _find_exact(spool, wanted)
    if exact:
        return exact
    matches: dict[str, tuple[str, Path]] = {}
    for state, path in _find_prefix(spool, wanted):
        matches.setdefault(path.name.removesuffix(SUFFIX), (state, path))
    if len(matches) == 1:
        return next(iter(matches.values()))
    if not matches:
        raise CommandError(f"no postback with id {wanted}, nor one whose id starts with it")
    names = sorted(matches)
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    raise CommandError(f"{wanted} is the start of {len(names)} ids: {shown}; give more of the id")


def _find_exact(spool: Spool, postback_id: str) -> tuple[str, Path] | None:
    for state in FOLDER_STATES:
        folder = spool.record_dir(state, postback_id) if _looks_like_id(postback_id) else None
        if folder and folder.is_dir():
            return state, folder
    for state in FILE_STATES:
        for candidate in (spool.root / state / (postback_id + SUFFIX), spool.root / state / postback_id):
            if candidate.exists():
                return state, candidate
    return None


def _find_prefix(spool: Spool, prefix: str) -> Iterator[tuple[str, Path]]:
    """Ids start with their receive date (YYYYMMDD), so only the matching day folders are read."""
    for state in FOLDER_STATES:
        root = spool.root / state
        days = sorted(root.iterdir()) if root.is_dir() else []
        for day in days:
            if day.is_dir() and day.name.replace("-", "").startswith(prefix[:8]):
                yield from (
                    (state, folder) for folder in sorted(day.iterdir()) if folder.name.startswith(prefix)
                )
    for state in FILE_STATES:
        yield from ((state, path) for path in _files(spool, state) if path.name.startswith(prefix))


def _looks_like_id(postback_id: str) -> bool:
    try:
        id_time(postback_id)
    except ValueError:
        return False
    return True


def _age_seconds(postback_id: str) -> float:
    return max((dt.datetime.now(dt.UTC) - id_time(postback_id)).total_seconds(), 0.0)


# --- commands: each returns (result for output, exit code)


def status(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    counts = {state: sum(1 for _ in _files(spool, state)) for state in FILE_STATES}
    counts.update({state: sum(1 for _ in _record_folders(spool, state)) for state in FOLDER_STATES})
    waiting = sorted(p.name.removesuffix(SUFFIX) for p in _files(spool, "incoming"))
    oldest = _age_seconds(waiting[0]) if waiting else 0.0
    reasons: Counter[str] = Counter()
    for folder in _record_folders(spool, "failed"):
        error = _read_json(folder / "error.json") or {}
        reasons[_ellipsized(f"{error.get('stage', '?')}: {error.get('error', '?')}", REASON_WIDTH)] += 1
    processed = list(_record_folders(spool, "processed"))
    last = max((p.stat().st_mtime for p in processed[-50:]), default=None)
    alerts = []
    if oldest > settings.monitor.backlog_alert_seconds:
        alerts.append(f"oldest waiting postback is {oldest:.0f}s old")
    if counts["failed"]:
        alerts.append(f"{counts['failed']} postbacks in failed/")
    webhooks = _delivery_counts(spool)
    if webhooks["undelivered"]:
        alerts.append(f"{webhooks['undelivered']} webhooks in undelivered/ (list undelivered, redeliver)")
    result = {
        "counts": counts,
        "oldest_waiting_seconds": round(oldest, 1),
        "failures": dict(reasons.most_common()),
        "last_processed_at": dt.datetime.fromtimestamp(last, dt.UTC).isoformat() if last else None,
        "free_bytes": spool.free_bytes(),
        "webhooks": webhooks,
        "attention": alerts,
    }
    return result, 1 if alerts else 0


def _ellipsized(text: str, width: int) -> str:
    """On one line, at most ``width`` characters, with … where it was cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def list_state(
    settings: Settings, spool: Spool, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], int]:
    if args.state in DELIVERY_STATES:
        return _undelivered_rows(spool, args.limit), 0
    if args.state in FILE_STATES:
        rows = [
            {"id": p.name.removesuffix(SUFFIX), "path": str(p), **_retry_summary(p)}
            for p in _files(spool, args.state)
        ]
        return rows[: args.limit], 0
    rows = []
    for folder in _record_folders(spool, args.state, args.since):
        rows.append({"id": folder.name, "path": str(folder), **_summary(folder, args.state)})
        if len(rows) >= args.limit:
            break
    return rows, 0


def _retry_summary(path: Path) -> dict[str, Any]:
    """A deferred postback's next try and why it waits, from its retry.json."""
    retry = _read_json(path / "retry.json") if path.is_dir() else None
    if not isinstance(retry, dict):
        return {}
    last = (retry.get("errors") or [{}])[-1]
    reason = "; ".join(str(part.get("error")) for part in last.get("parts", []))
    return {"next_try_at": retry.get("next_try_at"), "attempts": retry.get("attempts"), "reason": reason}


def _summary(folder: Path, state: str) -> dict[str, Any]:
    """Who sent what (the first notice, in any state), and why it failed or what it duplicates."""
    record = read_folder(folder, State(state))
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
    state, path = _find(spool, args.id)
    result: dict[str, Any] = {"id": path.name.removesuffix(SUFFIX), "state": state, "path": str(path)}
    if path.is_file():
        postback = spool.read(path)
        result["request"] = postback.meta
        return result, 0
    for name in ("message.json", "request.json", "error.json", "duplicate.json", "retry.json"):
        value = _read_json(path / name)
        if value is not None:
            result[name.removesuffix(".json")] = value
    batch = sorted(path.glob("message-*.json"))
    if batch:
        result["messages"] = [_read_json(p) for p in batch]
    media_dir = path / "media"
    result["files"] = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    if media_dir.is_dir():
        result["media"] = sorted(p.name for p in media_dir.iterdir())
    return result, 0


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
    index = _open_index(spool)
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


def _open_index(spool: Spool) -> Index:
    if not (spool.root / INDEX_FILE).is_file():
        raise CommandError(f"no {INDEX_FILE} in {spool.root}: the worker makes it at start (or run reindex)")
    return Index(spool.root)


def retry(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    if args.all_failed:
        folders = [
            folder
            for folder in _record_folders(spool, "failed")
            if args.stage is None or (_read_json(folder / "error.json") or {}).get("stage") == args.stage
        ]
    elif args.ids:
        folders = [_failed_folder(spool, postback_id, "retried") for postback_id in args.ids]
    else:
        raise CommandError("retry needs postback ids or --all-failed")
    index = _open_index(spool)
    try:
        rows = []
        for folder in folders:
            rows.append({"id": folder.name, "requeued": str(_requeue(spool, folder))})
            index.unfiled(folder.name)
    finally:
        index.close()
    return rows, 0


def _failed_folder(spool: Spool, postback_id: str, verb: str) -> Path:
    state, folder = _find(spool, postback_id)
    if state != "failed":
        raise CommandError(f"{postback_id} is in {state}/, not failed/: only failed postbacks can be {verb}")
    return folder


def _requeue(spool: Spool, folder: Path) -> Path:
    """failed/<date>/<id>/ back to incoming/<id>.postback, keeping its history and any media fetched.

    The folder moves to work/<id>/ first (so the worker cannot see it as filed), the rebuilt spool file is
    put inside it (where crash recovery finds it), and only then released to incoming/.
    """
    meta = _read_json(folder / "request.json")
    bodies = sorted(folder.glob("body.*"))
    if not isinstance(meta, dict) or not bodies:
        raise CommandError(
            f"{folder} has no request.json and body: it cannot be rebuilt (see spool-file.postback)"
        )
    body = bodies[0].read_bytes()
    error = _read_json(folder / "error.json") or {}
    meta["previous_failures"] = [*meta.get("previous_failures", []), error]
    build = spool.work / folder.name
    folder.rename(build)
    work_file = build / (folder.name + SUFFIX)
    spool.write_new(work_file, encode(meta, body))
    for leftover in build.iterdir():
        if leftover.is_file() and leftover != work_file:
            leftover.unlink()
    target = spool.incoming / work_file.name
    work_file.rename(target)
    return target


def dismiss(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    folders = [_failed_folder(spool, postback_id, "dismissed") for postback_id in args.ids]
    index = _open_index(spool)
    try:
        rows = []
        for folder in folders:
            target = _dismiss(spool, folder)
            index.moved(folder.name, State.DISMISSED, str(target.relative_to(spool.root)))
            rows.append({"id": folder.name, "dismissed": str(target)})
    finally:
        index.close()
    return rows, 0


def _dismiss(spool: Spool, folder: Path) -> Path:
    """failed/<date>/<id>/ to dismissed/<date>/<id>/ whole, in one rename; both folders fsynced."""
    target = spool.record_dir(State.DISMISSED, folder.name)
    if target.exists():
        raise CommandError(f"{target} already exists")
    for new_dir in (target.parent.parent, target.parent):
        _make_spool_dir(spool, new_dir)
    os.rename(folder, target)
    fsync_dir(target.parent)
    fsync_dir(folder.parent)
    return target


def _make_spool_dir(spool: Spool, path: Path) -> None:
    """A folder owned like the spool, so the services (and purge, run as them) can still manage it."""
    if path.is_dir():
        return
    path.mkdir(mode=DIR_MODE)
    owner = spool.root.stat()
    if os.geteuid() == 0:
        os.chown(path, owner.st_uid, owner.st_gid)
    fsync_dir(path.parent)


def purge(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    retention = settings.retention
    days = {"processed": retention.processed_days, "failed": retention.failed_days}
    days.update(duplicates=retention.duplicates_days, dismissed=retention.failed_days)
    today = dt.datetime.now(dt.UTC).date()
    removed: dict[str, list[str]] = {}
    index = _open_index(spool)
    try:
        for state in args.state or FOLDER_STATES:
            age = days[state] if args.older_than is None else args.older_than
            cutoff = (today - dt.timedelta(days=age)).isoformat()
            root = spool.root / state
            days_kept = sorted(root.iterdir()) if root.is_dir() else []
            old = [day for day in days_kept if day.is_dir() and day.name < cutoff]
            removed[state] = [
                str(folder.relative_to(spool.root)) for day in old for folder in _day_records(day)
            ]
            if not args.dry_run:
                for day in old:
                    index.forget_folders(f"{state}/{day.name}/")
                    shutil.rmtree(day)
    finally:
        index.close()
    return {"dry_run": args.dry_run, "removed": removed}, 0


def reindex(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    index = Index(spool.root)
    try:
        count = index.rebuild()
    finally:
        index.close()
    return {"records": count}, 0


# --- webhook deliveries (mospool.forward)


def _delivery_counts(spool: Spool) -> dict[str, int]:
    outbox = Outbox(spool.root)
    return {"outbox": outbox.count(outbox.pending), "undelivered": outbox.count(outbox.undelivered)}


def _undelivered_rows(spool: Spool, limit: int) -> list[dict[str, Any]]:
    outbox = Outbox(spool.root)
    rows = []
    for name in sorted(outbox.names(outbox.undelivered))[:limit]:
        parked = outbox.schedule(name, outbox.undelivered)
        reason, attempts = parked.get("reason"), parked.get("attempts", 1)
        rows.append({"id": name, "attempts": attempts, "reason": reason, "path": str(outbox.undelivered)})
    return rows


def redeliver(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    """Undelivered entries back into outbox/, fresh schedule; the worker sends them at its next rescan."""
    outbox = Outbox(spool.root)
    parked = sorted(outbox.names(outbox.undelivered))
    if not args.all and not args.ids:
        raise CommandError("redeliver needs postback ids (or entries <id>.<NNN>) or --all")
    wanted = set(args.ids)
    chosen = [name for name in parked if args.all or {name, name.rsplit(".", 1)[0]} & wanted]
    missing = wanted - set(chosen) - {name.rsplit(".", 1)[0] for name in chosen}
    if missing:
        raise CommandError(f"not in undelivered/: {', '.join(sorted(missing))}")
    for name in chosen:
        outbox.redeliver(name)
    return [{"id": name, "requeued": str(outbox.entry_path(name))} for name in chosen], 0


# --- pages (mospool.pages)


def pages_command(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """Every record page, day page and the root page, for a spool filed before pages (or after a crash)."""
    index = Index(spool.root)
    try:
        return pages.rebuild(spool, index), 0
    finally:
        index.close()


# --- output for people: one function per kind of result


def _human_default(result: Any) -> str:
    return _human_rows(result) if isinstance(result, list) else _human_outline(result)


def _human_rows(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    return "\n".join("  ".join(f"{k}={_field(v)}" for k, v in row.items() if v is not None) for row in rows)


def _field(value: Any) -> str:
    """A value on one line: text with spaces, quotes or control characters is quoted and escaped."""
    text = str(value)
    if text and not any(c.isspace() or c in "\"'\\=" or ord(c) in UNPRINTABLE for c in text):
        return text
    return json.dumps(text, ensure_ascii=False).translate(UNPRINTABLE)


def _human_outline(value: Any, indent: str = "") -> str:
    """Nested dicts and lists as indented `key: value` and `- item` lines (show)."""
    items = value.items() if isinstance(value, dict) else (("-", item) for item in value)
    lines = []
    for key, item in items:
        label = f"{indent}{key}" if key == "-" else f"{indent}{key}:"
        if isinstance(item, dict | list) and item:
            lines += [label, _human_outline(item, indent + "  ")]
        else:
            lines.append(f"{label} {'-' if item in (None, [], {}) else _field(item)}")
    return "\n".join(lines)


def _human_purge(result: dict[str, Any]) -> str:
    verb = "would remove" if result["dry_run"] else "removed"
    lines = [f"{state}: {verb} {len(folders)} record folders" for state, folders in result["removed"].items()]
    lines += [f"  {folder}" for folders in result["removed"].values() for folder in folders]
    return "\n".join(lines)


def _human_reindex(result: dict[str, Any]) -> str:
    return f"indexed {result['records']} records from processed/ and duplicates/"


def _human_status(status: dict[str, Any]) -> str:
    lines = ["state        count"]
    lines += [f"{state:<12} {count}" for state, count in status["counts"].items()]
    lines.append(f"oldest waiting: {status['oldest_waiting_seconds']:.0f}s")
    lines.append(f"last processed: {status['last_processed_at'] or 'never'}")
    lines.append(f"free space:     {status['free_bytes'] / 2**30:.1f} GiB")
    webhooks = status["webhooks"]
    lines.append(f"webhooks:       {webhooks['outbox']} in outbox/, {webhooks['undelivered']} undelivered")
    if status["failures"]:
        lines.append("failures:")
        lines += [f"  {count:>5}  {reason}" for reason, count in status["failures"].items()]
    lines.append("attention: " + ("; ".join(status["attention"]) or "none"))
    return "\n".join(lines)
