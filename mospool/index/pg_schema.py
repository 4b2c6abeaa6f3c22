"""The index's tables in PostgreSQL, created and migrated by whoever opens the index first, under a lock.

Every worker (and the CLI) runs ``migrate`` when it first reaches the database: inside one transaction holding
an advisory lock, it reads the schema version and applies the steps it lacks, so two VMs starting at once
neither race on CREATE TABLE nor both apply a step. A database migrated by a newer release is refused rather
than written with an older idea of its tables.

Text columns that are compared as ranges (spool ids, folders) use the "C" collation, so they sort byte by
byte as the spool's names do (and as SQLite compares them), whatever the database's locale.
"""

from __future__ import annotations

import psycopg

from mospool.index.rows import COLUMNS

LOCK = 0x6D6F2D73706F6F6C  # "mo-spool": the advisory lock key held while migrating
SEARCHABLE = ", ".join(f'"{column}" text' for column in COLUMNS)

STEPS = (
    # 1: claims and processed records, duplicates, one row per filed notice (with its message.json), nodes.
    f"""
    CREATE TABLE records (
        key text PRIMARY KEY,                       -- the dedup key of one notice
        spool_id text COLLATE "C" NOT NULL,         -- the postback that owns it
        node text NOT NULL,                         -- the VM that received that postback
        state text NOT NULL,                        -- work | deferred | processed
        received_at timestamptz,
        folder text COLLATE "C",                    -- record folder relative to that VM's spool, once filed
        {SEARCHABLE},
        claimed_at timestamptz NOT NULL DEFAULT now()
    );                                              -- looked up by key only: a claim's update stays HOT
    CREATE TABLE duplicates (
        spool_id text COLLATE "C" NOT NULL,
        key text NOT NULL,
        node text NOT NULL,
        duplicate_of text NOT NULL,
        duplicate_of_node text,
        received_at timestamptz,
        folder text COLLATE "C",
        PRIMARY KEY (spool_id, key)
    );
    CREATE TABLE messages (
        spool_id text COLLATE "C" NOT NULL,
        position integer NOT NULL,                  -- 1, or its place in a batch
        node text NOT NULL,
        state text NOT NULL,                        -- processed | failed | duplicates | dismissed
        received_at timestamptz,
        folder text COLLATE "C" NOT NULL,
        {SEARCHABLE},
        media_count integer NOT NULL DEFAULT 0,
        first_image text,
        reason text,
        duplicate_of text,
        duplicate_of_node text,
        message jsonb,                              -- the notice's record (a summary if not processed)
        PRIMARY KEY (spool_id, position)
    );
    CREATE INDEX messages_node_folder ON messages (node, folder, position);
    CREATE INDEX messages_received ON messages (received_at);
    CREATE INDEX messages_sender ON messages (sender);
    CREATE INDEX messages_recipient ON messages (recipient);
    CREATE INDEX messages_tracking ON messages (tracking_id);
    CREATE TABLE nodes (
        node text PRIMARY KEY,
        spool text,
        first_seen timestamptz NOT NULL DEFAULT now(),
        last_seen timestamptz NOT NULL DEFAULT now()
    );
    """,
    # 2: a delivery-status notice's status and details on its row (the day pages show them), and the words
    # of each notice's subject and text for `find --text` (a generated tsvector with a GIN index). Rows filed
    # before have no status until `mospool reindex` on their VM.
    """
    ALTER TABLE messages
        ADD COLUMN status text,
        ADD COLUMN status_details text,
        ADD COLUMN search tsvector GENERATED ALWAYS AS (
            to_tsvector('simple', coalesce(subject, '') || ' ' || coalesce(text, ''))
        ) STORED;
    CREATE INDEX messages_search ON messages USING gin (search);
    """,
)
VERSION = len(STEPS)


class NewerSchema(Exception):
    """The database was migrated by a newer release of mo-spool."""


def migrate(conn: psycopg.Connection[object]) -> int:
    """Bring the schema to VERSION (one transaction, under the advisory lock); returns the version found."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS mospool_schema (version integer NOT NULL)")
        found = conn.execute("SELECT max(version) FROM mospool_schema").fetchone()
        version = int(found[0]) if found and found[0] is not None else 0  # type: ignore[index]
        if version > VERSION:
            raise NewerSchema(
                f"the index's schema is version {version}, newer than this release's {VERSION}: "
                "upgrade mo-spool on this VM"
            )
        for step in STEPS[version:]:
            conn.execute(step)
        if version < VERSION:
            conn.execute("DELETE FROM mospool_schema")
            conn.execute("INSERT INTO mospool_schema (version) VALUES (%s)", (VERSION,))
    return version
