"""The index's tables read from outside the code under test: sqlite3 on the spool's file, or psycopg on the
shared database. ``?`` placeholders in either case."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg

from mospool.config import Settings
from mospool.store import Spool


def rows(settings: Settings, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if settings.index.shared:
        with psycopg.connect(settings.index.url, autocommit=True) as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            return [tuple(row) for row in conn.execute(sql.replace("?", "%s"), params).fetchall()]
    db = sqlite3.connect(f"file:{Spool(settings.spool.dir).index_file}?mode=ro", uri=True)
    try:
        return [tuple(row) for row in db.execute(sql, params).fetchall()]
    finally:
        db.close()
