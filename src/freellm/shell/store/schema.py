"""The schema as data: one tuple of SQL statements per version, applied in order.

The request log's rollups
-------------------------
Version 4 adds what the Analytics page reads (:mod:`freellm.core.analytics`). A 30-day window
over a million logged requests is too much to group at every look (SQLite sorts every row it
groups: seconds), so the log keeps rollups beside it, written in the same transaction as its rows:

- ``request_hours``: per hour, answering target (``''`` when nothing answered) and failed or
  not: requests, fallbacks, tokens. The long windows' steps are whole hours, so their
  timelines and per-model counts come from here;
- ``attempt_hours``: per hour, provider and outcome class: attempts and tokens;
- ``latency_days``: per day, metric (``latency``, ``ttft``, ``attempt``), key (target or
  provider) and latency bin: samples. Histograms barely shrink per hour (a busy hour fills most
  bins of most targets), so they are rolled up per day.

``attempt_hours`` and ``latency_days`` have no timeline: their keys lead their primary keys and
the period comes last, so SQLite sums a window's rows in the order of its ``GROUP BY``, reading
the whole rollup (which ``keep_days`` bounds) without sorting: several times faster than sorting
the window's part of it (measured: 28 ms against 107 ms for 30 days of a million requests).
``request_hours`` is led by the hour: its timeline groups by bucket, which only a sort gives.

A rollup row always equals the grouping of the log rows of its period: a batch's new rows are
added up (:func:`hour_rollups` and :func:`day_rollups` over the rowids it wrote), and pruning
deletes the rollups of the periods it empties and groups again the one it cuts in two. The
store reads the whole periods inside a window from the rollups and its edges from the log
(covering indexes led by ``at``): see :func:`freellm.core.analytics.split`.
"""

from __future__ import annotations

from typing import Final

from freellm.core.analytics import EDGES_US

HOUR_S: Final = 3_600
"""The period of ``request_hours`` and ``attempt_hours``."""

DAY_S: Final = 86_400
"""The period of ``latency_days``."""


def hour_rollups(requests_where: str, attempts_where: str) -> tuple[str, str]:
    """Statements adding the log rows that ``requests_where`` and ``attempts_where`` select (SQL
    conditions on ``requests`` and ``attempts``) to the hourly rollups.

    Migration 4 runs them as they are now: a later change of the rollups needs a migration of
    its own, and a frozen copy of these for migration 4.
    """
    return (
        f"""
        INSERT INTO request_hours
            (hour, target, failed, count, fallbacks, prompt_tokens, completion_tokens)
        SELECT CAST(at AS INTEGER) / {HOUR_S}, coalesce(routed_via, ''), status >= 400, count(*),
            sum(attempts > 1), coalesce(sum(prompt_tokens), 0),
            coalesce(sum(completion_tokens), 0)
        FROM requests WHERE {requests_where} GROUP BY 1, 2, 3
        ON CONFLICT (hour, target, failed) DO UPDATE SET
            count = count + excluded.count,
            fallbacks = fallbacks + excluded.fallbacks,
            prompt_tokens = prompt_tokens + excluded.prompt_tokens,
            completion_tokens = completion_tokens + excluded.completion_tokens
        """,
        f"""
        INSERT INTO attempt_hours
            (hour, provider, outcome, count, prompt_tokens, completion_tokens)
        SELECT CAST(at AS INTEGER) / {HOUR_S}, provider, coalesce(error_class, 'unknown'),
            count(*), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0)
        FROM attempts WHERE {attempts_where} GROUP BY 1, 2, 3
        ON CONFLICT (provider, outcome, hour) DO UPDATE SET
            count = count + excluded.count,
            prompt_tokens = prompt_tokens + excluded.prompt_tokens,
            completion_tokens = completion_tokens + excluded.completion_tokens
        """,
    )


def day_rollups(requests_where: str, attempts_where: str) -> tuple[str, str, str]:
    """Statements adding the selected log rows to ``latency_days`` (see :func:`hour_rollups`)."""
    upsert = "ON CONFLICT (metric, key, bin, day) DO UPDATE SET count = count + excluded.count"
    day = f"CAST(at AS INTEGER) / {DAY_S}"
    return (
        f"""
        INSERT INTO latency_days (day, metric, key, bin, count)
        SELECT {day}, 'latency', coalesce(routed_via, ''), latency_bin, count(*)
        FROM requests WHERE {requests_where} GROUP BY 1, 3, 4 {upsert}
        """,
        f"""
        INSERT INTO latency_days (day, metric, key, bin, count)
        SELECT {day}, 'ttft', coalesce(routed_via, ''), ttft_bin, count(*)
        FROM requests WHERE ({requests_where}) AND ttft_bin IS NOT NULL GROUP BY 1, 3, 4 {upsert}
        """,
        f"""
        INSERT INTO latency_days (day, metric, key, bin, count)
        SELECT {day}, 'attempt', provider, latency_bin, count(*)
        FROM attempts WHERE {attempts_where} GROUP BY 1, 3, 4 {upsert}
        """,
    )


