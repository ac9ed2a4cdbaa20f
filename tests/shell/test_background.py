"""Background jobs: a failing round is logged once with its cause, retried with backoff, shown in
the job's status, and never stops the job; only cancellation does. Virtual time."""

from __future__ import annotations

import itertools
import logging
from functools import partial
from typing import Any

import pytest
import trio

from freellm.shell.background import BACKOFF_MAX_S, Background


async def test_a_failing_round_is_retried_with_backoff_and_shown_until_it_works(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    background = Background(clock=trio.current_time)
    rounds: list[float] = []

    async def round_() -> None:
        rounds.append(trio.current_time())
        if len(rounds) <= 3:
            raise OSError(f"disk full ({len(rounds)})")

    with caplog.at_level(logging.ERROR, logger="freellm.background"):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(background.run, "state", round_, every=0.5))
            await trio.sleep(3.5)
            job = background.jobs["state"]
            assert not background.healthy
            assert (job.failures, job.last_error, job.failing_since) == (
                3,
                "OSError: disk full (3)",
                0.0,
            )
            assert background.report()["state"]["ok"] is False
            await trio.sleep(10)
            nursery.cancel_scope.cancel()
    # 1 s, then 2 s, then 4 s between failures (never sooner than `every`), then every 0.5 s.
    assert rounds[:5] == [0.0, 1.0, 3.0, 7.0, 7.5]
    assert background.healthy
    assert background.jobs["state"].rounds >= 2
    assert len(caplog.records) == 3  # one line per failure, each with its traceback
    assert all(record.exc_info is not None for record in caplog.records)


async def test_the_backoff_is_capped(autojump_clock: Any) -> None:
    background = Background(clock=trio.current_time)
    rounds: list[float] = []

    async def always_failing() -> None:
        rounds.append(trio.current_time())
        raise RuntimeError("never works")

    async with trio.open_nursery() as nursery:
        await nursery.start(partial(background.run, "probes", always_failing, every=1.0))
        await trio.sleep(BACKOFF_MAX_S * 4)
        nursery.cancel_scope.cancel()
    gaps = [later - earlier for earlier, later in itertools.pairwise(rounds)]
    assert max(gaps) == BACKOFF_MAX_S
    assert background.jobs["probes"].failures == len(rounds)


async def test_only_cancellation_stops_a_job(autojump_clock: Any) -> None:
    background = Background(clock=trio.current_time)
    seen = trio.Event()

    async def keyboard_like() -> None:
        seen.set()
        raise ValueError("any Exception is a failed round")

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(background.run, "job", keyboard_like, every=1.0))
            await seen.wait()
            await trio.sleep(100)
            assert background.jobs["job"].failures > 1  # still running, still retrying
            scope.cancel()
    assert scope.cancelled_caught
