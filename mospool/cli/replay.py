"""The CLI's commands that send again: ``redeliver`` (entries that gave up, back into their outbox) and
``resend`` (filed notices queued anew, such as those filed before forwarding was on).

Both only write the outbox, through the store; the running worker's senders find the entries at their next
rescan and send them as any other, with the same retries and parking.
"""

from __future__ import annotations

import argparse
from typing import Any

from mospool.cli.inspect import CommandError, Parked, parked_entries
from mospool.config import Settings
from mospool.outputs import outboxes
from mospool.store import Outbox, Spool


def redeliver(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[list[dict[str, Any]], int]:
    """Undelivered entries back into their outbox, fresh schedule; the worker sends them at its rescan.

    Each ID is a postback id (all its notices), an entry (<id>.<NNN>), a delivery id as the log prints it
    (msg_…), or the start of one of them that names one postback only.
    """
    if not args.all and not args.ids:
        raise CommandError("redeliver needs ids (a postback's, an entry's or a webhook-id) or --all")
    destinations = outboxes(spool)
    every = [(outbox, entry) for outbox in destinations.values() for entry in parked_entries(outbox)]
    if args.all:
        chosen = every
    else:
        found = {wanted: _matching(every, wanted) for wanted in args.ids}
        missing = [wanted for wanted, matches in found.items() if not matches]
        if missing:
            raise CommandError(f"not in {'/, '.join(destinations)}/: {', '.join(missing)}")
        unique = {(outbox.parked_label, entry.name): (outbox, entry) for matches in found.values()
                  for outbox, entry in matches}  # fmt: skip
        chosen = [unique[key] for key in sorted(unique)]
    return [_redelivered(spool, outbox, entry) for outbox, entry in chosen], 0


def _redelivered(spool: Spool, outbox: Outbox, entry: Parked) -> dict[str, Any]:
    outbox.redeliver(entry.name)
    return {**entry.row(), "file": spool.records.relative(outbox.entry_path(entry.name))}


def _matching(every: list[tuple[Outbox, Parked]], wanted: str) -> list[tuple[Outbox, Parked]]:
    """The entries ``wanted`` names exactly, else those it is the start of, when they are one postback's."""
    exact = [(outbox, e) for outbox, e in every if wanted in (e.name, e.spool_id, e.delivery_id)]
    if exact or not wanted:
        return exact
    started = [
        (outbox, e) for outbox, e in every if e.name.startswith(wanted) or e.delivery_id.startswith(wanted)
    ]
    postbacks = sorted({e.spool_id for _, e in started})
    if len(postbacks) > 1:
        more = f" and {len(postbacks) - 10} more" if len(postbacks) > 10 else ""
        shown = ", ".join(postbacks[:10]) + more
        raise CommandError(
            f"{wanted} is the start of entries of {len(postbacks)} postbacks: {shown}; give more of it"
        )
    return started
