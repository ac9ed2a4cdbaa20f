"""The Cohere v2 dialect: requests going up, answers and streams coming back.

Every Cohere body these tests use or produce is checked against the ``cohere`` SDK's pydantic
types (and no field of ours is unknown to them); every OpenAI body the dialect produces is
checked against the ``openai`` SDK's types, and streams are assembled by the ``openai`` SDK's
own stream helper.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import cohere
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from freellm.core.chat import ChatShape, inspect_request
from freellm.core.dialects.cohere import (
    FINISH_REASONS,
    Answer,
    StreamFold,
    StreamState,
    Untranslatable,
    UpstreamFailure,
    fold_event,
    prepare_body,
    translate_response,
    usage_of,
)
from freellm.core.dialects.openai import StreamError, Usage
from freellm.core.sse import Decoder, Event
from freellm.core.tokens import estimate_text
from sdk_checks import check_cohere_request, cohere_request_field
from sse_feed import feed

# --- checks against the SDKs ---------------------------------------------------------------------


@functools.cache
def stream_event_adapter() -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(cohere.v2.V2ChatStreamResponse)


@pytest.fixture(scope="module")
def sdk_checks_built() -> None:
    """The SDK's validators, built before Hypothesis times examples (the first build takes most
    of a second: importing the SDK's types and resolving its annotations)."""
    for name in ("messages", "tools", "tool_choice", "response_format", "max_tokens"):
        cohere_request_field(name)
    stream_event_adapter()


# What Cohere sends is checked without assert_no_extras: Cohere itself sends fields the SDK does
# not declare (message-start's content, tool_plan, tool_calls and citations).


def check_cohere_response(data: Mapping[str, Any]) -> None:
    cohere.v2.V2ChatResponse.model_validate(data)


def check_cohere_event(data: Mapping[str, Any]) -> None:
    parsed = stream_event_adapter().validate_python(data)
    assert parsed.type == data["type"]


def check_openai_completion(body: Mapping[str, Any]) -> ChatCompletion:
    return ChatCompletion.model_validate(body)


# --- requests -------------------------------------------------------------------------------------

EMPTY_OBJECT = {"type": "object", "properties": {}}
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def test_a_plain_chat_becomes_a_cohere_chat_with_the_providers_model() -> None:
    body = {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            {"role": "user", "content": "Hi", "name": "ann"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Weather?"},
        ],
        "user": "u1",
        "stream_options": {"include_usage": True},
        "x_unknown": 1,
    }
    up = prepare_body(body, "command-a-03-2025", stream=False)
    assert up == {
        "model": "command-a-03-2025",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": [{"type": "text", "text": "Use metric."}]},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Weather?"},
        ],
        "stream": False,
    }
    assert body["model"] == "auto"  # the client's body is not changed
    check_cohere_request(up)


def test_sampling_parameters_are_renamed_and_clamped_to_cohere_ranges() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 300,
        "max_completion_tokens": 200,
        "temperature": 1.5,
        "top_p": 1,
        "top_k": 900,
        "seed": 7,
        "frequency_penalty": -1.5,
        "presence_penalty": 1.7,
        "stop": "END",
    }
    up = prepare_body(body, "m", stream=True)
    assert isinstance(up, dict)
    assert {k: v for k, v in up.items() if k not in ("model", "messages")} == {
        "max_tokens": 200,
        "temperature": 1.5,
        "p": 0.99,
        "k": 500,
        "seed": 7,
        "frequency_penalty": 0.0,
        "presence_penalty": 1.0,
        "stop_sequences": ["END"],
        "stream": True,
    }
    check_cohere_request(up)
    low = prepare_body({**body, "top_p": 0, "stop": ["a", "b"]}, "m", stream=True)
    assert isinstance(low, dict)
    assert (low["p"], low["stop_sequences"]) == (0.01, ["a", "b"])


def test_tools_and_tool_choice_translate() -> None:
    bare = {"type": "function", "function": {"name": "now"}}  # no parameters: OpenAI allows it
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "tools": [WEATHER_TOOL, bare],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }
    up = prepare_body(body, "m", stream=False)
    assert isinstance(up, dict)
    assert up["tools"] == [
        WEATHER_TOOL,
        {"type": "function", "function": {"name": "now", "parameters": EMPTY_OBJECT}},
    ]
    assert up["tool_choice"] == "REQUIRED"
    assert "strict_tools" not in up
    assert "parallel_tool_calls" not in up
    check_cohere_request(up)
    none = prepare_body({**body, "tool_choice": "none"}, "m", stream=False)
    auto = prepare_body({**body, "tool_choice": "auto"}, "m", stream=False)
    assert isinstance(none, dict)
    assert isinstance(auto, dict)
    assert none["tool_choice"] == "NONE"
    assert "tool_choice" not in auto


