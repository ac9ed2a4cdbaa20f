"""The SQLite store: provider keys (sealed), the chain override, settings, the request log, and
snapshots of the router's state (ledger, health, sessions).

Theory of operation
-------------------
One connection per store, opened with ``check_same_thread=False`` and used only from trio worker
threads, one call at a time: every call goes through ``trio.to_thread.run_sync`` with the store's
own ``CapacityLimiter(1)``, so the event loop never blocks on the disk and the connection never
sees two threads at once. The database runs in WAL mode with ``synchronous=NORMAL`` (a commit is
durable once the WAL is checkpointed or the OS flushes it; a power cut may lose the last commits,
never corrupt the file), foreign keys on, and a busy timeout so that a CLI command writing while
the server runs waits instead of failing. Every write is one ``BEGIN IMMEDIATE`` transaction.

The store never sees a plaintext secret: it takes and returns the sealed bytes of
:mod:`freellm.shell.secrets`.

Request logs stay off the hot path: :meth:`Store.log_request` only appends to a buffer in memory;
:meth:`Store.run_writer` writes the buffer in one transaction every ``interval`` seconds, or at
once when ``flush_at`` requests are waiting. Nothing is ever dropped: a batch that could not be
written (the flush was cancelled before its thread started, or SQLite failed) goes back to the
front of the buffer, and leaving :func:`open_store` writes whatever is left, under a shielded
cancel scope, even when the writer task was cancelled first.

Schema versions are ``PRAGMA user_version``: :data:`MIGRATIONS` holds one tuple of statements
per version, and each migration runs in its own transaction together with its version bump.

Error tree::

    StoreError      the file is not a freellm database, a newer freellm wrote it, or the store
                    is closed
    sqlite3.Error   anything else SQLite reports (disk full, I/O error), passed through
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import trio

__all__ = [
    "FLUSH_AT",
    "MIGRATIONS",
    "AttemptRecord",
    "KeyRecord",
    "RequestRecord",
    "Store",
    "StoreError",
    "migrate",
    "open_store",
]

T = TypeVar("T")

FLUSH_AT: Final = 10_000
"""Pending requests at which the writer flushes at once instead of waiting for its tick."""

BUSY_TIMEOUT_MS: Final = 5_000

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
)
"""Migration ``i`` (0-based) takes the schema from version ``i`` to ``i + 1``. Append only."""


class StoreError(Exception):
    """The database cannot be used: not ours, too new, or closed. The message says which."""


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


_KEY_COLUMNS: Final = (
    "id, provider, label, enabled, created_at, health, last_check, last_error, secret"
)
# The log's columns are the records' fields, in order (rows are written with ``attrs.astuple``).
_REQUEST_COLUMNS: Final = ", ".join(field.name for field in attrs.fields(RequestRecord))
_ATTEMPT_COLUMNS: Final = ", ".join(field.name for field in attrs.fields(AttemptRecord))


def _key_record(row: Sequence[Any]) -> KeyRecord:
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
    )


def _request_record(row: Sequence[Any]) -> RequestRecord:
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


def _attempt_record(row: Sequence[Any]) -> AttemptRecord:
    return AttemptRecord(*row)


def _new_key_id() -> str:
    return "k_" + secrets.token_hex(4)


def _to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# --- the store ----------------------------------------------------------------------------------

_Pending = tuple[RequestRecord, tuple[AttemptRecord, ...]]


class Store:
    """The open database. Make one with :func:`open_store`; every method but :meth:`log_request`
    runs in a worker thread, one at a time.

    Raises :class:`StoreError` from any method once the store is closed.
    """

    def __init__(self, connection: sqlite3.Connection, path: Path, *, flush_at: int) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = connection
        self._limiter = trio.CapacityLimiter(1)
        self._pending: list[_Pending] = []
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
        return await trio.to_thread.run_sync(_in_transaction, connection, fn, limiter=self._limiter)

    # -- keys --

    async def add_key(
        self,
        provider: str,
        label: str,
        sealed: bytes | Callable[[str], bytes],
        *,
        created_at: float | None = None,
    ) -> KeyRecord:
        """Store a new key under a fresh id (``k_`` and 8 hex digits) and return its record.

        ``sealed`` is usually a callable ``seal(key_id) -> bytes``: the id is the associated data
        of the seal, so the secret can only be sealed once the id is chosen. It is called once,
        in the store's worker thread, so it must not touch trio. Plain bytes are stored as given.
        """
        at = time.time() if created_at is None else created_at

        def insert(connection: sqlite3.Connection) -> KeyRecord:
            key_id = _new_key_id()
            while connection.execute("SELECT 1 FROM keys WHERE id = ?", (key_id,)).fetchone():
                key_id = _new_key_id()  # 32 bits: a clash is rare, not impossible
            blob = sealed(key_id) if callable(sealed) else sealed
            record = KeyRecord(key_id, provider, label, True, at, None, None, None, bytes(blob))
            connection.execute(
                f"INSERT INTO keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key_id, provider, label, 1, at, None, None, None, record.sealed),
            )
            return record

        return await self._write(insert)

    async def list_keys(self) -> list[KeyRecord]:
        """Every key, oldest first."""

        def select(connection: sqlite3.Connection) -> list[KeyRecord]:
            rows = connection.execute(
                f"SELECT {_KEY_COLUMNS} FROM keys ORDER BY created_at, rowid"
            ).fetchall()
            return [_key_record(row) for row in rows]

        return await self._read(select)

    async def get_key(self, key_id: str) -> KeyRecord | None:
        def select(connection: sqlite3.Connection) -> KeyRecord | None:
            row = connection.execute(
                f"SELECT {_KEY_COLUMNS} FROM keys WHERE id = ?", (key_id,)
            ).fetchone()
            return None if row is None else _key_record(row)

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
            "UPDATE keys SET secret = ?, health = NULL, last_check = NULL, last_error = NULL"
            " WHERE id = ?",
            (bytes(sealed), key_id),
        )

    async def record_key_health(
        self, key_id: str, health: str | None, last_check: float | None, last_error: str | None
    ) -> bool:
        """Whether there is such a key."""
        return await self._change(
            "UPDATE keys SET health = ?, last_check = ?, last_error = ? WHERE id = ?",
            (health, last_check, last_error, key_id),
        )

    async def _change(self, sql: str, parameters: tuple[Any, ...]) -> bool:
        def run(connection: sqlite3.Connection) -> bool:
            return connection.execute(sql, parameters).rowcount > 0

        return await self._write(run)

    # -- chain and settings --

    async def get_chain(self) -> list[str] | None:
        """The user's fallback chain, or ``None`` when they never set one."""

        def select(connection: sqlite3.Connection) -> list[str] | None:
            rows = connection.execute("SELECT entry FROM chain ORDER BY position").fetchall()
            return [entry for (entry,) in rows] or None

        return await self._read(select)

    async def set_chain(self, entries: Sequence[str] | None) -> None:
        """Replace the chain; ``None`` or an empty one removes the override (an empty chain
        would route nothing)."""
        rows = list(enumerate(entries or ()))

        def replace(connection: sqlite3.Connection) -> None:
            connection.execute("DELETE FROM chain")
            connection.executemany("INSERT INTO chain (position, entry) VALUES (?, ?)", rows)

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
            await self._write(lambda connection: _insert_logs(connection, batch))
        except BaseException:
            self._pending[:0] = batch
            raise

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
        disk.
        """
        task_status.started()
        while True:
            with trio.move_on_after(interval):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.flush()

    async def recent_requests(self, limit: int = 100) -> list[RequestRecord]:
        """The last ``limit`` requests written (not those still pending), newest first."""

        def select(connection: sqlite3.Connection) -> list[RequestRecord]:
            rows = connection.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM requests ORDER BY at DESC, rowid DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [_request_record(row) for row in rows]

        return await self._read(select)

    async def attempts_of(self, request_id: str) -> list[AttemptRecord]:
        """The attempts written for ``request_id``, in order."""

        def select(connection: sqlite3.Connection) -> list[AttemptRecord]:
            rows = connection.execute(
                f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE request_id = ? ORDER BY n",
                (request_id,),
            ).fetchall()
            return [_attempt_record(row) for row in rows]

        return await self._read(select)

    async def prune_requests(self, before: float) -> int:
        """Delete requests that arrived before ``before`` (and their attempts); how many."""

        def delete(connection: sqlite3.Connection) -> int:
            return connection.execute("DELETE FROM requests WHERE at < ?", (before,)).rowcount

        return await self._write(delete)

    # -- closing --

    async def _close(self) -> None:
        """Write what is pending, then close the connection, even if the write fails."""
        connection = self._live()
        try:
            await self.flush()
        finally:
            self._connection = None
            await trio.to_thread.run_sync(_close_connection, connection, limiter=self._limiter)


def _in_transaction(connection: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = fn(connection)
    except BaseException:
        _rollback(connection)
        raise
    connection.execute("COMMIT")
    return result


def _rollback(connection: sqlite3.Connection) -> None:
    # SQLite rolls back by itself after some errors (a full disk); a second ROLLBACK would
    # replace the real error with "no transaction is active".
    if connection.in_transaction:
        connection.execute("ROLLBACK")


def _get_json(connection: sqlite3.Connection, table: str, name: str) -> Any | None:
    row = connection.execute(f"SELECT value FROM {table} WHERE name = ?", (name,)).fetchone()
    return None if row is None else json.loads(row[0])


def _insert_logs(connection: sqlite3.Connection, batch: Sequence[_Pending]) -> None:
    # OR IGNORE: a request id written before (a caller's bug) must not make the batch fail again
    # on every retry and hold up the log behind it.
    connection.executemany(
        f"INSERT OR IGNORE INTO requests ({_REQUEST_COLUMNS}) VALUES ({_marks(_REQUEST_COLUMNS)})",
        [attrs.astuple(request, recurse=False) for request, _ in batch],
    )
    connection.executemany(
        f"INSERT OR IGNORE INTO attempts (request_id, {_ATTEMPT_COLUMNS})"
        f" VALUES (?, {_marks(_ATTEMPT_COLUMNS)})",
        [
            (request.id, *attrs.astuple(attempt, recurse=False))
            for request, attempts in batch
            for attempt in attempts
        ],
    )


def _marks(columns: str) -> str:
    return ", ".join("?" for _ in columns.split(","))


# --- opening ------------------------------------------------------------------------------------


def _connect(path: Path, migrations: Sequence[Sequence[str]]) -> sqlite3.Connection:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # isolation_level=None: the module opens no transactions of its own; ours are explicit.
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA foreign_keys = ON")
        migrate(connection, migrations)
    except StoreError as exc:
        connection.close()
        raise StoreError(f"{path}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        connection.close()
        if isinstance(exc, sqlite3.OperationalError):
            raise  # locked, read-only, I/O: SQLite's own words say it best
        # "file is not a database" and the like: the path is the useful part.
        raise StoreError(f"{path} is not a freellm database ({exc})") from None
    except BaseException:
        connection.close()
        raise
    return connection


def migrate(connection: sqlite3.Connection, migrations: Sequence[Sequence[str]]) -> int:
    """Bring the schema up to version ``len(migrations)``, one transaction per step, and return
    that version.

    The version is read again inside each transaction, so two processes opening a new database
    at once do not both create it. Raises :class:`StoreError` when the database is newer than
    ``migrations`` (written by a later freellm).
    """
    target = len(migrations)
    while True:
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > target:
                raise StoreError(
                    f"the database has schema version {version}, newer than this freellm knows"
                    f" ({target}): it was written by a later release"
                )
            if version == target:
                connection.execute("COMMIT")
                return int(version)
            for statement in migrations[version]:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            _rollback(connection)
            raise
        connection.execute("COMMIT")


def _close_connection(connection: sqlite3.Connection) -> None:
    try:
        connection.execute("PRAGMA optimize")
    finally:
        connection.close()


@asynccontextmanager
async def open_store(path: Path, *, flush_at: int = FLUSH_AT) -> AsyncIterator[Store]:
    """Open (creating it and its directory, mode 0700, if need be) and migrate the database at
    ``path``; on the way out, write the pending log and close it, even under cancellation.

    Raises :class:`StoreError` when ``path`` is not a freellm database or a newer freellm wrote
    it, and ``sqlite3.Error`` when SQLite cannot open it.
    """
    connection = await trio.to_thread.run_sync(_connect, path, MIGRATIONS)
    store = Store(connection, path, flush_at=flush_at)
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await store._close()
