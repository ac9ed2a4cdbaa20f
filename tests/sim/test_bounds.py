"""The offline upper bound: never below what the best schedule serves (found by brute force on
tiny instances and checked on a real fleet), and each of its relaxations on small examples."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freellm.core.catalog import Catalog, Dialect, ModelSpec, apply_config
from freellm.sim import bounds
from freellm.sim.bounds import replay_slack, upper_bound
from freellm.sim.fleet import Fleet
from freellm.sim.replay import EPOCH, key_ids
from freellm.sim.trace import Trace, TraceRequest

Model = dict[str, Any]


def catalog_of(providers: Mapping[str, tuple[str, Sequence[Model]]], **provider: Any) -> Catalog:
    """A catalog of ``providers`` (id: dialect and model entries), chained in the given order."""
    config: dict[str, Any] = {"providers": {}, "router": {"chain": []}}
    for name, (dialect, models) in providers.items():
        config["providers"][name] = {
            "dialect": dialect,
            "base_url": f"http://127.0.0.1:9/{name}",
            "models": list(models),
            **provider,
        }
        config["router"]["chain"] += [f"{name}/{model['id']}" for model in models]
    return apply_config(Catalog(), config)


def trace_of(*requests: TraceRequest) -> Trace:
    return Trace(tuple(requests), "test")


def at(t: float, prompt: int = 10, completion: int = 10, **flags: Any) -> TraceRequest:
    return TraceRequest(t, prompt, completion, **flags)


# --- the best schedule, by brute force ----------------------------------------------------------


def _can_take(model: ModelSpec, request: TraceRequest) -> bool:
    if request.tools and not model.tools:
        return False
    total = request.prompt_tokens + request.completion_tokens
    return model.context is None or total <= model.context


def optimum(
    trace: Trace, catalog: Catalog, keys: Mapping[str, int]
) -> tuple[int, list[tuple[TraceRequest, str, str, str]]]:
    """The most requests any router could serve, each sent at its arrival, and one schedule
    that does: every assignment of requests to deployments (or to none), tried depth-first in
    arrival order, as the fleet judges a send (rolling windows, the use plus the send within
    every cap, an account model's caps on its key's shared counter, Gemini's tokens the
    prompt's)."""
    ids = key_ids(keys)
    deployments = [
        (target.provider, key, target.model)
        for target in catalog.chain_targets
        for key in ids.get(target.provider, ())
    ]
    logs: dict[tuple[str, str, str], list[tuple[float, int]]] = {}
    best: list[Any] = [-1, []]
    chosen: list[tuple[TraceRequest, str, str, str]] = []
    requests = trace.requests

    def admits(provider: str, key: str, model: ModelSpec, now: float, tokens: int) -> bool:
        log = logs.get((provider, key, "*" if model.account else model.id), [])
        caps = model.caps
        windows = ((60.0, caps.rpm, caps.tpm), (86_400.0, caps.rpd, caps.tpd))
        for span, requests_cap, tokens_cap in windows:
            inside = [t for stamp, t in log if stamp + span > now]
            if requests_cap is not None and len(inside) + 1 > requests_cap:
                return False
            if tokens_cap is not None and sum(inside) + tokens > tokens_cap:
                return False
        return True

    def search(index: int, served: int) -> None:
        if served + len(requests) - index <= best[0]:
            return
        if index == len(requests):
            best[0], best[1] = served, list(chosen)
            return
        request = requests[index]
        now = request.at
        for provider, key, model in deployments:
            if not _can_take(model, request):
                continue
            gemini = catalog.providers[provider].dialect is Dialect.GEMINI
            tokens = request.prompt_tokens + (0 if gemini else request.completion_tokens)
            if admits(provider, key, model, now, tokens):
                log = logs.setdefault((provider, key, "*" if model.account else model.id), [])
                log.append((now, tokens))
                chosen.append((request, provider, key, model.id))
                search(index + 1, served + 1)
                chosen.pop()
                log.pop()
        search(index + 1, served)

    search(0, 0)
    return best[0], best[1]


def served_by_a_fleet(
    catalog: Catalog, keys: Mapping[str, int], schedule: list[tuple[TraceRequest, str, str, str]]
) -> int:
    fleet = Fleet(catalog, key_ids(keys))
    answers = [
        fleet.call(
            provider,
            key,
            model,
            prompt_tokens=request.prompt_tokens,
            completion_tokens=request.completion_tokens,
            now=EPOCH + request.at,
        )
        for request, provider, key, model in schedule
    ]
    return sum(answer.status == 200 for answer in answers)


CAPS = st.fixed_dictionaries(
    {},
    optional={
        "rpm": st.sampled_from([0, 1, 1, 2, 2, 3]),
        "rpd": st.integers(1, 6),
        "tpm": st.integers(10, 200),
        "tpd": st.integers(20, 400),
    },
)


@st.composite
def instances(draw: st.DrawFn) -> tuple[Catalog, dict[str, int], Trace]:
    """At most 3 deployments (two providers, one of them Gemini's dialect), at most 8 requests
    over three minutes."""
    shapes = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["alpha", "gem"]),
                CAPS,
                st.none() | st.integers(20, 150),
                st.booleans(),
                st.booleans(),
            ),
            min_size=1,
            max_size=3,
        )
    )
    providers: dict[str, tuple[str, list[Model]]] = {}
    for index, (provider, caps, context, tools, account) in enumerate(shapes):
        model: Model = {"id": f"m{index}", **caps, "tools": tools, "account": account}
        if context is not None:
            model["context"] = context
        dialect = "gemini" if provider == "gem" else "openai"
        providers.setdefault(provider, (dialect, []))[1].append(model)
    keys = {provider: draw(st.integers(1, 3)) for provider in providers}
    while sum(keys[p] * len(models) for p, (_, models) in providers.items()) > 3:
        most = max(keys, key=lambda p: keys[p])
        keys[most] -= 1
    times = sorted(draw(st.lists(st.integers(0, 360), min_size=1, max_size=8)))
    requests = [
        TraceRequest(
            t / 2,
            draw(st.integers(0, 50)),
            draw(st.integers(0, 50)),
            tools=draw(st.sampled_from([False, False, False, True])),
        )
        for t in times
    ]
    return catalog_of(providers), keys, Trace(tuple(requests), "drawn")


