"""The simulated fleet: its counters agree with the fakes', its judge with the true caps when they
are the configured ones, and freellm's own request machine reads its answers as it reads a real
provider's (a success settles the given usage, a 429 cools the slot down until the announced
reset, a 401 takes the key out, a 503 fails over)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from cohere.v2 import V2ChatResponse
from google.genai import types as genai_types
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion

from freellm.core import health as health_
from freellm.core import router
from freellm.core.attempt import FINAL, Phase
from freellm.core.catalog import Catalog, apply_config
from freellm.core.chat import ChatShape
from freellm.core.dialects.openai import Usage as TokenUsage
from freellm.core.exchange import Effect, Exchange, Observe, Send, Settle, Start
from freellm.core.outcome import Kind
from freellm.core.router import Key, RouterState, Topology
from freellm.sim.fakes.caps import DAY, FakeCaps, UsageLog, worst_violation
from freellm.sim.fakes.flavors import REPORTED, rate_limited, standing_headers
from freellm.sim.fleet import REFUSAL_S, Faults, Fleet, Latency, SimAnswer, Truth
from freellm.sim.fleet.meter import ORDER, Counter, rules_of, standing, worst

EPOCH = 1_780_000_000.0
MESSAGES = ({"role": "user", "content": "hi"},)


def catalog(providers: Mapping[str, Any], chain: list[str] | None = None) -> Catalog:
    config: dict[str, Any] = {"providers": dict(providers)}
    if chain is not None:
        config["router"] = {"chain": chain}
    return apply_config(Catalog(), config)


def provider(dialect: str, *models: Mapping[str, Any], path: str = "/v1") -> dict[str, Any]:
    return {"dialect": dialect, "base_url": f"http://127.0.0.1:9{path}", "models": list(models)}


# --- the counters agree with the fakes' -----------------------------------------------------------

KEYS = ("k1", "k2")
MODELS = ("m1", "m2")
# Steps that land exactly on the windows' edges as well as inside them.
STEPS = st.sampled_from([0.0, 0.25, 1.0, 7.5, 30.0, 59.75, 60.0, 61.0, 3_600.0, 86_399.75, DAY])
CAPS = st.builds(
    FakeCaps,
    rpm=st.none() | st.integers(0, 4),
    rpd=st.none() | st.integers(0, 9),
    tpm=st.none() | st.integers(0, 60),
    tpd=st.none() | st.integers(0, 200),
)
CALLS = st.lists(
    st.tuples(STEPS, st.sampled_from(KEYS), st.sampled_from(MODELS), st.integers(0, 25)),
    max_size=60,
)


@given(model_caps=st.tuples(CAPS, CAPS), account=CAPS, calls=CALLS)
def test_the_counters_decide_count_and_report_as_the_fakes_usage_logs(
    model_caps: tuple[FakeCaps, FakeCaps], account: FakeCaps, calls: list[Any]
) -> None:
    caps = dict(zip(MODELS, model_caps, strict=True))
    logs = {(k, m): UsageLog() for k in KEYS for m in (*MODELS, None)}
    counters = {(k, m): Counter() for k in KEYS for m in (*MODELS, None)}
    now = EPOCH
    for step, key, model, tokens in calls:
        now += step
        fake = [(caps[model], logs[key, model]), (account, logs[key, None])]
        ours = [
            (rules_of(caps[model]), counters[key, model]),
            (rules_of(account), counters[key, None]),
        ]
        expected = worst_violation(fake, now, tokens)
        assert worst(ours, now, tokens) == expected
        if expected is None:
            for _, log in fake:
                log.add(now, tokens)
            for _, counter in ours:
                counter.add(now, tokens)
        for scope, log in logs.items():
            counter = counters[scope]
            assert counter.usage(now) == log.usage(now)
            for dimension, window in ORDER:
                assert standing(counter, now, dimension, window, 7) == log.standing(
                    now, dimension, window, 7
                )


GROQ = catalog({"groq": provider("openai", {"id": "m1"}, {"id": "m2"}, path="/openai/v1")})


def fake_standings(
    caps: FakeCaps, account: FakeCaps, model_log: UsageLog, key_log: UsageLog, now: float
) -> dict[Any, Any]:
    """Groq's reported caps as the fake works them out: the model's, else the key's."""
    found = {}
    for dimension, window in REPORTED["groq"]:
        for scope_caps, log in ((caps, model_log), (account, key_log)):
            cap = scope_caps.cap(dimension, window)
            if cap is not None:
                found[dimension, window] = log.standing(now, dimension, window, cap)
                break
    return found