def test_strict_tools_only_when_every_tool_is_strict() -> None:
    strict = {"type": "function", "function": {**WEATHER_TOOL["function"], "strict": True}}
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [strict]}
    up = prepare_body(body, "m", stream=False)
    assert isinstance(up, dict)
    assert up["strict_tools"] is True
    assert "strict" not in up["tools"][0]["function"]
    check_cohere_request(up)
    mixed = prepare_body({**body, "tools": [strict, WEATHER_TOOL]}, "m", stream=False)
    assert isinstance(mixed, dict)
    assert "strict_tools" not in mixed


def test_a_tool_calling_conversation_round_trips_with_ids_and_the_tool_plan() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": "I will look both up.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Rome"}},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "23 C"}],
            },
        ],
        "tools": [WEATHER_TOOL],
    }
    up = prepare_body(body, "m", stream=False)
    assert isinstance(up, dict)
    assert up["messages"][1:] == [
        {
            "role": "assistant",
            "tool_plan": "I will look both up.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "23 C"}]},
    ]
    check_cohere_request(up)


def test_an_explicit_tool_plan_field_wins_and_a_silent_call_has_none() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    message = {"role": "assistant", "content": "shown", "tool_plan": "plan", "tool_calls": [call]}
    up = prepare_body({"messages": [message]}, "m", stream=False)
    assert isinstance(up, dict)
    assert up["messages"][0]["tool_plan"] == "plan"
    silent = prepare_body(
        {"messages": [{"role": "assistant", "content": None, "tool_calls": [call]}]},
        "m",
        stream=False,
    )
    assert isinstance(silent, dict)
    assert silent["messages"][0] == {"role": "assistant", "tool_calls": [call]}


def test_image_parts_pass_in_cohere_shape() -> None:
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                    {"type": "image_url", "image_url": "https://x/z.png"},
                ],
            }
        ],
    }
    up = prepare_body(body, "command-a-vision-07-2025", stream=False)
    assert isinstance(up, dict)
    assert up["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://x/z.png"}},
    ]
    check_cohere_request(up)


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"type": "json_object"}),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "p", "schema": {"type": "object"}, "strict": True},
            },
            {"type": "json_object", "json_schema": {"type": "object"}},
        ),
        ({"type": "json_schema", "json_schema": {"name": "p"}}, {"type": "json_object"}),
    ],
)
def test_response_formats_translate(
    response_format: dict[str, Any], expected: dict[str, Any] | None
) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "response_format": response_format}
    up = prepare_body(body, "m", stream=False)
    assert isinstance(up, dict)
    assert up.get("response_format") == expected
    check_cohere_request(up)


USER = {"role": "user", "content": "x"}
CALL = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, "tool_choice"),
        ({"tool_choice": "required", "tools": []}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"stop": 5}, "stop"),
        ({"seed": 1.5}, "seed"),
        ({"max_completion_tokens": "9"}, "max_completion_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"tools": [{"type": "custom", "custom": {"name": "g"}}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
        ({"messages": []}, "messages"),
        (
            {"messages": [USER, {"role": "function", "name": "f", "content": "1"}]},
            "messages[1].role",
        ),
        (
            {"messages": [{"role": "tool", "content": "1"}]},
            "messages[0].tool_call_id",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "system",
                        "content": [{"type": "image_url", "image_url": {"url": "u"}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0].image_url.url",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{**CALL, "id": ""}]}]},
            "messages[0].tool_calls[0].id",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{**CALL, "function": {}}]}]},
            "messages[0].tool_calls[0].function.name",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{**CALL, "type": "custom"}]}]},
            "messages[0].tool_calls[0].type",
        ),
    ],
)
def test_what_cohere_cannot_express_is_named_not_raised(
    changes: dict[str, Any], param: str
) -> None:
    body = {"model": "m", "messages": [USER], "tools": [WEATHER_TOOL], **changes}
    result = prepare_body(body, "m", stream=False)
    assert isinstance(result, Untranslatable)
    assert result.param == param
    assert result.message


def test_hints_without_effect_are_dropped() -> None:
    body = {
        "messages": [USER],
        "n": 1,
        "store": False,
        "metadata": {"a": "b"},
        "service_tier": "auto",
        "reasoning_effort": "low",
        "modalities": ["text"],
        "logprobs": False,
        "logit_bias": {},
    }
    up = prepare_body(body, "m", stream=False)
    assert up == {"model": "m", "messages": [USER], "stream": False}


# --- generated request bodies ---------------------------------------------------------------------

texts = st.text(max_size=12)
names = st.from_regex(r"[a-z_]{1,10}", fullmatch=True)


