"""Key health: every row of the transition table, routability, and the plain-data form."""

from __future__ import annotations

import itertools
import json
from typing import Any

import immutables
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freellm.core import health
from freellm.core.health import TRANSITIONS, Event, Health, KeyHealth, State

PROVIDER, KEY = "groq", "key-1"
SINCE, CHECKED, NOW = 1000.0, 900.0, 2000.0

PROBES = frozenset(e for e in Event if e.value.startswith("probe_"))
SUCCESSES = frozenset({Event.PROBE_OK, Event.CALL_OK})
FAILURES = frozenset(Event) - SUCCESSES - {Event.EDITED}


def holding(entry: KeyHealth) -> Health:
    return Health(Health().keys.set((PROVIDER, KEY), entry))


def test_transitions_are_total_over_state_and_event() -> None:
    assert set(TRANSITIONS) == set(itertools.product(State, Event))


ROWS = sorted(TRANSITIONS.items(), key=lambda row: (row[0][0].value, row[0][1].value))


@pytest.mark.parametrize(
    ("state", "event", "new_state"),
    [(state, event, new) for (state, event), new in ROWS],
    ids=[f"{state.value}-{event.value}" for (state, event), _ in ROWS],
)
def test_apply_follows_the_transition_row(state: State, event: Event, new_state: State) -> None:
    before = KeyHealth(state=state, since=SINCE, checked_at=CHECKED, last_error="old failure")
    after = health.apply(holding(before), PROVIDER, KEY, event, now=NOW, error="new failure").of(
        PROVIDER, KEY
    )
    if event is Event.EDITED:
        assert after == KeyHealth()  # a fresh unknown: nothing of the old key is kept
        return
    assert after.state is new_state
    assert after.since == (SINCE if new_state is state else NOW)
    assert after.checked_at == (NOW if event in PROBES else CHECKED)
    assert after.last_error == ("new failure" if event in FAILURES else None)


def test_only_proof_that_the_key_authenticates_or_an_edit_moves_it_out_of_invalid() -> None:
    leaving = {event for event in Event if TRANSITIONS[State.INVALID, event] is not State.INVALID}
    assert leaving == {Event.PROBE_OK, Event.PROBE_RATE_LIMITED, Event.CALL_OK, Event.EDITED}


@pytest.mark.parametrize("event", [Event.PROBE_INVALID, Event.CALL_INVALID])
@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_a_refused_key_is_invalid_from_any_state(state: State, event: Event) -> None:
    assert TRANSITIONS[state, event] is State.INVALID


def test_a_key_never_seen_is_unknown_and_a_first_event_starts_its_state_now() -> None:
    fresh = Health()
    assert fresh.of(PROVIDER, KEY) == KeyHealth()
    after = health.apply(fresh, PROVIDER, KEY, Event.CALL_OK, now=NOW).of(PROVIDER, KEY)
    assert after == KeyHealth(state=State.HEALTHY, since=NOW, checked_at=None, last_error=None)


def test_apply_leaves_other_keys_alone() -> None:
    other = KeyHealth(state=State.ERROR, since=SINCE, last_error="boom")
    start = Health(Health().keys.set((PROVIDER, "key-2"), other))
    after = health.apply(start, PROVIDER, KEY, Event.CALL_INVALID, now=NOW, error="401")
    assert after.of(PROVIDER, "key-2") == other
    assert after.of(PROVIDER, KEY).state is State.INVALID


def test_editing_a_key_never_seen_changes_nothing() -> None:
    fresh = Health()
    assert health.apply(fresh, PROVIDER, KEY, Event.EDITED, now=NOW) is fresh


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_only_an_invalid_key_is_unroutable(state: State) -> None:
    h = holding(KeyHealth(state=state, since=SINCE))
    assert health.is_routable(h, PROVIDER, KEY) is (state is not State.INVALID)


def test_a_key_never_seen_is_routable() -> None:
    assert health.is_routable(Health(), PROVIDER, KEY)


def test_forget_removes_only_that_key() -> None:
    h = holding(KeyHealth(state=State.INVALID, since=SINCE))
    h = health.apply(h, PROVIDER, "key-2", Event.CALL_OK, now=NOW)
    forgotten = health.forget(h, PROVIDER, KEY)
    assert set(forgotten.keys) == {(PROVIDER, "key-2")}


# --- plain data --------------------------------------------------------------------------------

TIMES = st.none() | st.floats(allow_nan=False, allow_infinity=False)
ENTRIES = st.builds(
    KeyHealth,
    state=st.sampled_from(State),
    since=TIMES,
    checked_at=TIMES,
    last_error=st.none() | st.text(max_size=30),
)
HEALTHS = st.dictionaries(
    st.tuples(st.text(max_size=10), st.text(max_size=10)), ENTRIES, max_size=6
).map(lambda entries: Health(immutables.Map(entries)))


@settings(max_examples=100)
@given(HEALTHS)
def test_to_data_and_from_data_round_trip_through_json(h: Health) -> None:
    data = json.loads(json.dumps(health.to_data(h)))
    assert health.from_data(data) == h


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        5,
        "healthy",
        {"provider": "groq"},
        [1, 2],
        [["groq", "key-1"]],
        [{}],
        [{"provider": "groq", "key": "key-1"}],
        [
            {
                "provider": "groq",
                "key": "key-1",
                "state": "exploded",
                "since": None,
                "checked_at": None,
                "last_error": None,
            }
        ],
        [
            {
                "provider": "groq",
                "key": "key-1",
                "state": "healthy",
                "since": "yesterday",
                "checked_at": None,
                "last_error": None,
            }
        ],
        [
            {
                "provider": "groq",
                "key": "key-1",
                "state": "error",
                "since": 1.0,
                "checked_at": None,
                "last_error": 502,
            }
        ],
        [
            {
                "provider": ["unhashable"],
                "key": "key-1",
                "state": "healthy",
                "since": None,
                "checked_at": None,
                "last_error": None,
            }
        ],
    ],
)
def test_from_data_of_garbage_raises_value_error(garbage: Any) -> None:
    with pytest.raises(ValueError, match=r"health|State"):
        health.from_data(garbage)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=6)
    ),
    max_leaves=15,
)


@settings(max_examples=100)
@given(JSON)
def test_from_data_of_any_json_gives_health_or_value_error(data: Any) -> None:
    try:
        result = health.from_data(data)
    except ValueError:
        return
    assert isinstance(result, Health)
