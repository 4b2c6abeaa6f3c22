"""The CLI's commands that send again: ``redeliver`` (entries that gave up, back into their outbox) and
``resend`` (filed notices queued anew, such as those filed before forwarding was on).

Both only write the outbox, through the store; the running worker's senders find the entries at their next
rescan and send them as any other, with the same retries and parking.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator
from typing import Any

from mospool.cli.inspect import CommandError, Parked, cli_index, parked_entries, search, whose
from mospool.config import Settings
from mospool.english import counted, listed
from mospool.outputs import outboxes, pages, webhooks
from mospool.store import Entry, Outbox, Spool, State


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
    rows = [_redelivered(spool, outbox, entry) for outbox, entry in chosen]
    pages.changed(settings, spool)  # the front page: what waits and what is parked
    return rows, 0


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
        shown = listed(postbacks)
        raise CommandError(
            f"{wanted} is the start of entries of {len(postbacks)} postbacks: {shown}; give more of it"
        )
    return started


# --- resend

CONFIRM_ABOVE = 100  # more notices than this are queued only with --yes
SHOWN = 50  # notices listed in the result (the first ones, in receive order)


def resend(settings: Settings, spool: Spool, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """Filed notices, chosen like find's, queued anew for the webhooks with their usual webhook-id."""
    forward: webhooks.ForwardSettings = settings.output(webhooks.SECTION)
    if not forward.enabled:
        raise CommandError("[forward] url is not set: there is no application to send to")
    chosen = _chosen_notices(settings, spool, args, forward)
    postbacks = {(state, spool_id) for state, spool_id, _ in chosen}
    if len(chosen) > CONFIRM_ABOVE and not args.yes and not args.dry_run:
        raise CommandError(
            f"{counted(len(chosen), 'notice')} of {counted(len(postbacks), 'postback')} match: nothing was "
            f"queued; run again with --yes to queue them (or --dry-run to see them)"
        )
    outbox = spool.outbox(webhooks.DESTINATION)
    planned = list(_entries(spool, forward, chosen))
    result: dict[str, Any] = {
        "matched": len(chosen),
        "postbacks": len(postbacks),
        "dry_run": args.dry_run,
        "notices": [_planned_row(entry) for entry in planned[:SHOWN]],
    }
    if args.dry_run:
        return result, 0
    parked = set(outbox.names(outbox.undelivered)) & {entry.name for entry in planned}
    for name in sorted(parked):  # parked: put back with a fresh schedule, as redeliver does
        outbox.redeliver(name)
    queued = outbox.add(entry for entry in planned if entry.name not in parked)
    result["queued"] = len(queued) + len(parked)
    result["redelivered"] = len(parked)
    result["waiting_already"] = len(planned) - result["queued"]
    result["outbox"] = outbox.pending_label
    result["rescan_seconds"] = settings.worker.rescan_seconds
    pages.changed(settings, spool)  # the front page: what waits and what is parked
    return result, 0


def _chosen_notices(
    settings: Settings, spool: Spool, args: argparse.Namespace, forward: webhooks.ForwardSettings
) -> list[tuple[str, str, int]]:
    """(state, postback id, position) of every filed notice matching the filters, in receive order; by
    default in the states the webhooks forward."""
    states = tuple(forward.states) if args.state is None else None
    chosen = search(args, states=states, here_only=True, oldest_first=True, limit=None)
    index = cli_index(settings, spool)
    try:
        found = index.find(chosen)
    finally:
        index.close()
    return [(str(row["state"]), str(row["id"]), int(row["position"])) for row in found]


def _entries(
    spool: Spool, forward: webhooks.ForwardSettings, chosen: list[tuple[str, str, int]]
) -> Iterator[Entry]:
    """The outbox entries of the chosen notices, built from their record folders as the filer built them."""
    for (state, spool_id), notices in itertools.groupby(chosen, key=lambda notice: notice[:2]):
        positions = {position for _, _, position in notices}
        path = spool.records.record_dir(State(state), spool_id)
        if not path.is_dir():  # purged or moved since the index said so
            continue
        for entry in webhooks.entries(spool.records.read(path), forward, spool):
            if entry.position in positions:
                yield entry


def _planned_row(entry: Entry) -> dict[str, Any]:
    notice = Parked(entry.name, entry.spool_id, entry.id, whose(entry.body))
    return {**notice.row(), "state": entry.state}
