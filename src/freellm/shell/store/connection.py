"""The SQLite connection: opening it (pragmas, migrations), transactions and closing."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, TypeVar

T = TypeVar("T")

BUSY_TIMEOUT_MS: Final = 5_000


class StoreError(Exception):
    """The database cannot be used: not ours, too new, or closed. The message says which."""


def in_transaction(connection: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
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


# --- opening ------------------------------------------------------------------------------------


def connect(path: Path, migrations: Sequence[Sequence[str]]) -> sqlite3.Connection:
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


def close_connection(connection: sqlite3.Connection) -> None:
    try:
        connection.execute("PRAGMA optimize")
    finally:
        connection.close()
