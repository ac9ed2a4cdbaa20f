"""The schema as data: one tuple of SQL statements per version, applied in order."""

from __future__ import annotations

from typing import Final

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 1: the first schema.
    (
        """
        CREATE TABLE keys (
            id TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            label TEXT NOT NULL DEFAULT '',
            secret BLOB NOT NULL,
            enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
            created_at REAL NOT NULL,
            health TEXT,
            last_check REAL,
            last_error TEXT
        )
        """,
        "CREATE TABLE chain (position INTEGER PRIMARY KEY, entry TEXT NOT NULL)",
        "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """
        CREATE TABLE state (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            saved_at REAL NOT NULL
        )
        """,
        # No CHECK constraints on the log tables: a batch insert that one row aborts would be
        # retried forever; the records' types are the check.
        """
        CREATE TABLE requests (
            id TEXT PRIMARY KEY,
            at REAL NOT NULL,
            model TEXT NOT NULL,
            routed_via TEXT,
            status INTEGER NOT NULL,
            latency_ms REAL NOT NULL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            attempts INTEGER NOT NULL,
            stream INTEGER NOT NULL,
            session TEXT,
            error TEXT
        )
        """,
        "CREATE INDEX requests_at ON requests (at)",
        # The primary key's index, led by request_id, is the index for looking attempts up by
        # request; key_id is no foreign key, since the log outlives removed keys.
        """
        CREATE TABLE attempts (
            request_id TEXT NOT NULL REFERENCES requests (id) ON DELETE CASCADE,
            n INTEGER NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            key_id TEXT,
            status INTEGER,
            error_class TEXT,
            latency_ms REAL NOT NULL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            PRIMARY KEY (request_id, n)
        )
        """,
    ),
    # 2: key health is what the server observed, persisted with when its state began.
    ("ALTER TABLE keys ADD COLUMN health_since REAL",),
    # 3: a chain entry can be switched off (the dashboard) and keep its place.
    ("ALTER TABLE chain ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1",),
)
"""Migration ``i`` (0-based) takes the schema from version ``i`` to ``i + 1``. Append only."""