@st.composite
def openai_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Valid OpenAI chat bodies (inspect_request accepts each), including what Cohere can't do."""
    tool_names = draw(st.lists(names, max_size=3, unique=True))
    tools = [
        {
            "type": "function",
            "function": {
                "name": name,
                **draw(st.fixed_dictionaries({}, optional={"description": texts})),
                **draw(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "parameters": st.just({"type": "object", "properties": {}}),
                            "strict": st.booleans(),
                        },
                    )
                ),
            },
        }
        for name in tool_names
    ]
    text_part = st.builds(lambda t: {"type": "text", "text": t}, texts)
    image_part = st.builds(
        lambda u, d: {"type": "image_url", "image_url": {"url": u, **d}},
        st.sampled_from(["https://e.com/a.png", "data:image/png;base64,AA"]),
        st.fixed_dictionaries({}, optional={"detail": st.sampled_from(["low", "high", "auto"])}),
    )
    audio_part = st.just({"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}})
    calls = st.lists(
        st.builds(
            lambda i, n, a: {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": n, "arguments": a},
            },
            st.integers(0, 99),
            names,
            st.sampled_from(["{}", '{"a": 1}', ""]),
        ),
        min_size=1,
        max_size=3,
    )
    message = st.one_of(
        st.builds(
            lambda r, c: {"role": r, "content": c},
            st.sampled_from(["system", "developer"]),
            texts | st.lists(text_part, max_size=2),
        ),
        st.builds(
            lambda c: {"role": "user", "content": c},
            texts | st.lists(text_part | image_part | audio_part, min_size=1, max_size=3),
        ),
        st.builds(
            lambda c: {"role": "assistant", "content": c}, texts | st.lists(text_part, max_size=2)
        ),
        st.builds(
            lambda c, t: {"role": "assistant", "content": c, "tool_calls": t},
            st.none() | texts,
            calls,
        ),
        st.builds(
            lambda i, c: {"role": "tool", "tool_call_id": f"call_{i}", "content": c},
            st.integers(0, 99),
            texts | st.lists(text_part, min_size=1, max_size=2),
        ),
        st.just({"role": "function", "name": "f", "content": "1"}),
    )
    choices = ["none", "auto", "required"]
    if tool_names:
        choices.append("named")
    choice = draw(st.none() | st.sampled_from(choices))
    optional = {
        "max_tokens": st.integers(1, 4096),
        "max_completion_tokens": st.integers(1, 4096),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "top_k": st.integers(0, 1000),
        "seed": st.integers(-(2**31), 2**31),
        "frequency_penalty": st.floats(-2, 2),
        "presence_penalty": st.floats(-2, 2),
        "stop": texts | st.lists(texts, max_size=4),
        "stream": st.booleans(),
        "stream_options": st.just({"include_usage": True}),
        "user": texts,
        "n": st.just(1),
        "parallel_tool_calls": st.booleans(),
        "logprobs": st.booleans(),
        "logit_bias": st.just({"1": 5}),
        "response_format": st.sampled_from(
            [
                {"type": "text"},
                {"type": "json_object"},
                {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}},
            ]
        ),
        "x_vendor_field": texts,
    }
    body: dict[str, Any] = {
        "model": "auto",
        "messages": draw(st.lists(message, min_size=1, max_size=6)),
        **draw(st.fixed_dictionaries({}, optional=optional)),
    }
    if tools:
        body["tools"] = tools
    if choice == "named":
        body["tool_choice"] = {"type": "function", "function": {"name": tool_names[0]}}
    elif choice is not None:
        body["tool_choice"] = choice
    return body


@pytest.mark.usefixtures("sdk_checks_built")
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(openai_bodies(), st.booleans())
def test_valid_openai_bodies_translate_or_name_the_field(
    body: dict[str, Any], stream: bool
) -> None:
    # The generator makes valid bodies. (inspect_request raises TypeError on a named tool_choice,
    # `dict in frozenset`: checked without it until chat.py is fixed.)
    plain = {k: v for k, v in body.items() if k != "tool_choice" or isinstance(v, str)}
    assert isinstance(inspect_request(plain), ChatShape)
    result = prepare_body(body, "command-r-plus-08-2024", stream=stream)
    if isinstance(result, Untranslatable):
        root = result.param.split(".")[0].split("[")[0]
        assert root in body, result
        return
    assert result["model"] == "command-r-plus-08-2024"
    assert result["stream"] is stream
    assert len(result["messages"]) == len(body["messages"])
    check_cohere_request(result)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "messages",
        "tools",
        "tool_choice",
        "stop",
        "top_p",
        "top_k",
        "response_format",
        "max_tokens",
        "logprobs",
        "modalities",
        "seed",
    ]
)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", None])
junk_messages = st.lists(
    st.fixed_dictionaries(
        {"role": roles},
        optional={
            "content": json_values,
            "tool_calls": json_values,
            "tool_call_id": json_values,
            "tool_plan": json_values,
        },
    )
    | json_values,
    max_size=4,
)


