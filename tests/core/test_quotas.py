"""The quota view: it shows what the ledger holds and what routing would do, in any state."""

from __future__ import annotations

import datetime as dt
import json
import math
import zoneinfo
from collections.abc import Iterable, Mapping

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from freellm.core import health, ledger, quotas
from freellm.core.catalog import Caps, Catalog, apply_config
from freellm.core.health import Event
from freellm.core.ledger import ACCOUNT, Refusal, Slot
from freellm.core.outcome import Kind, Outcome
from freellm.core.quotas import WINDOWS, QuotaRow, QuotaView, quota_view
from freellm.core.router import (
    Admitted,
    Key,
    RouteRequest,
    RouterState,
    Topology,
    admit,
    plan,
    record,
)
from freellm.core.signals import Ceiling

LA_ZONE = "America/Los_Angeles"
LA = zoneinfo.ZoneInfo(LA_ZONE)
NOW = dt.datetime(2026, 6, 10, 15, 30, 12, tzinfo=LA).timestamp() + 0.25

CONFIG = {
    "providers": {
        "alpha": {
            "dialect": "openai",
            "base_url": "http://127.0.0.1:9001/v1",
            "models": [
                {"id": "big", "rpm": 3, "tpm": 6000, "rpd": 50, "tpd": 100_000,
                 "concurrency": 2},
                {"id": "small", "rpm": 5, "rpd": 8},
                {"id": "free"},
            ],
        },
        "beta": {
            "dialect": "openai",
            "base_url": "http://127.0.0.1:9002/v1",
            "daily_reset": LA_ZONE,
            "models": [
                {"id": "big", "rpm": 2, "rpd": 5},
                # Account caps: one budget for both; shared/two's rpm is the tighter, and only
                # shared/two knows a tpm (so the account row's tpm is unknown).
                {"id": "shared/one", "rpm": 4, "rpd": 6, "account": True},
                {"id": "shared/two", "rpm": 2, "rpd": 6, "tpm": 5000, "account": True},
            ],
        },
        "gamma": {
            "dialect": "openai",
            "base_url": "http://127.0.0.1:9003/v1",
            "models": [
                {"id": "small", "concurrency": 1},
                {"id": "huge", "tpm": 20_000},
            ],
        },
    },
    "router": {
        "chain": ["alpha/big", "beta/shared/two", "gamma/huge", "beta/big", "alpha/small"],
    },
}  # fmt: skip
CATALOG = apply_config(Catalog(), CONFIG)
PROVIDERS = sorted(CATALOG.providers)
KEY_IDS = ("k1", "k2", "k3")
# Slots of every key that might exist, enabled or not: the ledger may hold usage of a key that
# has since been disabled or removed.
ALL_SLOTS = [
    Slot(p, key, model, CATALOG.providers[p].daily_reset)
    for p in PROVIDERS
    for key in KEY_IDS
    for model in CATALOG.providers[p].models.values()
]


def keys_of(ids: Mapping[str, Iterable[str]]) -> list[Key]:
    return [
        Key(provider, key_id, f"secret-{key_id}") for provider, ks in ids.items() for key_id in ks
    ]


def state_with(ids: Mapping[str, Iterable[str]], catalog: Catalog = CATALOG) -> RouterState:
    return RouterState(Topology(catalog, keys_of(ids)))


def slot_of(state: RouterState, provider: str, key_id: str, model: str) -> Slot:
    (slot,) = [s for s in state.topology.slots[provider, model] if s.key_id == key_id]
    return slot


def row_of(view: QuotaView, provider: str, key_id: str, model: str) -> QuotaRow:
    (row,) = [
        r for r in view.rows if (r.provider, r.key_id) == (provider, key_id) and model in r.models
    ]
    return row


def next_midnight(now: float, zone: zoneinfo.ZoneInfo) -> float:
    """An independent reckoning of the next local midnight (not windows.local_day_bounds)."""
    tomorrow = dt.datetime.fromtimestamp(now, zone).date() + dt.timedelta(days=1)
    return dt.datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=zone).timestamp()


# --- random states -------------------------------------------------------------------------------


