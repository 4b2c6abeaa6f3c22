"""The CLI's commands that change the spool: retry, dismiss, purge, reindex and pages (the deliveries' are in
``replay``).

What ``postsuper`` is to Postfix: each one asks the store (``mospool.store``) to move or delete, and keeps
the index in step; none of them builds a path of the spool itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from mospool.cli.inspect import CommandError, located, open_index
from mospool.config import Settings
from mospool.index import Index
from mospool.outputs import pages
from mospool.store import FILED_STATES, Spool, State, id_day
from mospool.store.records import day_prefix, failed_only


def retry(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    records = spool.records
    if args.all_failed:
        folders = [
            folder
            for folder in records.folders(State.FAILED)
            if args.stage is None or (records.read(folder).error or {}).get("stage") == args.stage
        ]
    elif args.ids:
        folders = [failed_only(records.find(wanted), wanted, "retried") for wanted in args.ids]
    else:
        raise CommandError("retry needs postback ids or --all-failed")
    index = open_index(spool)
    try:
        rows = []
        for folder in folders:
            rows.append({"id": folder.name, **located(spool, records.requeue(folder))})
            index.unfiled(folder.name)
    finally:
        index.close()
        pages.changed(settings, spool, {(State.FAILED, id_day(folder.name)) for folder in folders})
    return rows, 0


def dismiss(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    records = spool.records
    folders = [failed_only(records.find(wanted), wanted, "dismissed") for wanted in args.ids]
    index = open_index(spool)
    try:
        rows = []
        for folder in folders:
            target = records.dismiss(folder)
            index.moved(folder.name, State.DISMISSED, records.relative(target))
            pages.moved(settings, spool, target)
            rows.append({"id": folder.name, **located(spool, target)})
    finally:
        index.close()
        days = {id_day(folder.name) for folder in folders}
        pages.changed(
            settings, spool, {(state, day) for day in days for state in (State.FAILED, State.DISMISSED)}
        )
    return rows, 0


def purge(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    retention = settings.retention
    kept = {
        State.PROCESSED: retention.processed_days,
        State.FAILED: retention.failed_days,
        State.DUPLICATES: retention.duplicates_days,
        State.DISMISSED: retention.failed_days,
    }
    today = dt.datetime.now(dt.UTC).date()
    records = spool.records
    removed: dict[str, list[str]] = {}
    index = open_index(spool)
    try:
        for state in [State(name) for name in args.state or FILED_STATES]:
            age = kept[state] if args.older_than is None else args.older_than
            old = records.days_before(state, today - dt.timedelta(days=age))
            folders = [folder for day in old for folder in records.in_day(state, day)]
            removed[state] = [records.relative(folder) for folder in folders]
            if not args.dry_run:
                for day in old:
                    index.forget_folders(day_prefix(state, day))
                    records.purge_day(state, day)
    finally:
        index.close()
        if not args.dry_run:
            pages.changed(settings, spool)  # the front page: its days and counts
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
        return pages.rebuild(spool, index, settings), 0
    finally:
        index.close()
