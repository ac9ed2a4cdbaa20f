"""The SQLite store: migrations, keys, chain, settings, state snapshots and the batched log."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from freellm.core import health, ledger, sessions
from freellm.core.catalog import Caps, ModelSpec
from freellm.shell.secrets import Vault
from freellm.shell.store import (
    MIGRATIONS,
    AttemptRecord,
    KeyRecord,
    RequestRecord,
    StoreError,
    migrate,
    open_store,
)

TABLES = {"keys", "chain", "settings", "requests", "attempts", "state", "responses", "chains"}
ROLLUPS = {"request_hours", "attempt_hours", "latency_days"}
VAULT = Vault(bytes(range(32)))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "freellm.db"


def query(path: Path, sql: str, *parameters: Any) -> list[tuple[Any, ...]]:
    """Read the file through a connection of its own, as another process would (no await)."""
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute(sql, parameters).fetchall()


def count(path: Path, table: str) -> int:
    return int(query(path, f"SELECT count(*) FROM {table}")[0][0])


def file_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())


def user_version(path: Path) -> int:
    return int(query(path, "PRAGMA user_version")[0][0])


def request(i: int, *, at: float | None = None, attempts: int = 2) -> RequestRecord:
    return RequestRecord(
        id=f"req-{i}",
        at=1000.0 + i if at is None else at,
        model="auto",
        routed_via="groq/llama-3.3-70b-versatile",
        status=200,
        latency_ms=12.5,
        prompt_tokens=10 + i,
        completion_tokens=20,
        attempts=attempts,
        stream=i % 2 == 0,
        session=f"h:{i}",
        error=None,
    )


def attempts_of(i: int, number: int = 2) -> list[AttemptRecord]:
    return [
        AttemptRecord(
            n=n,
            provider="cerebras" if n < number else "groq",
            model="llama-3.3-70b",
            key_id=f"k_{n:08x}",
            status=429 if n < number else 200,
            error_class="rate_limited" if n < number else None,
            latency_ms=3.25 * n,
            prompt_tokens=None if n < number else 10 + i,
            completion_tokens=None if n < number else 20,
        )
        for n in range(1, number + 1)
    ]


def log(store: Any, numbers: range) -> None:
    for i in numbers:
        store.log_request(request(i), attempts_of(i))


# --- migrations ---------------------------------------------------------------------------------


async def test_a_new_database_gets_every_table_at_the_latest_version(db: Path) -> None:
    async with open_store(db):
        pass
    assert user_version(db) == len(MIGRATIONS)
    tables = {name for (name,) in query(db, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == TABLES | ROLLUPS
    indexes = {name for (name,) in query(db, "SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"requests_window", "requests_failed", "attempts_window"} <= indexes
    plan = query(db, "EXPLAIN QUERY PLAN SELECT * FROM attempts WHERE request_id = 'x'")
    assert "USING INDEX" in plan[0][-1]


async def test_reopening_migrates_nothing_and_keeps_the_data(db: Path) -> None:
    async with open_store(db) as store:
        key = await store.add_key("groq", "main", b"sealed")
    schema = query(db, "SELECT sql FROM sqlite_master ORDER BY name")
    for _ in range(2):
        async with open_store(db) as store:
            assert await store.list_keys() == [key]
    assert user_version(db) == len(MIGRATIONS)
    assert query(db, "SELECT sql FROM sqlite_master ORDER BY name") == schema
    with closing(sqlite3.connect(db, isolation_level=None)) as connection:
        assert migrate(connection, MIGRATIONS) == len(MIGRATIONS)


NEXT = ("ALTER TABLE keys ADD COLUMN note TEXT NOT NULL DEFAULT 'migrated'",)


async def test_a_database_migrates_forward_with_its_data(db: Path) -> None:
    async with open_store(db) as store:
        key = await store.add_key("groq", "main", b"sealed")
        store.log_request(request(1), attempts_of(1))
    latest = len(MIGRATIONS) + 1
    with closing(sqlite3.connect(db, isolation_level=None)) as connection:
        assert migrate(connection, (*MIGRATIONS, NEXT)) == latest
        assert migrate(connection, (*MIGRATIONS, NEXT)) == latest  # idempotent
    assert user_version(db) == latest
    assert query(db, "SELECT id, note FROM keys") == [(key.id, "migrated")]
    assert count(db, "requests") == 1
    assert count(db, "attempts") == 2


async def test_a_failed_migration_leaves_the_database_as_it_was(db: Path) -> None:
    async with open_store(db):
        pass
    broken = ("CREATE TABLE half_done (x INTEGER)", "CREATE TABLE keys (x INTEGER)")
    with closing(sqlite3.connect(db, isolation_level=None)) as connection:
        with pytest.raises(sqlite3.OperationalError, match="already exists"):
            migrate(connection, (*MIGRATIONS, broken))
        assert not connection.in_transaction
    assert user_version(db) == len(MIGRATIONS)
    assert not query(db, "SELECT name FROM sqlite_master WHERE name = 'half_done'")


async def test_a_database_from_a_newer_freellm_is_refused(db: Path) -> None:
    async with open_store(db):
        pass
    with closing(sqlite3.connect(db)) as connection:
        connection.execute("PRAGMA user_version = 7")
    with pytest.raises(StoreError) as caught:
        async with open_store(db):
            pytest.fail("opened a database of a newer schema")
    assert str(caught.value) == (
        f"{db}: the database has schema version 7, newer than this freellm knows"
        f" ({len(MIGRATIONS)}):"
        " it was written by a later release"
    )


async def test_a_version_1_database_gets_health_since_and_keeps_its_keys(db: Path) -> None:
    db.parent.mkdir(parents=True)
    with closing(sqlite3.connect(db, isolation_level=None)) as connection:
        migrate(connection, MIGRATIONS[:1])
        connection.execute(
            "INSERT INTO keys (id, provider, label, secret, enabled, created_at, health,"
            " last_check, last_error) VALUES ('k_1', 'groq', '', x'01', 1, 5.0, 'invalid', 9.0,"
            " '401')"
        )
    async with open_store(db) as store:
        (key,) = await store.list_keys()
    assert (key.id, key.health, key.last_check, key.last_error) == ("k_1", "invalid", 9.0, "401")
    assert key.health_since is None
    assert user_version(db) == len(MIGRATIONS)


def write_text_file(path: Path) -> None:
    path.parent.mkdir()
    path.write_bytes(b"this is no SQLite file, just text long enough to have a header." * 20)


async def test_a_file_that_is_not_a_database_is_refused(db: Path) -> None:
    write_text_file(db)
    with pytest.raises(StoreError, match=f"^{re.escape(str(db))} is not a freellm database"):
        async with open_store(db):
            pytest.fail("opened a file that is not a database")


async def test_the_database_runs_in_wal_mode_with_normal_sync_and_foreign_keys(db: Path) -> None:
    async with open_store(db) as store:
        pragmas = await store._read(
            lambda c: [
                c.execute(f"PRAGMA {p}").fetchone()[0] for p in ("synchronous", "foreign_keys")
            ]
        )
        assert pragmas == [1, 1]  # NORMAL, on
    assert query(db, "PRAGMA journal_mode") == [("wal",)]  # kept in the file


async def test_the_directory_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "freellm.db"
    async with open_store(path):
        pass
    assert path.exists()
    assert path.parent.stat().st_mode & 0o777 == 0o700


# --- keys ---------------------------------------------------------------------------------------


async def test_a_key_is_sealed_under_the_id_the_store_gives_it(db: Path) -> None:
    seen: list[str] = []

    def seal(key_id: str) -> bytes:
        seen.append(key_id)
        return VAULT.seal(key_id, "groq", "gsk_secret")

    async with open_store(db) as store:
        key = await store.add_key("groq", "personal", seal, created_at=5.0)
        assert seen == [key.id]
        assert re.fullmatch(r"k_[0-9a-f]{8}", key.id)
        assert key == KeyRecord(key.id, "groq", "personal", True, 5.0, None, None, None, key.sealed)
        stored = await store.get_key(key.id)
        assert stored == key
        assert stored is not None
        assert VAULT.unseal(stored.id, "groq", stored.sealed) == "gsk_secret"


async def test_the_secret_blob_round_trips_byte_for_byte(db: Path) -> None:
    blob = bytes(range(256)) * 3
    async with open_store(db) as store:
        key = await store.add_key("groq", "", blob)
        assert key.sealed == blob
    async with open_store(db) as store:
        stored = await store.get_key(key.id)
        assert stored is not None
        assert stored.sealed == blob


async def test_no_plaintext_secret_reaches_the_file(db: Path) -> None:
    secret = "gsk_" + "PlainTextSecret" * 4
    async with open_store(db) as store:
        for provider in ("groq", "cerebras"):
            await store.add_key(provider, "x", lambda key_id: VAULT.seal(key_id, "groq", secret))
        assert secret.encode() not in file_bytes(db.parent)  # the database and its WAL
    assert secret.encode() not in file_bytes(db.parent)


async def test_a_key_record_does_not_show_its_blob() -> None:
    key = KeyRecord("k_1", "groq", "", True, 0.0, None, None, None, b"\x01SEALED\x02")
    assert "SEALED" not in repr(key)


async def test_keys_are_listed_oldest_first(db: Path) -> None:
    async with open_store(db) as store:
        third = await store.add_key("groq", "third", b"3", created_at=30.0)
        first = await store.add_key("groq", "first", b"1", created_at=10.0)
        second_a = await store.add_key("groq", "second a", b"2", created_at=20.0)
        second_b = await store.add_key("groq", "second b", b"2", created_at=20.0)
        assert await store.list_keys() == [first, second_a, second_b, third]
        assert len({first.id, second_a.id, second_b.id, third.id}) == 4


async def test_keys_are_enabled_updated_checked_and_removed(db: Path) -> None:
    async with open_store(db) as store:
        key = await store.add_key("groq", "main", b"old")
        other = await store.add_key("cerebras", "other", b"other")

        assert await store.set_key_enabled(key.id, False)
        assert await store.record_key_health(key.id, "invalid", 100.0, "401 from upstream")
        stored = await store.get_key(key.id)
        assert stored == attrs.evolve(
            key, enabled=False, health="invalid", last_check=100.0, last_error="401 from upstream"
        )

        # A new secret is a new key to the health table.
        assert await store.update_key_secret(key.id, b"new")
        assert await store.get_key(key.id) == attrs.evolve(key, enabled=False, sealed=b"new")

        assert await store.remove_key(key.id)
        assert await store.get_key(key.id) is None
        assert await store.list_keys() == [other]
        for change in (
            store.remove_key(key.id),
            store.set_key_enabled(key.id, True),
            store.update_key_secret(key.id, b"x"),
            store.record_key_health(key.id, "healthy", 1.0, None),
        ):
            assert await change is False
        assert await store.list_keys() == [other]


async def test_a_failing_seal_stores_nothing(db: Path) -> None:
    def seal(key_id: str) -> bytes:
        raise RuntimeError("no")

    async with open_store(db) as store:
        with pytest.raises(RuntimeError, match="no"):
            await store.add_key("groq", "", seal)
        assert await store.list_keys() == []


# --- chain, settings, state ---------------------------------------------------------------------


async def test_the_chain_is_none_until_set_and_is_replaced_whole(db: Path) -> None:
    async with open_store(db) as store:
        assert await store.get_chain() is None
        await store.set_chain(["groq/a", "google/b", "groq/c"])
        assert await store.get_chain() == ["groq/a", "google/b", "groq/c"]
        await store.set_chain(("mistral/x",))
        assert await store.get_chain() == ["mistral/x"]
        await store.set_chain([])
        assert await store.get_chain() is None
        await store.set_chain(["groq/a", "groq/a"])
        await store.set_chain(None)
        assert await store.get_chain() is None


async def test_a_switched_off_chain_entry_keeps_its_place_out_of_routing(db: Path) -> None:
    async with open_store(db) as store:
        await store.set_chain([("groq/a", True), ("google/b", False), ("groq/c", True)])
        assert await store.get_chain() == ["groq/a", "groq/c"]
        assert await store.get_chain_entries() == [
            ("groq/a", True),
            ("google/b", False),
            ("groq/c", True),
        ]
        await store.set_chain(["mistral/x"])
        assert await store.get_chain_entries() == [("mistral/x", True)]


JSON_VALUES = [0, 1.5, "text", True, [1, "two", None], {"a": {"b": [1.25, None, False]}, "é": ""}]


@pytest.mark.parametrize("value", JSON_VALUES)
async def test_settings_round_trip_as_json(db: Path, value: Any) -> None:
    async with open_store(db) as store:
        assert await store.get_setting("x") is None
        await store.set_setting("x", value)
        assert await store.get_setting("x") == value
    async with open_store(db) as store:
        assert await store.get_setting("x") == value
        await store.set_setting("x", "replaced")
        assert await store.get_setting("x") == "replaced"
        await store.set_setting("x", None)
        assert await store.get_setting("x") is None
        assert count(db, "settings") == 0


async def test_a_value_that_is_not_json_is_refused_and_nothing_is_saved(db: Path) -> None:
    async with open_store(db) as store:
        await store.save_state("ledger", {"old": 1})
        with pytest.raises(TypeError):
            await store.set_setting("x", {1, 2})
        with pytest.raises(TypeError):
            await store.save_states({"health": [1], "ledger": {"new": 1}, "bad": object()})
        assert await store.get_setting("x") is None
        assert await store.load_state("health") is None
        assert await store.load_state("ledger") == {"old": 1}


@pytest.mark.parametrize("value", JSON_VALUES)
async def test_state_round_trips_as_json(db: Path, value: Any) -> None:
    async with open_store(db) as store:
        assert await store.load_state("x") is None
        await store.save_state("x", value)
        assert await store.load_state("x") == value


def router_snapshots() -> tuple[ledger.Ledger, health.Health, sessions.Sessions]:
    model = ModelSpec("llama", caps=Caps(rpm=30, tpm=6000, rpd=1000))
    slot = ledger.Slot("groq", "k_00000001", model)
    reserved = ledger.reserve(ledger.Ledger(), slot, 120, now=1000.0)
    assert not isinstance(reserved, ledger.Refusal)
    book, ticket = reserved
    book = ledger.settle(book, ticket, tokens=90)
    book = ledger.cool_down(book, slot.key_scope, until=2000.0, reason="402")
    keys = health.apply(
        health.Health(), "groq", "k_00000001", health.Event.CALL_INVALID, now=1000.0, error="401"
    )
    bound = sessions.bind(
        sessions.Sessions(), "h:abc", "groq", "llama", now=1000.0, ttl=1800.0, max_size=10
    )
    return book, keys, bound


async def test_router_snapshots_survive_a_restart(db: Path) -> None:
    book, keys, bound = router_snapshots()
    async with open_store(db) as store:
        await store.save_states(
            {
                "ledger": ledger.to_data(book),
                "health": health.to_data(keys),
                "sessions": sessions.to_data(bound),
            }
        )
    async with open_store(db) as store:
        assert ledger.from_data(await store.load_state("ledger")) == book
        assert health.from_data(await store.load_state("health")) == keys
        assert sessions.from_data(await store.load_state("sessions")) == bound
    assert count(db, "state") == 3
    assert len({at for (at,) in query(db, "SELECT saved_at FROM state")}) == 1


# --- the request log ----------------------------------------------------------------------------


async def test_logs_are_written_at_the_writer_tick_not_before(
    db: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_store(db) as store, trio.open_nursery() as nursery:
        await nursery.start(partial(store.run_writer, interval=0.5))
        log(store, range(5))
        await trio.sleep(0.4)
        assert count(db, "requests") == 0
        assert store.pending == 5
        await trio.sleep(0.2)  # past the tick at 0.5: the flush has at least begun
        assert store.pending == 0
        written = await store.recent_requests()  # queued behind the writer's flush
        assert written == [request(i) for i in reversed(range(5))]
        assert [await store.attempts_of(f"req-{i}") for i in range(5)] == [
            attempts_of(i) for i in range(5)
        ]
        nursery.cancel_scope.cancel()


async def test_a_full_buffer_is_written_without_waiting_for_the_tick(
    db: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_store(db, flush_at=10) as store, trio.open_nursery() as nursery:
        await nursery.start(partial(store.run_writer, interval=60.0))
        start = trio.current_time()
        log(store, range(9))
        await trio.sleep(1)
        assert store.pending == 9
        log(store, range(9, 12))
        await trio.sleep(1)
        # The clock moves to the earliest deadline only: this is 2 s in, long before the tick.
        assert trio.current_time() - start == 2
        assert store.pending == 0
        assert len(await store.recent_requests(100)) == 12
        nursery.cancel_scope.cancel()


async def test_closing_writes_what_is_pending(db: Path) -> None:
    async with open_store(db) as store:
        log(store, range(3))
        assert count(db, "requests") == 0
    assert count(db, "requests") == 3
    assert count(db, "attempts") == 6


@pytest.mark.parametrize("cancel_at", [0.25, 0.5, 0.75, 1.0])
async def test_cancelling_the_writer_loses_nothing_and_doubles_nothing(
    db: Path, autojump_clock: trio.testing.MockClock, cancel_at: float
) -> None:
    async with open_store(db) as store, trio.open_nursery() as nursery:
        await nursery.start(partial(store.run_writer, interval=0.5))
        log(store, range(4))
        await trio.sleep(cancel_at)
        log(store, range(4, 6))
        nursery.cancel_scope.cancel()
    assert count(db, "requests") == 6
    assert count(db, "attempts") == 12


async def test_a_flush_cancelled_before_it_starts_keeps_its_batch(db: Path) -> None:
    async with open_store(db) as store:
        log(store, range(3))
        with trio.CancelScope() as scope:
            scope.cancel()
            await store.flush()
        assert scope.cancelled_caught
        assert store.pending == 3
        log(store, range(3, 4))
    assert count(db, "requests") == 4


async def test_a_cancelled_store_block_still_writes_its_log(
    db: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.move_on_after(1) as scope:
        async with open_store(db) as store:
            log(store, range(2))
            await trio.sleep(10)
    assert scope.cancelled_caught
    assert count(db, "requests") == 2


async def log_then_fail(db: Path) -> None:
    async with open_store(db) as store:
        log(store, range(2))
        raise KeyError("boom")


async def test_an_error_in_the_store_block_still_writes_its_log(db: Path) -> None:
    with pytest.raises(KeyError, match="boom"):
        await log_then_fail(db)
    assert count(db, "requests") == 2


async def log_what_sqlite_cannot_take(db: Path) -> None:
    async with open_store(db) as store:
        store.log_request(attrs.evolve(request(1), prompt_tokens=2**70), ())
        with pytest.raises(OverflowError):
            await store.flush()
        assert store.pending == 1  # kept: closing tries again, and says so


async def test_a_batch_that_cannot_be_written_is_kept_and_reported(db: Path) -> None:
    with pytest.raises(OverflowError):
        await log_what_sqlite_cannot_take(db)
    async with open_store(db) as store:  # the connection was closed all the same
        assert await store.recent_requests() == []


async def test_a_request_logged_twice_is_written_once(db: Path) -> None:
    async with open_store(db) as store:
        log(store, range(2))
        await store.flush()
        log(store, range(1, 3))
    assert count(db, "requests") == 3
    assert count(db, "attempts") == 6


async def test_recent_requests_are_the_newest_first_up_to_the_limit(db: Path) -> None:
    async with open_store(db) as store:
        for i in (3, 1, 4, 0, 2):
            store.log_request(request(i), ())
        await store.flush()
        assert [r.id for r in await store.recent_requests(3)] == ["req-4", "req-3", "req-2"]
        assert await store.attempts_of("req-4") == []
        assert await store.attempts_of("unknown") == []


async def test_pruning_removes_old_requests_with_their_attempts(db: Path) -> None:
    async with open_store(db) as store:
        log(store, range(5))  # at 1000 .. 1004
        await store.flush()
        assert await store.prune_requests(before=1002.0) == 2
        assert [r.id for r in await store.recent_requests()] == ["req-4", "req-3", "req-2"]
        assert await store.attempts_of("req-0") == []
    assert count(db, "attempts") == 6  # foreign keys on: the cascade ran


CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "Wie spät ist es? \ud83d"},  # a lone surrogate passes too
    {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
]


async def test_a_stored_response_reads_back_as_it_was_put(db: Path) -> None:
    response = {"id": "resp_1", "object": "response", "output": [], "metadata": {"k": "ü"}}
    async with open_store(db) as store:
        assert await store.get_response("resp_1") is None
        await store.put_response("resp_1", 1000.5, response, CONVERSATION)
        stored = await store.get_response("resp_1")
    assert stored is not None
    assert (stored.id, stored.created_at) == ("resp_1", 1000.5)
    assert stored.response == response
    assert stored.conversation == CONVERSATION
    assert "Wie" not in repr(stored)  # user content stays out of logs and tracebacks


async def test_a_response_put_again_replaces_the_first(db: Path) -> None:
    async with open_store(db) as store:
        await store.put_response("resp_1", 1000.0, {"n": 1}, [])
        await store.put_response("resp_1", 1001.0, {"n": 2}, CONVERSATION)
        stored = await store.get_response("resp_1")
    assert stored is not None
    assert (stored.created_at, stored.response, stored.conversation) == (
        1001.0,
        {"n": 2},
        CONVERSATION,
    )
    assert count(db, "responses") == 1


async def test_deleting_a_response_forgets_it_and_says_whether_there_was_one(db: Path) -> None:
    async with open_store(db) as store:
        await store.put_response("resp_1", 1000.0, {}, [])
        await store.put_response("resp_2", 1000.0, {}, [])
        assert await store.delete_response("resp_1") is True
        assert await store.delete_response("resp_1") is False
        assert await store.get_response("resp_1") is None
        assert await store.get_response("resp_2") is not None


async def test_responses_are_pruned_with_the_request_log(db: Path) -> None:
    async with open_store(db) as store:
        for i in range(4):
            await store.put_response(f"resp_{i}", 1000.0 + i, {"i": i}, [])
        await store.prune_requests(before=1002.0)
        assert [await store.get_response(f"resp_{i}") is None for i in range(4)] == [
            True,
            True,
            False,
            False,
        ]


async def test_stored_responses_outlive_a_restart(db: Path) -> None:
    async with open_store(db) as store:
        await store.put_response("resp_1", 1000.0, {"id": "resp_1"}, CONVERSATION)
    async with open_store(db) as store:
        stored = await store.get_response("resp_1")
    assert stored is not None
    assert stored.conversation == CONVERSATION


async def test_a_closed_store_refuses_every_call(db: Path) -> None:
    async with open_store(db) as store:
        pass
    with pytest.raises(StoreError, match="is closed"):
        store.log_request(request(1), ())
    with pytest.raises(StoreError, match="is closed"):
        await store.list_keys()
    with pytest.raises(StoreError, match="is closed"):
        await store.save_state("x", 1)


# --- restarts -----------------------------------------------------------------------------------


async def test_a_restart_keeps_keys_chain_settings_state_and_logs(db: Path) -> None:
    async with open_store(db) as store, trio.open_nursery() as nursery:
        await nursery.start(partial(store.run_writer, interval=0.5))
        key = await store.add_key("groq", "main", lambda key_id: VAULT.seal(key_id, "groq", "s"))
        await store.record_key_health(key.id, "healthy", 10.0, None)
        await store.set_chain(["groq/a"])
        await store.set_setting("unified_key_sealed", "abc")
        await store.save_state("ledger", {"format": 1})
        log(store, range(3))
        nursery.cancel_scope.cancel()
    async with open_store(db) as store:
        [stored] = await store.list_keys()
        assert stored == attrs.evolve(key, health="healthy", last_check=10.0)
        assert VAULT.unseal(stored.id, "groq", stored.sealed) == "s"
        assert await store.get_chain() == ["groq/a"]
        assert await store.get_setting("unified_key_sealed") == "abc"
        assert await store.load_state("ledger") == {"format": 1}
        assert [r.id for r in await store.recent_requests()] == ["req-2", "req-1", "req-0"]
        assert await store.attempts_of("req-1") == attempts_of(1)
