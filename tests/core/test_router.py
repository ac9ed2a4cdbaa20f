"""Router properties over random states: filters, ordering, stickiness, determinism, failover."""

from collections.abc import Iterable, Mapping

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from freellm.core import health, ledger, packing, sessions
from freellm.core.catalog import Catalog, Strategy, apply_config
from freellm.core.ledger import Refusal, Slot
from freellm.core.outcome import Kind, Outcome
from freellm.core.router import (
    AUTO,
    Admitted,
    Key,
    RouteRequest,
    RouterState,
    Topology,
    admit,
    bind_session,
    plan,
    record,
)

NOW = 1_780_000_000.0

CONFIG = {
    "providers": {
        "alpha": {
            "dialect": "openai",
            "base_url": "http://127.0.0.1:9001/v1",
            "models": [
                {"id": "big", "rpm": 3, "tpm": 6000, "context": 128_000, "tools": True,
                 "json": True},
                {"id": "small", "rpm": 5, "rpd": 8, "context": 8_000, "json": True},
                {"id": "eyes", "rpm": 2, "context": 32_000, "vision": True, "tools": True},
            ],
        },
        "beta": {
            "dialect": "openai",
            "base_url": "http://127.0.0.1:9002/v1",
            "daily_reset": "America/Los_Angeles",
            "models": [
                {"id": "big", "rpm": 2, "rpd": 5, "context": 64_000, "tools": True},
                {"id": "shared/one", "rpm": 4, "rpd": 6, "account": True, "context": 16_000},
                {"id": "shared/two", "rpm": 2, "rpd": 6, "account": True, "context": 200_000,
                 "tools": True, "json": True},
            ],
        },
        "gamma": {
            "dialect": "openai",
            "base_url": "http://127.0.0.1:9003/v1",
            "models": [
                {"id": "small", "concurrency": 1, "max_output": 2_000, "tools": True},
                {"id": "huge", "tpm": 20_000, "context": 1_000_000, "vision": True,
                 "json": True},
            ],
        },
    },
    "router": {
        "chain": [
            "alpha/big",
            "beta/shared/two",
            "gamma/huge",
            "beta/big",
            "alpha/small",
            "gamma/small",
            "beta/shared/one",
            "alpha/eyes",
        ],
        "max_attempts": 20,
    },
}  # fmt: skip
CATALOG = apply_config(Catalog(), CONFIG)
PROVIDERS = sorted(CATALOG.providers)
ALL_SLOTS = [
    Slot(p, key, model, CATALOG.providers[p].daily_reset)
    for p in PROVIDERS
    for key in ("k1", "k2", "k3")
    for model in CATALOG.providers[p].models.values()
]


def keys_of(ids: Mapping[str, Iterable[str]]) -> list[Key]:
    return [
        Key(provider, key_id, f"secret-{key_id}")
        for provider, keys in ids.items()
        for key_id in keys
    ]


MODEL_NAMES = [AUTO, "big", "small", "huge", "shared/one", "nope", "alpha/big", "beta/big",
               "gamma/small", "beta/shared/two", "alpha/huge"]  # fmt: skip


@st.composite
def states(draw: st.DrawFn) -> RouterState:
    keys = {
        p: draw(st.lists(st.sampled_from(["k1", "k2", "k3"]), unique=True, max_size=3))
        for p in PROVIDERS
    }
    state = RouterState(Topology(CATALOG, keys_of(keys)))
    book = state.ledger
    usage = draw(
        st.lists(
            st.tuples(
                st.sampled_from(ALL_SLOTS),
                st.floats(0, 120, allow_nan=False) | st.floats(0, 90_000, allow_nan=False),
                st.integers(0, 9000),
                st.booleans(),
            ),
            max_size=25,
        )
    )
    # Oldest first: the ledger's windows expect time to move forward.
    for slot, ago, tokens, settled in sorted(usage, key=lambda u: -u[1]):
        reserved = ledger.reserve(book, slot, tokens, now=NOW - ago)
        if not isinstance(reserved, Refusal):
            book = reserved[0]
            if settled:
                book = ledger.settle(book, reserved[1], tokens=tokens // 2)
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
            "slot": (slot.provider, slot.key_id, slot.model.id),
            "key": (slot.provider, slot.key_id, None),
            "model": (slot.provider, None, slot.model.id),
        }[scope_kind]
        book = ledger.cool_down(book, scope, until=NOW + wait, reason="test")
    marks = state.health
    for provider, key, event in draw(
        st.lists(
            st.tuples(
                st.sampled_from(PROVIDERS),
                st.sampled_from(["k1", "k2", "k3"]),
                st.sampled_from(list(health.Event)),
            ),
            max_size=4,
        )
    ):
        marks = health.apply(marks, provider, key, event, now=NOW - 5)
    bindings = state.sessions
    if draw(st.booleans()):
        target = draw(st.sampled_from(CATALOG.chain_targets))
        bindings = sessions.bind(
            bindings,
            "conversation",
            target.provider,
            target.model.id,
            now=NOW - draw(st.floats(0, 3600, allow_nan=False)),
            ttl=CATALOG.settings.sticky_ttl_s,
            max_size=100,
        )
    return attrs.evolve(state, ledger=book, health=marks, sessions=bindings)