@given(model_caps=st.tuples(CAPS, CAPS), account=CAPS, calls=CALLS)
def test_a_fleet_answers_every_call_as_a_fake_provider_with_those_caps_would(
    model_caps: tuple[FakeCaps, FakeCaps], account: FakeCaps, calls: list[Any]
) -> None:
    caps = dict(zip(MODELS, model_caps, strict=True))
    truth = Truth(caps=caps, account=account, latency=Latency(jitter=0.0), refused_count=False)
    fleet = Fleet(GROQ, {"groq": KEYS}, truth={"groq": truth})
    logs = {(k, m): UsageLog() for k in KEYS for m in (*MODELS, None)}
    now = EPOCH
    for step, key, model, prompt in calls:
        now += step
        answer = fleet.call("groq", key, model, prompt_tokens=prompt, completion_tokens=3, now=now)
        tokens = prompt + 3
        model_log, key_log = logs[key, model], logs[key, None]
        violation = worst_violation([(caps[model], model_log), (account, key_log)], now, tokens)
        if violation is None:
            model_log.add(now, tokens)
            key_log.add(now, tokens)
        standings = fake_standings(caps[model], account, model_log, key_log, now)
        if violation is None:
            assert answer.status == 200
            assert answer.headers[2:] == standing_headers("groq", standings)
        else:
            assert answer.status == 429
            headers, body = rate_limited("groq", violation, model, standings, now)
            assert answer.headers[2:] == headers
            assert json.loads(answer.body) == body
        for (k, m), log in logs.items():
            assert fleet.usage("groq", k, m, now=now) == log.usage(now)
    assert fleet.stats.calls == len(calls)
    assert fleet.stats.answered_ok + fleet.stats.rate_limited == len(calls)


# --- the judge of the configured caps -------------------------------------------------------------

ROUTED = catalog(
    {
        "groq": provider(
            "openai",
            {"id": "m1", "rpm": 3, "tpm": 80, "rpd": 8},
            {"id": "m2", "rpm": 2, "tpd": 150},
            path="/openai/v1",
        ),
        # Account models share one counter per key, each with its own caps on it.
        "openrouter": provider(
            "openai",
            {"id": "m1", "account": True, "rpm": 4, "rpd": 9},
            {"id": "m2", "account": True, "rpm": 2, "tpm": 90},
            path="/api/v1",
        ),
        "google": provider("gemini", {"id": "m1", "tpm": 40}, {"id": "m2", "rpm": 2, "rpd": 5}),
    }
)
ROUTED_KEYS = dict.fromkeys(ROUTED.providers, KEYS)


@given(
    calls=st.lists(
        st.tuples(
            STEPS,
            st.sampled_from(sorted(ROUTED.providers)),
            st.sampled_from(KEYS),
            st.sampled_from(MODELS),
            st.integers(0, 30),
        ),
        max_size=60,
    ),
    invalid=st.frozensets(st.sampled_from(KEYS), max_size=1),
    error_rate=st.sampled_from([0.0, 0.3]),
)
def test_with_the_true_caps_as_configured_a_violation_is_exactly_a_429(
    calls: list[Any], invalid: frozenset[str], error_rate: float
) -> None:
    faults = Faults(error_rate=error_rate, invalid_keys=invalid)
    truth = {name: Truth(faults=faults) for name in ROUTED.providers}
    fleet = Fleet(ROUTED, ROUTED_KEYS, truth=truth, seed=3)
    now = EPOCH
    for step, name, key, model, prompt in calls:
        now += step
        answer = fleet.call(name, key, model, prompt_tokens=prompt, completion_tokens=4, now=now)
        if answer.status in (200, 429):  # the call reached the caps
            assert (answer.violation is not None) == (answer.status == 429)
    stats = fleet.stats
    assert stats.calls == stats.answered_ok + stats.rate_limited + stats.errors
    assert sum(slot.calls for slot in stats.by_slot.values()) == stats.calls
    assert sum(stats.by_cap.values()) == stats.violations >= stats.rate_limited


def test_a_call_past_the_configured_caps_is_not_counted_against_them() -> None:
    # groq's m2: 2 requests a minute, truly and as configured; counted as the fakes count.
    fleet = Fleet(ROUTED, ROUTED_KEYS, truth={"groq": Truth(refused_count=False)})
    answers = [
        fleet.call("groq", "k1", "m2", prompt_tokens=1, completion_tokens=1, now=EPOCH + t)
        for t in (0.0, 0.0, 30.0, 60.0, 60.0, 60.0)
    ]
    # The refused call at 30 s would have been refused by the configured caps too: it never
    # counts, so at 60 s the minute is empty for both.
    assert [(a.status, a.violation) for a in answers] == [
        (200, None),
        (200, None),
        (429, "rpm"),
        (200, None),
        (200, None),
        (429, "rpm"),
    ]


