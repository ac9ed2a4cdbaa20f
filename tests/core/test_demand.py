"""The capacity strategy's histogram of request sizes and its threshold
(:mod:`freellm.core.demand`)."""

from __future__ import annotations

import math

import attrs
from hypothesis import given
from hypothesis import strategies as st
from instances import catalog_of

from freellm.core import demand as demand_
from freellm.core.catalog import Strategy
from freellm.core.demand import Demand, estimate, observe, threshold
from freellm.core.ledger import Refusal
from freellm.core.outcome import Kind, Outcome
from freellm.core.router import (
    AUTO,
    Key,
    RouteRequest,
    RouterState,
    Topology,
    bind_session,
    plan,
    record,
)

NOW = 1_780_000_000.0
OK = Outcome(Kind.SUCCESS, 200)


def seen(sizes: list[int], *, at: float = NOW) -> Demand:
    demand = Demand()
    for size in sizes:
        demand = observe(demand, size, now=at)
    return demand


def test_a_request_is_expected_to_cost_its_prompt_and_a_typical_completion() -> None:
    assert estimate(1_000, None) == 1_000 + demand_.EXPECTED_COMPLETION
    assert estimate(1_000, 10) == 1_010
    assert estimate(1_000, 100_000) == 1_000 + demand_.EXPECTED_COMPLETION


def test_an_hour_ago_weighs_half_of_now() -> None:
    demand = observe(seen([100]), 10_000, now=NOW + demand_.HALF_LIFE_S)
    assert sorted(weight for weight in demand.weights if weight) == [1.0, 2.0]
    # Weights are rebased long after the origin, and the ratio holds.
    later = NOW + 50 * demand_.HALF_LIFE_S
    rebased = observe(demand, 100, now=later)
    assert rebased.origin == later
    assert math.isclose(sum(rebased.weights), 1 + 3 * 2.0**-49)


def test_no_threshold_before_enough_requests_or_without_both_kinds_of_budget() -> None:
    few = seen([500] * 19)
    assert threshold(few, 100_000, 100, 12_000, now=NOW) is None
    enough = seen([500] * 20)
    assert threshold(enough, 100_000, 100, 12_000, now=NOW) is not None
    assert threshold(enough, 0, 100, 12_000, now=NOW) is None
    assert threshold(enough, 100_000, 0, 12_000, now=NOW) is None
    # Twenty requests two hours ago count as five now.
    assert threshold(enough, 100_000, 100, 12_000, now=NOW + 2 * demand_.HALF_LIFE_S) is None


def test_the_threshold_balances_the_two_kinds_of_budget() -> None:
    # Half the requests of 500 tokens, half of 5,000. With 100 requests left on request-capped
    # keys and tokens for 100 of the small ones, the small go to the tokens, the large to the
    # requests: both last 200 requests.
    demand = seen([500, 5_000] * 20)
    star = threshold(demand, 100 * 500, 100, 12_000, now=NOW)
    assert star is not None
    assert 500 < star < 5_000
    # Tokens for every request: still the largest go to the request-capped keys (which then
    # run out, and the token-capped ones take them as a last resort); that never serves fewer.
    abundant = threshold(demand, 10**9, 100, 12_000, now=NOW)
    assert abundant is not None
    assert star <= abundant < 5_000
    # Only requests beyond the reach need the request-capped keys: the threshold is the reach.
    assert threshold(seen([500, 50_000] * 20), 10**6, 100, 12_000, now=NOW) == 12_000


budgets = st.floats(1, 1e7)


@given(st.lists(st.integers(1, 200_000), min_size=20, max_size=60), budgets, budgets, budgets)
def test_more_tokens_never_lower_the_threshold_and_more_requests_never_raise_it(
    sizes: list[int], tokens: float, requests: float, more: float
) -> None:
    demand = seen(sizes)
    reach = 60_000.0
    base = threshold(demand, tokens, requests, reach, now=NOW)
    assert base is not None
    assert base <= reach
    richer = threshold(demand, tokens + more, requests, reach, now=NOW)
    assert richer is not None
    assert richer >= base
    busier = threshold(demand, tokens, requests + more, reach, now=NOW)
    assert busier is not None
    assert busier <= base


def test_above_the_threshold_a_token_capped_model_is_a_last_resort() -> None:
    catalog = catalog_of([{"tpd": 100_000}, {"rpd": 250}])
    keys = [Key(p, "k", "secret") for p in catalog.providers]
    state = RouterState(Topology(catalog, keys), demand=Demand(star=2_000.0, star_at=NOW))
    small = RouteRequest(AUTO, prompt_tokens=1_000, max_tokens=None, strategy=Strategy.CAPACITY)
    large = attrs.evolve(small, prompt_tokens=3_000)
    assert [s.provider for s in plan(state, small, now=NOW)] == ["p0", "p1"]
    assert [s.provider for s in plan(state, large, now=NOW)] == ["p1", "p0"]
    # The chain strategy has no threshold.
    chain = attrs.evolve(large, strategy=Strategy.CHAIN)
    assert [s.provider for s in plan(state, chain, now=NOW)] == ["p0", "p1"]


def test_a_sticky_session_stays_on_a_token_capped_model_above_the_threshold() -> None:
    catalog = catalog_of([{"rpd": 250}, {"tpd": 100_000, "tpm": 10_000}])
    keys = [Key(p, "k", "secret") for p in catalog.providers]
    state = RouterState(Topology(catalog, keys), demand=Demand(star=2_000.0, star_at=NOW))
    state = bind_session(state, "s1", state.topology.slots["p1", "m"][0], now=NOW)
    large = RouteRequest(AUTO, prompt_tokens=3_000, session="s1", strategy=Strategy.CAPACITY)
    assert [s.provider for s in plan(state, large, now=NOW)] == ["p1", "p0"]
    alone = attrs.evolve(large, session=None)
    assert [s.provider for s in plan(state, alone, now=NOW)] == ["p0", "p1"]


def test_a_capacity_plan_counts_its_request_once_and_works_the_threshold_out_when_due() -> None:
    catalog = catalog_of([{"tpd": 100_000}, {"rpd": 250}])
    keys = [Key(p, "k", "secret") for p in catalog.providers]
    state = RouterState(Topology(catalog, keys))
    for turn in range(25):
        now = NOW + turn
        request = RouteRequest(AUTO, prompt_tokens=700, strategy=Strategy.CAPACITY)
        routed = plan(state, request, now=now)
        slot = next(routed)
        admitted = routed.admit(state, slot, now=now)
        assert not isinstance(admitted, Refusal)
        again = routed.admit(admitted.state, slot, now=now)  # a second attempt: not counted
        assert not isinstance(again, Refusal)
        assert again.state.demand == admitted.state.demand
        state = record(admitted.state, admitted.ticket, OK, tokens=900, now=now)
    assert math.isclose(
        sum(state.demand.weights) * 2 ** ((state.demand.origin or 0) - NOW), 25, rel_tol=0.01
    )
    assert state.demand.star is not None  # 20 requests seen by turn 20, due every 10 s
    assert state.demand.star_at == NOW + 20
    chain = RouteRequest(AUTO, prompt_tokens=700, strategy=Strategy.CHAIN)
    routed = plan(state, chain, now=NOW + 30)
    admitted = routed.admit(state, next(routed), now=NOW + 30)
    assert not isinstance(admitted, Refusal)
    assert admitted.state.demand == state.demand
