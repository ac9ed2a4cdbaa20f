"""Saving the router state and restoring it after a clean or an unclean stop (shell.persistence).

The timing of saves runs on trio's autojump clock, against a store that only records what it is
given; restoring and recovering run against a real store in a temporary directory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import pytest
import trio

from freellm.core import ledger
from freellm.core.catalog import Catalog, apply_config
from freellm.core.router import RouterState, Topology
from freellm.shell import persistence
from freellm.shell.persistence import (
    COOLDOWN_TICK_S,
    LEASE_S,
    PERSIST_EVERY_S,
    STATE_NAME,
    Persistence,
    recover,
    restore,
)
from freellm.shell.state import StateHolder
from freellm.shell.store import RequestRecord, Store, open_store

CATALOG: Catalog = apply_config(
    Catalog(),
    {
        "providers": {
            "alpha": {
                "dialect": "openai",
                "base_url": "http://127.0.0.1:9/alpha",
                "models": [{"id": "m", "rpm": 3, "rpd": 100, "tpm": 1000, "context": 400}],
            },
        },
        "router": {"chain": ["alpha/m"]},
    },
)
EPOCH = 1_780_000_000.0
SCOPE = ("alpha", "k1", "m")


class RecordingStore:
    """Takes saves and remembers when (trio time) and what."""

    def __init__(self) -> None:
        self.saves: list[tuple[float, dict[str, Any]]] = []

    async def save_state(self, name: str, value: dict[str, Any]) -> None:
        assert name == STATE_NAME
        self.saves.append((trio.current_time(), value))


def epoch_clock() -> float:
    return EPOCH + trio.current_time()


async def test_the_state_is_saved_every_few_seconds_and_within_a_tick_of_a_cooldown(
    autojump_clock: Any,
) -> None:
    holder = StateHolder(RouterState(Topology(CATALOG)))
    recorder = RecordingStore()
    saver = Persistence(holder, cast(Store, recorder), epoch_clock)

    async def job() -> None:
        while True:
            await saver.round()
            await trio.sleep(COOLDOWN_TICK_S)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(job)
        await trio.sleep(12.1)  # nothing changes: a save at once, then one every 5 s
        assert [round(at, 2) for at, _ in recorder.saves] == [0.0, 5.0, 10.0]
        assert all(value["running"] for _, value in recorder.saves)
        assert recorder.saves[-1][1]["saved_at"] == EPOCH + 10.0
        assert recorder.saves[-1][1]["lease_s"] == LEASE_S

        started = trio.current_time()
        holder.apply(
            lambda state: RouterState(
                state.topology,
                ledger.cool_down(state.ledger, SCOPE, until=epoch_clock() + 600, reason="429"),
                state.health,
                state.sessions,
            )
        )
        await trio.sleep(COOLDOWN_TICK_S + 0.01)
        at, saved = recorder.saves[-1]
        assert 0 < at - started <= COOLDOWN_TICK_S
        assert ledger.from_data(saved["ledger"]).cooldowns[SCOPE].until == EPOCH + started + 600
        count = len(recorder.saves)
        await trio.sleep(PERSIST_EVERY_S - 0.5)  # the heartbeat starts again from that save
        assert len(recorder.saves) == count
        nursery.cancel_scope.cancel()


async def _saved(store: Store, holder: StateHolder, *, running: bool, at: float) -> None:
    await Persistence(holder, store, lambda: at).save(running=running)


async def test_a_restart_knows_whether_the_run_before_it_stopped_cleanly(tmp_path: Path) -> None:
    holder = StateHolder(RouterState(Topology(CATALOG)))
    async with open_store(tmp_path / "freellm.db") as store:
        await _saved(store, holder, running=False, at=EPOCH)
        assert await restore(StateHolder(RouterState(Topology(CATALOG))), store) is None
        await _saved(store, holder, running=True, at=EPOCH + 7)
        unclean = await restore(StateHolder(RouterState(Topology(CATALOG))), store)
        assert unclean == persistence.Unclean(EPOCH + 7, LEASE_S)
        # A snapshot from before the marker: that freellm always saved on its way out.
        snapshot = await store.load_state(STATE_NAME)
        assert snapshot is not None
        for name in ("running", "saved_at", "lease_s"):
            del snapshot[name]
        await store.save_state(STATE_NAME, snapshot)
        assert await restore(StateHolder(RouterState(Topology(CATALOG))), store) is None


async def test_an_unreadable_state_starts_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_store(tmp_path / "freellm.db") as store:
        await store.save_state(STATE_NAME, {"ledger": {"format": 99}, "running": True})
        fresh = RouterState(Topology(CATALOG))
        holder = StateHolder(fresh)
        with caplog.at_level(logging.WARNING, "freellm.persistence"):
            assert await restore(holder, store) is None
    assert holder.state is fresh  # untouched
    assert "not readable" in caplog.text


async def _recovered(
    store: Store, *, flushed_at: float, now: float, cooled: bool = False
) -> tuple[ledger.Ledger, float]:
    """A save at ``flushed_at`` of a run that then died, restored and recovered at ``now``."""
    key = await store.add_key("alpha", "", b"sealed")
    holder = StateHolder(RouterState(Topology(CATALOG)))
    if cooled:
        holder.apply(
            lambda state: RouterState(
                state.topology,
                ledger.cool_down(state.ledger, ("alpha", key.id, "m"), until=now + 900, reason="x"),
                state.health,
                state.sessions,
            )
        )
    await _saved(store, holder, running=True, at=flushed_at)
    fresh = StateHolder(RouterState(Topology(CATALOG)))
    unclean = await restore(fresh, store)
    assert unclean is not None
    ended_by = await recover(fresh, store, unclean, now=now, total_s=900.0)
    return fresh.state.ledger, ended_by


async def test_after_an_unclean_stop_the_minute_counts_as_full_and_cooldowns_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_store(tmp_path / "freellm.db") as store:
        with caplog.at_level(logging.WARNING, "freellm.persistence"):
            book, ended_by = await _recovered(store, flushed_at=EPOCH, now=EPOCH + 3, cooled=True)
        assert ended_by == EPOCH + 3  # a quick restart: the run ended before it
        ((key_id,),) = [(record.id,) for record in await store.list_keys()]
    usage = book.usage["alpha", key_id, "m"]
    assert usage.minute.totals(ended_by + 59) == (3, 1000)  # full: rpm 3, tpm 1000
    assert usage.day.totals(ended_by + 59) == (3, 0)  # a minute's worth; no day cap on tokens
    assert book.cooldowns["alpha", key_id, "m"].until == EPOCH + 3 + 900
    assert "did not stop cleanly" in caplog.text


async def test_a_late_restart_trusts_the_lease_unless_the_log_saw_the_run_go_on(
    tmp_path: Path,
) -> None:
    async with open_store(tmp_path / "a.db") as store:
        _, ended_by = await _recovered(store, flushed_at=EPOCH, now=EPOCH + 3600)
        assert ended_by == EPOCH + LEASE_S
    async with open_store(tmp_path / "b.db") as store:
        late = EPOCH + LEASE_S + 100  # logged: the saves were failing and the run went on
        store.log_request(_request("late", at=late, latency_ms=2_000))
        store.log_request(_request("early", at=EPOCH - 50, latency_ms=1_000))
        await store.flush()
        assert await store.last_request_end(EPOCH - 900) == pytest.approx(late + 2)
        assert await store.last_request_end(late + 1) is None
        _, ended_by = await _recovered(store, flushed_at=EPOCH, now=EPOCH + 3600)
        assert ended_by == EPOCH + 3600


def _request(request_id: str, *, at: float, latency_ms: float) -> RequestRecord:
    return RequestRecord(
        id=request_id,
        at=at,
        model="auto",
        routed_via="alpha/m",
        status=200,
        latency_ms=latency_ms,
        prompt_tokens=10,
        completion_tokens=10,
        attempts=1,
        stream=False,
        session=None,
        error=None,
    )
