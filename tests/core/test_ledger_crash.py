"""The ledger after an unclean stop (freellm.core.crash) against the ledger that never crashed.

The property: a run saves its ledger, goes on admitting and settling calls for up to a lease,
and dies. The restart has the saved ledger and applies :func:`crash.after_crash`. At every time
after the restart, for every slot and every cap, the restored ledger leaves no more room than the
ledger that saw everything (the truth), and refuses every call the truth refuses. Settlements after
the save may lower the saved estimates (a call costs at most what it was admitted for: the premise
of every cap of the ledger), and calls cut off in flight count as spent.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from freellm.core import crash, ledger
from freellm.core.catalog import ROLLING, Caps, ModelSpec
from freellm.core.ledger import Ledger, Refusal, Slot, Ticket
from freellm.core.signals import Ceiling

CAL_ZONE = "America/Los_Angeles"
LA = zoneinfo.ZoneInfo(CAL_ZONE)
LEASE = 30.0

PER_MODEL = ModelSpec("m1", Caps(rpm=3, rpd=6, tpm=900, tpd=2000, concurrency=3), context=500)
ACCOUNT_A = ModelSpec("a1", Caps(rpm=4, rpd=5, tpm=1200), account=True, context=800)
ACCOUNT_B = ModelSpec("a2", Caps(rpm=2, rpd=5, tpd=1500), account=True, context=600)
TOKENS_BY_DAY = ModelSpec("td", Caps(rpm=4, tpd=1500), context=300)
DAY_ONLY = ModelSpec("d1", Caps(rpd=4))
UNCAPPED = ModelSpec("free")
MODELS = (PER_MODEL, ACCOUNT_A, ACCOUNT_B, TOKENS_BY_DAY, DAY_ONLY, UNCAPPED)

SLOTS = [
    Slot(provider, "k1", model, reset)
    for provider, reset in (("roll", ROLLING), ("cal", CAL_ZONE))
    for model in MODELS
]

START_TIMES = [
    dt.datetime(2026, 3, 7, 23, 59, 10, tzinfo=LA).timestamp(),  # midnight, then spring-forward
    dt.datetime(2026, 6, 1, 12, 0, tzinfo=LA).timestamp(),
]
STEPS = st.sampled_from([0.0, 0.3, 1.0, 2.5, 7.0, 20.0, 59.5, 61.0, 900.0, 3600.0])
AFTER_STEPS = st.sampled_from([0.0, 0.1, 0.7, 1.5, 4.0, 15.0, 40.0])
DOWNTIMES = st.sampled_from([0.0, 0.5, 3.0, 25.0, 40.0, 75.0, 7200.0, 86_400.0])
# Times after the restart to compare at: the minute's and the day's edges, with a bucket's slack.
OFFSETS = (0.0, 1.0, 30.0, 59.0, 60.5, 61.5, 62.5, 120.0, 3600.0, 86_399.0, 86_401.0, 87_400.0)
PROBES = (1, 60, 299)

# One call: (the time step before it, which slot, its estimate, what it settles for as a fraction
# of the estimate, or None to stay in flight past the save).
CALL = st.tuples(
    STEPS,
    st.integers(0, len(SLOTS) - 1),
    st.integers(0, 400),
    st.none() | st.sampled_from([0.0, 0.1, 0.5, 1.0]),
)
AFTER_CALL = st.tuples(
    AFTER_STEPS,
    st.integers(0, len(SLOTS) - 1),
    st.integers(0, 400),
    st.none() | st.sampled_from([0.0, 0.1, 0.5, 1.0]),
)


def run_calls(
    book: Ledger, calls: list[tuple[float, int, int, float | None]], now: float
) -> tuple[Ledger, float, list[Ticket]]:
    """Admit ``calls`` one after the other; settle those with a fraction at once. Returns the
    ledger, the time, and the tickets still in flight."""
    in_flight: list[Ticket] = []
    for step, index, tokens, fraction in calls:
        now += step
        result = ledger.reserve(book, SLOTS[index], tokens, now=now)
        if isinstance(result, Refusal):
            continue
        book, ticket = result
        if fraction is None:
            in_flight.append(ticket)
        else:
            book = ledger.settle(book, ticket, tokens=int(tokens * fraction))
    return book, now, in_flight


def used(book: Ledger, slot: Slot, now: float) -> dict[str, int]:
    usage = book.usage.get(slot.usage_key) or ledger.Usage.fresh(slot.daily_reset)
    minute_requests, minute_tokens = usage.minute.totals(now)
    day_requests, day_tokens = usage.day.totals(now)
    return {"rpm": minute_requests, "tpm": minute_tokens, "rpd": day_requests, "tpd": day_tokens}


@settings(max_examples=300)
@given(
    start=st.sampled_from(START_TIMES),
    before=st.lists(CALL, max_size=14),
    cooldowns=st.lists(
        st.tuples(st.integers(0, len(SLOTS) - 1), st.floats(0.5, 4000, allow_nan=False)),
        max_size=2,
    ),
    ceilings=st.lists(
        st.tuples(
            st.integers(0, len(SLOTS) - 1),
            st.sampled_from(["requests", "tokens"]),
            st.integers(0, 800),
            st.floats(1, 5000, allow_nan=False),
        ),
        max_size=2,
    ),
    pause=st.sampled_from([0.0, 0.2, 3.0, 65.0]),
    after=st.lists(AFTER_CALL, max_size=12),
    settle_fractions=st.lists(st.sampled_from([0.0, 0.1, 0.5, 1.0]), max_size=6),
    overran=st.booleans(),
    downtime=DOWNTIMES,
)
def test_the_restored_ledger_never_leaves_more_room_than_the_truth(
    start: float,
    before: list[tuple[float, int, int, float | None]],
    cooldowns: list[tuple[int, float]],
    ceilings: list[tuple[int, str, int, float]],
    pause: float,
    after: list[tuple[float, int, int, float | None]],
    settle_fractions: list[float],
    overran: bool,
    downtime: float,
) -> None:
    truth, now, in_flight = run_calls(Ledger(), before, start)
    for index, wait in cooldowns:
        scope = SLOTS[index].scope
        truth = ledger.cool_down(truth, scope, until=now + wait, reason="429")
    for index, dimension, remaining, reset in ceilings:
        said = Ceiling(dimension, "day", remaining, None, now + reset)  # type: ignore[arg-type]
        truth = ledger.observe(truth, SLOTS[index], [said], now=now)
    flushed_at = now + pause
    saved = ledger.prune(truth, now=flushed_at)  # what the shell saves

    # After the save, until the crash: calls in flight settle (for no more than their estimate),
    # new calls are admitted against everything the running ledger knows, within the lease; or,
    # when the saves were failing (``overran``), past it, with the request log as the witness.
    now = flushed_at
    for ticket, fraction in zip(in_flight, settle_fractions, strict=False):
        truth = ledger.settle(truth, ticket, tokens=int(ticket.tokens * fraction))
    calls = []
    for call in after:
        if not overran and now + call[0] - flushed_at > LEASE:
            break
        now += call[0]
        calls.append((0.0, *call[1:]))
    counted = sum(used(truth, slot, now)["rpd"] for slot in SLOTS)
    truth, stopped, _ = run_calls(truth, calls, now)  # calls left in flight: spent
    lost = sum(used(truth, slot, stopped)["rpd"] for slot in SLOTS) - counted
    event(f"calls admitted after the save: {min(lost, 5)}{'+' if lost >= 5 else ''}")
    truth = ledger.release_inflight(truth)

    restart = stopped + downtime
    last_seen = stopped if overran else None
    ended_by = crash.ended_by(flushed_at, lease=LEASE, now=restart, last_seen=last_seen)
    assert stopped <= ended_by <= restart
    restored = crash.after_crash(saved, SLOTS, flushed_at=flushed_at, ended_by=ended_by)

    assert restored.cooldowns == saved.cooldowns  # no cooldown ends early
    for offset in OFFSETS:
        at = restart + offset
        for slot in SLOTS:
            caps = slot.model.caps
            mine, true = used(restored, slot, at), used(truth, slot, at)
            kept = used(saved, slot, at)
            for name in ("rpm", "tpm", "rpd", "tpd"):
                assert mine[name] >= kept[name]  # what was saved stays counted
                cap = getattr(caps, name)
                if cap is not None:
                    assert max(0, cap - mine[name]) <= max(0, cap - true[name]), (name, slot, at)
            for tokens in PROBES:
                if ledger.headroom(truth, slot, tokens, at) is None:
                    event("the truth refuses a call after the restart")
                    assert ledger.headroom(restored, slot, tokens, at) is None, (slot, tokens, at)


def test_the_rule_is_needed_the_saved_ledger_alone_would_overshoot() -> None:
    """Without the rule, calls made after the save are forgotten and a cap is passed."""
    slot = SLOTS[0]  # rpm 3
    start = START_TIMES[1]
    saved = Ledger()
    truth = saved
    for n in range(3):
        result = ledger.reserve(truth, slot, 10, now=start + 1 + n)
        assert not isinstance(result, Refusal)
        truth = result[0]
    restart = start + 5
    assert ledger.headroom(truth, slot, 10, restart) is None
    assert ledger.headroom(saved, slot, 10, restart) is not None  # the forgetful restart
    ended_by = crash.ended_by(start, lease=LEASE, now=restart)
    restored = crash.after_crash(saved, [slot], flushed_at=start, ended_by=ended_by)
    assert ledger.headroom(restored, slot, 10, restart) is None


def test_a_minute_cap_counts_as_full_until_a_minute_after_the_run_ended() -> None:
    slot = SLOTS[0]  # rpm 3, tpm 900, rpd 6, tpd 2000, context 500
    flushed_at = START_TIMES[1]
    ended_by = crash.ended_by(flushed_at, lease=LEASE, now=flushed_at + 4)
    assert ended_by == flushed_at + 4
    restored = crash.after_crash(Ledger(), [slot], flushed_at=flushed_at, ended_by=ended_by)
    assert ledger.headroom(restored, slot, 1, ended_by + 60) is None
    assert ledger.headroom(restored, slot, 1, ended_by + 61.5) is not None  # one bucket late
    usage = restored.usage[slot.usage_key]
    # The day loses what a minute could have let through: 3 requests, 900 tokens.
    assert usage.day.totals(ended_by + 120) == (3, 900)


def test_day_tokens_without_a_minute_cap_are_bounded_by_requests_times_context() -> None:
    slot = next(s for s in SLOTS if s.model is TOKENS_BY_DAY and s.daily_reset == ROLLING)
    flushed_at = START_TIMES[1]
    ended_by = flushed_at + 2
    restored = crash.after_crash(Ledger(), [slot], flushed_at=flushed_at, ended_by=ended_by)
    # rpm 4, no tpm: 4 requests of at most 300 tokens each; tpd 1500 is looser.
    assert restored.usage[slot.usage_key].day.totals(ended_by + 120) == (0, 1200)


def test_a_long_silence_leaves_only_each_window_its_own_room() -> None:
    """When the run may have gone on past a minute after its save (``ended_by`` is the restart),
    the minute no longer bounds the day: the day counts as full too."""
    slot = SLOTS[0]
    flushed_at = START_TIMES[1]
    restart = flushed_at + 3600
    ended_by = crash.ended_by(flushed_at, lease=LEASE, now=restart, last_seen=flushed_at + 600)
    assert ended_by == restart
    restored = crash.after_crash(Ledger(), [slot], flushed_at=flushed_at, ended_by=ended_by)
    assert restored.usage[slot.usage_key].day.totals(restart) == (6, 2000)


def test_a_provider_limit_loses_what_the_run_may_have_used() -> None:
    slot = SLOTS[0]
    now = START_TIMES[1]
    said = Ceiling("requests", "day", 10, None, now + 5000)
    saved = ledger.observe(Ledger(), slot, [said], now=now)
    uncapped = next(s for s in SLOTS if s.model is UNCAPPED and s.daily_reset == ROLLING)
    saved = ledger.observe(saved, uncapped, [said], now=now)
    restored = crash.after_crash(saved, SLOTS, flushed_at=now, ended_by=now + 3)
    (limit,) = restored.usage[slot.usage_key].limits
    assert limit.remaining == 7  # the minute let at most 3 requests through
    (unbounded,) = restored.usage[uncapped.usage_key].limits
    assert unbounded.remaining == 0  # nothing bounds an uncapped model: all of it may be gone


@pytest.mark.parametrize(
    ("now", "last_seen", "expected"),
    [
        (1003.0, None, 1003.0),  # a quick restart: the run ended before it
        (5000.0, None, 1030.0),  # a late one: the lease bounds the run
        (900.0, None, 1030.0),  # the clock stepped back: the lease is all there is
        (5000.0, 1020.0, 1030.0),  # a request logged within the lease changes nothing
        (5000.0, 2000.0, 5000.0),  # one logged past it: the saves were failing, the run went on
    ],
)
def test_ended_by(now: float, last_seen: float | None, expected: float) -> None:
    assert crash.ended_by(1000.0, lease=30.0, now=now, last_seen=last_seen) == expected


def test_ended_by_before_the_save_is_a_broken_caller() -> None:
    with pytest.raises(ValueError, match="before its save"):
        crash.after_crash(Ledger(), SLOTS, flushed_at=10.0, ended_by=5.0)