@st.composite
def states(draw: st.DrawFn) -> RouterState:
    keys = {p: draw(st.lists(st.sampled_from(KEY_IDS), unique=True, max_size=3)) for p in PROVIDERS}
    state = state_with(keys)
    book = state.ledger
    usage = draw(
        st.lists(
            st.tuples(
                st.sampled_from(ALL_SLOTS),
                st.floats(0, 120, allow_nan=False) | st.floats(0, 90_000, allow_nan=False),
                st.integers(0, 9000),
                st.sampled_from([None, 0.5, 3.0]),  # settled for less or more than estimated
            ),
            max_size=25,
        )
    )
    # Oldest first: the ledger's windows expect time to move forward.
    for slot, ago, tokens, settled in sorted(usage, key=lambda u: -u[1]):
        reserved = ledger.reserve(book, slot, tokens, now=NOW - ago)
        if not isinstance(reserved, Refusal):
            book = reserved[0]
            if settled is not None:
                book = ledger.settle(book, reserved[1], tokens=int(tokens * settled))
    for slot, wait, scope_kind in draw(
        st.lists(
            st.tuples(
                st.sampled_from(ALL_SLOTS),
                st.floats(-30, 120, allow_nan=False),
                st.sampled_from(["slot", "key", "model"]),
            ),
            max_size=4,
        )
    ):
        scope: ledger.Scope = {
            "slot": slot.scope,
            "key": slot.key_scope,
            "model": slot.model_scope,
        }[scope_kind]
        book = ledger.cool_down(book, scope, until=NOW + wait, reason="test")
    for slot, dimension, window, remaining, wait in draw(
        st.lists(
            st.tuples(
                st.sampled_from(ALL_SLOTS),
                st.sampled_from(["requests", "tokens"]),
                st.sampled_from(["minute", "day", "unknown"]),
                st.integers(0, 3),
                st.floats(1, 120, allow_nan=False),
            ),
            max_size=3,
        )
    ):
        ceiling = Ceiling(dimension, window, remaining, 10, NOW - 60 + wait)  # type: ignore[arg-type]
        book = ledger.observe(book, slot, [ceiling], now=NOW - 60)
    marks = state.health
    for provider, key, event in draw(
        st.lists(
            st.tuples(
                st.sampled_from(PROVIDERS),
                st.sampled_from(KEY_IDS),
                st.sampled_from(list(Event)),
            ),
            max_size=4,
        )
    ):
        marks = health.apply(marks, provider, key, event, now=NOW - 5)
    return attrs.evolve(state, ledger=book, health=marks)


def one_token(target: str) -> RouteRequest:
    """The request a row is judged by: one token, no completion budget."""
    return RouteRequest(model=target, prompt_tokens=1, max_tokens=0)


# --- rows ----------------------------------------------------------------------------------------


def test_rows_cover_every_enabled_key_and_model_in_chain_then_catalog_order() -> None:
    state = state_with({"beta": ["k1"], "alpha": ["k2", "k1"], "elsewhere": ["k9"]})
    view = quota_view(state, now=NOW)
    assert [(r.provider, r.key_id, r.model, r.models) for r in view.rows] == [
        ("alpha", "k1", "big", ("big",)),  # chain
        ("alpha", "k1", "small", ("small",)),  # chain
        ("alpha", "k1", "free", ("free",)),  # catalog
        ("alpha", "k2", "big", ("big",)),
        ("alpha", "k2", "small", ("small",)),
        ("alpha", "k2", "free", ("free",)),
        # The account models make one row, at the place of the first of them (chain index 1).
        ("beta", "k1", ACCOUNT, ("shared/two", "shared/one")),
        ("beta", "k1", "big", ("big",)),
    ]
    assert [r.account for r in view.rows] == [False] * 6 + [True, False]
    assert {r.daily_reset for r in view.rows if r.provider == "beta"} == {LA_ZONE}
    assert {r.daily_reset for r in view.rows if r.provider == "alpha"} == {"rolling"}