def test_by_default_a_refused_call_still_uses_a_request_of_the_minute() -> None:
    fleet = Fleet(ROUTED, ROUTED_KEYS)

    def call(t: float) -> tuple[int, str | None]:
        answer = fleet.call("groq", "k1", "m2", prompt_tokens=1, completion_tokens=1, now=EPOCH + t)
        return answer.status, answer.violation

    # The 429 at 30 s counts until 90 s (its tokens do not): at 60 s one request is left.
    assert [call(t) for t in (0.0, 0.0, 30.0, 60.0, 60.0)] == [
        (200, None),
        (200, None),
        (429, "rpm"),
        (200, None),
        (429, "rpm"),
    ]
    usage = fleet.usage("groq", "k1", "m2", now=EPOCH + 119)
    assert (usage.requests_minute, usage.tokens_minute) == (2, 2)  # 60 s, and 60 s refused
    assert call(120.0) == (200, None)


def test_true_caps_below_the_configured_ones_refuse_calls_freellm_may_send() -> None:
    truth = {"groq": Truth(caps={"m1": FakeCaps(rpm=1)})}
    fleet = Fleet(ROUTED, ROUTED_KEYS, truth=truth)
    first = fleet.call("groq", "k1", "m1", prompt_tokens=1, completion_tokens=1, now=EPOCH)
    second = fleet.call("groq", "k1", "m1", prompt_tokens=1, completion_tokens=1, now=EPOCH + 1)
    assert (first.status, first.violation) == (200, None)
    assert (second.status, second.violation) == (429, None)


def test_true_caps_above_the_configured_ones_let_violations_through() -> None:
    truth = {"groq": Truth(caps={"m1": FakeCaps(rpm=10)})}
    fleet = Fleet(ROUTED, ROUTED_KEYS, truth=truth)
    answers = [
        fleet.call("groq", "k1", "m1", prompt_tokens=1, completion_tokens=1, now=EPOCH + i)
        for i in range(5)
    ]
    assert [a.status for a in answers] == [200] * 5
    assert [a.violation for a in answers] == [None, None, None, "rpm", "rpm"]
    assert fleet.stats.by_cap == {"rpm": 2}
    assert fleet.stats.by_slot["groq", "k1", "m1"].violations == 2


def test_account_models_share_one_configured_counter_per_key() -> None:
    fleet = Fleet(ROUTED, ROUTED_KEYS)
    statuses = []
    for i, model in enumerate(["m1", "m1", "m2", "m1"]):
        answer = fleet.call(
            "openrouter", "k1", model, prompt_tokens=1, completion_tokens=1, now=EPOCH + i
        )
        statuses.append((answer.status, answer.violation))
    # m2's rpm of 2 counts m1's calls too; the refused call is not counted, so the fourth call
    # is the third on the key's counter, within m1's rpm of 4.
    assert statuses == [(200, None), (200, None), (429, "rpm"), (200, None)]
    other = fleet.call(
        "openrouter", "k2", "m2", prompt_tokens=1, completion_tokens=1, now=EPOCH + 4
    )
    assert other.status == 200  # another key has its own counter


def test_gemini_token_caps_count_the_prompt_only() -> None:
    fleet = Fleet(ROUTED, ROUTED_KEYS)
    answers = [
        fleet.call("google", "k1", "m1", prompt_tokens=20, completion_tokens=500, now=EPOCH)
        for _ in range(2)
    ]
    assert [a.status for a in answers] == [200, 200]  # 40 prompt tokens of a tpm of 40
    third = fleet.call("google", "k1", "m1", prompt_tokens=1, completion_tokens=0, now=EPOCH)
    assert (third.status, third.violation) == (429, "tpm")


# --- latency, faults, determinism -----------------------------------------------------------------