@settings(max_examples=150)
@given(instances())
def test_the_bound_is_never_below_the_best_schedule(
    instance: tuple[Catalog, dict[str, int], Trace],
) -> None:
    catalog, keys, trace = instance
    best, schedule = optimum(trace, catalog, keys)
    # The brute force judges sends by the fleet's rules: a real fleet serves its schedule.
    assert served_by_a_fleet(catalog, keys, schedule) == best
    bound = upper_bound(trace, catalog, keys, slack_s=0.0)
    assert bound.served >= best
    assert bound.pooled >= best
    assert bound.served <= bound.feasible <= bound.requests
    if bound.lp is not None:  # SciPy installed
        assert bound.lp >= best
        assert bound.pooled >= bound.lp
        assert bound.served == min(bound.pooled, bound.lp)


@settings(max_examples=60)
@given(instances())
def test_a_larger_slack_never_lowers_the_bound(
    instance: tuple[Catalog, dict[str, int], Trace],
) -> None:
    catalog, keys, trace = instance
    strict = upper_bound(trace, catalog, keys, slack_s=0.0)
    assert upper_bound(trace, catalog, keys, slack_s=5.0).served >= strict.served


def test_the_lp_is_no_looser_than_the_pooled_bound_where_targets_differ() -> None:
    # Tools requests can only go to "slow" (1 a minute); the pooled bound lends them "fast"'s
    # room, which the one request without tools leaves almost whole.
    catalog = catalog_of(
        {"alpha": ("openai", [{"id": "slow", "rpm": 1, "tools": True}, {"id": "fast", "rpm": 5}])}
    )
    trace = trace_of(at(0), *(at(i, tools=True) for i in range(1, 7)))
    bound = upper_bound(trace, catalog, {"alpha": 1}, slack_s=0.0, lp=True)
    assert bound.pooled == 6
    assert bound.lp == 2
    assert bound.served == 2 == optimum(trace, catalog, {"alpha": 1})[0]
    assert bound.lp_variables > 0
    assert bound.lp_seconds is not None
    assert "LP relaxation" in bound.how


