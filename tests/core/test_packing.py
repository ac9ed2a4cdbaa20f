"""The capacity strategy on single-window instances, small enough that the best assignment is
found by brute force, and its bounded chain preference. Its properties over random router states
(the same candidates as the chain, cheapest first) are in test_router.py."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import attrs
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from instances import catalog_of

from freellm.core import packing
from freellm.core.catalog import Catalog, Strategy
from freellm.core.ledger import Refusal
from freellm.core.outcome import Kind, Outcome
from freellm.core.router import (
    AUTO,
    Key,
    RouteRequest,
    RouterState,
    Topology,
    plan,
    record,
)

NOW = 1_780_000_000.0
OK = Outcome(Kind.SUCCESS, 200)


def test_the_chain_preference_is_bounded_and_never_decreasing() -> None:
    steps = [packing.preference(position) for position in range(12)]
    assert steps == sorted(steps)
    assert steps[0] == 0.0
    assert steps[1] == packing.PREFERENCE_STEP
    assert max(steps) == packing.PREFERENCE_MAX


def test_the_keys_of_one_target_are_priced_as_one_pool_and_ordered_by_their_own_room() -> None:
    catalog = catalog_of([{"rpd": 4}])
    keys = [Key("p0", "a", "secret"), Key("p0", "b", "secret")]
    state = RouterState(Topology(catalog, keys))
    slots = state.topology.slots["p0", "m"]
    request = RouteRequest(AUTO, prompt_tokens=9, max_tokens=1, strategy=Strategy.CAPACITY)
    for turn in range(3):  # three requests on key a: 1 left on it, 4 on b
        routed = plan(state, request, now=NOW + turn)
        admitted = routed.admit(state, slots[0], now=NOW + turn)
        assert not isinstance(admitted, Refusal)
        state = record(admitted.state, admitted.ticket, OK, tokens=10, now=NOW + turn)
    a, b = packing.prices(state.ledger, slots, 10, NOW + 3)
    # One request of the five the target has left, plus each key's own share, a little.
    assert a == 1 / 5 + packing.KEY_WEIGHT * 1 / 1
    assert b == 1 / 5 + packing.KEY_WEIGHT * 1 / 4
    assert [slot.key_id for slot in plan(state, request, now=NOW + 3)] == ["b", "a"]


# --- single-window instances --------------------------------------------------------------------


def served(catalog: Catalog, sizes: Sequence[int], strategy: Strategy) -> int:
    """How many of ``sizes`` (tokens, one request each, a second apart) the router serves."""
    state = RouterState(Topology(catalog, [Key(p, "k", "secret") for p in catalog.providers]))
    count = 0
    for index, size in enumerate(sizes):
        now = NOW + index
        request = RouteRequest(AUTO, prompt_tokens=size - 1, max_tokens=1, strategy=strategy)
        routed = plan(state, request, now=now)
        for slot in routed:
            admitted = routed.admit(state, slot, now=now)
            if not isinstance(admitted, Refusal):
                state = record(admitted.state, admitted.ticket, OK, tokens=size, now=now)
                count += 1
                break
    return count


def optimum(catalog: Catalog, sizes: Sequence[int]) -> int:
    """The most of ``sizes`` any assignment serves within the day caps: brute force."""
    caps = [spec.models["m"].caps for spec in catalog.providers.values()]
    best = 0
    for choice in itertools.product(range(len(caps) + 1), repeat=len(sizes)):
        requests = [0] * len(caps)
        tokens = [0] * len(caps)
        for size, where in zip(sizes, choice, strict=True):
            if where < len(caps):
                requests[where] += 1
                tokens[where] += size
        if all(
            (cap.rpd is None or requests[i] <= cap.rpd)
            and (cap.tpd is None or tokens[i] <= cap.tpd)
            for i, cap in enumerate(caps)
        ):
            best = max(best, sum(where < len(caps) for where in choice))
    return best


day_caps = st.one_of(
    st.fixed_dictionaries({"rpd": st.integers(1, 4)}),
    st.fixed_dictionaries({"tpd": st.integers(5, 100)}),
    st.fixed_dictionaries({"rpd": st.integers(1, 4), "tpd": st.integers(5, 100)}),
)
sizes_ = st.lists(st.integers(1, 60), min_size=1, max_size=6)


@given(st.lists(day_caps, min_size=1, max_size=3), sizes_)
def test_neither_strategy_serves_more_than_the_optimum(
    models: list[dict[str, int]], sizes: list[int]
) -> None:
    catalog = catalog_of(models)
    best = optimum(catalog, sizes)
    assert served(catalog, sizes, Strategy.CHAIN) <= best
    assert served(catalog, sizes, Strategy.CAPACITY) <= best


@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), sizes_)
def test_on_request_caps_alone_capacity_serves_the_optimum(
    rpds: list[int], sizes: list[int]
) -> None:
    catalog = catalog_of([{"rpd": rpd} for rpd in rpds])
    assert served(catalog, sizes, Strategy.CAPACITY) == optimum(catalog, sizes)


def test_a_small_request_goes_to_the_token_capped_key_a_large_one_to_the_request_capped() -> None:
    # Groq's shape first in the chain (100k tokens a day), Gemini's after it (250 requests).
    catalog = catalog_of([{"tpd": 100_000}, {"rpd": 250}])
    state = RouterState(Topology(catalog, [Key(p, "k", "secret") for p in catalog.providers]))
    big = RouteRequest(AUTO, prompt_tokens=6_999, max_tokens=1, strategy=Strategy.CAPACITY)
    small = attrs.evolve(big, prompt_tokens=499)
    assert next(plan(state, big, now=NOW)).provider == "p1"  # 7% of p0's day against 0.4%
    # 0.5% of p0's day against 0.4% of p1's: within one chain step's preference, so p0.
    assert next(plan(state, small, now=NOW)).provider == "p0"


def test_capacity_keeps_the_token_capped_key_for_the_requests_only_it_can_take() -> None:
    catalog = catalog_of([{"tpd": 20_000}, {"rpd": 3}])
    sizes = [7_000, 7_000, 7_000, *[500] * 20]
    # The chain spends p0 on two 7,000s and has room left for 12 of the 500s; p1 takes the
    # third 7,000 and two more.
    assert served(catalog, sizes, Strategy.CHAIN) == 17
    # Capacity sends two of the 7,000s to p1 (a third of its day against a third of p0's, then
    # a half against a half: the chain's preference decides), and p0 keeps room for every 500.
    assert served(catalog, sizes, Strategy.CAPACITY) == 23


def routed(catalog: Catalog, sizes: Sequence[int], strategy: Strategy) -> list[str | None]:
    """Where each of ``sizes`` went (its provider), or ``None`` when it was refused."""
    state = RouterState(Topology(catalog, [Key(p, "k", "secret") for p in catalog.providers]))
    where: list[str | None] = []
    for index, size in enumerate(sizes):
        now = NOW + index
        request = RouteRequest(AUTO, prompt_tokens=size - 1, max_tokens=1, strategy=strategy)
        candidates = plan(state, request, now=now)
        slot = next(candidates, None)
        if slot is None:
            where.append(None)
            continue
        admitted = candidates.admit(state, slot, now=now)
        assert not isinstance(admitted, Refusal)  # the plan's snapshot is the state
        state = record(admitted.state, admitted.ticket, OK, tokens=size, now=now)
        where.append(slot.provider)
    return where


@settings(max_examples=300)
@given(st.lists(day_caps, min_size=2, max_size=3), sizes_)
def test_where_capacity_leaves_the_chain_for_more_reach_requests_too_large_punish_it(
    models: list[dict[str, int]], sizes: list[int]
) -> None:
    """Why no rule that makes capacity's move can serve at least what the chain serves on every
    single-window instance (the property issue 13 asked for).

    Take the first request where capacity leaves the chain's key A (the first with room) for a
    later key B that can take larger requests than A has room for: B's tokens left exceed A's,
    or B caps only requests. From there on, send requests one token larger than A has left (or
    exactly B's tokens left), as many as the keys hold. A takes none of them under either rule,
    every other key is as it was, and B holds one fewer under capacity: it serves one fewer than
    the chain. Identical requests are served as many as fit whatever the rule, so this holds
    for *any* online rule that makes that move, and the move is the one that gains (a long
    prompt sent past a token-capped key to a request-capped one)."""
    catalog = catalog_of(models)
    chain = routed(catalog, sizes, Strategy.CHAIN)
    capacity = routed(catalog, sizes, Strategy.CAPACITY)
    first = next((i for i, (a, b) in enumerate(zip(chain, capacity, strict=True)) if a != b), None)
    assume(first is not None and chain[first] is not None and capacity[first] is not None)
    assert first is not None
    a, b = (models[int(str(where)[1:])] for where in (chain[first], capacity[first]))
    spent = {
        where: sum(size for size, went in zip(sizes[:first], chain, strict=False) if went == where)
        for where in (chain[first], capacity[first])
    }
    a_left = a["tpd"] - spent[chain[first]] if "tpd" in a else None
    b_left = b["tpd"] - spent[capacity[first]] if "tpd" in b else None
    assume(a_left is not None and (b_left is None or b_left > a_left))
    assert a_left is not None
    giant = a_left + 1 if b_left is None else b_left
    instance = [*sizes[: first + 1], *[giant] * 12]
    assert (
        served(catalog, instance, Strategy.CAPACITY)
        == served(catalog, instance, Strategy.CHAIN) - 1
    )


def test_the_smallest_instance_where_capacity_serves_fewer_than_chain() -> None:
    """Two keys capped at 1 and 2 tokens a day, two requests. The 1-token request takes all of
    p0's day against half of p1's, so capacity sends it to p1, and the 2-token request after it
    finds no key with room; the chain filled p0 and keeps p1 for it."""
    catalog = catalog_of([{"tpd": 1}, {"tpd": 2}])
    assert routed(catalog, [1, 2], Strategy.CHAIN) == ["p0", "p1"]
    assert routed(catalog, [1, 2], Strategy.CAPACITY) == ["p1", None]
    assert optimum(catalog, [1, 2]) == 2
