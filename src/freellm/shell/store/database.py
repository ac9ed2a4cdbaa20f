"""The :class:`Store` itself and :func:`open_store`, which owns it."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import trio

from freellm.core.analytics import Cells
from freellm.shell.store.connection import (
    StoreError,
    close_connection,
    connect,
    in_transaction,
)
from freellm.shell.store.records import (
    ATTEMPT_COLUMNS,
    KEY_COLUMNS,
    REQUEST_COLUMNS,
    AttemptRecord,
    KeyRecord,
    Pending,
    RequestRecord,
    StoredResponse,
    attempt_record,
    insert_logs,
    key_record,
    prune_logs,
    read_cells,
    request_record,
)
from freellm.shell.store.schema import MIGRATIONS

T = TypeVar("T")

FLUSH_AT: Final = 10_000
"""Pending requests at which the writer flushes at once instead of waiting for its tick."""


def new_key_id() -> str:
    return "k_" + secrets.token_hex(4)


def _to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# --- the store ----------------------------------------------------------------------------------


class Store:
    """The open database. Make one with :func:`open_store`; every method but :meth:`log_request`
    runs in a worker thread, one at a time.

    Raises :class:`StoreError` from any method once the store is closed.
    """

    def __init__(self, connection: sqlite3.Connection, path: Path, *, flush_at: int) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = connection
        self._limiter = trio.CapacityLimiter(1)
        self._pending: list[Pending] = []
        self._flush_at = flush_at
        self._wake = trio.Event()

    # -- plumbing --

    def _live(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreError(f"the store {self.path} is closed")
        return self._connection

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        connection = self._live()
        return await trio.to_thread.run_sync(fn, connection, limiter=self._limiter)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        connection = self._live()
        return await trio.to_thread.run_sync(in_transaction, connection, fn, limiter=self._limiter)

    # -- keys --

    async def add_key(
        self,
        provider: str,
        label: str,
        sealed: bytes | Callable[[str], bytes],
        *,
        created_at: float | None = None,
        key_id: str | None = None,
    ) -> KeyRecord:
        """Store a new key under a fresh id (``k_`` and 8 hex digits) and return its record.

        ``sealed`` is usually a callable ``seal(key_id) -> bytes``: the id is the associated data
        of the seal, so the secret can only be sealed once the id is chosen. It is called once,
        in the store's worker thread, so it must not touch trio. Plain bytes are stored as given,
        under ``key_id`` when one is given (from :func:`new_key_id`, sealed with it beforehand).

        Raises :class:`StoreError` if a given ``key_id`` is taken.
        """
        at = time.time() if created_at is None else created_at
        chosen = key_id

        def insert(connection: sqlite3.Connection) -> KeyRecord:
            taken = "SELECT 1 FROM keys WHERE id = ?"
            if chosen is not None:
                if connection.execute(taken, (chosen,)).fetchone():
                    raise StoreError(f"there is already a key {chosen}")
                key_id = chosen
            else:
                key_id = new_key_id()
                while connection.execute(taken, (key_id,)).fetchone():
                    key_id = new_key_id()  # 32 bits: a clash is rare, not impossible
            blob = sealed(key_id) if callable(sealed) else sealed
            record = KeyRecord(key_id, provider, label, True, at, None, None, None, bytes(blob))
            connection.execute(
                f"INSERT INTO keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key_id, provider, label, 1, at, None, None, None, record.sealed, None),
            )
            return record

        return await self._write(insert)

    async def list_keys(self) -> list[KeyRecord]:
        """Every key, oldest first."""

        def select(connection: sqlite3.Connection) -> list[KeyRecord]:
            rows = connection.execute(
                f"SELECT {KEY_COLUMNS} FROM keys ORDER BY created_at, rowid"
            ).fetchall()
            return [key_record(row) for row in rows]

        return await self._read(select)

    async def get_key(self, key_id: str) -> KeyRecord | None:
        def select(connection: sqlite3.Connection) -> KeyRecord | None:
            row = connection.execute(
                f"SELECT {KEY_COLUMNS} FROM keys WHERE id = ?", (key_id,)
            ).fetchone()
            return None if row is None else key_record(row)

        return await self._read(select)

    async def remove_key(self, key_id: str) -> bool:
        """Whether there was such a key. Its log rows stay."""
        return await self._change("DELETE FROM keys WHERE id = ?", (key_id,))

    async def set_key_enabled(self, key_id: str, enabled: bool) -> bool:
        """Whether there is such a key."""
        return await self._change(
            "UPDATE keys SET enabled = ? WHERE id = ?", (int(enabled), key_id)
        )

    async def update_key_secret(self, key_id: str, sealed: bytes) -> bool:
        """Replace a key's sealed secret; whether there is such a key.

        The recorded health is cleared with it: a new secret is a new key to the health table,
        as core/health's ``EDITED`` event has it.
        """
        return await self._change(
            "UPDATE keys SET secret = ?, health = NULL, health_since = NULL, last_check = NULL,"
            " last_error = NULL WHERE id = ?",
            (bytes(sealed), key_id),
        )

    async def set_key_label(self, key_id: str, label: str) -> bool:
        """Whether there is such a key."""
        return await self._change("UPDATE keys SET label = ? WHERE id = ?", (label, key_id))

    async def record_key_health(
        self,
        key_id: str,
        health: str | None,
        last_check: float | None,
        last_error: str | None,
        *,
        since: float | None = None,
    ) -> bool:
        """Whether there is such a key."""
        return await self._change(
            "UPDATE keys SET health = ?, health_since = ?, last_check = ?, last_error = ?"
            " WHERE id = ?",
            (health, since, last_check, last_error, key_id),
        )

    async def record_key_healths(
        self, rows: Sequence[tuple[str, str | None, float | None, float | None, str | None]]
    ) -> None:
        """Several keys' ``(id, health, since, last_check, last_error)`` in one transaction;
        rows of keys that are gone change nothing."""

        def update(connection: sqlite3.Connection) -> None:
            connection.executemany(
                "UPDATE keys SET health = ?, health_since = ?, last_check = ?, last_error = ?"
                " WHERE id = ?",
                [
                    (health, since, checked, error, key_id)
                    for key_id, health, since, checked, error in rows
                ],
            )

        await self._write(update)

    async def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: it changes when another connection (a CLI command,
        another process) commits a change, and never for this store's own writes."""
        return await self._read(lambda c: int(c.execute("PRAGMA data_version").fetchone()[0]))

    async def _change(self, sql: str, parameters: tuple[Any, ...]) -> bool:
        def run(connection: sqlite3.Connection) -> bool:
            return connection.execute(sql, parameters).rowcount > 0

        return await self._write(run)

    # -- chain and settings --

    async def get_chain(self, name: str | None = None) -> list[str] | None:
        """The user's fallback chain (``name``: a named chain; ``None``: the one ``auto``
        follows), its enabled entries, or ``None`` when they never set one."""
        entries = await self.get_chain_entries(name)
        if entries is None:
            return None
        return [entry for entry, enabled in entries if enabled]

    async def get_chain_entries(self, name: str | None = None) -> list[tuple[str, bool]] | None:
        """Every entry of the user's chain ``name`` (``None``: ``auto``'s) with whether it is
        enabled, or ``None`` when they never set one."""

        def select(connection: sqlite3.Connection) -> list[tuple[str, bool]] | None:
            if name is None:
                rows = connection.execute(
                    "SELECT entry, enabled FROM chain ORDER BY position"
                ).fetchall()
            else:
                rows = connection.execute(
                    "SELECT entry, enabled FROM chains WHERE name = ? ORDER BY position", (name,)
                ).fetchall()
            return [(entry, bool(enabled)) for entry, enabled in rows] or None

        return await self._read(select)

    async def get_named_chains(self) -> dict[str, list[tuple[str, bool]]]:
        """Every named chain the user set, by name, with its entries and whether each is on."""

        def select(connection: sqlite3.Connection) -> dict[str, list[tuple[str, bool]]]:
            chains: dict[str, list[tuple[str, bool]]] = {}
            rows = connection.execute(
                "SELECT name, entry, enabled FROM chains ORDER BY name, position"
            )
            for name, entry, enabled in rows:
                chains.setdefault(name, []).append((entry, bool(enabled)))
            return chains

        return await self._read(select)

    async def set_chain(
        self, entries: Sequence[str | tuple[str, bool]] | None, name: str | None = None
    ) -> None:
        """Replace the chain ``name`` (``None``: ``auto``'s): ``provider/model`` entries, or
        ``(entry, enabled)`` pairs. ``None`` or an empty one removes the override (an empty
        chain would route nothing)."""
        rows = [
            (position, *((entry, True) if isinstance(entry, str) else entry))
            for position, entry in enumerate(entries or ())
        ]

        def replace(connection: sqlite3.Connection) -> None:
            if name is None:
                connection.execute("DELETE FROM chain")
                connection.executemany(
                    "INSERT INTO chain (position, entry, enabled) VALUES (?, ?, ?)", rows
                )
                return
            connection.execute("DELETE FROM chains WHERE name = ?", (name,))
            connection.executemany(
                "INSERT INTO chains (name, position, entry, enabled) VALUES (?, ?, ?, ?)",
                [(name, *row) for row in rows],
            )

        await self._write(replace)

    async def get_setting(self, name: str) -> Any | None:
        """The JSON value stored under ``name``, or ``None``."""
        return await self._read(lambda connection: _get_json(connection, "settings", name))

    async def set_setting(self, name: str, value: Any) -> None:
        """Store ``value`` (anything ``json`` encodes) under ``name``; ``None`` removes it.

        Raises ``TypeError`` or ``ValueError`` when ``value`` does not encode as JSON.
        """
        if value is None:
            await self._change("DELETE FROM settings WHERE name = ?", (name,))
            return
        text = _to_json(value)
        await self._change(
            "INSERT INTO settings (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, text),
        )

    # -- state snapshots --

    async def load_state(self, name: str) -> Any | None:
        """The snapshot last saved under ``name`` (decoded JSON), or ``None``."""
        return await self._read(lambda connection: _get_json(connection, "state", name))

    async def save_state(self, name: str, value: Any) -> None:
        """Save one snapshot; see :meth:`save_states`."""
        await self.save_states({name: value})

    async def save_states(self, values: Mapping[str, Any]) -> None:
        """Save snapshots (``ledger.to_data(...)`` and the like) in one transaction, so a restart
        sees all of them from the same moment or none.

        JSON encoding happens in the worker thread, off the event loop: the values must not be
        mutated until this returns. Raises ``TypeError`` or ``ValueError`` for a value that does
        not encode as JSON, and then saves none of them.
        """
        items = list(values.items())
        at = time.time()

        def upsert(connection: sqlite3.Connection) -> None:
            rows = [(name, _to_json(value), at) for name, value in items]
            connection.executemany(
                "INSERT INTO state (name, value, saved_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE"
                " SET value = excluded.value, saved_at = excluded.saved_at",
                rows,
            )

        await self._write(upsert)

    # -- the request log --

    def log_request(self, request: RequestRecord, attempts: Iterable[AttemptRecord] = ()) -> None:
        """Queue ``request`` and its ``attempts`` for the writer, and return at once.

        At :data:`FLUSH_AT` pending requests the writer is woken to flush now rather than at its
        next tick; nothing is dropped, however many are pending. Without a running writer, they
        are written by :meth:`flush` or when the store closes.
        """
        self._live()
        self._pending.append((request, tuple(attempts)))
        if len(self._pending) >= self._flush_at:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Requests logged and not written yet."""
        return len(self._pending)

    async def flush(self) -> None:
        """Write every pending request and attempt in one transaction.

        If the write does not happen (cancelled before its thread started, or SQLite failed), the
        batch goes back to the front of the buffer and the exception propagates.
        """
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            await self._write(lambda connection: insert_logs(connection, batch))
        except BaseException:
            self._pending[:0] = batch
            raise

    async def write_round(self, interval: float = 0.5) -> None:
        """Wait up to ``interval`` seconds, or until :data:`FLUSH_AT` requests are pending, then
        write what is pending (:meth:`flush`): one round of the log writer."""
        with trio.move_on_after(interval):
            await self._wake.wait()
        self._wake = trio.Event()
        await self.flush()

    async def run_writer(
        self,
        *,
        interval: float = 0.5,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Flush the log every ``interval`` seconds, or as soon as :data:`FLUSH_AT` requests are
        pending, until cancelled. Run it in a nursery inside :func:`open_store`: what it has not
        written when cancelled is written when the store closes.

        SQLite errors propagate (the batch stays queued): the log is not worth hiding a failing
        disk. The server runs :meth:`write_round` under its background supervisor instead.
        """
        task_status.started()
        while True:
            await self.write_round(interval)

    async def recent_requests(self, limit: int = 100) -> list[RequestRecord]:
        """The last ``limit`` requests written (not those still pending), newest first."""

        def select(connection: sqlite3.Connection) -> list[RequestRecord]:
            rows = connection.execute(
                f"SELECT {REQUEST_COLUMNS} FROM requests ORDER BY at DESC, rowid DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [request_record(row) for row in rows]

        return await self._read(select)

    async def requests_since(self, since: float) -> list[RequestRecord]:
        """The requests written (not those still pending) that arrived at ``since`` or later,
        oldest first (``freellm export-trace``)."""

        def select(connection: sqlite3.Connection) -> list[RequestRecord]:
            # ORDER BY at alone: the index requests_window, led by at, gives that order as it
            # reads the range, where a tie-break by rowid would make SQLite sort every row.
            rows = connection.execute(
                f"SELECT {REQUEST_COLUMNS} FROM requests WHERE at >= ? ORDER BY at", (since,)
            ).fetchall()
            return [request_record(row) for row in rows]

        return await self._read(select)

    async def last_request_end(self, since: float) -> float | None:
        """When the last request written that arrived at ``since`` or later ended (its arrival
        plus its latency), or ``None``: how long a run that stopped without saving went on."""

        def select(connection: sqlite3.Connection) -> float | None:
            row = connection.execute(
                "SELECT max(at + latency_ms / 1000.0) FROM requests WHERE at >= ?", (since,)
            ).fetchone()
            return None if row[0] is None else float(row[0])

        return await self._read(select)

    async def attempts_of(self, request_id: str) -> list[AttemptRecord]:
        """The attempts written for ``request_id``, in order."""

        def select(connection: sqlite3.Connection) -> list[AttemptRecord]:
            rows = connection.execute(
                f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE request_id = ? ORDER BY n",
                (request_id,),
            ).fetchall()
            return [attempt_record(row) for row in rows]

        return await self._read(select)

    async def failed_requests(self, limit: int = 100) -> list[RequestRecord]:
        """The last ``limit`` requests written that failed (status >= 400), newest first."""

        def select(connection: sqlite3.Connection) -> list[RequestRecord]:
            # status >= 400, as written, is what lets SQLite use the partial index
            # requests_failed: only failures are read, however rare.
            rows = connection.execute(
                f"SELECT {REQUEST_COLUMNS} FROM requests WHERE status >= 400"
                " ORDER BY at DESC, rowid DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [request_record(row) for row in rows]

        return await self._read(select)

    async def analytics_cells(self, since: int, until: int, step: int) -> Cells:
        """The analytics cells of the requests written (not those still pending) that arrived
        in ``[since, until)``, in timeline buckets of ``step`` seconds; whole seconds, ``since``
        on a step (:func:`freellm.core.analytics.bounds` makes such windows).

        In pieces, from the rollups and the log (:func:`.records.cell_queries`): merge them
        (:func:`freellm.core.analytics.merge`; ``summarize`` does). All the queries run in one
        call of the worker thread, so no flush comes between them.
        """
        return await self._read(lambda connection: read_cells(connection, since, until, step))

    async def prune_requests(self, before: float) -> int:
        """Delete requests that arrived before ``before`` (and their attempts, and the stored
        responses made before then), keeping the rollups equal to the log; how many."""
        return await self._write(lambda connection: prune_logs(connection, before))

    # -- stored responses (the Responses door) --

    async def put_response(
        self,
        id: str,
        created_at: float,
        response: Mapping[str, Any],
        conversation: Sequence[Mapping[str, Any]],
    ) -> None:
        """Store (or replace) a response and the conversation it ends, for
        ``previous_response_id`` and ``GET /v1/responses/{id}``; pruned with the request log.

        JSON encoding happens in the worker thread: the values must not be mutated until this
        returns. Raises ``TypeError`` or ``ValueError`` when they do not encode as JSON.
        """

        def upsert(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO responses (id, created_at, response, conversation)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                " created_at = excluded.created_at, response = excluded.response,"
                " conversation = excluded.conversation",
                (id, created_at, _to_json(response), _to_json(conversation)),
            )

        await self._write(upsert)

    async def get_response(self, id: str) -> StoredResponse | None:
        """The response stored under ``id``, or ``None``."""

        def select(connection: sqlite3.Connection) -> StoredResponse | None:
            row = connection.execute(
                "SELECT id, created_at, response, conversation FROM responses WHERE id = ?",
                (id,),
            ).fetchone()
            if row is None:
                return None
            return StoredResponse(row[0], row[1], json.loads(row[2]), json.loads(row[3]))

        return await self._read(select)

    async def delete_response(self, id: str) -> bool:
        """Forget the response stored under ``id``; whether there was one."""
        return await self._change("DELETE FROM responses WHERE id = ?", (id,))

    # -- closing --

    async def _close(self) -> None:
        """Write what is pending, then close the connection, even if the write fails."""
        connection = self._live()
        try:
            await self.flush()
        finally:
            self._connection = None
            await trio.to_thread.run_sync(close_connection, connection, limiter=self._limiter)


def _get_json(connection: sqlite3.Connection, table: str, name: str) -> Any | None:
    row = connection.execute(f"SELECT value FROM {table} WHERE name = ?", (name,)).fetchone()
    return None if row is None else json.loads(row[0])


@asynccontextmanager
async def open_store(path: Path, *, flush_at: int = FLUSH_AT) -> AsyncIterator[Store]:
    """Open (creating it and its directory, mode 0700, if need be) and migrate the database at
    ``path``; on the way out, write the pending log and close it, even under cancellation.

    Raises :class:`StoreError` when ``path`` is not a freellm database or a newer freellm wrote
    it, and ``sqlite3.Error`` when SQLite cannot open it.
    """
    connection = await trio.to_thread.run_sync(connect, path, MIGRATIONS)
    store = Store(connection, path, flush_at=flush_at)
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await store._close()