@given(st.dictionaries(field_names, json_values, max_size=6), junk_messages)
def test_no_body_at_all_makes_the_translation_raise(
    body: dict[str, Any], messages: list[Any]
) -> None:
    result = prepare_body({**body, "messages": messages}, "m", stream=False)
    assert isinstance(result, dict | Untranslatable)


# --- responses ------------------------------------------------------------------------------------

TEXT_RESPONSE = {
    "id": "5a50480a-cf52-46f0-af01-53d18539bd31",
    "finish_reason": "COMPLETE",
    "message": {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
    "usage": {
        "billed_units": {"input_tokens": 5, "output_tokens": 3},
        "tokens": {"input_tokens": 71, "output_tokens": 3},
    },
}
TOOL_RESPONSE = {
    "id": "r2",
    "finish_reason": "TOOL_CALL",
    "message": {
        "role": "assistant",
        "tool_plan": "I will look up the weather.",
        "tool_calls": [
            {
                "id": "get_weather_k7a9",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    },
    "usage": {"tokens": {"input_tokens": 40, "output_tokens": 12}},
}


def test_a_text_answer_becomes_a_chat_completion() -> None:
    check_cohere_response(TEXT_RESPONSE)
    answer = translate_response(TEXT_RESPONSE, model="cohere/command-a", created=1_700_000_000)
    assert isinstance(answer, Answer)
    assert answer.body == {
        "id": "chatcmpl-5a50480a-cf52-46f0-af01-53d18539bd31",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "cohere/command-a",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello!",
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }
    assert answer.usage == Usage(5, 3)  # billed units, not the raw tokens
    check_openai_completion(answer.body)


def test_tool_calls_keep_their_ids_and_the_plan_is_the_content() -> None:
    check_cohere_response(TOOL_RESPONSE)
    answer = translate_response(TOOL_RESPONSE, model="m", created=1)
    assert isinstance(answer, Answer)
    choice = answer.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I will look up the weather."
    assert choice["message"]["tool_calls"] == TOOL_RESPONSE["message"]["tool_calls"]  # type: ignore[index]
    assert answer.usage == Usage(40, 12)  # no billed units: the tokens
    completion = check_openai_completion(answer.body)
    assert completion.choices[0].message.tool_calls is not None


def test_a_silent_tool_call_has_null_content_and_thinking_is_reasoning_content() -> None:
    data = {
        "id": "r3",
        "finish_reason": "COMPLETE",  # tool calls all the same: OpenAI says tool_calls
        "message": {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "Need weather."}],
            "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
    }
    check_cohere_response(data)
    answer = translate_response(data, model="m", created=1)
    assert isinstance(answer, Answer)
    message = answer.body["choices"][0]["message"]
    assert message["content"] is None
    assert message["reasoning_content"] == "Need weather."
    assert answer.body["choices"][0]["finish_reason"] == "tool_calls"
    assert "usage" not in answer.body
    assert answer.usage is None
    check_openai_completion(answer.body)


@pytest.mark.parametrize(
    ("cohere_reason", "openai_reason"), [*FINISH_REASONS.items(), ("SOMETHING_NEW", "stop")]
)
def test_every_finish_reason_maps(cohere_reason: str, openai_reason: str) -> None:
    data = {**TEXT_RESPONSE, "finish_reason": cohere_reason}
    answer = translate_response(data, model="m", created=1)
    assert isinstance(answer, Answer)
    assert answer.body["choices"][0]["finish_reason"] == openai_reason


@pytest.mark.parametrize("reason", ["ERROR", "TIMEOUT"])
def test_error_and_timeout_are_failures_that_keep_the_usage(reason: str) -> None:
    data = {**TEXT_RESPONSE, "finish_reason": reason}
    check_cohere_response(data)
    failure = translate_response(data, model="m", created=1)
    assert failure == UpstreamFailure(f"Cohere ended the answer with {reason}", reason, Usage(5, 3))


@pytest.mark.parametrize(
    "data", [None, [], "text", {"id": "x"}, {"message": "hi"}, {"message": None}]
)
def test_a_body_that_is_no_chat_response_is_a_failure_without_a_reason(data: object) -> None:
    failure = translate_response(data, model="m", created=1)
    assert isinstance(failure, UpstreamFailure)
    assert failure.finish_reason is None


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"billed_units": {"input_tokens": 1, "output_tokens": 2}}, Usage(1, 2)),
        ({"tokens": {"input_tokens": 3.0, "output_tokens": 4.0}}, Usage(3, 4)),
        (
            {
                "billed_units": {"input_tokens": 1},
                "tokens": {"input_tokens": 9, "output_tokens": 4},
            },
            Usage(1, 4),
        ),
        ({"billed_units": {"input_tokens": 1}}, None),
        ({"tokens": {"input_tokens": True, "output_tokens": 1}}, None),
        ({}, None),
        (None, None),
    ],
)
def test_usage_prefers_billed_units_field_by_field(usage: object, expected: Usage | None) -> None:
    assert usage_of(usage) == expected