def test_latency_is_time_to_first_token_plus_generation_and_refusals_are_quick() -> None:
    latency = Latency(ttft_s=0.4, tokens_per_s=100.0, jitter=0.0, refusal_s=0.02)
    fleet = Fleet(ROUTED, ROUTED_KEYS, truth={"groq": Truth(latency=latency)})
    ok = fleet.call("groq", "k1", "m2", prompt_tokens=5, completion_tokens=100, now=EPOCH)
    assert (ok.ttft_s, ok.latency_s) == (0.4, 0.4 + 1.0)
    fleet.call("groq", "k1", "m2", prompt_tokens=5, completion_tokens=5, now=EPOCH)
    refused = fleet.call("groq", "k1", "m2", prompt_tokens=5, completion_tokens=5, now=EPOCH)
    assert refused.status == 429
    assert refused.ttft_s == refused.latency_s == 0.02


def test_jitter_stays_within_its_bounds_and_a_model_may_have_its_own_latency() -> None:
    slow = Latency(ttft_s=2.0, tokens_per_s=10.0, jitter=0.5)
    truth = Truth(
        latency=Latency(ttft_s=1.0, tokens_per_s=100.0, jitter=0.5), model_latency={"m2": slow}
    )
    fleet = Fleet(ROUTED, ROUTED_KEYS, truth={"google": truth})
    firsts = []
    for i in range(40):
        answer = fleet.call(
            "google", "k1", "m1", prompt_tokens=0, completion_tokens=100, now=EPOCH + 60 * i
        )
        assert 0.5 <= answer.ttft_s <= 1.5
        assert 0.5 <= answer.latency_s - answer.ttft_s <= 1.5
        firsts.append(answer.ttft_s)
    assert len(set(firsts)) == len(firsts)  # drawn, not fixed
    answer = fleet.call(
        "google", "k2", "m2", prompt_tokens=0, completion_tokens=100, now=EPOCH + 3000
    )
    assert 1.0 <= answer.ttft_s <= 3.0
    assert 5.0 <= answer.latency_s - answer.ttft_s <= 15.0


NO_FAULTS = Faults()


def replay(seed: int, faults: Faults = NO_FAULTS) -> list[SimAnswer]:
    truth = {name: Truth(faults=faults) for name in ROUTED.providers}
    fleet = Fleet(ROUTED, ROUTED_KEYS, truth=truth, seed=seed)
    return [
        fleet.call(name, key, "m1", prompt_tokens=3, completion_tokens=7, now=EPOCH + 20 * i)
        for i in range(30)
        for name in sorted(ROUTED.providers)
        for key in KEYS
    ]


def test_the_same_calls_and_seed_give_the_same_answers() -> None:
    faults = Faults(error_rate=0.2)
    assert replay(5, faults) == replay(5, faults)
    assert [a.latency_s for a in replay(5)] != [a.latency_s for a in replay(6)]
    assert [a.status for a in replay(5, faults)] != [a.status for a in replay(6, faults)]


def test_faults_answer_503_in_outages_and_at_their_rate_and_401_for_invalid_keys() -> None:
    faults = Faults(outages=((EPOCH + 100, EPOCH + 200),), invalid_keys={"k2"})
    fleet = Fleet(ROUTED, ROUTED_KEYS, truth={"groq": Truth(faults=faults)})
    statuses = [
        fleet.call("groq", "k1", "m1", prompt_tokens=1, completion_tokens=1, now=EPOCH + t).status
        for t in (99.0, 100.0, 199.75, 200.0)
    ]
    assert statuses == [200, 503, 503, 200]
    invalid = fleet.call("groq", "k2", "m1", prompt_tokens=1, completion_tokens=1, now=EPOCH + 300)
    assert invalid.status == 401
    assert fleet.stats.errors == 3
    always = Fleet(ROUTED, ROUTED_KEYS, truth={"google": Truth(faults=Faults(error_rate=1.0))})
    down = always.call("google", "k1", "m1", prompt_tokens=1, completion_tokens=1, now=EPOCH)
    assert down.status == 503
    assert json.loads(down.body)["error"]["status"] == "UNAVAILABLE"


def test_calls_must_come_in_time_order_and_name_what_the_fleet_has() -> None:
    fleet = Fleet(ROUTED, ROUTED_KEYS)
    fleet.call("groq", "k1", "m1", prompt_tokens=1, completion_tokens=1, now=EPOCH)
    with pytest.raises(ValueError, match="time order"):
        fleet.call("groq", "k1", "m1", prompt_tokens=1, completion_tokens=1, now=EPOCH - 1)
    for name, key, model in (("nope", "k1", "m1"), ("groq", "k9", "m1"), ("groq", "k1", "m9")):
        with pytest.raises(ValueError, match="is not"):
            fleet.call(name, key, model, prompt_tokens=1, completion_tokens=1, now=EPOCH)
    with pytest.raises(ValueError, match="not one of its models"):
        Fleet(ROUTED, ROUTED_KEYS, truth={"groq": Truth(caps={"m9": FakeCaps()})})
    with pytest.raises(ValueError, match="does not fit"):
        Fleet(ROUTED, ROUTED_KEYS, truth={"groq": Truth(flavor="gemini")})