def test_disabled_and_removed_keys_have_no_rows_though_the_ledger_remembers_them() -> None:
    full = state_with({"alpha": ["k1", "k2"]})
    book = full.ledger
    for key_id in ("k1", "k2"):
        book, _ = ledger.book(book, slot_of(full, "alpha", key_id, "big"), 10, now=NOW - 5)
    fewer = attrs.evolve(state_with({"alpha": ["k1"]}), ledger=book)
    view = quota_view(fewer, now=NOW)
    assert {r.key_id for r in view.rows} == {"k1"}
    assert row_of(view, "alpha", "k1", "big").rpm.used == 1
    (big,) = [t for t in view.targets if t.target == "alpha/big"]
    assert big.keys == 1


def test_booked_requests_show_in_their_windows_with_what_is_left() -> None:
    state = state_with({"alpha": ["k1", "k2"]})
    slot = slot_of(state, "alpha", "k1", "big")
    book = state.ledger
    start = math.floor(NOW) - 40.0  # the first bucket of the minute window starts here
    for n in range(2):
        book, ticket = ledger.book(book, slot, 700, now=start + n * 10)
        book = ledger.settle(book, ticket, tokens=700)
    view = quota_view(attrs.evolve(state, ledger=book), now=NOW)
    row = row_of(view, "alpha", "k1", "big")
    assert (row.rpm.used, row.rpm.cap, row.rpm.left) == (2, 3, 1)
    assert (row.tpm.used, row.tpm.cap, row.tpm.left) == (1400, 6000, 4600)
    assert (row.rpd.used, row.rpd.cap, row.rpd.left) == (2, 50, 48)
    assert (row.tpd.used, row.tpd.cap, row.tpd.left) == (1400, 100_000, 98_600)
    # A rolling window frees up when its oldest counted use leaves it: one grain after a span.
    assert row.rpm.resets_at == row.tpm.resets_at == start + 1 + 60
    day_bucket = math.floor(start / 900) * 900
    assert row.rpd.resets_at == row.tpd.resets_at == day_bucket + 900 + 86_400
    assert (row.inflight, row.concurrency) == (0, 2)
    assert row.available
    assert (row.blocked_reason, row.retry_at) == (None, None)

    # The other key and model are untouched: nothing counted, nothing to reset.
    other = row_of(view, "alpha", "k2", "big")
    assert (other.rpm.used, other.rpm.left, other.rpm.resets_at) == (0, 3, None)
    free = row_of(view, "alpha", "k1", "free")
    assert [free.window(w).cap for w in WINDOWS] == [None] * 4
    assert [free.window(w).left for w in WINDOWS] == [None] * 4

    # A minute later only the day remembers them.
    later = quota_view(attrs.evolve(state, ledger=book), now=start + 10 + 62)
    row = row_of(later, "alpha", "k1", "big")
    assert (row.rpm.used, row.tpm.used, row.rpm.resets_at) == (0, 0, None)
    assert (row.rpd.used, row.tpd.used) == (2, 1400)


def test_left_stays_at_zero_when_a_cap_was_lowered_below_what_is_used() -> None:
    state = state_with({"alpha": ["k1"]})
    book = state.ledger
    for n in range(3):
        book, _ = ledger.book(book, slot_of(state, "alpha", "k1", "small"), 10, now=NOW - n)
    lowered = apply_config(CATALOG, {"providers": {"alpha": {"models": [
        {"id": "small", "rpm": 2, "rpd": 8},
    ]}}})  # fmt: skip
    view = quota_view(RouterState(Topology(lowered, state.topology.keys), book), now=NOW)
    row = row_of(view, "alpha", "k1", "small")
    assert (row.rpm.used, row.rpm.cap, row.rpm.left, row.available) == (3, 2, 0, False)
    assert view.capacity.rpm.left == 3 + 0  # big's 3 and small's none


