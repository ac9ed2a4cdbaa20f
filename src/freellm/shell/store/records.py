"""The records the store takes and returns, their mapping to and from table rows, and the
request log's SQL: writing a batch (and adding it to the rollups), pruning, and reading the
analytics cells of a window (:func:`cell_queries`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import attrs

from freellm.core.analytics import (
    UNKNOWN_OUTCOME,
    AttemptCell,
    BinCell,
    Cells,
    Metric,
    RequestCell,
    Split,
    latency_bin,
    split,
)
from freellm.shell.store.schema import DAY_S, HOUR_S, day_rollups, hour_rollups

# --- records ------------------------------------------------------------------------------------


@attrs.frozen
class KeyRecord:
    """A stored provider key.

    ``sealed`` is the encrypted secret (see :class:`freellm.shell.secrets.Vault`). It is left out
    of ``repr``; callers must never print, log or return it either: sealed is not public.
    """

    id: str
    provider: str
    label: str
    enabled: bool
    created_at: float
    health: str | None  # a core ``health.State`` value; None until first recorded
    last_check: float | None
    last_error: str | None
    sealed: bytes = attrs.field(repr=False)
    health_since: float | None = None  # when the key entered its ``health`` state


@attrs.frozen
class RequestRecord:
    """One client request, as the log keeps it."""

    id: str
    at: float  # epoch seconds when it arrived
    model: str  # as the client asked: "auto", "model" or "provider/model"
    routed_via: str | None  # "provider/model" that answered, None if none did
    status: int  # the status sent to the client
    latency_ms: float
    prompt_tokens: int | None
    completion_tokens: int | None
    attempts: int
    stream: bool
    session: str | None
    error: str | None
    # From the request's start to the first byte of the answer's body sent to the client (a
    # stream's first chunk); None when nothing answered.
    ttft_ms: float | None = None


@attrs.frozen
class AttemptRecord:
    """One upstream call made for a request; ``n`` counts from 1 within the request."""

    n: int
    provider: str
    model: str
    key_id: str | None
    status: int | None  # None when no HTTP status came back (timeout, connection error)
    error_class: str | None
    latency_ms: float
    prompt_tokens: int | None
    completion_tokens: int | None


@attrs.frozen
class StoredResponse:
    """A response of the Responses door, kept for ``previous_response_id`` and ``GET``:
    ``response`` is the response object as the client got it, ``conversation`` the chat messages
    it ends (its input and its output). Both are the user's content: never log them."""

    id: str  # resp_...
    created_at: float  # epoch seconds; pruned with the request log
    response: dict[str, Any] = attrs.field(repr=False)
    conversation: list[dict[str, Any]] = attrs.field(repr=False)


KEY_COLUMNS: Final = (
    "id, provider, label, enabled, created_at, health, last_check, last_error, secret, health_since"
)
# The log's columns are the records' fields, in order (rows are written with ``attrs.astuple``).
REQUEST_COLUMNS: Final = ", ".join(field.name for field in attrs.fields(RequestRecord))
ATTEMPT_COLUMNS: Final = ", ".join(field.name for field in attrs.fields(AttemptRecord))


def key_record(row: Sequence[Any]) -> KeyRecord:
    return KeyRecord(
        id=row[0],
        provider=row[1],
        label=row[2],
        enabled=bool(row[3]),
        created_at=row[4],
        health=row[5],
        last_check=row[6],
        last_error=row[7],
        sealed=bytes(row[8]),
        health_since=row[9],
    )


def request_record(row: Sequence[Any]) -> RequestRecord:
    return RequestRecord(
        id=row[0],
        at=row[1],
        model=row[2],
        routed_via=row[3],
        status=row[4],
        latency_ms=row[5],
        prompt_tokens=row[6],
        completion_tokens=row[7],
        attempts=row[8],
        stream=bool(row[9]),
        session=row[10],
        error=row[11],
        ttft_ms=row[12],
    )


def attempt_record(row: Sequence[Any]) -> AttemptRecord:
    return AttemptRecord(*row)


Pending = tuple[RequestRecord, tuple[AttemptRecord, ...]]


