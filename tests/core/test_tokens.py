"""Token estimates: the documented error bound against o200k_base, the additivity properties the
design guarantees, and estimate_messages' accounting on well-formed and malformed requests."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freellm.core import tokens
from freellm.core.tokens import (
    IMAGE_TOKENS,
    REPLY_PRIMER_TOKENS,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME,
    TOKENS_PER_TOOL_CALL,
    estimate_messages,
    estimate_text,
)

FIXTURE = Path(__file__).parent / "data" / "token_counts.jsonl"

# Any text, lone surrogates included (JSON strings may carry them).
any_text = st.text(st.characters(exclude_categories=()))
json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=12,
)
# Messages that look like chat messages, with any value in any field, or any JSON at all.
message_like = (
    st.fixed_dictionaries(
        {},
        optional={
            "role": st.sampled_from(["system", "user", "assistant", "tool"]) | json_like,
            "content": any_text | json_like,
            "name": any_text | json_like,
            "tool_calls": st.lists(
                st.fixed_dictionaries(
                    {"function": st.fixed_dictionaries({"name": any_text, "arguments": any_text})}
                )
                | json_like,
                max_size=3,
            )
            | json_like,
            "tool_call_id": any_text | json_like,
            "function_call": json_like,
        },
    )
    | json_like
)


def compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --- estimate_text: exact cases ------------------------------------------------------------------


def test_empty_text_is_zero_tokens() -> None:
    assert estimate_text("") == 0


@pytest.mark.parametrize("text", ["a", " ", "\n", "7", ".", "é", "你", "😂", "\ud800"])
def test_a_single_character_is_one_to_three_tokens(text: str) -> None:
    # A digit carries six code bits: a lone one is over-counted, a long number is not.
    assert 1 <= estimate_text(text) <= 3


# True counts from o200k_base (bench/token_estimate.py's reference tokenizer).
@pytest.mark.parametrize(
    ("text", "o200k"),
    [
        ("The quick brown fox jumps over the lazy dog.", 10),
        ("Hello, world!", 4),
        ("def add(a, b):\n    return a + b\n", 12),
        ('{"role":"user","content":"hi"}', 9),
        ("1234567890", 4),
        ("你好，世界！", 4),  # noqa: RUF001 - full-width punctuation is the point
    ],
)
def test_short_texts_are_within_one_token_below_and_a_quarter_above(text: str, o200k: int) -> None:
    assert o200k - 1 <= estimate_text(text) <= o200k * 1.25 + 1


def test_long_words_cost_more_than_short_ones() -> None:
    assert estimate_text("a" * 400) > estimate_text("a" * 40) > estimate_text("a" * 4)


def test_numbers_cost_more_per_character_than_words() -> None:
    assert estimate_text("1234567890" * 10) > 2 * estimate_text("abcdefghij" * 10)


def test_cjk_costs_more_per_character_than_english() -> None:
    assert estimate_text("你" * 100) > 2 * estimate_text("word " * 20)


# --- estimate_text: the documented error bound ---------------------------------------------------


def fixture_rows() -> list[dict[str, Any]]:
    with FIXTURE.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def relative_errors(rows: list[dict[str, Any]]) -> list[float]:
    return [(estimate_text(r["text"]) - r["o200k_base"]) / r["o200k_base"] for r in rows]


def test_fixture_is_varied_and_small() -> None:
    rows = fixture_rows()
    categories = {row["category"] for row in rows}
    assert {"prose", "code", "json", "chat", "cjk", "other_lang", "numbers"} <= categories
    assert len(rows) >= 200
    assert FIXTURE.stat().st_size < 200_000


def test_nine_in_ten_fixture_samples_are_within_minus_15_and_plus_25_percent() -> None:
    errors = relative_errors(fixture_rows())
    within = sum(-0.15 <= e <= 0.25 for e in errors) / len(errors)
    assert within >= 0.90


def test_every_fixture_sample_of_100_tokens_or_more_is_within_25_percent() -> None:
    rows = [row for row in fixture_rows() if row["o200k_base"] >= 100]
    assert len(rows) >= 50
    assert max(abs(e) for e in relative_errors(rows)) <= 0.25


def test_the_fixture_estimate_leans_upward_by_a_few_percent() -> None:
    rows = fixture_rows()
    assert 0.0 < statistics.median(relative_errors(rows)) <= 0.10
    total = sum(estimate_text(r["text"]) for r in rows) / sum(r["o200k_base"] for r in rows)
    assert 1.0 < total <= 1.10


# --- estimate_text: properties -------------------------------------------------------------------


@given(any_text)
def test_any_text_gets_a_count_and_only_empty_text_gets_zero(text: str) -> None:
    estimate = estimate_text(text)
    assert estimate >= 0
    assert (estimate == 0) == (text == "")


@given(any_text)
def test_estimate_text_is_the_formula_over_its_features(text: str) -> None:
    """estimate_text inlines _features for speed; this keeps the two in step."""
    p, q, e = tokens._features(text)
    cost = p * tokens._U - q * tokens._V + e * tokens._G
    expected = max(1, -(-cost // tokens._SCALE)) if text else 0
    assert estimate_text(text) == expected


@given(any_text, any_text)
def test_concatenation_costs_no_more_than_its_parts(a: str, b: str) -> None:
    assert estimate_text(a + b) <= estimate_text(a) + estimate_text(b)


@given(any_text, any_text)
def test_concatenation_costs_at_least_its_parts_less_four(a: str, b: str) -> None:
    # The join shares at most 8 code bits (8 * _V < 2.6 tokens) and each ceil adds under 1.
    assert estimate_text(a + b) >= estimate_text(a) + estimate_text(b) - 4


@given(any_text, any_text)
def test_appending_text_never_lowers_the_estimate(a: str, b: str) -> None:
    assert estimate_text(a + b) >= max(estimate_text(a), estimate_text(b))


# --- estimate_messages: accounting ---------------------------------------------------------------


def test_an_empty_request_costs_the_reply_primer() -> None:
    assert estimate_messages([]) == REPLY_PRIMER_TOKENS


def test_a_message_costs_its_overhead_role_and_content() -> None:
    messages = [{"role": "user", "content": "Hello, world!"}]
    expected = REPLY_PRIMER_TOKENS + TOKENS_PER_MESSAGE + 1 + estimate_text("Hello, world!")
    assert estimate_messages(messages) == expected


def test_a_name_costs_its_overhead_and_text() -> None:
    plain = {"role": "user", "content": "hi"}
    named = plain | {"name": "alice_smith"}
    difference = estimate_messages([named]) - estimate_messages([plain])
    assert difference == TOKENS_PER_NAME + estimate_text("alice_smith")


def test_text_parts_cost_their_text_and_images_a_flat_amount() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 50_000}}
    parts = [{"type": "text", "text": "What is in this picture?"}, image]
    with_image = estimate_messages([{"role": "user", "content": parts}])
    text_only = estimate_messages([{"role": "user", "content": "What is in this picture?"}])
    assert with_image - text_only == IMAGE_TOKENS


def test_an_unknown_part_costs_its_compact_json() -> None:
    part = {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZF", "format": "wav"}}
    with_part = estimate_messages([{"role": "user", "content": [part]}])
    assert with_part - estimate_messages([{"role": "user"}]) == estimate_text(compact(part))


def test_tool_calls_cost_their_names_arguments_and_overhead() -> None:
    call = {
        "id": "call_abc123",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"c"}'},
    }
    with_call = estimate_messages([{"role": "assistant", "content": None, "tool_calls": [call]}])
    without = estimate_messages([{"role": "assistant", "content": None}])
    expected = (
        TOKENS_PER_TOOL_CALL
        + estimate_text("get_weather")
        + estimate_text('{"city":"Paris","unit":"c"}')
    )
    assert with_call - without == expected


def test_a_tool_result_costs_its_call_id_and_content() -> None:
    result = {"role": "tool", "tool_call_id": "call_abc123", "content": "18 degrees, cloudy"}
    bare = estimate_messages([{"role": "tool"}])
    expected = estimate_text("call_abc123") + estimate_text("18 degrees, cloudy")
    assert estimate_messages([result]) - bare == expected


def test_tools_cost_their_compact_json() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    difference = estimate_messages(messages, tools) - estimate_messages(messages)
    assert difference == estimate_text(compact(tools))


def test_a_long_conversation_is_close_to_the_sum_of_its_texts() -> None:
    texts = [row["text"] for row in fixture_rows() if row["category"] == "chat"]
    messages = [{"role": "user", "content": text} for text in texts]
    truth = sum(row["o200k_base"] for row in fixture_rows() if row["category"] == "chat")
    overhead = REPLY_PRIMER_TOKENS + len(texts) * (TOKENS_PER_MESSAGE + 1)
    assert truth <= estimate_messages(messages) - overhead <= truth * 1.15


# --- estimate_messages: malformed input ----------------------------------------------------------


def deeply_nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def cyclic() -> dict[str, Any]:
    value: dict[str, Any] = {"type": "function"}
    value["self"] = value
    return value


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": None}],
        [{"role": "user", "content": 42}],
        [{"role": "user", "content": {"text": "not a list"}}],
        [{"role": "user", "content": [None, 7, ["nested"], "bare string", {"type": ["x"]}]}],
        [{"role": ["unhashable"], "content": "hi"}],
        [{"role": "user", "content": [{"type": "image_url"}, {"type": {"x": 1}}]}],
        [{"role": "assistant", "tool_calls": "not a list"}],
        [{"role": "assistant", "tool_calls": [None, 3, {"function": "not a dict"}]}],
        [{"role": "assistant", "function_call": {"name": 5, "arguments": {"a": 1}}}],
        [{"role": "tool", "tool_call_id": {"id": 1}}],
        ["a bare string", None, 12, [1, 2]],
        [{"role": "user", "content": [deeply_nested(5_000)]}],
        [{"role": "user", "content": [cyclic()]}],
        [{"role": "user", "content": [{"type": "text", "text": 10**5000}]}],
        [{1: "non-string key", (2, 3): "tuple key", "content": object()}],
    ],
)
def test_malformed_messages_are_estimated_without_raising(messages: list[Any]) -> None:
    estimate = estimate_messages(messages)
    assert estimate >= REPLY_PRIMER_TOKENS + len(messages) * TOKENS_PER_MESSAGE


@pytest.mark.parametrize("messages", [None, "a string", {"role": "user"}, 17])
def test_messages_that_are_not_a_list_are_estimated_without_raising(messages: Any) -> None:
    assert estimate_messages(messages) >= REPLY_PRIMER_TOKENS


@pytest.mark.parametrize("tools", [[cyclic()], deeply_nested(5_000), [10**5000], "tools", 3])
def test_malformed_tools_are_estimated_without_raising(tools: Any) -> None:
    assert estimate_messages([], tools) > REPLY_PRIMER_TOKENS


@given(st.lists(message_like, max_size=5), st.none() | st.lists(json_like, max_size=3))
def test_any_json_like_request_is_estimated_without_raising(
    messages: list[Any], tools: list[Any] | None
) -> None:
    estimate = estimate_messages(messages, tools)
    assert estimate >= REPLY_PRIMER_TOKENS + len(messages) * TOKENS_PER_MESSAGE


@given(
    st.lists(message_like, max_size=5), message_like, st.none() | st.lists(json_like, max_size=2)
)
def test_adding_a_message_adds_at_least_the_message_overhead(
    messages: list[Any], extra: Any, tools: list[Any] | None
) -> None:
    before = estimate_messages(messages, tools)
    assert estimate_messages([*messages, extra], tools) >= before + TOKENS_PER_MESSAGE