def test_requests_through_the_router_transitions_count_until_the_cap_blocks() -> None:
    state = state_with({"alpha": ["k1"]})
    slot = slot_of(state, "alpha", "k1", "big")
    for n in range(3):
        admitted = admit(state, slot, 500, now=NOW + n)
        assert isinstance(admitted, Admitted)
        state = admitted.state
        view = quota_view(state, now=NOW + n)
        row = row_of(view, "alpha", "k1", "big")
        # The one in flight counts its estimate, the settled ones what they cost.
        assert (row.rpm.used, row.tpm.used, row.inflight) == (n + 1, 300 * n + 500, 1)
        state = record(state, admitted.ticket, Outcome(Kind.SUCCESS), tokens=300, now=NOW + n)
    row = row_of(quota_view(state, now=NOW + 3), "alpha", "k1", "big")
    assert (row.rpm.used, row.rpm.left, row.tpm.used, row.inflight) == (3, 0, 900, 0)
    assert not row.available
    assert row.blocked_reason == "rpm"
    assert row.retry_at == math.floor(NOW) + 1 + 60  # when the first of the three leaves
    assert row.retry_at == ledger.explain(state.ledger, slot, 1, NOW + 3).retry_at


def test_an_account_row_counts_every_account_model_once_with_the_loosest_caps() -> None:
    state = state_with({"beta": ["k1", "k2"]})
    book = state.ledger
    book, _ = ledger.book(book, slot_of(state, "beta", "k1", "shared/one"), 100, now=NOW - 3)
    book, _ = ledger.book(book, slot_of(state, "beta", "k1", "shared/two"), 200, now=NOW - 2)
    state = attrs.evolve(state, ledger=book)
    view = quota_view(state, now=NOW)
    row = row_of(view, "beta", "k1", "shared/one")
    assert row is row_of(view, "beta", "k1", "shared/two")
    assert (row.model, row.account) == (ACCOUNT, True)
    assert (row.rpm.used, row.tpm.used, row.rpd.used, row.inflight) == (2, 300, 2, 2)
    assert (row.rpm.cap, row.rpm.left) == (4, 2)  # shared/one can still take two
    assert (row.tpm.cap, row.tpm.left) == (None, None)  # shared/one knows no tpm
    assert (row.rpd.cap, row.rpd.left) == (6, 4)
    # shared/two (rpm 2) is full, shared/one is not: the account can still serve.
    assert row.available
    servable = {t.target: t.servable_now for t in view.targets}
    assert servable["beta/shared/one"]
    assert servable["beta/shared/two"]  # k2 is untouched
    # Counted once per key in the totals: two keys, each with one account row and one "big".
    assert view.capacity.rpm == quotas.CapacityTotal(
        left=2 + 4 + 2 + 2, cap=4 + 4 + 2 + 2, unknown=0
    )
    assert view.capacity.tpm.unknown == 4


def test_a_cooldown_shows_with_its_seconds_left_and_blocks_the_row() -> None:
    state = state_with({"alpha": ["k1", "k2"]})
    slot = slot_of(state, "alpha", "k1", "small")
    book = ledger.cool_down(state.ledger, slot.scope, until=NOW + 12.5, reason="429")
    book = ledger.cool_down(book, ("alpha", None, "free"), until=NOW + 30, reason="404")
    book = ledger.cool_down(book, ("alpha", "k2", None), until=NOW + 7, reason="402")
    book = ledger.cool_down(book, ("alpha", "k1", "big"), until=NOW - 1, reason="over")
    view = quota_view(attrs.evolve(state, ledger=book), now=NOW)

    small = row_of(view, "alpha", "k1", "small")
    assert small.cooldowns == (quotas.ActiveCooldown("slot", "small", NOW + 12.5, "429", 12.5),)
    assert not small.available
    assert (small.blocked_reason, small.retry_at) == ("cooldown: 429", NOW + 12.5)

    big = row_of(view, "alpha", "k1", "big")
    assert big.cooldowns == ()  # over by now
    assert big.available

    for key_id in ("k1", "k2"):  # the model's cooldown is on every key
        free = row_of(view, "alpha", key_id, "free")
        assert quotas.ActiveCooldown("model", "free", NOW + 30, "404", 30.0) in free.cooldowns
        assert not free.available
    for model in ("big", "small", "free"):  # the key's cooldown is on every model
        row = row_of(view, "alpha", "k2", model)
        assert quotas.ActiveCooldown("key", None, NOW + 7, "402", 7.0) in row.cooldowns
        assert not row.available
    k2_free = row_of(view, "alpha", "k2", "free")
    # Under the model's cooldown, a key that is blocked itself frees at the later of the two.
    assert (k2_free.blocked_reason, k2_free.retry_at) == ("cooldown: 404", NOW + 30)
    targets = {t.target: t for t in view.targets}
    assert not targets["alpha/free"].servable_now
    assert targets["alpha/free"].retry_at == NOW + 30
    # k1's slot and all of k2 are cooling: the first to end is k2's.
    assert (targets["alpha/small"].servable_now, targets["alpha/small"].retry_at) == (
        False,
        NOW + 7,
    )
    assert targets["alpha/big"].available_keys == 1