def insert_logs(connection: sqlite3.Connection, batch: Sequence[Pending]) -> None:
    """Write a batch of requests and their attempts, and add them to the rollups (see
    :mod:`.schema`): the rows it wrote are those past the last rowids before it."""
    marks = {
        "requests_mark": _last_rowid(connection, "requests"),
        "attempts_mark": _last_rowid(connection, "attempts"),
    }
    # OR IGNORE: a request id written before (a caller's bug) must not make the batch fail again
    # on every retry and hold up the log behind it.
    connection.executemany(
        f"INSERT OR IGNORE INTO requests ({REQUEST_COLUMNS}, latency_bin, ttft_bin)"
        f" VALUES ({_marks(REQUEST_COLUMNS)}, ?, ?)",
        [
            (
                *attrs.astuple(request, recurse=False),
                latency_bin(request.latency_ms),
                None if request.ttft_ms is None else latency_bin(request.ttft_ms),
            )
            for request, _ in batch
        ],
    )
    connection.executemany(
        f"INSERT OR IGNORE INTO attempts (request_id, at, {ATTEMPT_COLUMNS}, latency_bin)"
        f" VALUES (?, ?, {_marks(ATTEMPT_COLUMNS)}, ?)",
        [
            (
                request.id,
                request.at,
                *attrs.astuple(attempt, recurse=False),
                latency_bin(attempt.latency_ms),
            )
            for request, attempts in batch
            for attempt in attempts
        ],
    )
    for statement in _NEW_ROWS:
        connection.execute(statement, marks)


def _marks(columns: str) -> str:
    return ", ".join("?" for _ in columns.split(","))


def _last_rowid(connection: sqlite3.Connection, table: str) -> int:
    return int(connection.execute(f"SELECT coalesce(max(rowid), 0) FROM {table}").fetchone()[0])


_NEW_ROWS: Final = (
    *hour_rollups("rowid > :requests_mark", "rowid > :attempts_mark"),
    *day_rollups("rowid > :requests_mark", "rowid > :attempts_mark"),
)
_HOUR_AGAIN: Final = hour_rollups("at >= :lo AND at < :hi", "at >= :lo AND at < :hi")
_DAY_AGAIN: Final = day_rollups("at >= :lo AND at < :hi", "at >= :lo AND at < :hi")


