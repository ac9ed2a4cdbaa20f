"""Sticky sessions: naming a conversation, the TTL, the size bound, and the plain-data form."""

from __future__ import annotations

import json
import math
from typing import Any

import immutables
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freellm.core import sessions
from freellm.core.sessions import Binding, Sessions, bind, lookup, session_key

SYSTEM = {"role": "system", "content": "You are a terse assistant."}
FIRST = {"role": "user", "content": "What is the capital of France?"}
TURN_1 = [SYSTEM, FIRST]
TURN_3 = [
    *TURN_1,
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome."},
    {"role": "user", "content": "And of Spain?"},
]


# --- session_key -------------------------------------------------------------------------------


def test_session_header_wins_over_user_and_messages() -> None:
    assert session_key("abc", "alice", TURN_1) == "h:abc"


def test_user_wins_over_the_message_hash() -> None:
    assert session_key(None, "alice", TURN_1) == "u:alice"
    assert session_key("", "alice", TURN_1) == "u:alice"


def test_without_header_or_user_the_key_is_a_hash_of_the_conversation_start() -> None:
    key = session_key(None, None, TURN_1)
    assert key is not None
    assert key.startswith("c:")
    assert "France" not in key
    assert session_key(None, "", TURN_1) == key
    assert session_key(None, 42, TURN_1) == key  # a non-text user is no session name


def test_header_user_and_hash_keys_never_collide() -> None:
    keys = {
        session_key("x", None, None),
        session_key(None, "x", None),
        session_key(None, None, TURN_1),
    }
    assert len(keys) == 3


def test_turn_three_of_a_conversation_has_the_key_of_turn_one() -> None:
    assert session_key(None, None, TURN_3) == session_key(None, None, TURN_1)


@pytest.mark.parametrize(
    "other",
    [
        [SYSTEM, {"role": "user", "content": "What is the capital of Peru?"}],
        [{"role": "system", "content": "You are verbose."}, FIRST],
        [FIRST],
    ],
    ids=["first message", "system prompt", "no system prompt"],
)
def test_a_different_conversation_start_has_a_different_key(other: list[dict[str, Any]]) -> None:
    assert session_key(None, None, other) != session_key(None, None, TURN_1)


@pytest.mark.parametrize(
    "messages",
    [None, [], [SYSTEM], [SYSTEM, {"role": "assistant", "content": "Hello"}]],
    ids=["none", "empty", "system only", "no user"],
)
def test_no_user_message_means_no_session(messages: list[dict[str, Any]] | None) -> None:
    assert session_key(None, None, messages) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["system", "developer", "user", "assistant", "tool"]) | JSON,
        "content": JSON,
    },
)
MESSAGES = st.lists(MESSAGE | JSON, max_size=6)  # a list, as its type says; any items


@settings(max_examples=200)
@given(header=st.none() | st.text(max_size=5), user=JSON, messages=MESSAGES)
def test_session_key_never_raises_on_malformed_input(
    header: str | None, user: Any, messages: Any
) -> None:
    key = session_key(header, user, messages)
    assert key is None or key[:2] in {"h:", "u:", "c:"}


# --- bind and lookup ---------------------------------------------------------------------------

TTL = 1800.0


def test_a_binding_lives_until_just_before_its_ttl_and_is_gone_at_it() -> None:
    s = bind(Sessions(), "k", "groq", "llama", now=100.0, ttl=TTL, max_size=10)
    assert lookup(s, "k", now=math.nextafter(100.0 + TTL, 0.0), ttl=TTL) == Binding(
        "groq", "llama", 100.0
    )
    assert lookup(s, "k", now=100.0 + TTL, ttl=TTL) is None


def test_binding_again_moves_the_session_and_restarts_its_ttl() -> None:
    s = bind(Sessions(), "k", "groq", "llama", now=100.0, ttl=TTL, max_size=10)
    s = bind(s, "k", "google", "gemini", now=1000.0, ttl=TTL, max_size=10)
    assert lookup(s, "k", now=1000.0 + TTL - 1, ttl=TTL) == Binding("google", "gemini", 1000.0)


def test_lookup_of_no_session_or_an_unknown_one_is_none() -> None:
    s = bind(Sessions(), "k", "groq", "llama", now=100.0, ttl=TTL, max_size=10)
    assert lookup(s, None, now=100.0, ttl=TTL) is None
    assert lookup(s, "other", now=100.0, ttl=TTL) is None


