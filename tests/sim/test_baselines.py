"""The baseline policies, replayed against the real fleet: each behaves as the router it models,
none sends a request where it cannot be taken, and none (nor freellm) serves more than the
offline upper bound allows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freellm.core.catalog import Catalog, apply_config
from freellm.sim.baselines import BASELINES, LITELLM_COOLDOWN_S, fits
from freellm.sim.bounds import upper_bound
from freellm.sim.fakes.caps import FakeCaps
from freellm.sim.fleet import Fleet, SimAnswer, Truth
from freellm.sim.replay import EPOCH, Result, replay
from freellm.sim.trace import Trace, TraceRequest

POLICIES = ("freellm", *BASELINES)


@attrs.frozen
class Call:
    at: float  # from the trace's start
    model: str
    key: str
    prompt_tokens: int
    status: int


class Recorder(Fleet):
    """The real fleet, noting every call it answers."""

    def __init__(self, catalog: Catalog, keys: Mapping[str, Sequence[str]], **kwargs: Any):
        super().__init__(catalog, keys, **kwargs)
        self.calls: list[Call] = []

    def call(
        self,
        provider: str,
        key_id: str,
        model: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        now: float,
    ) -> SimAnswer:
        answer = super().call(
            provider,
            key_id,
            model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            now=now,
        )
        self.calls.append(Call(now - EPOCH, model, key_id, prompt_tokens, answer.status))
        return answer


def replayed(
    trace: Trace,
    catalog: Catalog,
    keys: Mapping[str, int],
    policy: str,
    truth: Mapping[str, Truth] | None = None,
) -> tuple[Result, list[Call]]:
    made: list[Recorder] = []

    def fleet(catalog: Catalog, ids: Mapping[str, Sequence[str]]) -> Fleet:
        made.append(Recorder(catalog, ids, truth=truth or {}))
        return made[-1]

    result = replay(trace, catalog, keys, policy=policy, fleet=fleet)
    return result, made[0].calls


def alpha(*models: dict[str, Any], **provider: Any) -> Catalog:
    """One provider, ``alpha``, with ``models`` chained in order."""
    config = {
        "providers": {
            "alpha": {
                "dialect": "openai",
                "base_url": "http://127.0.0.1:9/alpha",
                "models": list(models),
                **provider,
            }
        },
        "router": {"chain": [f"alpha/{model['id']}" for model in models]},
    }
    return apply_config(Catalog(), config)


def trace_of(*requests: TraceRequest) -> Trace:
    return Trace(tuple(requests), "test")


def at(t: float, prompt: int = 10, completion: int = 150, **flags: Any) -> TraceRequest:
    return TraceRequest(t, prompt, completion, **flags)


# --- first-fit ----------------------------------------------------------------------------------


def test_first_fit_overshoots_a_cap_under_concurrency_then_sits_out_120_s() -> None:
    catalog = alpha({"id": "big", "rpm": 2}, {"id": "small"})
    # Four requests sent before any answer (a 429 takes 0.05 s, a success over a second):
    # first-fit counts a call only when it succeeds, so all four go to "big", whose provider
    # refuses two of them; then they go on to "small".
    trace = trace_of(at(0), at(0.01), at(0.02), at(0.03), at(70), at(125))
    result, calls = replayed(trace, catalog, {"alpha": 1}, "first-fit")
    early = [(c.model, c.status) for c in calls if c.at < 1]
    assert [status for model, status in early if model == "big"] == [200, 200, 429, 429]
    assert [status for model, status in early if model == "small"] == [200, 200]
    assert result.upstream_429 == result.cap_violations == 2
    # At 70 s "big" has room again, but the 429s cooled it down for 120 s: "small" serves.
    assert [(c.model, c.status) for c in calls if 70 <= c.at < 71] == [("small", 200)]
    assert [(c.model, c.status) for c in calls if c.at >= 125] == [("big", 200)]
    assert result.served == 6


def test_first_fit_skips_a_deployment_whose_counted_successes_reach_its_cap() -> None:
    catalog = alpha({"id": "big", "rpm": 2}, {"id": "small"})
    trace = trace_of(at(0), at(10), at(20))  # each answered before the next
    result, calls = replayed(trace, catalog, {"alpha": 1}, "first-fit")
    assert [(c.model, c.status) for c in calls] == [("big", 200), ("big", 200), ("small", 200)]
    assert result.upstream_429 == 0


def test_first_fit_answers_429_when_it_skipped_for_caps_and_502_when_all_failed() -> None:
    catalog = alpha({"id": "big", "rpm": 1})
    result, calls = replayed(trace_of(at(0), at(10)), catalog, {"alpha": 1}, "first-fit")
    assert (result.served, result.refused, len(calls)) == (1, 1, 1)
    refusing = {"alpha": Truth(caps={"big": FakeCaps(rpm=0)})}
    result, calls = replayed(trace_of(at(0)), catalog, {"alpha": 1}, "first-fit", refusing)
    assert (result.failed, result.upstream_429, len(calls)) == (1, 1, 1)


# --- round-robin --------------------------------------------------------------------------------


def test_round_robin_spreads_requests_evenly_over_every_deployment() -> None:
    catalog = alpha({"id": "m"}, {"id": "n"})
    trace = trace_of(*(at(i) for i in range(40)))
    result, calls = replayed(trace, catalog, {"alpha": 2}, "round-robin")
    counts: dict[tuple[str, str], int] = {}
    for call in calls:
        counts[call.model, call.key] = counts.get((call.model, call.key), 0) + 1
    assert counts == {
        ("m", "alpha-1"): 10,
        ("m", "alpha-2"): 10,
        ("n", "alpha-1"): 10,
        ("n", "alpha-2"): 10,
    }
    assert result.served == 40
    assert result.shares["target"] == {"alpha/m": 0.5, "alpha/n": 0.5}


def test_round_robin_knows_no_caps_and_tries_the_next_deployment_on_a_failure() -> None:
    catalog = alpha({"id": "m", "rpm": 0}, {"id": "n"})
    trace = trace_of(*(at(i) for i in range(10)))
    result, calls = replayed(trace, catalog, {"alpha": 1}, "round-robin")
    assert result.served == 10
    assert result.upstream_429 == 5  # every other request starts on "m", which refuses all
    assert result.attempts == 15
    assert all(c.status == 429 for c in calls if c.model == "m")


# --- least-used ---------------------------------------------------------------------------------


def test_least_used_picks_the_deployment_with_the_fewest_tokens_this_minute() -> None:
    catalog = alpha({"id": "m", "tpm": 100_000})
    prompts = [1000, 500, 100, 100, 400, 10]
    trace = trace_of(*(at(5 * i, prompt, 10) for i, prompt in enumerate(prompts)), at(61))
    _, calls = replayed(trace, catalog, {"alpha": 2}, "least-used")
    # Tokens this minute after each: key 1 has 1010 from the first; key 2 takes the next four
    # (510, 620, 730, then 1140), then key 1 is the lower again. A new minute starts from
    # nothing on both, and a tie goes to the first.
    assert [c.key[-1] for c in calls] == ["1", "2", "2", "2", "2", "1", "1"]


def test_least_used_counts_a_request_at_its_send_and_its_tokens_when_it_succeeds() -> None:
    # rpm 1: the first request's count keeps the second off key 1 while it is in flight.
    catalog = alpha({"id": "m", "rpm": 1})
    result, calls = replayed(trace_of(at(0), at(0.1), at(0.2)), catalog, {"alpha": 2}, "least-used")
    assert [c.key for c in calls] == ["alpha-1", "alpha-2"]
    assert (result.served, result.refused, result.upstream_429) == (2, 1, 0)
    # Its tokens count only once it succeeds: in flight, key 1 still looks unused.
    catalog = alpha({"id": "m", "tpm": 100_000})
    _, calls = replayed(trace_of(at(0, 5000), at(0.1)), catalog, {"alpha": 2}, "least-used")
    assert [c.key for c in calls] == ["alpha-1", "alpha-1"]


def test_least_used_cools_a_deployment_down_after_a_429_and_picks_again() -> None:
    catalog = alpha({"id": "m"}, {"id": "n"})
    refusing = {"alpha": Truth(caps={"m": FakeCaps(rpm=0)})}
    later = LITELLM_COOLDOWN_S + 5
    trace = trace_of(at(0), at(2), at(later))
    result, calls = replayed(trace, catalog, {"alpha": 1}, "least-used", refusing)
    assert [(c.model, c.status) for c in calls] == [
        ("m", 429),  # a tie: the first
        ("n", 200),  # picked again, "m" cooling down
        ("n", 200),  # "m" still cooling down
        ("m", 429),  # the cooldown is over, and "m" has used the fewest tokens
        ("n", 200),
    ]
    assert result.served == 3


def test_least_used_gives_up_after_its_retries() -> None:
    catalog = alpha(*({"id": name} for name in "abcd"))
    refusing = {"alpha": Truth(caps={name: FakeCaps(rpm=0) for name in "abcd"})}
    result, calls = replayed(trace_of(at(0)), catalog, {"alpha": 1}, "least-used", refusing)
    assert [c.model for c in calls] == ["a", "b", "c"]  # LiteLLM's 2 retries
    assert result.refused == 1


# --- what every policy shares -------------------------------------------------------------------

CAPABLE = alpha(
    {"id": "plain", "context": 3000},
    {"id": "tooly", "context": 100_000, "tools": True, "json": True},
    {"id": "eyes", "context": 5000, "vision": True, "max_output": 500},
)


@st.composite
def capability_traces(draw: st.DrawFn) -> Trace:
    prompts = draw(st.lists(st.integers(0, 6000), min_size=1, max_size=12, unique=True))
    return Trace(
        tuple(
            TraceRequest(
                i * 0.5,
                prompt,
                draw(st.integers(0, 300)),
                max_tokens=draw(st.none() | st.integers(100, 1000)),
                tools=draw(st.booleans()),
                images=draw(st.booleans()),
                json=draw(st.booleans()),
            )
            for i, prompt in enumerate(prompts)
        ),
        "drawn",
    )


@pytest.mark.parametrize("policy", POLICIES)
@settings(max_examples=40)
@given(trace=capability_traces(), keys=st.integers(1, 2))
def test_no_policy_sends_a_request_where_it_cannot_be_taken(
    policy: str, trace: Trace, keys: int
) -> None:
    result, calls = replayed(trace, CAPABLE, {"alpha": keys}, policy)
    by_prompt = {request.prompt_tokens: request for request in trace.requests}
    models = CAPABLE.providers["alpha"].models
    budget = CAPABLE.settings.default_completion_tokens
    for call in calls:
        request = by_prompt[call.prompt_tokens]
        need = budget if request.max_tokens is None else request.max_tokens
        assert fits(models[call.model], request, need), (call, request)
    nowhere = [
        request
        for request in trace.requests
        if not any(fits(model, request, request.max_tokens or budget) for model in models.values())
    ]
    assert not {r.prompt_tokens for r in nowhere} & {c.prompt_tokens for c in calls}
    assert result.failed >= len(nowhere)


CAPS = st.fixed_dictionaries(
    {},
    optional={
        "rpm": st.integers(1, 4),
        "rpd": st.integers(2, 20),
        "tpm": st.integers(300, 3000),
        "tpd": st.integers(1000, 10_000),
    },
)


@st.composite
def small_replays(draw: st.DrawFn) -> tuple[Catalog, dict[str, int], Trace]:
    """One or two providers (one may speak Gemini's dialect) of one or two models with small
    caps, and up to 30 requests over three minutes, some at once."""
    config: dict[str, Any] = {"providers": {}, "router": {"chain": []}}
    keys = {}
    for provider in draw(st.sampled_from([["alpha"], ["gem"], ["alpha", "gem"]])):
        account = draw(st.booleans())
        models = [
            {"id": f"m{n}", **draw(CAPS), "account": account}
            for n in range(draw(st.integers(1, 2)))
        ]
        config["providers"][provider] = {
            "dialect": "gemini" if provider == "gem" else "openai",
            "base_url": f"http://127.0.0.1:9/{provider}",
            "models": models,
        }
        config["router"]["chain"] += [f"{provider}/{model['id']}" for model in models]
        keys[provider] = draw(st.integers(1, 2))
    # Whole seconds, some a little before: sends just before a minute's end, retried after it.
    early = st.sampled_from([0.0, 0.0, 0.02])
    times = sorted(
        max(0.0, t - draw(early))
        for t in draw(st.lists(st.integers(0, 180), min_size=5, max_size=40))
    )
    trace = Trace(
        tuple(
            TraceRequest(t, draw(st.integers(10, 800)), draw(st.integers(0, 200))) for t in times
        ),
        "drawn",
    )
    return apply_config(Catalog(), config), keys, trace


@settings(max_examples=100)
@given(small_replays())
def test_no_policy_serves_more_than_the_upper_bound(
    instance: tuple[Catalog, dict[str, int], Trace],
) -> None:
    catalog, keys, trace = instance
    bound = upper_bound(trace, catalog, keys)
    for policy in POLICIES:
        result = replay(trace, catalog, keys, policy=policy)
        assert result.served <= bound.served, (policy, result.served, bound)


def test_a_retry_sent_after_a_minute_boundary_is_why_the_bound_allows_a_slack() -> None:
    catalog = alpha({"id": "m", "rpm": 1}, {"id": "n", "rpm": 1})
    # Round-robin: the first two fill both models; the third finds both full; the last, at
    # 59.98 s, starts on "n" (full until 61 s), and its retry on "m" goes at 60.03 s, when the
    # first request has just left "m"'s window.
    # (Refused calls do not count here, as with the fakes: the third one's 429s would keep "m"
    # full until 62 s otherwise.)
    trace = trace_of(at(0), at(1), at(2), at(59.98))
    truth = {"alpha": Truth(refused_count=False)}
    result, calls = replayed(trace, catalog, {"alpha": 1}, "round-robin", truth)
    assert [(c.model, c.status) for c in calls[-2:]] == [("n", 429), ("m", 200)]
    assert [c.at for c in calls[-2:]] == pytest.approx([59.98, 60.03])
    assert result.served == 3
    assert upper_bound(trace, catalog, {"alpha": 1}, slack_s=0.0).served == 2
    assert upper_bound(trace, catalog, {"alpha": 1}).served == 3