requests = st.builds(
    RouteRequest,
    model=st.sampled_from(MODEL_NAMES),
    prompt_tokens=st.integers(0, 150_000),
    max_tokens=st.none() | st.integers(1, 4000),
    tools=st.booleans(),
    vision=st.booleans(),
    json=st.booleans(),
    session=st.none() | st.just("conversation"),
    strategy=st.none() | st.sampled_from(Strategy),
)


def candidates(state: RouterState, request: RouteRequest) -> list[Slot]:
    return list(plan(state, request, now=NOW))


@given(states(), requests)
def test_every_candidate_passes_every_filter(state: RouterState, request: RouteRequest) -> None:
    routed = plan(state, request, now=NOW)
    for slot in routed:
        model = slot.model
        assert model.tools or not request.tools
        assert model.vision or not request.vision
        assert model.json or not request.json
        if model.context is not None:
            assert routed.tokens <= model.context  # prompt estimate + completion budget
        if model.max_output is not None and request.max_tokens is not None:
            assert request.max_tokens <= model.max_output
        assert state.topology.key(slot.provider, slot.key_id) is not None
        assert health.is_routable(state.health, slot.provider, slot.key_id)
        for scope in (
            (slot.provider, slot.key_id, model.id),
            (slot.provider, slot.key_id, None),
            (slot.provider, None, model.id),
        ):
            assert ledger.cooldown_of(state.ledger, scope, NOW) is None
        # Caps: the reservation would be admitted on this very snapshot.
        assert isinstance(admit(state, slot, routed.tokens, now=NOW), Admitted)


@given(states(), requests)
def test_candidates_serve_the_model_asked_for(state: RouterState, request: RouteRequest) -> None:
    slots = candidates(state, request)
    if request.model == AUTO:
        chain = {t.name for t in CATALOG.chain_targets}
        assert all(slot.name in chain for slot in slots)
    elif (target := _provider_model(request.model)) is not None:
        assert all(slot.name == target for slot in slots)  # never leaves the provider
    else:
        assert all(slot.model.id == request.model for slot in slots)


def _provider_model(name: str) -> str | None:
    provider, _, model = name.partition("/")
    spec = CATALOG.providers.get(provider)
    return name if spec is not None and model in spec.models else None


@given(states(), requests)
def test_equal_inputs_give_equal_plans(state: RouterState, request: RouteRequest) -> None:
    rebuilt = RouterState(
        Topology(CATALOG, state.topology.keys),
        ledger.from_data(ledger.to_data(state.ledger)),
        health.from_data(health.to_data(state.health)),
        sessions.from_data(sessions.to_data(state.sessions)),
    )
    first = plan(state, request, now=NOW)
    second = plan(rebuilt, request, now=NOW)
    assert list(first) == list(second)
    assert first.no_capacity() == second.no_capacity()


@given(states(), requests)
def test_a_live_session_model_comes_first(state: RouterState, request: RouteRequest) -> None:
    binding = sessions.lookup(
        state.sessions, request.session, now=NOW, ttl=CATALOG.settings.sticky_ttl_s
    )
    slots = candidates(state, request)
    if binding is None or not slots:
        return
    bound = f"{binding.provider}/{binding.model}"
    unbound = candidates(state, attrs.evolve(request, session=None))
    if any(slot.name == bound for slot in unbound):
        assert slots[0].name == bound
    if slots[0].name != bound:
        assert slots == unbound  # a bound model that cannot serve changes nothing


@given(states(), requests)
def test_keys_of_a_model_go_most_headroom_first(state: RouterState, request: RouteRequest) -> None:
    routed = plan(state, attrs.evolve(request, strategy=Strategy.CHAIN), now=NOW)
    slots = list(routed)
    for index in range(len(slots) - 1):
        here, after = slots[index], slots[index + 1]
        if here.name == after.name:
            room_here = ledger.check(state.ledger, here, routed.tokens, NOW)
            room_after = ledger.check(state.ledger, after, routed.tokens, NOW)
            assert isinstance(room_here, float)
            assert isinstance(room_after, float)
            assert (-room_here, here.key_id) < (-room_after, after.key_id)


