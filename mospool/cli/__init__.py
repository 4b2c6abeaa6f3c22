"""`mospool <command>`: what postqueue/postsuper give a Postfix admin, for the spool.

Every command prints for people by default and JSON with --json. `status` exits 1 when something needs
attention, so a monitor can run it. The CLI never creates a spool: it opens the one [spool] dir names, and
stops (exit 2) when that is not a spool. The commands are in ``inspect`` (read only) and ``admin`` (they
move, delete or rebuild); ``text`` renders their results for people.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mospool import logs
from mospool.cli import admin, inspect, replay, text
from mospool.cli.inspect import CommandError
from mospool.config import (
    COMMAND,
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
from mospool.outputs import registered, webhooks
from mospool.store import FILED_STATES, NotFound, NotMovable, Spool, SpoolError
from mospool.store.layout import SPOOL_FOLDERS, WAITING_STATES
from mospool.store.outbox import Outbox

FOLDER_STATES = tuple(str(state) for state in FILED_STATES)


def installed() -> int:
    """The `mospool` console script: on a VM it finds /etc/mo-spool/config.ini without --config."""
    return main(default_config=installed_default())


def main(argv: list[str] | None = None, default_config: Path = DEFAULT_CONFIG, prog: str = "") -> int:
    args = _parser(prog or COMMAND, default_config).parse_args(argv)
    config = config_path(args.config, default_config)
    try:
        settings = load_settings(config)
        logs.configure("WARNING")
        spool = open_spool(settings)
        result, code = args.command(settings, spool, args)
        assert isinstance(code, int)
    except (ConfigError, CommandError, NotFound, NotMovable) as exc:
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
        sub.set_defaults(command=handler, human=human or text.default)
        # Also accepted after the command; SUPPRESS keeps the subparser from resetting them to None.
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sub.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return sub

    waiting = tuple(str(state) for state in WAITING_STATES)
    parked = tuple(
        Outbox(Path(), spec.destination).parked_label for spec in registered() if spec.destination is not None
    )
    command(
        "status",
        inspect.status,
        "counts per state, backlog age, failures; exit 1 when attention is needed",
        text.status,
    )
    listing = command("list", inspect.list_state, "list postbacks in one state", text.rows)
    listing.add_argument("state", choices=waiting + FOLDER_STATES + parked)
    listing.add_argument("--since", type=_date, help="YYYY-MM-DD (UTC receive date)")
    listing.add_argument("--limit", type=int, default=50)
    show_cmd = command("show", inspect.show, "everything about one postback", text.outline)
    show_cmd.add_argument("id", help="the id, or enough of its start to be unique")
    finder = command("find", inspect.find, f"search filed notices ({', '.join(FOLDER_STATES)})", text.rows)
    finder.add_argument("--from", dest="sender")
    finder.add_argument("--to", dest="recipient")
    finder.add_argument("--keyword")
    finder.add_argument("--tracking-id")
    finder.add_argument(
        "--text", metavar="WORDS", help="words in the subject or text (all; word* a prefix), best first"
    )
    finder.add_argument("--kind", choices=["mms_mo", "sms_mo", "status", "other"])
    finder.add_argument("--state", choices=FOLDER_STATES, help="default: every filed state")
    finder.add_argument("--since", type=_date)
    finder.add_argument("--until", type=_date)
    finder.add_argument("--limit", type=int, default=100)
    retrying = command("retry", admin.retry, "put failed postbacks back through the worker", text.rows)
    retrying.add_argument("ids", nargs="*")
    retrying.add_argument("--all-failed", action="store_true")
    retrying.add_argument("--stage", help="with --all-failed: only this stage (e.g. media)")
    dismissing = command(
        "dismiss", admin.dismiss, "move handled failed postbacks out of the alert, kept apart", text.rows
    )
    dismissing.add_argument("ids", nargs="+", metavar="ID")
    purging = command("purge", admin.purge, "delete record folders older than the retention", text.purge)
    purging.add_argument("--older-than", type=int, metavar="DAYS", help="default: [retention] per state")
    purging.add_argument("--state", choices=FOLDER_STATES, action="append")
    purging.add_argument("--dry-run", action="store_true")
    command("reindex", admin.reindex, "rebuild the index from the record folders", text.reindex)
    redelivering = command(
        "redeliver", replay.redeliver, "put undelivered deliveries back in their outbox", text.rows
    )
    redelivering.add_argument(
        "ids", nargs="*", help="postback ids, entries <id>.<NNN> or webhook-ids msg_…, or their unique start"
    )
    redelivering.add_argument("--all", action="store_true", help="every undelivered entry")
    resending = command(
        "resend",
        replay.resend,
        "queue filed notices for the webhooks again, with their usual webhook-id",
        text.resend,
    )
    resending.add_argument("--since", type=_date, required=True, help="YYYY-MM-DD (UTC receive date)")
    resending.add_argument("--until", type=_date, help="YYYY-MM-DD, included (default: today)")
    resending.add_argument("--from", dest="sender", help="the sender's number")
    resending.add_argument("--kind", choices=["mms_mo", "sms_mo", "status", "other"])
    resending.add_argument(
        "--state", choices=webhooks.FORWARDABLE_STATES, help="default: the states [forward] sends"
    )
    resending.add_argument("--dry-run", action="store_true", help="list what would be queued")
    resending.add_argument("--yes", action="store_true", help=f"queue more than {replay.CONFIRM_ABOVE}")
    command("pages", admin.pages_command, "write every HTML page of the spool").add_argument(
        "--rebuild", action="store_true", required=True
    )
    return parser


def _date(raw: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {raw}") from exc
