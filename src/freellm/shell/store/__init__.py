"""The SQLite store: provider keys (sealed), the chain override, settings, the request log, and
snapshots of the router's state (ledger, health, sessions).

Theory of operation
-------------------
One connection per store, opened with ``check_same_thread=False`` and used only from trio worker
threads, one call at a time: every call goes through ``trio.to_thread.run_sync`` with the store's
own ``CapacityLimiter(1)``, so the event loop never blocks on the disk and the connection never
sees two threads at once. The database runs in WAL mode with ``synchronous=NORMAL``: a commit is
in the WAL file when it returns, so a process killed at any moment (``kill -9``) loses nothing it
committed and the next open finds the file whole (SQLite replays the WAL); a power cut may lose
the last commits, never corrupt the file. Foreign keys are on, and a busy timeout makes a CLI
command writing while the server runs wait instead of failing. Every write is one ``BEGIN
IMMEDIATE`` transaction.

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

Layout: :mod:`.schema` holds :data:`MIGRATIONS`; :mod:`.connection` opens, migrates and closes
the SQLite connection and runs transactions; :mod:`.records` holds the records and their rows;
:mod:`.database` holds :class:`Store` and :func:`open_store`.

Error tree::

    StoreError      the file is not a freellm database, a newer freellm wrote it, or the store
                    is closed
    sqlite3.Error   anything else SQLite reports (disk full, I/O error), passed through
"""

from freellm.shell.store.connection import StoreError, migrate
from freellm.shell.store.database import FLUSH_AT, Store, new_key_id, open_store
from freellm.shell.store.records import AttemptRecord, KeyRecord, RequestRecord
from freellm.shell.store.schema import MIGRATIONS

__all__ = [
    "FLUSH_AT",
    "MIGRATIONS",
    "AttemptRecord",
    "KeyRecord",
    "RequestRecord",
    "Store",
    "StoreError",
    "migrate",
    "new_key_id",
    "open_store",
]