@given(states(), requests, st.integers(1, 4))
def test_never_more_than_max_attempts(
    state: RouterState, request: RouteRequest, max_attempts: int
) -> None:
    catalog = attrs.evolve(
        CATALOG, settings=attrs.evolve(CATALOG.settings, max_attempts=max_attempts)
    )
    limited = attrs.evolve(state, topology=Topology(catalog, state.topology.keys))
    assert candidates(limited, request) == candidates(state, request)[:max_attempts]


@given(states(), requests)
def test_no_capacity_says_when_the_first_candidate_frees_up(
    state: RouterState, request: RouteRequest
) -> None:
    routed = plan(state, request, now=NOW)
    if list(routed):
        return
    verdict = routed.no_capacity()
    assert verdict.unknown_model == (not CATALOG.resolve(request.model) and request.model != AUTO)
    if verdict.retry_at is not None:
        assert verdict.retry_at > NOW
        # A slot at its concurrency cap frees when its calls in flight end, which no one can
        # know: its retry_at is when to look again. So look as if they had ended by then.
        ended = attrs.evolve(state, ledger=ledger.release_inflight(state.ledger))
        later = plan(ended, request, now=verdict.retry_at)
        assert list(later), "nothing freed up at retry_at"


@given(states(), requests)
def test_a_provider_failure_skips_the_provider_for_the_rest_of_the_request(
    state: RouterState, request: RouteRequest
) -> None:
    routed = plan(state, request, now=NOW)
    failed: set[str] = set()
    for slot in routed:
        assert slot.provider not in failed
        routed.after(slot, Outcome(Kind.UPSTREAM_ERROR, 503))
        failed.add(slot.provider)


@given(states(), requests)
def test_context_too_long_moves_only_to_larger_contexts(
    state: RouterState, request: RouteRequest
) -> None:
    routed = plan(state, request, now=NOW)
    floor = 0
    for slot in routed:
        assert slot.model.context is not None or floor == 0
        if floor:
            assert slot.model.context is not None
            assert slot.model.context > floor
        routed.after(slot, Outcome(Kind.CONTEXT_TOO_LONG, 400))
        if slot.model.context is not None:
            floor = max(floor, slot.model.context)


# --- the capacity strategy ------------------------------------------------------------------


def _as(request: RouteRequest, strategy: Strategy) -> RouteRequest:
    return attrs.evolve(request, strategy=strategy)


@given(states(), st.sampled_from(ALL_SLOTS), st.integers(0, 20_000), st.floats(-90, 90))
def test_a_price_exists_exactly_when_the_ledger_has_room(
    state: RouterState, slot: Slot, tokens: int, later: float
) -> None:
    now = NOW + later
    siblings = state.topology.slots[slot.provider, slot.model.id]
    prices = packing.prices(state.ledger, siblings, tokens, now)
    for sibling, price in zip(siblings, prices, strict=True):
        room = ledger.headroom(state.ledger, sibling, tokens, now)
        assert (price is None) == (room is None)
        if price is not None:
            assert price >= 0.0


@given(states(), requests)
def test_capacity_offers_the_very_candidates_the_chain_does(
    state: RouterState, request: RouteRequest
) -> None:
    chain = list(plan(state, _as(request, Strategy.CHAIN), now=NOW))
    capacity = list(plan(state, _as(request, Strategy.CAPACITY), now=NOW))
    assert len(capacity) == len(chain)
    if len(chain) < state.catalog.settings.max_attempts:  # no cut: the same set, reordered
        assert set(capacity) == set(chain)


@given(states(), requests)
def test_capacity_goes_cheapest_first_after_the_sticky_model(
    state: RouterState, request: RouteRequest
) -> None:
    request = _as(request, Strategy.CAPACITY)
    routed = plan(state, request, now=NOW)
    slots = list(routed)
    unbound = list(plan(state, attrs.evolve(request, session=None), now=NOW))
    if slots != unbound:  # a live session's model came first: compare what follows it
        bound = slots[0].name
        slots = [slot for slot in slots if slot.name != bound]
    positions = {target.name: index for index, target in enumerate(state.topology.keyed_chain)}
    scores = []
    for slot in slots:
        # The plan prices a target's healthy keys together, as one pool.
        siblings = [
            other
            for other in state.topology.slots[slot.provider, slot.model.id]
            if other.health_key not in state.health.invalid
        ]
        prices = packing.prices(state.ledger, siblings, routed.tokens, NOW)
        price = prices[siblings.index(slot)]
        assert price is not None
        position = positions.get(slot.name)
        if position is None:  # a named model: its providers' order
            return
        scores.append((price + packing.preference(position), position, slot.key_id))
    assert scores == sorted(scores)