def test_numbers_json_allows_but_cohere_cannot_mean_are_not_usage_or_sampling() -> None:
    odd = json.loads('{"tokens": {"input_tokens": Infinity, "output_tokens": NaN}}')
    assert usage_of(odd) is None
    assert usage_of({"tokens": {"input_tokens": 10**400, "output_tokens": 1}}) is None
    for value in (float("nan"), float("inf"), 10**400):
        result = prepare_body({"messages": [USER], "temperature": value}, "m", stream=False)
        assert result == Untranslatable("temperature", "`temperature` must be a number.")


cohere_shaped = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "finish_reason": st.sampled_from(["COMPLETE", "TOOL_CALL", "ERROR"]) | json_values,
        "message": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "content": json_values
                | st.lists(st.fixed_dictionaries({}, optional={"text": json_values})),
                "tool_plan": json_values,
                "tool_calls": json_values
                | st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "id": json_values,
                            "function": json_values
                            | st.fixed_dictionaries(
                                {}, optional={"name": json_values, "arguments": json_values}
                            ),
                        },
                    ),
                    max_size=2,
                ),
            },
        ),
        "usage": json_values
        | st.fixed_dictionaries({}, optional={"billed_units": json_values, "tokens": json_values}),
    },
)


@given(cohere_shaped | json_values)
def test_no_response_body_makes_the_translation_raise(data: object) -> None:
    result = translate_response(data, model="m", created=1)
    assert isinstance(result, Answer | UpstreamFailure)
    if isinstance(result, Answer):
        json.dumps(result.body)  # and what it makes is JSON again


# --- streams --------------------------------------------------------------------------------------


def cohere_sse(
    events: list[dict[str, Any]], *, framing: str = "both", newline: str = "\n"
) -> bytes:
    """Cohere's stream on the wire. ``framing``: ``both`` (``event:`` and ``type``, as Cohere
    sends it), ``data`` (``type`` only) or ``event`` (``event:`` only)."""
    out = []
    for data in events:
        lines = []
        if framing in ("both", "event"):
            lines.append(f"event: {data['type']}")
        body = {k: v for k, v in data.items() if framing != "event" or k != "type"}
        lines.append("data: " + json.dumps(body))
        out.append(newline.join(lines) + newline + newline)
    return "".join(out).encode()


def message_start(cohere_id: str = "msg-1") -> dict[str, Any]:
    return {
        "id": cohere_id,
        "type": "message-start",
        "delta": {
            "message": {
                "role": "assistant",
                "content": [],
                "tool_plan": "",
                "tool_calls": [],
                "citations": [],
            }
        },
    }


def content_start(index: int = 0, kind: str = "text") -> dict[str, Any]:
    return {
        "type": "content-start",
        "index": index,
        "delta": {"message": {"content": {"type": kind, kind: ""}}},
    }


def content_delta(text: str, index: int = 0, kind: str = "text") -> dict[str, Any]:
    return {
        "type": "content-delta",
        "index": index,
        "delta": {"message": {"content": {kind: text}}},
    }


