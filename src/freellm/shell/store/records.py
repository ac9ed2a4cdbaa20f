"""The records the store takes and returns, and their mapping to and from table rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

import attrs

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
    )


def attempt_record(row: Sequence[Any]) -> AttemptRecord:
    return AttemptRecord(*row)


Pending = tuple[RequestRecord, tuple[AttemptRecord, ...]]


def insert_logs(connection: sqlite3.Connection, batch: Sequence[Pending]) -> None:
    # OR IGNORE: a request id written before (a caller's bug) must not make the batch fail again
    # on every retry and hold up the log behind it.
    connection.executemany(
        f"INSERT OR IGNORE INTO requests ({REQUEST_COLUMNS}) VALUES ({_marks(REQUEST_COLUMNS)})",
        [attrs.astuple(request, recurse=False) for request, _ in batch],
    )
    connection.executemany(
        f"INSERT OR IGNORE INTO attempts (request_id, {ATTEMPT_COLUMNS})"
        f" VALUES (?, {_marks(ATTEMPT_COLUMNS)})",
        [
            (request.id, *attrs.astuple(attempt, recurse=False))
            for request, attempts in batch
            for attempt in attempts
        ],
    )


def _marks(columns: str) -> str:
    return ", ".join("?" for _ in columns.split(","))