# --- worked examples --------------------------------------------------------------------------


def simple_state(keys: dict[str, Iterable[str]]) -> RouterState:
    return RouterState(Topology(CATALOG, keys_of(keys)))


def test_load_spreads_over_keys_instead_of_draining_the_first() -> None:
    state = simple_state({"alpha": ["k1", "k2", "k3"]})
    request = RouteRequest(model="alpha/big", prompt_tokens=100, max_tokens=100)
    used: list[str] = []
    for turn in range(6):
        routed = plan(state, request, now=NOW + turn)
        slot = next(routed)
        admitted = admit(state, slot, routed.tokens, now=NOW + turn)
        assert isinstance(admitted, Admitted)
        state = record(
            admitted.state, admitted.ticket, Outcome(Kind.SUCCESS, 200), tokens=150, now=NOW
        )
        used.append(slot.key_id)
    assert used == ["k1", "k2", "k3", "k1", "k2", "k3"]


def test_rate_limit_moves_to_the_next_key_then_the_next_model() -> None:
    state = simple_state({"alpha": ["k1", "k2"], "beta": ["k1"]})
    request = RouteRequest(model="big", prompt_tokens=10, max_tokens=10)
    routed = plan(state, request, now=NOW)
    tried = []
    for slot in routed:
        admitted = admit(state, slot, routed.tokens, now=NOW)
        assert isinstance(admitted, Admitted)
        limited = Outcome(Kind.RATE_LIMITED, 429, retry_after=20.0)
        state = record(admitted.state, admitted.ticket, limited, tokens=None, now=NOW)
        routed.after(slot, limited)
        tried.append(f"{slot.name}#{slot.key_id}")
    assert tried == ["alpha/big#k1", "alpha/big#k2", "beta/big#k1"]
    again = plan(state, request, now=NOW + 1)
    assert list(again) == []
    assert again.no_capacity().retry_at == NOW + 20.0
    assert [s.key_id for s in plan(state, request, now=NOW + 20.0)] == ["k1", "k2", "k1"]


def test_a_target_that_cannot_serve_the_request_is_passed_over_without_a_retry_time() -> None:
    state = simple_state({"alpha": ["k1", "k2"], "beta": ["k1"]})
    request = RouteRequest(model="big", prompt_tokens=10, max_tokens=10)
    routed = plan(state, request, now=NOW)
    first = next(routed)
    routed.cannot_serve(first, "`logit_bias` cannot be translated")
    assert [f"{slot.name}#{slot.key_id}" for slot in routed] == ["beta/big#k1"]
    verdict = routed.no_capacity()
    assert verdict.retry_at is None
    assert verdict.refusals == (("alpha/big", "`logit_bias` cannot be translated"),)


def test_an_invalid_key_is_skipped_until_a_probe_succeeds() -> None:
    state = simple_state({"alpha": ["k1", "k2"]})
    request = RouteRequest(model="alpha/big", prompt_tokens=10, max_tokens=10)
    routed = plan(state, request, now=NOW)
    slot = next(routed)
    admitted = admit(state, slot, routed.tokens, now=NOW)
    assert isinstance(admitted, Admitted)
    state = record(
        admitted.state, admitted.ticket, Outcome(Kind.INVALID_KEY, 401), tokens=None, now=NOW
    )
    assert [s.key_id for s in plan(state, request, now=NOW + 1)] == ["k2"]
    state = attrs.evolve(
        state, health=health.apply(state.health, "alpha", "k1", health.Event.PROBE_OK, now=NOW)
    )
    assert sorted(s.key_id for s in plan(state, request, now=NOW + 1)) == ["k1", "k2"]


def test_sessions_bind_from_the_first_turn() -> None:
    state = simple_state({"alpha": ["k1"], "beta": ["k1"], "gamma": ["k1"]})
    request = RouteRequest(model=AUTO, prompt_tokens=10, max_tokens=10, session="s")
    assert next(plan(state, request, now=NOW)).name == "alpha/big"
    beta_big = next(plan(state, attrs.evolve(request, model="beta/big"), now=NOW))
    state = bind_session(state, "s", beta_big, now=NOW)
    assert next(plan(state, request, now=NOW + 1)).name == "beta/big"
    # After the TTL the chain order is back.
    expired = NOW + CATALOG.settings.sticky_ttl_s
    assert next(plan(state, request, now=expired)).name == "alpha/big"