@pytest.mark.parametrize(
    "local",
    [
        dt.datetime(2026, 6, 10, 15, 30, tzinfo=LA),
        dt.datetime(2026, 6, 10, 0, 0, tzinfo=LA),  # just past midnight
        dt.datetime(2026, 6, 10, 23, 59, 59, tzinfo=LA),
        dt.datetime(2026, 3, 8, 12, 0, tzinfo=LA),  # spring forward: a 23-hour day
        dt.datetime(2026, 11, 1, 0, 30, tzinfo=LA),  # fall back: a 25-hour day
    ],
    ids=str,
)
def test_a_calendar_day_window_resets_at_the_next_local_midnight(local: dt.datetime) -> None:
    now = local.timestamp()
    state = state_with({"beta": ["k1", "k2"]})
    book, _ = ledger.book(state.ledger, slot_of(state, "beta", "k1", "big"), 40, now=now)
    # k2 was used the day before: that day's count no longer holds.
    book, _ = ledger.book(book, slot_of(state, "beta", "k2", "big"), 40, now=now - 86_400 - 3600)
    view = quota_view(attrs.evolve(state, ledger=book), now=now)
    midnight = next_midnight(now, LA)
    for key_id in ("k1", "k2"):
        for model in ("big", "shared/one"):
            row = row_of(view, "beta", key_id, model)
            assert row.rpd.resets_at == row.tpd.resets_at == midnight
    assert row_of(view, "beta", "k1", "big").rpd.used == 1
    assert row_of(view, "beta", "k2", "big").rpd.used == 0
    assert dt.datetime.fromtimestamp(midnight, LA).time() == dt.time(0)
    assert 0 < midnight - now <= 25 * 3600


def test_announced_limits_in_force_appear_and_bind() -> None:
    state = state_with({"gamma": ["k1"]})
    slot = slot_of(state, "gamma", "k1", "huge")
    ceilings = [
        Ceiling("requests", "minute", 0, 30, NOW + 20),
        Ceiling("tokens", "day", 5000, None, NOW + 3600),
    ]
    book = ledger.observe(state.ledger, slot, ceilings, now=NOW - 1)
    stale = ledger.observe(book, slot_of(state, "gamma", "k1", "small"), [
        Ceiling("tokens", "minute", 3, 10, NOW - 0.5),
    ], now=NOW - 1)  # fmt: skip
    view = quota_view(attrs.evolve(state, ledger=stale), now=NOW)
    row = row_of(view, "gamma", "k1", "huge")
    assert row.announced == (
        quotas.AnnouncedLimit("requests", "minute", 0, 30, NOW + 20, 20.0),
        quotas.AnnouncedLimit("tokens", "day", 5000, None, NOW + 3600, 3600.0),
    )
    assert not row.available
    assert (row.blocked_reason, row.retry_at) == ("provider limit: requests per minute", NOW + 20)
    assert row_of(view, "gamma", "k1", "small").announced == ()  # it ran out before now


def test_an_invalid_key_and_a_full_concurrency_cap_block_their_rows() -> None:
    state = state_with({"gamma": ["k1", "k2"]})
    marks = health.apply(state.health, "gamma", "k1", Event.CALL_INVALID, now=NOW - 9)
    book, _ = ledger.book(state.ledger, slot_of(state, "gamma", "k2", "small"), 5, now=NOW - 1)
    view = quota_view(attrs.evolve(state, ledger=book, health=marks), now=NOW)
    invalid = row_of(view, "gamma", "k1", "huge")
    assert (invalid.health, invalid.health_since) == ("invalid", NOW - 9)
    assert (invalid.available, invalid.blocked_reason, invalid.retry_at) == (
        False,
        "invalid key",
        None,
    )
    busy = row_of(view, "gamma", "k2", "small")
    assert (busy.health, busy.health_since) == ("unknown", None)
    assert (busy.inflight, busy.concurrency, busy.available) == (1, 1, False)
    assert busy.blocked_reason == "concurrency"
    targets = {t.target: t for t in view.targets}
    assert (targets["gamma/small"].servable_now, targets["gamma/small"].retry_at) == (
        False,
        NOW + ledger.CONCURRENCY_RETRY_S,
    )
    assert targets["gamma/huge"].available_keys == 1