def test_without_scipy_asking_for_the_lp_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    # SciPy is in the test extras: take it away, as a user's install without it would be.
    monkeypatch.setattr(bounds, "_scipy_installed", lambda: False)
    for name in [m for m in sys.modules if m == "scipy" or m.startswith("scipy.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "scipy", None)
    catalog = catalog_of({"alpha": ("openai", [{"id": "m", "rpm": 1}])})
    with pytest.raises(ImportError):
        upper_bound(trace_of(at(0)), catalog, {"alpha": 1}, lp=True)
    assert "SciPy is not installed" in upper_bound(trace_of(at(0)), catalog, {"alpha": 1}).how


# --- the relaxations, one by one ----------------------------------------------------------------


def test_requests_per_aligned_minute_are_capped_by_the_rpm_of_every_key() -> None:
    catalog = catalog_of({"alpha": ("openai", [{"id": "m", "rpm": 2}])})
    trace = trace_of(*(at(i) for i in range(0, 50, 10)), *(at(60 + i) for i in range(0, 50, 10)))
    assert upper_bound(trace, catalog, {"alpha": 1}, slack_s=0.0).served == 4
    assert upper_bound(trace, catalog, {"alpha": 2}, slack_s=0.0).served == 8
    assert upper_bound(trace, catalog, {"alpha": 3}, slack_s=0.0).served == 10


def test_tokens_per_minute_admit_the_smallest_requests_that_fit() -> None:
    catalog = catalog_of({"alpha": ("openai", [{"id": "m", "tpm": 100}])})
    # Totals 60, 30, 30, 50: the smallest three make 110, so two fit.
    trace = trace_of(at(0, 50, 10), at(1, 20, 10), at(2, 20, 10), at(3, 40, 10))
    bound = upper_bound(trace, catalog, {"alpha": 1}, slack_s=0.0)
    assert bound.served == 2
    assert bound.per_minute == 2


def test_day_caps_bound_the_whole_trace() -> None:
    catalog = catalog_of({"alpha": ("openai", [{"id": "m", "rpm": 5, "rpd": 3}])})
    trace = trace_of(*(at(60 * minute) for minute in range(10)))
    bound = upper_bound(trace, catalog, {"alpha": 2}, slack_s=0.0)
    assert bound.per_minute == 10
    assert bound.per_trace == 6
    assert bound.served == 6


def test_a_day_that_resets_at_local_midnight_allows_its_cap_once_per_calendar_day() -> None:
    # EPOCH + 72,000 s is midnight in Los Angeles: the two requests fall on two local days
    # but in one rolling day.
    trace = trace_of(at(71_990), at(72_010))
    local = catalog_of(
        {"alpha": ("openai", [{"id": "m", "rpd": 1}])}, daily_reset="America/Los_Angeles"
    )
    rolling = catalog_of({"alpha": ("openai", [{"id": "m", "rpd": 1}])})
    assert upper_bound(trace, local, {"alpha": 1}, slack_s=0.0).served == 2
    assert upper_bound(trace, rolling, {"alpha": 1}, slack_s=0.0).served == 1


def test_account_models_share_one_counter_per_key() -> None:
    models = [{"id": "a", "rpm": 2, "account": True}, {"id": "b", "rpm": 2, "account": True}]
    shared = catalog_of({"alpha": ("openai", models)})
    apart = catalog_of({"alpha": ("openai", [{**m, "account": False} for m in models])})
    trace = trace_of(*(at(i) for i in range(6)))
    assert upper_bound(trace, shared, {"alpha": 1}, slack_s=0.0).served == 2
    assert upper_bound(trace, apart, {"alpha": 1}, slack_s=0.0).served == 4


def test_gemini_counts_the_prompt_alone_against_its_token_caps() -> None:
    trace = trace_of(at(0, 60, 100))
    for dialect, served in (("gemini", 1), ("openai", 0)):
        catalog = catalog_of({"alpha": (dialect, [{"id": "m", "tpm": 100}])})
        assert upper_bound(trace, catalog, {"alpha": 1}, slack_s=0.0).served == served


def test_requests_no_model_can_take_are_never_served() -> None:
    catalog = catalog_of(
        {"alpha": ("openai", [{"id": "m", "context": 100}, {"id": "z", "rpm": 0, "tools": True}])}
    )
    trace = trace_of(
        at(0, 60, 50),  # over every context window it may use
        at(1, tools=True),  # only "z" calls tools, and "z" takes nothing
        at(2, 60, 40),  # fits "m" exactly
    )
    bound = upper_bound(trace, catalog, {"alpha": 1}, slack_s=0.0)
    assert bound.feasible == 1
    assert bound.served == 1
    assert upper_bound(trace, catalog, {"beta": 1}, slack_s=0.0).served == 0
    assert upper_bound(trace_of(), catalog, {"alpha": 1}).served == 0


def test_a_send_within_the_slack_may_land_in_the_next_minute() -> None:
    catalog = catalog_of({"alpha": ("openai", [{"id": "m", "rpm": 1}])})
    trace = trace_of(at(0), at(59.9))
    assert upper_bound(trace, catalog, {"alpha": 1}, slack_s=0.0).served == 1
    # Sent at 60.0, the second request is admitted: the first left the window at 60.
    assert upper_bound(trace, catalog, {"alpha": 1}, slack_s=0.5).served == 2
    fleet = Fleet(catalog, key_ids({"alpha": 1}))
    for now in (EPOCH, EPOCH + 60.0):
        answer = fleet.call(
            "alpha", "alpha-1", "m", prompt_tokens=10, completion_tokens=10, now=now
        )
        assert answer.status == 200


def test_the_slack_must_be_under_a_minute() -> None:
    catalog = catalog_of({"alpha": ("openai", [{"id": "m", "rpm": 1}])})
    for slack in (-0.1, 60.0):
        with pytest.raises(ValueError, match="slack_s"):
            upper_bound(trace_of(at(0)), catalog, {"alpha": 1}, slack_s=slack)


def test_the_replay_slack_covers_the_most_attempts_a_policy_makes() -> None:
    catalog = catalog_of({"alpha": ("openai", [{"id": "m"}, {"id": "n"}])})
    assert replay_slack(catalog, {"alpha": 3}) == pytest.approx(19 * 0.05)  # max_attempts 20
    assert replay_slack(catalog, {"alpha": 15}) == pytest.approx(29 * 0.05)  # 30 deployments
    assert upper_bound(trace_of(at(0)), catalog, {"alpha": 3}).slack_s == pytest.approx(0.95)