def test_an_account_wide_cap_is_shared_by_the_models_of_a_key() -> None:
    state = simple_state({"beta": ["k1"]})
    two = RouteRequest(model="beta/shared/two", prompt_tokens=1, max_tokens=1)
    one = RouteRequest(model="beta/shared/one", prompt_tokens=1, max_tokens=1)
    for turn in range(2):  # shared/two allows 2 a minute: both go through
        slot = next(plan(state, two, now=NOW + turn))
        admitted = admit(state, slot, 2, now=NOW + turn)
        assert isinstance(admitted, Admitted)
        state = admitted.state
    assert list(plan(state, two, now=NOW + 2)) == []
    # shared/one allows 4 a minute, and the key has used 2 of them.
    for turn in range(2):
        slot = next(plan(state, one, now=NOW + 2 + turn))
        admitted = admit(state, slot, 2, now=NOW + 2 + turn)
        assert isinstance(admitted, Admitted)
        state = admitted.state
    assert list(plan(state, one, now=NOW + 4)) == []


def test_unknown_model_is_reported_as_such() -> None:
    routed = plan(simple_state({"alpha": ["k1"]}), RouteRequest("nope", 1), now=NOW)
    assert list(routed) == []
    assert routed.no_capacity().unknown_model
    assert routed.no_capacity().retry_at is None


def test_a_request_too_big_for_every_context_gets_no_retry_time() -> None:
    state = simple_state({p: ["k1"] for p in PROVIDERS})
    routed = plan(state, RouteRequest("big", prompt_tokens=5_000_000), now=NOW)
    assert list(routed) == []
    verdict = routed.no_capacity()
    assert verdict.retry_at is None
    assert not verdict.unknown_model
    assert all("context" in reason for _, reason in verdict.refusals)


@pytest.mark.parametrize(
    ("max_tokens", "expected"),
    [(None, 10 + 1024), (50, 60)],
)
def test_reservation_counts_prompt_plus_completion_budget(
    max_tokens: int | None, expected: int
) -> None:
    routed = plan(simple_state({}), RouteRequest(AUTO, 10, max_tokens=max_tokens), now=NOW)
    assert routed.tokens == expected


def test_keys_and_slots_come_from_one_place() -> None:
    topology = Topology(CATALOG, keys_of({"gamma": ["b", "a"]}))
    assert [s.key_id for s in topology.slots["gamma", "small"]] == ["a", "b"]
    assert topology.slots["alpha", "big"] == ()
    assert all(s.daily_reset == "America/Los_Angeles" for s in topology.slots["beta", "big"])


@given(states(), requests)
def test_admitting_through_the_plan_equals_a_checked_admission(
    state: RouterState, request: RouteRequest
) -> None:
    routed = plan(state, request, now=NOW)
    for slot in routed:
        through_plan = routed.admit(state, slot, now=NOW)
        checked = admit(state, slot, routed.tokens, now=NOW)
        assert isinstance(through_plan, Admitted)
        assert isinstance(checked, Admitted)
        # The plan also counts the request in the capacity strategy's histogram, once.
        assert attrs.evolve(through_plan.state, demand=state.demand) == checked.state
        assert through_plan.ticket == checked.ticket
        state = through_plan.state  # a new state: the next admission is checked again
        again = routed.admit(state, slot, now=NOW)
        assert again == admit(state, slot, routed.tokens, now=NOW)


def test_a_candidate_whose_key_was_removed_meanwhile_is_refused_not_an_error() -> None:
    state = simple_state({"alpha": ["k1", "k2"]})
    request = RouteRequest(model="alpha/big", prompt_tokens=10, max_tokens=10)
    candidates = plan(state, request, now=NOW)
    first = next(candidates)
    # The key leaves (removed or disabled) while the plan is still being tried.
    left = attrs.evolve(
        state,
        topology=Topology(CATALOG, [k for k in state.topology.keys if k.id != first.key_id]),
    )
    assert admit(left, first, 20, now=NOW) == Refusal("key removed", None)
    assert candidates.admit(left, first, now=NOW + 1) == Refusal("key removed", None)
    other = next(candidates)
    assert isinstance(candidates.admit(left, other, now=NOW + 1), Admitted)


def test_a_key_secret_never_shows_in_a_repr() -> None:
    state = simple_state({"alpha": ["k1"]})
    assert "secret-k1" not in repr(state)
    assert state.topology.key("alpha", "k1") == Key("alpha", "k1", "secret-k1")