# --- freellm's request machine reads the answers as a real provider's -----------------------------

# (provider id, dialect, base URL path): each fake flavor, and a provider without one (openai's).
PROVIDERS = [
    ("groq", "openai", "/openai/v1"),
    ("cerebras", "openai", "/v1"),
    ("openrouter", "openai", "/api/v1"),
    ("mistral", "openai", "/v1"),
    ("google", "gemini", "/v1beta"),
    ("cohere", "cohere", ""),
]
IDS = [name for name, _, _ in PROVIDERS]


def routed(name: str, dialect: str, path: str, *, backup: bool = True) -> Catalog:
    """`name`'s model ``m`` (100 requests a minute, as configured), then a backup provider."""
    providers: dict[str, Any] = {name: provider(dialect, {"id": "m", "rpm": 100}, path=path)}
    chain = [f"{name}/m"]
    if backup:
        providers["backup"] = provider("openai", {"id": "b"})
        chain.append("backup/b")
    return catalog(providers, chain)


def start(cat: Catalog, *, now: float, prompt: int) -> tuple[RouterState, Exchange]:
    keys = tuple(Key(name, "k1", "sk-secret") for name in cat.providers)
    state = RouterState(Topology(cat, keys))
    shape = ChatShape(model="auto", messages=MESSAGES, prompt_tokens=prompt)
    body = {"model": "auto", "messages": list(MESSAGES)}
    return state, Exchange(state, shape, body, id="r1", session=None, now=now)


def apply(state: RouterState, effects: list[Effect]) -> RouterState:
    for effect in effects:
        if not isinstance(effect, Start | Send):
            state = effect(state)
    return state


def drive(
    fleet: Fleet, state: RouterState, ex: Exchange, *, now: float, prompt: int, completion: int
) -> tuple[RouterState, list[Effect], float]:
    """The dispatch loop of ``freellm.shell.dispatch`` with the fleet for HTTP: the state, every
    effect, and the time the request ended."""
    effects: list[Effect] = []
    for slot in ex.plan:
        state = ex.admit(slot, state, now=now)
        attempt = ex.attempt
        if attempt is None:
            continue
        answer = fleet.call(
            slot.provider,
            slot.key_id,
            slot.model.id,
            prompt_tokens=prompt,
            completion_tokens=completion,
            now=now,
        )
        now += answer.latency_s
        step = ex.head(answer.status, answer.header_map, now=now)
        if attempt.phase in (Phase.HEAD, Phase.STREAMING):
            step += ex.data(answer.body, now=now)
        if attempt.phase not in FINAL:
            step += ex.end(now=now)
        state = apply(state, step)
        effects += step
        if ex.answered:
            return state, effects, now
    step = ex.exhausted(state, now=now)
    return apply(state, step), effects + step, now


def client_body(effects: list[Effect]) -> Any:
    return json.loads(b"".join(e.data for e in effects if isinstance(e, Send)))


SDK_CHECKS = {
    "openai": ChatCompletion.model_validate_json,
    "gemini": genai_types.GenerateContentResponse.model_validate_json,
    "cohere": V2ChatResponse.model_validate_json,
}


@pytest.mark.parametrize(("name", "dialect", "path"), PROVIDERS, ids=IDS)
def test_a_success_settles_the_given_usage_and_its_headers_are_observed(
    name: str, dialect: str, path: str
) -> None:
    cat = routed(name, dialect, path)
    truth = Truth(caps={"m": FakeCaps(rpd=50, tpm=5_000)}, latency=Latency(jitter=0.0))
    fleet = Fleet(cat, {name: ["k1"], "backup": ["k1"]}, truth={name: truth})
    probe = fleet.call(name, "k1", "m", prompt_tokens=37, completion_tokens=11, now=EPOCH)
    SDK_CHECKS[dialect](probe.body)  # the provider's own SDK reads it

    state, ex = start(cat, now=EPOCH + 1, prompt=37)
    state, effects, end = drive(fleet, state, ex, now=EPOCH + 1, prompt=37, completion=11)
    assert ex.status == 200
    assert ex.trail() == f"{name}/m=ok"
    assert ex.usage == TokenUsage(37, 11)
    assert [e.tokens for e in effects if isinstance(e, Settle)] == [48]
    assert client_body(effects)["usage"]["total_tokens"] == 48
    slot = ex.attempts[0].slot
    assert state.ledger.usage[slot.usage_key].minute.totals(end) == (1, 48)
    observed = {
        (c.dimension, c.window): (c.remaining, c.limit)
        for e in effects
        if isinstance(e, Observe)
        for c in e.ceilings
    }
    if name in ("groq", "cerebras"):  # the flavors that report caps on a success
        assert observed == {("requests", "day"): (48, 50), ("tokens", "minute"): (4_904, 5_000)}
        assert {
            (limit.dimension, limit.remaining)
            for limit in state.ledger.usage[slot.usage_key].limits
        } == {("requests", 48), ("tokens", 4_904)}
    else:
        assert observed == {}


