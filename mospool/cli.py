"""`python -m mospool <command>`: what postqueue/postsuper give a Postfix admin, for the spool.

Every command prints for people by default and JSON with --json. `status` exits 1 when something needs
attention, so a monitor can run it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mospool import logs, pages
from mospool.config import CONFIG_ENV, ConfigError, Settings, config_path, load_settings
from mospool.index import Index
from mospool.spool import SUFFIX, Spool, SpoolError, encode, id_time

FOLDER_STATES = ("processed", "failed", "duplicates")
FILE_STATES = ("incoming", "work", "deferred")


class CommandError(Exception):
    """A request the CLI cannot carry out; the message says why."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(config_path(args.config))
        logs.configure("WARNING")
        spool = Spool(settings.spool.dir)
        spool.create()
        result, code = args.command(settings, spool, args)
        assert isinstance(code, int)
    except (ConfigError, SpoolError, CommandError) as exc:
        print(f"mospool: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(_human(result))
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mospool", description=__doc__)
    parser.add_argument("--config", help=f"config file (default: ${CONFIG_ENV}, else config.ini)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    commands = parser.add_subparsers(required=True, metavar="command")

    def command(name: str, handler: Callable[..., Any], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.set_defaults(command=handler)
        # Also accepted after the command; SUPPRESS keeps the subparser from resetting them to None.
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sub.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return sub

    command("status", status, "counts per state, backlog age, failures; exit 1 when attention is needed")
    listing = command("list", list_state, "list postbacks in one state")
    listing.add_argument("state", choices=FILE_STATES + FOLDER_STATES)
    listing.add_argument("--since", type=_date, help="YYYY-MM-DD (UTC receive date)")
    listing.add_argument("--limit", type=int, default=50)
    show_cmd = command("show", show, "everything about one postback")
    show_cmd.add_argument("id")
    finder = command("find", find, "search processed records")
    finder.add_argument("--from", dest="sender")
    finder.add_argument("--to", dest="recipient")
    finder.add_argument("--keyword")
    finder.add_argument("--tracking-id")
    finder.add_argument("--kind", choices=["mms_mo", "sms_mo", "status", "other"])
    finder.add_argument("--since", type=_date)
    finder.add_argument("--until", type=_date)
    finder.add_argument("--limit", type=int, default=100)
    retrying = command("retry", retry, "put failed postbacks back through the worker")
    retrying.add_argument("ids", nargs="*")
    retrying.add_argument("--all-failed", action="store_true")
    retrying.add_argument("--stage", help="with --all-failed: only this stage (e.g. media)")
    purging = command("purge", purge, "delete record folders older than the retention")
    purging.add_argument("--older-than", type=int, metavar="DAYS", help="default: [retention] per state")
    purging.add_argument("--state", choices=FOLDER_STATES, action="append")
    purging.add_argument("--dry-run", action="store_true")
    command("reindex", reindex, "rebuild the index from processed/ and duplicates/")
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


def _find(spool: Spool, postback_id: str) -> tuple[str, Path]:
    for state in FOLDER_STATES:
        folder = spool.record_dir(state, postback_id) if _looks_like_id(postback_id) else None
        if folder and folder.is_dir():
            return state, folder
    for state in FILE_STATES:
        for candidate in (spool.root / state / (postback_id + SUFFIX), spool.root / state / postback_id):
            if candidate.exists():
                return state, candidate
    raise CommandError(f"no postback with id {postback_id}")


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
        reasons[f"{error.get('stage', '?')}: {str(error.get('error', '?'))[:80]}"] += 1
    processed = list(_record_folders(spool, "processed"))
    last = max((p.stat().st_mtime for p in processed[-50:]), default=None)
    alerts = []
    if oldest > settings.monitor.backlog_alert_seconds:
        alerts.append(f"oldest waiting postback is {oldest:.0f}s old")
    if counts["failed"]:
        alerts.append(f"{counts['failed']} postbacks in failed/")
    result = {
        "counts": counts,
        "oldest_waiting_seconds": round(oldest, 1),
        "failures": dict(reasons.most_common()),
        "last_processed_at": dt.datetime.fromtimestamp(last, dt.UTC).isoformat() if last else None,
        "free_bytes": spool.free_bytes(),
        "attention": alerts,
    }
    return result, 1 if alerts else 0


def list_state(
    settings: Settings, spool: Spool, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], int]:
    if args.state in FILE_STATES:
        rows = [{"id": p.name.removesuffix(SUFFIX), "path": str(p)} for p in _files(spool, args.state)]
        return rows[: args.limit], 0
    rows = []
    for folder in _record_folders(spool, args.state, args.since):
        rows.append({"id": folder.name, "path": str(folder), **_summary(folder)})
        if len(rows) >= args.limit:
            break
    return rows, 0


def _summary(folder: Path) -> dict[str, Any]:
    message = _read_json(folder / "message.json") or _read_json(folder / "message-001.json") or {}
    error = _read_json(folder / "error.json")
    duplicate = _read_json(folder / "duplicate.json")
    summary = {key: message.get(key) for key in ("kind", "from", "to", "tracking_id") if message.get(key)}
    if error:
        summary["error"] = f"{error.get('stage')}: {error.get('error')}"
    if duplicate:
        summary["duplicate_of"] = duplicate.get("duplicate_of")
    return summary


def show(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    state, path = _find(spool, args.id)
    result: dict[str, Any] = {"id": args.id, "state": state, "path": str(path)}
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
    filters = {
        "sender = ?": args.sender,
        "recipient = ?": args.recipient,
        "keyword = ? COLLATE NOCASE": args.keyword,
        "tracking_id = ?": args.tracking_id,
        "kind = ?": args.kind,
        "received_at >= ?": args.since.isoformat() if args.since else None,
        "received_at < ?": (args.until + dt.timedelta(days=1)).isoformat() if args.until else None,
    }
    where = [clause for clause, value in filters.items() if value is not None]
    params = tuple(value for value in filters.values() if value is not None)
    sql = (
        "SELECT spool_id, received_at, kind, sender, recipient, keyword, tracking_id, subject, text, folder "
        "FROM records WHERE state = 'processed'"
        + "".join(f" AND {clause}" for clause in where)
        + " ORDER BY received_at DESC LIMIT ?"
    )
    index = Index(spool.root)
    try:
        rows = [dict(row) for row in index.query(sql, (*params, args.limit))]
    finally:
        index.close()
    return rows, 0


def retry(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    if args.all_failed:
        folders = [
            folder
            for folder in _record_folders(spool, "failed")
            if args.stage is None or (_read_json(folder / "error.json") or {}).get("stage") == args.stage
        ]
    elif args.ids:
        folders = [_failed_folder(spool, postback_id) for postback_id in args.ids]
    else:
        raise CommandError("retry needs postback ids or --all-failed")
    return [{"id": folder.name, "requeued": str(_requeue(spool, folder))} for folder in folders], 0


def _failed_folder(spool: Spool, postback_id: str) -> Path:
    state, folder = _find(spool, postback_id)
    if state != "failed":
        raise CommandError(f"{postback_id} is in {state}/, not failed/: only failed postbacks can be retried")
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


def purge(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    retention = settings.retention
    days = {"processed": retention.processed_days, "failed": retention.failed_days}
    days["duplicates"] = retention.duplicates_days
    today = dt.datetime.now(dt.UTC).date()
    removed: dict[str, list[str]] = {}
    index = Index(spool.root)
    try:
        for state in args.state or FOLDER_STATES:
            age = days[state] if args.older_than is None else args.older_than
            cutoff = (today - dt.timedelta(days=age)).isoformat()
            root = spool.root / state
            old = [day for day in sorted(root.iterdir()) if day.is_dir() and day.name < cutoff]
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


def pages_command(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """Every record page, day page and the root page, for a spool filed before pages (or after a crash)."""
    index = Index(spool.root)
    try:
        return pages.rebuild(spool, index), 0
    finally:
        index.close()


# --- output for people


def _human(result: Any) -> str:
    if isinstance(result, dict) and "counts" in result:
        return _human_status(result)
    if isinstance(result, list):
        if not result:
            return "(none)"
        return "\n".join("  ".join(f"{k}={v}" for k, v in row.items() if v is not None) for row in result)
    return json.dumps(result, indent=2, default=str, ensure_ascii=False)


def _human_status(status: dict[str, Any]) -> str:
    lines = ["state        count"]
    lines += [f"{state:<12} {count}" for state, count in status["counts"].items()]
    lines.append(f"oldest waiting: {status['oldest_waiting_seconds']:.0f}s")
    lines.append(f"last processed: {status['last_processed_at'] or 'never'}")
    lines.append(f"free space:     {status['free_bytes'] / 2**30:.1f} GiB")
    if status["failures"]:
        lines.append("failures:")
        lines += [f"  {count:>5}  {reason}" for reason, count in status["failures"].items()]
    lines.append("attention: " + ("; ".join(status["attention"]) or "none"))
    return "\n".join(lines)