def prune_logs(connection: sqlite3.Connection, before: float) -> int:
    """Delete the requests that arrived before ``before`` (their attempts go with them, and so
    do the Responses door's stored responses made before then) and keep the rollups equal to
    what is left: those of the periods emptied go, the period that ``before`` cuts in two is
    grouped again from its rows left. How many requests went."""
    deleted: int = connection.execute("DELETE FROM requests WHERE at < ?", (before,)).rowcount
    connection.execute("DELETE FROM responses WHERE created_at < ?", (before,))
    hour = int(before // HOUR_S)
    day = int(before // DAY_S)
    connection.execute("DELETE FROM request_hours WHERE hour <= ?", (hour,))
    connection.execute("DELETE FROM attempt_hours WHERE hour <= ?", (hour,))
    connection.execute("DELETE FROM latency_days WHERE day <= ?", (day,))
    for statement in _HOUR_AGAIN:
        connection.execute(statement, {"lo": hour * HOUR_S, "hi": (hour + 1) * HOUR_S})
    for statement in _DAY_AGAIN:
        connection.execute(statement, {"lo": day * DAY_S, "hi": (day + 1) * DAY_S})
    return deleted


# --- analytics ----------------------------------------------------------------------------------


@attrs.frozen
class CellQuery:
    """One query of :func:`read_cells`: its SQL, its parameters, and its rows' cells."""

    sql: str
    parameters: Mapping[str, int]
    cells: Callable[[list[Any]], Cells]


def _target(value: str | None) -> str | None:
    return value or None  # the rollups keep "nothing answered" as ''


def _request_cells(rows: list[Any]) -> Cells:
    return Cells(
        requests=tuple(
            RequestCell(bucket, _target(target), bool(failed), *sums)
            for bucket, target, failed, *sums in rows
        )
    )


def _attempt_cells(rows: list[Any]) -> Cells:
    return Cells(attempts=tuple(AttemptCell(*row) for row in rows))


_METRICS: Final = {metric.value: metric for metric in Metric}


def _bin_cells(rows: list[Any]) -> Cells:
    return Cells(
        bins=tuple(BinCell(_METRICS[metric], _target(key), b, n) for metric, key, b, n in rows)
    )


_SUMS: Final = "coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0)"
_REQUESTS_LOGGED: Final = (
    "SELECT CAST(at AS INTEGER) / :step, routed_via, status >= 400, count(*), sum(attempts > 1),"
    f" {_SUMS} FROM requests WHERE at >= :lo AND at < :hi GROUP BY 1, 2, 3"
)
_REQUESTS_ROLLED_UP: Final = (
    "SELECT hour / :hours, target, failed, sum(count), sum(fallbacks), sum(prompt_tokens),"
    " sum(completion_tokens) FROM request_hours WHERE hour >= :lo AND hour < :hi"
    " GROUP BY 1, 2, 3"
)
_ATTEMPTS_LOGGED: Final = (
    f"SELECT provider, coalesce(error_class, '{UNKNOWN_OUTCOME}'), count(*), {_SUMS}"
    " FROM attempts WHERE at >= :lo AND at < :hi GROUP BY 1, 2"
)
_ATTEMPTS_ROLLED_UP: Final = (
    "SELECT provider, outcome, sum(count), sum(prompt_tokens), sum(completion_tokens)"
    " FROM attempt_hours WHERE hour >= :lo AND hour < :hi GROUP BY 1, 2"
)
_BINS_LOGGED: Final = (
    "SELECT 'latency', routed_via, latency_bin, count(*) FROM requests"
    " WHERE at >= :lo AND at < :hi GROUP BY 2, 3",
    "SELECT 'ttft', routed_via, ttft_bin, count(*) FROM requests"
    " WHERE at >= :lo AND at < :hi AND ttft_bin IS NOT NULL GROUP BY 2, 3",
    "SELECT 'attempt', provider, latency_bin, count(*) FROM attempts"
    " WHERE at >= :lo AND at < :hi GROUP BY 2, 3",
)
_BINS_ROLLED_UP: Final = (
    "SELECT metric, key, bin, sum(count) FROM latency_days WHERE day >= :lo AND day < :hi"
    " GROUP BY 1, 2, 3"
)


def cell_queries(since: int, until: int, step: int, *, rollups: bool = True) -> list[CellQuery]:
    """The queries whose cells, added up, are the cells of ``[since, until)`` in buckets of
    ``step`` seconds (whole seconds, ``since`` on a step): the rollups for the whole periods
    inside the window, the log for its edges. The timeline reads the hourly rollups only when
    ``step`` is whole hours. ``rollups=False``: the log alone, for comparison."""
    queries: list[CellQuery] = []
    log_only = Split(None, ((since, until),))
    hours = split(since, until, HOUR_S) if rollups else log_only
    if step % HOUR_S == 0 and hours.periods is not None:
        lo, hi = hours.periods
        parameters = {"lo": lo, "hi": hi, "hours": step // HOUR_S}
        queries.append(CellQuery(_REQUESTS_ROLLED_UP, parameters, _request_cells))
        request_edges = hours.edges
    else:
        request_edges = ((since, until),)
    for lo, hi in request_edges:
        parameters = {"lo": lo, "hi": hi, "step": step}
        queries.append(CellQuery(_REQUESTS_LOGGED, parameters, _request_cells))
    if hours.periods is not None:
        lo, hi = hours.periods
        queries.append(CellQuery(_ATTEMPTS_ROLLED_UP, {"lo": lo, "hi": hi}, _attempt_cells))
    for lo, hi in hours.edges:
        queries.append(CellQuery(_ATTEMPTS_LOGGED, {"lo": lo, "hi": hi}, _attempt_cells))
    days = split(since, until, DAY_S) if rollups else log_only
    if days.periods is not None:
        lo, hi = days.periods
        queries.append(CellQuery(_BINS_ROLLED_UP, {"lo": lo, "hi": hi}, _bin_cells))
    for lo, hi in days.edges:
        queries += [CellQuery(sql, {"lo": lo, "hi": hi}, _bin_cells) for sql in _BINS_LOGGED]
    return queries


def read_cells(
    connection: sqlite3.Connection, since: int, until: int, step: int, *, rollups: bool = True
) -> Cells:
    """The cells of :func:`cell_queries`, in pieces (:func:`freellm.core.analytics.merge`
    adds them up)."""
    cells = Cells()
    for query in cell_queries(since, until, step, rollups=rollups):
        cells += query.cells(connection.execute(query.sql, query.parameters).fetchall())
    return cells