def test_binding_no_session_changes_nothing() -> None:
    s = Sessions()
    assert bind(s, None, "groq", "llama", now=1.0, ttl=TTL, max_size=10) is s


def test_trimming_keeps_the_most_recently_seen_bindings() -> None:
    s = Sessions()
    for i in range(5):
        s = bind(s, f"k{i}", "groq", "llama", now=float(i), ttl=TTL, max_size=4)
    # The fifth bind overflows 4: the table is trimmed to half, the newest first.
    assert set(s.bindings) == {"k4", "k3"}


def test_trimming_drops_expired_bindings_before_live_ones() -> None:
    s = Sessions()
    for i in range(4):
        s = bind(s, f"old{i}", "groq", "llama", now=float(i), ttl=TTL, max_size=4)
    s = bind(s, "new", "groq", "llama", now=TTL + 10, ttl=TTL, max_size=4)
    # Room was left for two, but every older binding had expired: only the live one stays.
    assert set(s.bindings) == {"new"}


OPS = st.lists(st.tuples(st.sampled_from("abcdefghij"), st.floats(0, 100)), min_size=1, max_size=40)


@settings(max_examples=150)
@given(ops=OPS, max_size=st.integers(1, 6), ttl=st.floats(0, 200))
def test_the_table_never_exceeds_max_size(
    ops: list[tuple[str, float]], max_size: int, ttl: float
) -> None:
    s = Sessions()
    for key, now in ops:
        s = bind(s, key, "p", "m", now=now, ttl=ttl, max_size=max_size)
        assert len(s.bindings) <= max_size


@settings(max_examples=150)
@given(ops=OPS, max_size=st.integers(1, 6), ttl=st.floats(1, 200))
def test_trimming_drops_no_live_binding_newer_than_one_it_keeps(
    ops: list[tuple[str, float]], max_size: int, ttl: float
) -> None:
    s, now = Sessions(), 0.0
    for key, step in ops:
        now += step  # time only moves forward here
        before = {**s.bindings, key: Binding("p", "m", now)}
        s = bind(s, key, "p", "m", now=now, ttl=ttl, max_size=max_size)
        after = s.bindings
        assert after.get(key) == Binding("p", "m", now)  # the binding just made always stays
        kept = [(b.last_seen, k) for k, b in after.items() if k != key]
        for k, b in before.items():
            if k not in after and now - b.last_seen < ttl:
                assert all((b.last_seen, k) < newer for newer in kept)


KEYS = st.text(max_size=12)
BINDINGS = st.dictionaries(
    KEYS,
    st.builds(
        Binding,
        st.text(max_size=8),
        st.text(max_size=8),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    max_size=6,
).map(lambda entries: Sessions(immutables.Map(entries)))


@settings(max_examples=100)
@given(BINDINGS)
def test_to_data_and_from_data_round_trip_through_json(s: Sessions) -> None:
    data = json.loads(json.dumps(sessions.to_data(s)))
    assert sessions.from_data(data) == s


@pytest.mark.parametrize("garbage", [None, 3, [1], [{}], [{"key": "k", "provider": "p"}]])
def test_from_data_of_garbage_raises_value_error(garbage: Any) -> None:
    with pytest.raises(ValueError, match="not a session table"):
        sessions.from_data(garbage)


@pytest.mark.parametrize("messages", [1, True, "hello", b"hello", {"role": "user"}])
def test_a_session_key_from_messages_of_the_wrong_type_is_none(messages: Any) -> None:
    assert session_key(None, None, messages) is None


def test_the_binding_just_made_survives_a_trim_even_on_a_tie() -> None:
    s = bind(Sessions(), "b", "p", "m", now=0, ttl=10, max_size=1)
    s = bind(s, "a", "p", "m", now=0, ttl=10, max_size=1)
    assert dict(s.bindings) == {"a": Binding("p", "m", 0)}


def test_from_data_rejects_a_binding_with_a_time_that_is_not_a_number() -> None:
    with pytest.raises(ValueError, match="session"):
        sessions.from_data([{"key": "k", "provider": "p", "model": "m", "last_seen": "x"}])