def test_targets_list_the_chain_then_the_catalog_and_a_target_without_keys() -> None:
    view = quota_view(state_with({"alpha": ["k1"]}), now=NOW)
    names = [t.target for t in view.targets]
    chain = list(CONFIG["router"]["chain"])  # type: ignore[index]
    assert names[: len(chain)] == chain
    assert [t.in_chain for t in view.targets] == [True] * len(chain) + [False] * (
        len(names) - len(chain)
    )
    assert sorted(names) == sorted(
        f"{p}/{m}" for p, spec in CATALOG.providers.items() for m in spec.models
    )
    targets = {t.target: t for t in view.targets}
    assert (targets["alpha/big"].keys, targets["alpha/big"].servable_now) == (1, True)
    nobody = targets["gamma/huge"]
    assert (nobody.keys, nobody.servable_now, nobody.blocked_reason, nobody.retry_at) == (
        0,
        False,
        "no key",
        None,
    )


# --- properties ----------------------------------------------------------------------------------


@given(states())
def test_used_today_is_the_day_rows_of_a_key_added_up(state: RouterState) -> None:
    view = quota_view(state, now=NOW)
    for key in state.topology.keys:
        rows = [r for r in view.rows if (r.provider, r.key_id) == (key.provider, key.id)]
        expected = (sum(r.rpd.used for r in rows), sum(r.tpd.used for r in rows))
        assert quotas.used_today(state, key.provider, key.id, now=NOW) == expected


@given(states())
def test_left_is_cap_minus_used_never_negative(state: RouterState) -> None:
    view = quota_view(state, now=NOW)
    for row in view.rows:
        for name in WINDOWS:
            window = row.window(name)
            assert window.used >= 0
            if window.cap is None:
                assert window.left is None
            else:
                assert window.left == max(0, window.cap - window.used)
        if row.available:  # room for one more request in every known request cap
            assert all(row.window(w).left != 0 for w in ("rpm", "rpd"))


@given(states())
def test_used_is_what_the_ledger_windows_hold(state: RouterState) -> None:
    view = quota_view(state, now=NOW)
    for row in view.rows:
        usage_key = (row.provider, row.key_id, ACCOUNT if row.account else row.model)
        usage = state.ledger.usage.get(usage_key)
        minute = (0, 0) if usage is None else usage.minute.totals(NOW)
        day = (0, 0) if usage is None else usage.day.totals(NOW)
        assert (row.rpm.used, row.tpm.used, row.rpd.used, row.tpd.used) == (*minute, *day)
        assert row.inflight == (0 if usage is None else usage.inflight)
        if row.provider == "beta":
            assert row.rpd.resets_at == next_midnight(NOW, LA)


@given(states())
def test_available_agrees_with_the_router_plan_and_the_ledger(state: RouterState) -> None:
    view = quota_view(state, now=NOW)
    planned: dict[str, set[str]] = {}
    for target in view.targets:
        routed = plan(state, one_token(target.target), now=NOW)
        keys = {slot.key_id for slot in routed}
        planned[target.target] = keys
        assert target.servable_now == bool(keys)
        assert target.available_keys == len(keys)
        assert target.keys == len(state.topology.slots[target.provider, target.model])
        if target.servable_now:
            assert (target.blocked_reason, target.retry_at) == (None, None)
            continue
        invalid = any(
            not health.is_routable(state.health, target.provider, key_id)
            for key_id in (s.key_id for s in state.topology.slots[target.provider, target.model])
        )
        if not invalid:  # the plan explains an invalid key under a model cooldown by the cooldown
            assert target.retry_at == routed.no_capacity().retry_at
    for row in view.rows:
        slots = [slot_of(state, row.provider, row.key_id, model) for model in row.models]
        assert row.available == any(row.key_id in planned[s.name] for s in slots)
        by_ledger = any(
            ledger.headroom(state.ledger, s, 1, NOW) is not None
            and ledger.cooldown_of(state.ledger, s.model_scope, NOW) is None
            and health.is_routable(state.health, s.provider, s.key_id)
            for s in slots
        )
        assert row.available == by_ledger
        if row.available:
            assert (row.blocked_reason, row.retry_at) == (None, None)
        else:
            assert row.blocked_reason
            assert row.retry_at is None or row.retry_at > NOW