def plan_delta(text: str) -> dict[str, Any]:
    return {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": text}}}


def call_start(index: int, call_id: str, name: str) -> dict[str, Any]:
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    return {"type": "tool-call-start", "index": index, "delta": {"message": {"tool_calls": call}}}


def call_delta(index: int, arguments: str) -> dict[str, Any]:
    return {
        "type": "tool-call-delta",
        "index": index,
        "delta": {"message": {"tool_calls": {"function": {"arguments": arguments}}}},
    }


def message_end(reason: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {"finish_reason": reason}
    if usage is not None:
        delta["usage"] = usage
    return {"type": "message-end", "delta": delta}


USAGE = {
    "billed_units": {"input_tokens": 21, "output_tokens": 9},
    "tokens": {"input_tokens": 186, "output_tokens": 9},
}
TEXT_STREAM = [
    message_start(),
    content_start(),
    content_delta("Coca"),
    content_delta("-Cola is"),
    content_delta(" a drink."),
    {"type": "content-end", "index": 0},
    message_end("COMPLETE", USAGE),
]
TOOL_STREAM = [
    message_start("msg-2"),
    plan_delta("I will check "),
    plan_delta("both."),
    call_start(0, "get_weather_a", "get_weather"),
    call_delta(0, '{"city":'),
    call_delta(0, '"Madrid"}'),
    {"type": "tool-call-end", "index": 0},
    call_start(1, "get_weather_b", "get_weather"),
    call_delta(1, '{"city":"Brasilia"}'),
    {"type": "tool-call-end", "index": 1},
    message_end("TOOL_CALL", USAGE),
]


def run_fold(
    data: bytes, cuts: Sequence[int] = (), *, wants_usage: bool = False
) -> tuple[bytes, StreamFold]:
    fold = StreamFold(client_wants_usage=wants_usage, model="command-a", created=1_700_000_000)
    return feed(fold, data, cuts), fold


def chunks_of(out: bytes) -> list[dict[str, Any]]:
    events = Decoder().feed(out)
    assert events[-1].done, "the stream ends with [DONE]"
    assert all(not event.done for event in events[:-1])
    return [json.loads(event.data) for event in events[:-1]]


class Assembled:
    """An OpenAI stream put back together by hand, checking OpenAI's framing rules on the way."""

    def __init__(self, chunks: list[dict[str, Any]]) -> None:
        self.content = ""
        self.reasoning = ""
        self.calls: list[dict[str, str]] = []
        self.finish: str | None = None
        self.usage: dict[str, int] | None = None
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant", "the role chunk is first"
        for chunk in chunks:
            assert chunk["object"] == "chat.completion.chunk"
            if not chunk["choices"]:
                assert chunk is chunks[-1], "the usage chunk is last"
                self.usage = chunk["usage"]
                continue
            assert self.finish is None, "nothing comes after the finish chunk but usage"
            choice = chunk["choices"][0]
            delta = choice["delta"]
            self.content += delta.get("content") or ""
            self.reasoning += delta.get("reasoning_content") or ""
            for call in delta.get("tool_calls") or ():
                index = call["index"]  # on every tool-call delta
                if index == len(self.calls):
                    assert {"id", "type"} <= call.keys(), "id and type on a call's first delta"
                    assert "name" in call["function"]
                    self.calls.append(
                        {"id": call["id"], "name": call["function"]["name"], "arguments": ""}
                    )
                else:
                    assert "id" not in call, "the id only once"
                self.calls[index]["arguments"] += call["function"].get("arguments", "")
            self.finish = choice["finish_reason"]


def sdk_assembled(chunks: list[dict[str, Any]]) -> Any:
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return state.get_final_completion()


def test_a_text_stream_becomes_openai_chunks() -> None:
    for event in TEXT_STREAM:
        check_cohere_event(event)
    out, fold = run_fold(cohere_sse(TEXT_STREAM))
    chunks = chunks_of(out)
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "Coca"},
        {"content": "-Cola is"},
        {"content": " a drink."},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 4 + ["stop"]
    assert {c["id"] for c in chunks} == {"chatcmpl-msg-1"}
    assert {(c["model"], c["created"]) for c in chunks} == {("command-a", 1_700_000_000)}
    assert fold.done
    assert fold.usage == Usage(21, 9)
    assert fold.completion_tokens == sum(map(estimate_text, ["Coca", "-Cola is", " a drink."]))
    assert fold.chunks == 5
    final = sdk_assembled(chunks)
    assert final.choices[0].message.content == "Coca-Cola is a drink."
    assert final.usage is None  # the client did not ask


def test_a_tool_stream_has_an_index_on_every_tool_call_delta() -> None:
    for event in TOOL_STREAM:
        check_cohere_event(event)
    out, fold = run_fold(cohere_sse(TOOL_STREAM), wants_usage=True)
    chunks = chunks_of(out)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    calls = [call for d in deltas for call in d.get("tool_calls", ())]
    assert calls == [
        {
            "index": 0,
            "id": "get_weather_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        },
        {"index": 0, "function": {"arguments": '{"city":'}},
        {"index": 0, "function": {"arguments": '"Madrid"}'}},
        {
            "index": 1,
            "id": "get_weather_b",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        },
        {"index": 1, "function": {"arguments": '{"city":"Brasilia"}'}},
    ]
    assert chunks[-1] == {
        "id": "chatcmpl-msg-2",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "command-a",
        "choices": [],
        "usage": {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30},
    }
    final = sdk_assembled(chunks)
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I will check both."
    assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls] == [
        ("get_weather_a", "get_weather", '{"city":"Madrid"}'),
        ("get_weather_b", "get_weather", '{"city":"Brasilia"}'),
    ]
    assert final.usage is not None
    assert final.usage.total_tokens == 30
    assert fold.usage == Usage(21, 9)


def test_thinking_deltas_become_reasoning_content() -> None:
    events = [
        message_start(),
        content_start(0, "thinking"),
        content_delta("Hmm.", 0, "thinking"),
        {"type": "content-end", "index": 0},
        content_start(1),
        content_delta("Yes.", 1),
        message_end("COMPLETE"),
    ]
    for event in events:
        check_cohere_event(event)
    chunks = chunks_of(run_fold(cohere_sse(events))[0])
    assembled = Assembled(chunks)
    assert (assembled.reasoning, assembled.content) == ("Hmm.", "Yes.")


@pytest.mark.parametrize("framing", ["both", "data", "event"])
def test_the_event_type_may_come_in_the_event_line_or_the_data(framing: str) -> None:
    out, fold = run_fold(cohere_sse(TOOL_STREAM, framing=framing))
    whole, _ = run_fold(cohere_sse(TOOL_STREAM))
    assert out == whole
    assert fold.done


def test_events_that_carry_nothing_for_openai_send_nothing() -> None:
    state = StreamState(model="m", created=1, include_usage=False, started=True)
    quiet: list[dict[str, Any]] = [
        {"type": "content-end", "index": 0},
        {"type": "tool-call-end", "index": 0},
        {"type": "citation-start", "index": 0, "delta": {"message": {"citations": {}}}},
        {"type": "citation-end", "index": 0},
        {"type": "debug", "prompt": "..."},
        {"type": "a-future-event"},
        content_delta(""),
        plan_delta(""),
        call_delta(0, "{}"),  # a delta with no call started
    ]
    for data in quiet:
        new, out = fold_event(state, Event(json.dumps(data), data["type"]))
        assert (new, out) == (state, []), data
    assert fold_event(state, Event("")) == (state, [])


@pytest.mark.parametrize("data", ["not json", "{half", "[1, 2]"])
def test_an_event_that_is_not_a_json_object_breaks_the_stream(data: str) -> None:
    # Cohere sends none in a healthy stream: its text, had it been one, would be lost.
    state = StreamState(model="m", created=1, include_usage=False, started=True)
    new, out = fold_event(state, Event(data, "content-delta"))
    assert out == []
    assert new.failure is not None
    assert new.failure.body == data
    fold = StreamFold(client_wants_usage=False, model="m", created=1)
    with pytest.raises(StreamError, match="not a JSON object"):
        fold.step(Event(data, "content-delta"))


def test_the_role_chunk_comes_first_even_without_message_start() -> None:
    out, fold = run_fold(cohere_sse([content_delta("Hi"), message_end("MAX_TOKENS")]))
    chunks = chunks_of(out)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[0]["id"] == "chatcmpl-cohere"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert fold.usage is None


def test_a_done_marker_after_message_end_is_ignored_and_one_before_it_ends_the_stream() -> None:
    out, fold = run_fold(cohere_sse(TEXT_STREAM) + b"data: [DONE]\n\n")
    assert out.count(b"[DONE]") == 1
    assert fold.done
    early, fold = run_fold(cohere_sse(TEXT_STREAM[:3]) + b"data: [DONE]\n\n")
    assert early.endswith(b"data: [DONE]\n\n")
    assert fold.done


@pytest.mark.parametrize("reason", ["ERROR", "TIMEOUT"])
def test_a_failed_message_end_raises_stream_error_and_sends_no_done(reason: str) -> None:
    end = {"type": "message-end", "delta": {"finish_reason": reason, "usage": USAGE}}
    check_cohere_event(end)
    fold = StreamFold(client_wants_usage=True, model="m", created=1)
    sent = b"".join(b"".join(fold.step(e)) for e in Decoder().feed(cohere_sse(TEXT_STREAM[:3])))
    event = Decoder().feed(cohere_sse([end]))[0]
    with pytest.raises(StreamError, match=f"^Cohere ended the stream with {reason}$") as caught:
        fold.step(event)
    assert caught.value.body == event.data
    assert b"[DONE]" not in sent
    assert not fold.done
    assert fold.usage == Usage(21, 9)  # what it generated still counts
    assert fold_event(fold.state, Event("[DONE]")) == (fold.state, [])  # nothing after it
    with pytest.raises(StreamError):
        fold.step(Event("[DONE]"))  # and the fold stays failed


def test_message_end_with_an_error_text_raises_with_it() -> None:
    end = {"type": "message-end", "delta": {"finish_reason": "ERROR", "error": "model overloaded"}}
    check_cohere_event(end)
    fold = StreamFold(client_wants_usage=False, model="m", created=1)
    with pytest.raises(StreamError, match=r"^model overloaded$"):
        fold.step(Event(json.dumps(end), "message-end"))


@pytest.mark.parametrize(
    "event",
    [
        Event('{"message": "internal server error"}', "error"),
        Event('{"type": "error", "message": "internal server error"}'),
        Event('{"message": "internal server error"}'),
        Event('{"error": {"message": "internal server error"}}'),
    ],
)
def test_an_error_event_raises_stream_error_with_its_message(event: Event) -> None:
    fold = StreamFold(client_wants_usage=False, model="m", created=1)
    with pytest.raises(StreamError, match=r"^internal server error$"):
        fold.step(event)


event_types = st.sampled_from(
    [
        "message-start",
        "content-start",
        "content-delta",
        "tool-plan-delta",
        "tool-call-start",
        "tool-call-delta",
        "message-end",
        "error",
    ]
)
event_bodies = st.fixed_dictionaries(
    {},
    optional={
        "type": event_types | json_values,
        "id": json_values,
        "index": json_values,
        "delta": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "message": json_values,
                "finish_reason": json_values,
                "usage": json_values,
                "error": json_values,
            },
        ),
    },
)


