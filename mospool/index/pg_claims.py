"""Dedup claims in PostgreSQL: one unique constraint decides, one transaction for every claim asked meanwhile.

A claim is an INSERT of the key ON CONFLICT DO NOTHING: of two VMs (or threads) claiming one key at once,
exactly one row is inserted, and every other claimant reads that row's owner (spool id and node). A claim
must be committed before its postback is acted on (else a crash of the database could let another VM take
the key too), and a commit waits for a WAL flush; so, as the filer does with record folders, the claims that
the worker's threads ask for while a transaction runs are made together by the next one (two at most at
once): one INSERT of them all, in key order (two transactions then never wait on each other in a cycle),
one SELECT of the owners of those already held, one commit.

A claim is idempotent for its own spool id. When the connection is lost with the outcome unknown (during the
commit, say), each claim of that transaction is read back on a fresh connection: ours (it had committed),
another's (a duplicate), or absent (claimed now). Nothing is guessed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from mospool.index import IndexUnavailable
from mospool.store import Owner

log = logging.getLogger(__name__)

MAX_GROUP = 256
IN_FLIGHT = 2  # claim transactions at once: one gathers claims while the other waits for its commit
RESOLVE_PAUSES = (0.2, 1.0, 2.0)  # before each read-back of a claim whose outcome is unknown
CLAIM_MANY = (
    "INSERT INTO records (key, spool_id, node, state) "
    "SELECT key, spool_id, %s, 'work' FROM unnest(%s::text[], %s::text[]) AS asked (key, spool_id) "
    "ORDER BY key ON CONFLICT (key) DO NOTHING RETURNING key, spool_id"
)
OWNERS = "SELECT key, spool_id, node FROM records WHERE key = ANY(%s)"

Connect = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]


@dataclass
class _Asked:
    key: str
    spool_id: str
    owner: Owner | None = None
    error: IndexUnavailable | None = None
    done: bool = False


class Claims:
    def __init__(self, node: str, connect: Connect) -> None:
        self.node = node
        self.connect = connect  # a connection in a context; psycopg errors come out as IndexUnavailable
        self._cond = threading.Condition()
        self._waiting: list[_Asked] = []
        self._running = 0

    def claim(self, key: str, spool_id: str) -> Owner:
        asked = _Asked(key, spool_id)
        with self._cond:
            self._waiting.append(asked)
            while not asked.done:
                if self._running >= IN_FLIGHT or asked not in self._waiting:
                    self._cond.wait()
                    continue
                group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
                self._running += 1
                self._cond.release()
                try:
                    self._claim_group(group)
                finally:
                    self._cond.acquire()
                    for each in group:
                        each.done = True
                    self._running -= 1
                    self._cond.notify_all()
        if asked.owner is not None:
            return asked.owner
        assert asked.error is not None
        if isinstance(asked.error.__cause__, PoolTimeout):
            raise asked.error  # no connection was had, nothing was sent: the outcome is known (not claimed)
        return self._resolve(key, spool_id, asked.error)

    def _claim_group(self, group: list[_Asked]) -> None:
        try:
            with self.connect() as conn:  # the INSERT commits by itself: one round trip when all are new
                owners = dict(self._owners(conn, group))
        except IndexUnavailable as exc:
            for each in group:
                each.error = exc
            return
        for each in group:
            each.owner = owners[each.key]

    def _owners(self, conn: psycopg.Connection[Any], group: list[_Asked]) -> Iterator[tuple[str, Owner]]:
        """Every key's owner: the rows this INSERT made, then those already there (a key released meanwhile,
        by a failed postback, is asked again)."""
        wanted = {each.key: each.spool_id for each in group}
        while wanted:
            keys, ids = list(wanted), list(wanted.values())
            for key, spool_id in conn.execute(CLAIM_MANY, (self.node, keys, ids)).fetchall():
                yield key, Owner(spool_id, self.node)
                wanted.pop(key)
            if not wanted:
                return
            for key, spool_id, node in conn.execute(OWNERS, (list(wanted),)).fetchall():
                yield key, Owner(spool_id, node)
                wanted.pop(key)

    def _resolve(self, key: str, spool_id: str, lost: IndexUnavailable) -> Owner:
        """The claim's outcome is unknown (the connection went mid-way): read the key back, never guess."""
        log.warning("claim of %s for %s: outcome unknown (%s); reading it back", key, spool_id, lost)
        for pause in RESOLVE_PAUSES:
            time.sleep(pause)
            asked = _Asked(key, spool_id)
            self._claim_group([asked])  # ours (it had committed), another's, or claimed now
            if asked.owner is None:
                continue
            owner = asked.owner
            held = "ours" if owner.spool_id == spool_id else f"held by {owner.spool_id} on {owner.node}"
            log.info("claim of %s for %s resolved: %s", key, spool_id, held)
            return asked.owner
        raise lost