@given(states())
def test_capacity_totals_count_each_usage_key_once(state: RouterState) -> None:
    view = quota_view(state, now=NOW)
    # A naive recount: group the enabled keys' models by the usage key they count under.
    groups: dict[tuple[str, str, str], list[Caps]] = {}
    for key in state.topology.keys:
        spec = CATALOG.providers[key.provider]
        for model in spec.models.values():
            usage_key = Slot(key.provider, key.id, model, spec.daily_reset).usage_key
            groups.setdefault(usage_key, []).append(model.caps)
    assert len(view.rows) == len(groups)
    for name, (kind, dimension) in {
        "rpm": ("minute", 0), "tpm": ("minute", 1), "rpd": ("day", 0), "tpd": ("day", 1)
    }.items():  # fmt: skip
        left = cap = unknown = 0
        for usage_key, caps in groups.items():
            known = [getattr(c, name) for c in caps]
            if any(value is None for value in known):
                unknown += 1
                continue
            usage = state.ledger.usage.get(usage_key)
            used = 0 if usage is None else getattr(usage, kind).totals(NOW)[dimension]
            cap += max(known)
            left += max(0, max(known) - used)
        assert view.capacity.window(name) == quotas.CapacityTotal(left, cap, unknown)
        assert view.capacity.window(name).left == sum(
            row.window(name).left or 0 for row in view.rows
        )


@given(states())
def test_to_data_is_plain_json_in_the_documented_shape(state: RouterState) -> None:
    view = quota_view(state, now=NOW)
    data = quotas.to_data(view)
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert set(data) == {"now", "rows", "capacity", "targets"}
    assert data["now"] == NOW
    assert set(data["capacity"]) == set(WINDOWS)
    for total in data["capacity"].values():
        assert set(total) == {"left", "cap", "unknown"}
    for row, shown in zip(view.rows, data["rows"], strict=True):
        assert set(shown) == {
            "provider", "key_id", "model", "account", "models", "windows", "inflight",
            "concurrency", "daily_reset", "cooldowns", "announced", "health", "health_since",
            "available", "blocked_reason", "retry_at",
        }  # fmt: skip
        assert shown["windows"]["tpd"]["used"] == row.tpd.used
        assert set(shown["windows"]) == set(WINDOWS)
        for window in shown["windows"].values():
            assert set(window) == {"used", "cap", "left", "resets_at"}
        for cooldown in shown["cooldowns"]:
            assert set(cooldown) == {"scope", "model", "until", "reason", "seconds_left"}
            assert cooldown["scope"] in {"slot", "key", "model"}
            assert cooldown["seconds_left"] > 0
        for limit in shown["announced"]:
            assert set(limit) == {"dimension", "window", "remaining", "limit", "until",
                                  "seconds_left"}  # fmt: skip
    for target in data["targets"]:
        assert set(target) == {
            "target", "provider", "model", "in_chain", "keys", "available_keys", "servable_now",
            "blocked_reason", "retry_at",
        }  # fmt: skip


@given(states())
def test_the_view_is_a_pure_function_of_its_state(state: RouterState) -> None:
    rebuilt = RouterState(
        Topology(CATALOG, state.topology.keys),
        ledger.from_data(ledger.to_data(state.ledger)),
        health.from_data(health.to_data(state.health)),
    )
    assert quota_view(state, now=NOW) == quota_view(rebuilt, now=NOW)