@given(
    st.lists(
        st.builds(
            lambda data, name: Event(json.dumps(data), name),
            event_bodies | json_values,
            st.none() | event_types,
        )
        | st.builds(Event, texts),
        max_size=8,
    ),
    st.booleans(),
)
def test_no_event_makes_the_stream_fold_raise(events: list[Event], wants_usage: bool) -> None:
    state = StreamState(model="m", created=1, include_usage=wants_usage)
    for event in events:
        state, out = fold_event(state, event)
        assert all(piece.startswith(b"data: ") and piece.endswith(b"\n\n") for piece in out)


# --- the re-chunking property ---------------------------------------------------------------------

pieces = st.lists(st.text(max_size=6), max_size=4)


@st.composite
def cohere_streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A Cohere stream, and the message an OpenAI client should assemble from it."""
    plan = draw(pieces)
    calls = draw(st.lists(st.tuples(names, pieces), max_size=3))
    text = draw(pieces)
    reason = draw(st.sampled_from(sorted(FINISH_REASONS)))
    usage = draw(
        st.none()
        | st.builds(
            lambda i, o, group: {group: {"input_tokens": i, "output_tokens": o}},
            st.integers(0, 10**6),
            st.integers(0, 10**6),
            st.sampled_from(["billed_units", "tokens"]),
        )
    )
    events: list[dict[str, Any]] = [message_start(draw(st.sampled_from(["m1", "m2"])))]
    events += [plan_delta(p) for p in plan]
    for index, (name, args) in enumerate(calls):
        events.append(call_start(index, f"call_{index}", name))
        events += [call_delta(index, a) for a in args]
        events.append({"type": "tool-call-end", "index": index})
    if text:
        events.append(content_start())
        events += [content_delta(t) for t in text]
        events.append({"type": "content-end", "index": 0})
    events.append(message_end(reason, usage))
    mapped = FINISH_REASONS[reason]
    expected = {
        "content": "".join(plan) + "".join(text),
        "calls": [
            {"id": f"call_{i}", "name": name, "arguments": "".join(args)}
            for i, (name, args) in enumerate(calls)
        ],
        "finish": "tool_calls" if calls and mapped == "stop" else mapped,
        "usage": usage_of(usage),
    }
    return events, expected


@pytest.mark.usefixtures("sdk_checks_built")
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    cohere_streams(),
    st.data(),
    st.sampled_from(["both", "data", "event"]),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
)
def test_any_split_of_a_cohere_stream_assembles_the_same_message(
    stream: tuple[list[dict[str, Any]], dict[str, Any]],
    data: st.DataObject,
    framing: str,
    newline: str,
    wants_usage: bool,
) -> None:
    events, expected = stream
    for event in events:
        check_cohere_event(event)
    wire = cohere_sse(events, framing=framing, newline=newline)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    out, fold = run_fold(wire, cuts, wants_usage=wants_usage)
    whole, _ = run_fold(wire, wants_usage=wants_usage)
    assert out == whole
    assembled = Assembled(chunks_of(out))
    assert assembled.content == expected["content"]
    assert assembled.calls == expected["calls"]
    assert assembled.finish == expected["finish"]
    usage: Usage | None = expected["usage"]
    assert fold.usage == usage
    if wants_usage and usage is not None:
        assert assembled.usage == {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total,
        }
    else:
        assert assembled.usage is None
    assert fold.done
    # Estimated piece by piece: at least the estimate of the whole (estimates are subadditive).
    args = sum(
        estimate_text(call["arguments"]) + estimate_text(call["name"]) for call in expected["calls"]
    )
    assert fold.completion_tokens >= estimate_text(expected["content"]) + args