def _bin_of(column: str) -> str:
    """SQL for :func:`freellm.core.analytics.latency_bin` of ``column`` (milliseconds), from the
    table of edges that migration 4 fills: the bins of the rows logged before bins were kept."""
    return (
        f"coalesce((SELECT bin FROM temp.latency_edges WHERE us <= {column} * 1000.0"
        " ORDER BY us DESC LIMIT 1), 0)"
    )


_EDGES: Final = ", ".join(f"({us}, {b})" for b, us in enumerate(EDGES_US, start=1))

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
    # 4: analytics (see the module docstring): time to first token, latency bins, the attempts'
    # time (their request's) so that they can be windowed without a join, covering indexes for
    # the windows and the failed requests, and the rollups, filled from the rows logged so far.
    (
        "ALTER TABLE requests ADD COLUMN ttft_ms REAL",
        "ALTER TABLE requests ADD COLUMN latency_bin INTEGER",
        "ALTER TABLE requests ADD COLUMN ttft_bin INTEGER",
        "ALTER TABLE attempts ADD COLUMN at REAL",
        "ALTER TABLE attempts ADD COLUMN latency_bin INTEGER",
        "CREATE TEMP TABLE latency_edges (us INTEGER PRIMARY KEY, bin INTEGER NOT NULL)",
        f"INSERT INTO temp.latency_edges (us, bin) VALUES {_EDGES}",
        f"UPDATE requests SET latency_bin = {_bin_of('requests.latency_ms')}",
        f"""
        UPDATE attempts SET
            at = (SELECT at FROM requests WHERE requests.id = attempts.request_id),
            latency_bin = {_bin_of("attempts.latency_ms")}
        """,
        "DROP TABLE temp.latency_edges",
        # requests_window is led by at too, and answers what requests_at did.
        "DROP INDEX requests_at",
        """
        CREATE INDEX requests_window ON requests
            (at, routed_via, status, attempts, prompt_tokens, completion_tokens, latency_bin,
             ttft_bin)
        """,
        "CREATE INDEX requests_failed ON requests (at) WHERE status >= 400",
        """
        CREATE INDEX attempts_window ON attempts
            (at, provider, error_class, prompt_tokens, completion_tokens, latency_bin)
        """,
        """
        CREATE TABLE request_hours (
            hour INTEGER NOT NULL,
            target TEXT NOT NULL,
            failed INTEGER NOT NULL,
            count INTEGER NOT NULL,
            fallbacks INTEGER NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            PRIMARY KEY (hour, target, failed)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE attempt_hours (
            hour INTEGER NOT NULL,
            provider TEXT NOT NULL,
            outcome TEXT NOT NULL,
            count INTEGER NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            PRIMARY KEY (provider, outcome, hour)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE latency_days (
            day INTEGER NOT NULL,
            metric TEXT NOT NULL,
            key TEXT NOT NULL,
            bin INTEGER NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (metric, key, bin, day)
        ) WITHOUT ROWID
        """,
        *hour_rollups("1", "1"),
        *day_rollups("1", "1"),
    ),
    # 5: stored responses of the Responses door (POST /v1/responses, previous_response_id):
    # the response object and the conversation it ends, as JSON; pruned with the request log.
    (
        """
        CREATE TABLE responses (
            id TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            response TEXT NOT NULL,
            conversation TEXT NOT NULL
        )
        """,
        "CREATE INDEX responses_created_at ON responses (created_at)",
    ),
    # 6: named chains ([router.chains], model "auto:NAME") set on the dashboard or the command
    # line; the chain `auto` follows stays in `chain`.
    (
        """
        CREATE TABLE chains (
            name TEXT NOT NULL,
            position INTEGER NOT NULL,
            entry TEXT NOT NULL,
            enabled INTEGER NOT NULL DEFAULT 1,
            PRIMARY KEY (name, position)
        )
        """,
    ),
)
"""Migration ``i`` (0-based) takes the schema from version ``i`` to ``i + 1``. Append only."""