def free_slots(state: RouterState, ex: Exchange, at: float) -> list[str]:
    return [slot.name for slot in router.plan(state, ex.request, now=at)]


@pytest.mark.parametrize(("name", "dialect", "path"), PROVIDERS, ids=IDS)
def test_a_429_is_rate_limited_and_the_slot_waits_for_the_announced_reset(
    name: str, dialect: str, path: str
) -> None:
    cat = routed(name, dialect, path, backup=False)
    fleet = Fleet(cat, {name: ["k1"]}, truth={name: Truth(caps={"m": FakeCaps(rpm=1)})})
    fleet.call(name, "k1", "m", prompt_tokens=5, completion_tokens=5, now=EPOCH)
    state, ex = start(cat, now=EPOCH + 10, prompt=5)
    state, _, end = drive(fleet, state, ex, now=EPOCH + 10, prompt=5, completion=5)
    outcome = ex.attempts[0].outcome
    assert outcome is not None
    assert outcome.kind is Kind.RATE_LIMITED
    assert ex.status == 429  # the client's: every candidate is spent
    assert end == EPOCH + 10 + REFUSAL_S
    # The first call leaves the minute 50 s after the second was sent. Groq, Gemini and a plain
    # OpenAI-style provider say so; Cerebras (no per-minute header), OpenRouter (a reset but no
    # Retry-After) and Cohere (words only) leave freellm to wait a whole minute.
    announced = 50.0 if name in ("groq", "mistral", "google") else 60.0
    assert free_slots(state, ex, end + announced - 0.01) == []
    assert free_slots(state, ex, end + announced) == [f"{name}/m"]


@pytest.mark.parametrize(("name", "dialect", "path"), PROVIDERS, ids=IDS)
def test_an_invalid_key_answer_takes_the_key_out_of_routing(
    name: str, dialect: str, path: str
) -> None:
    cat = routed(name, dialect, path)
    truth = Truth(faults=Faults(invalid_keys={"k1"}))
    fleet = Fleet(cat, {name: ["k1"], "backup": ["k1"]}, truth={name: truth})
    state, ex = start(cat, now=EPOCH, prompt=5)
    state, _, _ = drive(fleet, state, ex, now=EPOCH, prompt=5, completion=5)
    outcome = ex.attempts[0].outcome
    assert outcome is not None
    assert outcome.kind is Kind.INVALID_KEY
    assert outcome.status == (400 if dialect == "gemini" else 401)  # Gemini's API_KEY_INVALID
    assert not health_.is_routable(state.health, name, "k1")
    assert ex.status == 200
    assert ex.trail() == f"{name}/m={outcome.status},backup/b=ok"


@pytest.mark.parametrize(("name", "dialect", "path"), PROVIDERS, ids=IDS)
def test_a_503_fails_over_to_the_next_provider(name: str, dialect: str, path: str) -> None:
    cat = routed(name, dialect, path)
    truth = Truth(faults=Faults(error_rate=1.0))
    fleet = Fleet(cat, {name: ["k1"], "backup": ["k1"]}, truth={name: truth})
    state, ex = start(cat, now=EPOCH, prompt=5)
    state, effects, _ = drive(fleet, state, ex, now=EPOCH, prompt=5, completion=7)
    first = ex.attempts[0].outcome
    assert first is not None
    assert first.kind is Kind.UPSTREAM_ERROR
    assert ex.status == 200
    assert ex.trail() == f"{name}/m=503,backup/b=ok"
    assert client_body(effects)["usage"]["completion_tokens"] == 7
    assert fleet.stats.errors == 1
    assert fleet.stats.answered_ok == 1
