"""The Anthropic Messages door: requests translated onto the chat path, answers translated back.

Every Messages request these tests send validates as the ``anthropic`` SDK's own request type,
every chat body the door makes as the ``openai`` SDK's; every answer and stream event the door
writes validates as the ``anthropic`` SDK's pydantic types, and streams are accumulated by the
SDK's own stream helper (``accumulate_event``, what ``messages.stream`` runs).
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anthropic.types as at
import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from anthropic.types.shared import ErrorResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming

from freellm.core import wire
from freellm.core.doors import DoorError, Translated
from freellm.core.doors.messages import (
    MessagesFace,
    count_tokens,
    error_body,
    error_type,
    translate,
)
from freellm.core.sse import Decoder
from freellm.core.tokens import estimate_text

# --- checks against the SDKs ----------------------------------------------------------------------


@functools.cache
def adapter(kind: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(kind)


def anthropic_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body``, checked to be a Messages request as the SDK types it."""
    adapter(MessageCreateParamsNonStreaming).validate_python(
        {key: value for key, value in body.items() if key != "stream"}
    )
    return dict(body)


def translated(body: Mapping[str, Any]) -> dict[str, Any]:
    """The chat body for a valid Messages request, checked as the OpenAI SDK's request type."""
    result = translate(anthropic_request(body))
    assert isinstance(result, Translated), result
    chat = dict(result.body)
    adapter(CompletionCreateParamsNonStreaming).validate_python(
        {key: value for key, value in chat.items() if key not in ("stream", "stream_options")}
    )
    return chat


def refused(body: object) -> DoorError:
    result = translate(body)
    assert isinstance(result, DoorError), result
    assert result.status == 400
    assert result.type == "invalid_request_error"
    if result.param is not None:
        assert result.message.startswith(f"{result.param}: ")
    return result


def request(*messages: Any, **fields: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": list(messages) or [user("Hi")],
        **fields,
    }


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


# --- requests -------------------------------------------------------------------------------------


def test_a_plain_request_keeps_the_model_name_and_max_tokens() -> None:
    assert translated(request(user("Hi"))) == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 1024,
    }


@pytest.mark.parametrize(
    "model", ["auto", "auto:coding", "llama-3.3-70b", "groq/llama-3.3-70b", "claude-opus-4-1"]
)
def test_every_kind_of_model_name_passes_through(model: str) -> None:
    assert translated(request(model=model))["model"] == model


def test_the_system_prompt_as_a_string_or_text_blocks_becomes_a_system_message() -> None:
    as_string = translated(request(system="Be brief."))
    as_blocks = translated(
        request(
            system=[text("Be brief."), {**text("Be kind."), "cache_control": {"type": "ephemeral"}}]
        )
    )
    assert as_string["messages"][0] == {"role": "system", "content": "Be brief."}
    assert as_blocks["messages"][0] == {"role": "system", "content": "Be brief.\n\nBe kind."}


def test_system_role_messages_become_system_messages_in_place() -> None:
    chat = translated(request(user("a"), {"role": "system", "content": [text("rule")]}, user("b")))
    assert [m["role"] for m in chat["messages"]] == ["user", "system", "user"]
    assert chat["messages"][1]["content"] == "rule"


def test_text_blocks_alone_are_joined_into_one_string() -> None:
    chat = translated(request(user([text("one"), text("two")]), assistant([text("three")])))
    assert chat["messages"] == [
        {"role": "user", "content": "one\n\ntwo"},
        {"role": "assistant", "content": "three"},
    ]


def test_images_become_image_parts_from_base64_and_urls() -> None:
    chat = translated(
        request(
            user(
                [
                    text("What are these?"),
                    {"type": "image", "source": PNG},
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                ]
            )
        )
    )
    assert chat["messages"][0]["content"] == [
        {"type": "text", "text": "What are these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
    ]
    result = translate(request(user([{"type": "image", "source": PNG}])))
    assert isinstance(result, Translated)
    assert result.shape.vision


def test_tool_use_and_tool_result_become_tool_calls_and_tool_messages() -> None:
    chat = translated(
        request(
            user("Weather in Paris and Rome?"),
            assistant(
                [
                    text("Let me look."),
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_2",
                        "name": "get_weather",
                        "input": {"city": "Rome"},
                    },
                ]
            ),
            user(
                [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [text("no such"), text("city")],
                        "is_error": True,
                    },
                    text("Thanks!"),
                ]
            ),
            tools=[WEATHER],
        )
    )
    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "(error) no such\n\ncity"},
        {"role": "user", "content": "Thanks!"},
    ]


def test_an_assistant_turn_of_tool_calls_alone_has_null_content() -> None:
    chat = translated(
        request(
            user("Go"),
            assistant([{"type": "tool_use", "id": "t", "name": "get_weather", "input": {}}]),
            user([{"type": "tool_result", "tool_use_id": "t"}]),
            tools=[WEATHER],
        )
    )
    assert chat["messages"][1]["content"] is None
    assert chat["messages"][1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert chat["messages"][2:] == [{"role": "tool", "tool_call_id": "t", "content": ""}]


def test_images_of_a_tool_result_follow_in_a_user_message() -> None:
    chat = translated(
        request(
            user("Shoot"),
            assistant([{"type": "tool_use", "id": "t", "name": "shot", "input": {}}]),
            user(
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [text("done"), {"type": "image", "source": PNG}],
                    }
                ]
            ),
        )
    )
    assert chat["messages"][2] == {"role": "tool", "tool_call_id": "t", "content": "done"}
    assert chat["messages"][3]["role"] == "user"
    assert chat["messages"][3]["content"][1]["image_url"]["url"].startswith("data:image/png")


def test_past_thinking_is_dropped() -> None:
    chat = translated(
        request(
            user("a"),
            assistant(
                [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "xyz"},
                    text("b"),
                ]
            ),
            user("c"),
        )
    )
    assert chat["messages"][1] == {"role": "assistant", "content": "b"}


def test_an_assistant_turn_left_with_nothing_is_dropped() -> None:
    thinking = {"type": "thinking", "thinking": "hmm", "signature": "sig"}
    chat = translated(request(user("a"), assistant([thinking]), user("b"), assistant("")))
    assert chat["messages"] == [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
    ]


def test_tools_become_function_tools() -> None:
    chat = translated(
        request(
            tools=[
                WEATHER,
                {
                    "name": "now",
                    "input_schema": {"type": "object"},
                    "strict": True,
                    "type": "custom",
                },
            ]
        )
    )
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": "The weather in a city.",
            },
        },
        {
            "type": "function",
            "function": {"name": "now", "parameters": {"type": "object"}, "strict": True},
        },
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "get_weather"},
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        ),
        (
            {"type": "any", "disable_parallel_tool_use": True},
            {"tool_choice": "required", "parallel_tool_calls": False},
        ),
        ({"type": "auto", "disable_parallel_tool_use": False}, {"tool_choice": "auto"}),
    ],
)
def test_tool_choice_maps_to_openais(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    chat = translated(request(tools=[WEATHER], tool_choice=choice))
    assert {k: chat[k] for k in ("tool_choice", "parallel_tool_calls") if k in chat} == expected


def test_tool_choice_auto_or_none_without_tools_sends_no_tool_choice() -> None:
    for kind in ("auto", "none"):
        assert "tool_choice" not in translated(request(tool_choice={"type": kind}))


def test_sampling_stop_and_metadata_fields_carry_over() -> None:
    result = translate(
        request(
            stop_sequences=["END", "STOP"],
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            metadata={"user_id": "session-7"},
        )
    )
    assert isinstance(result, Translated)
    assert {k: result.body[k] for k in ("stop", "temperature", "top_p", "top_k", "user")} == {
        "stop": ["END", "STOP"],
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "user": "session-7",
    }
    assert result.shape.user == "session-7"
    assert result.shape.max_tokens == 1024


def test_a_stream_asks_for_the_usage_chunk() -> None:
    result = translate(request(stream=True))
    assert isinstance(result, Translated)
    assert result.body["stream"] is True
    assert result.body["stream_options"] == {"include_usage": True}
    assert result.shape.stream
    assert result.shape.include_usage
    assert "stream" not in translated(request(stream=False))


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, "low"),
        ({"type": "enabled", "budget_tokens": 4095}, "low"),
        ({"type": "enabled", "budget_tokens": 4096}, "medium"),
        ({"type": "enabled", "budget_tokens": 16383}, "medium"),
        ({"type": "enabled", "budget_tokens": 16384}, "high"),
        ({"type": "disabled"}, None),
        ({"type": "adaptive"}, None),
    ],
)
def test_thinking_budgets_become_a_reasoning_effort(
    thinking: dict[str, Any], effort: str | None
) -> None:
    assert (
        translated(request(max_tokens=32000, thinking=thinking)).get("reasoning_effort") == effort
    )


def test_output_config_sets_the_effort_and_a_json_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    chat = translated(
        request(
            output_config={"effort": "max", "format": {"type": "json_schema", "schema": schema}}
        )
    )
    assert chat["reasoning_effort"] == "high"
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
    disabled = translated(request(thinking={"type": "disabled"}, output_config={"effort": "low"}))
    assert "reasoning_effort" not in disabled


def test_fields_that_ask_nothing_of_a_free_tier_are_ignored() -> None:
    chat = translated(
        request(
            user([{**text("Hi"), "cache_control": {"type": "ephemeral"}}]),
            service_tier="auto",
            inference_geo="us",
            speed="standard",
            context_management={"edits": [{"type": "clear_tool_uses_20250919"}]},
        )
    )
    assert chat == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 1024,
    }


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"model": ""}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": "Hi"}, "messages"),
        ({"system": [{"type": "image", "source": PNG}]}, "system.0.type"),
        ({"system": 5}, "system"),
        ({"temperature": 1.5}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"stop_sequences": [""]}, "stop_sequences"),
        ({"metadata": {"user_id": 5}}, "metadata.user_id"),
        ({"stream": "yes"}, "stream"),
        ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
        ({"thinking": {"type": "maybe"}}, "thinking.type"),
        ({"thinking": {"type": ["enabled"]}}, "thinking.type"),  # unhashable: no set lookup
        ({"output_config": {"effort": {}}}, "output_config.effort"),
        ({"tools": [WEATHER], "tool_choice": {"type": ["any"]}}, "tool_choice.type"),
        ({"output_config": {"effort": "huge"}}, "output_config.effort"),
        ({"output_config": {"format": {"type": "json_object"}}}, "output_config.format.type"),
        ({"container": "cntr_1"}, "container"),
        ({"mcp_servers": [{"type": "url", "url": "https://x.test", "name": "x"}]}, "mcp_servers"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
        ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools.0.type"),
        ({"tools": [{"name": "x"}]}, "tools.0.input_schema"),
        ({"tools": [{"input_schema": {"type": "object"}}]}, "tools.0.name"),
        ({"tools": {"name": "x"}}, "tools"),
        ({"tool_choice": {"type": "any"}}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice.name"),
        ({"tools": [WEATHER], "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"tools": [WEATHER], "tool_choice": "auto"}, "tool_choice.type"),
    ],
)
def test_bad_or_unsupported_fields_are_refused_by_their_path(
    change: dict[str, Any], param: str
) -> None:
    body = {**request(), **change}
    body = {key: value for key, value in body.items() if value is not None}
    assert refused(body).param == param


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (
            user(
                [
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "x"},
                    }
                ]
            ),
            "messages.0.content.0.type",
        ),
        (
            user(
                [text("a"), {"type": "search_result", "source": "s", "title": "t", "content": []}]
            ),
            "messages.0.content.1.type",
        ),
        (
            assistant([{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]),
            "messages.0.content.0.type",
        ),
        (
            user([{"type": "tool_use", "id": "t", "name": "n", "input": {}}]),
            "messages.0.content.0.type",
        ),
        (assistant([{"type": "image", "source": PNG}]), "messages.0.content.0.type"),
        (user([{"type": "video"}]), "messages.0.content.0.type"),
        (user([{"text": "no type"}]), "messages.0.content.0.type"),
        (user([{"type": "text"}]), "messages.0.content.0.text"),
        (user([]), "messages.0.content"),
        (user(5), "messages.0.content"),
        ({"role": "tool", "content": "x"}, "messages.0.role"),
        ("Hi", "messages.0"),
        (
            user([{"type": "image", "source": {"type": "file", "file_id": "f"}}]),
            "messages.0.content.0.source.type",
        ),
        (
            user([{"type": "image", "source": {**PNG, "media_type": "image/tiff"}}]),
            "messages.0.content.0.source.media_type",
        ),
        (
            user([{"type": "image", "source": {**PNG, "media_type": ["image/png"]}}]),
            "messages.0.content.0.source.media_type",
        ),
        (
            user([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": ["text"]}]}]),
            "messages.0.content.0.content.0.type",
        ),
        (
            user([{"type": "image", "source": {**PNG, "data": ""}}]),
            "messages.0.content.0.source.data",
        ),
        (user([{"type": "image", "source": {"type": "url"}}]), "messages.0.content.0.source.url"),
        (user([{"type": "image"}]), "messages.0.content.0.source"),
        (user([{"type": "tool_result", "content": "x"}]), "messages.0.content.0.tool_use_id"),
        (
            user([{"type": "tool_result", "tool_use_id": "t", "content": 5}]),
            "messages.0.content.0.content",
        ),
        (
            user([{"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}]),
            "messages.0.content.0.is_error",
        ),
        (
            user([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "document"}]}]),
            "messages.0.content.0.content.0.type",
        ),
        (
            user([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "tool_use"}]}]),
            "messages.0.content.0.content.0.type",
        ),
        (assistant([{"type": "tool_use", "name": "n", "input": {}}]), "messages.0.content.0.id"),
        (assistant([{"type": "tool_use", "id": "t", "input": {}}]), "messages.0.content.0.name"),
        (
            assistant([{"type": "tool_use", "id": "t", "name": "n", "input": "{}"}]),
            "messages.0.content.0.input",
        ),
    ],
)
def test_bad_or_unsupported_blocks_are_refused_by_their_path(message: Any, param: str) -> None:
    assert refused(request(message)).param == param


def test_a_refusal_names_what_cannot_be_sent() -> None:
    error = refused(request(user([{"type": "document", "source": PNG}])))
    assert "document" in error.message
    error = refused({**request(), "tools": [{"type": "web_search_20250305", "name": "web_search"}]})
    assert "web_search_20250305" in error.message


def test_a_body_that_is_not_an_object_is_refused() -> None:
    assert refused([1, 2]).param is None


def test_count_tokens_is_the_routing_estimate_and_needs_no_max_tokens() -> None:
    body = request(user("How many tokens is this?"), system="Count.", tools=[WEATHER])
    result = translate(body)
    assert isinstance(result, Translated)
    assert (
        count_tokens({k: v for k, v in body.items() if k != "max_tokens"})
        == result.shape.prompt_tokens
    )
    assert result.shape.prompt_tokens > estimate_text("How many tokens is this?")
    assert count_tokens(body) == result.shape.prompt_tokens
    bad = count_tokens({"model": "m", "messages": []})
    assert isinstance(bad, DoorError)
    assert bad.param == "messages"


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (408, "timeout_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_bodies_take_anthropics_type_by_status(status: int, kind: str) -> None:
    body = json.loads(error_body(DoorError(status, "What went wrong.", "whatever", "p", "c")))
    assert body == {"type": "error", "error": {"type": kind, "message": "What went wrong."}}
    assert error_type(status) == kind
    if kind != "request_too_large":  # in Anthropic's documentation, not in the SDK's types
        ErrorResponse.model_validate(body)


def face(body: Mapping[str, Any] | None = None) -> MessagesFace:
    result = translate(anthropic_request(body or request()))
    assert isinstance(result, Translated)
    return MessagesFace(result, id="req_0123abc", created=1_700_000_000)


def test_an_openai_error_answer_becomes_anthropics() -> None:
    openai = wire.error_body("No capacity left.", "rate_limit_error", code="no_capacity")
    body = json.loads(face().answer(429, openai))
    assert body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "No capacity left."},
    }
    garbled = json.loads(face().answer(502, b"<html>"))
    assert garbled["error"]["type"] == "api_error"


# --- answers --------------------------------------------------------------------------------------


def completion(
    message: dict[str, Any],
    finish: str | None = "stop",
    usage: dict[str, int] | None = None,
    **choice: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "groq/llama-3.3-70b-versatile",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": finish,
                **choice,
            }
        ],
    }
    if usage is not None:
        data["usage"] = {**usage, "total_tokens": sum(usage.values())}
    return data


def answered(data: Mapping[str, Any], messages_face: MessagesFace | None = None) -> dict[str, Any]:
    body = json.loads((messages_face or face()).answer(200, wire.dumps(data)))
    at.Message.model_validate(body)
    return dict(body)


def test_a_text_answer_becomes_a_message() -> None:
    body = answered(
        completion({"content": "Hello!"}, usage={"prompt_tokens": 12, "completion_tokens": 3})
    )
    assert body == {
        "id": "msg_0123abc",
        "type": "message",
        "role": "assistant",
        "model": "groq/llama-3.3-70b-versatile",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 3},
    }


def test_tool_calls_become_tool_use_blocks() -> None:
    calls = [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        },
        {"type": "function", "function": {"name": "now", "arguments": ""}},
        {
            "id": "call_c",
            "type": "function",
            "function": {"name": "bad", "arguments": "{city: Rome"},
        },
        {"id": "call_d", "type": "function", "function": {"name": "list", "arguments": "[1, 2]"}},
    ]
    body = answered(completion({"content": None, "tool_calls": calls}, "tool_calls"))
    assert body["content"] == [
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_0123abc_1", "name": "now", "input": {}},
        {"type": "tool_use", "id": "call_c", "name": "bad", "input": {"arguments": "{city: Rome"}},
        {"type": "tool_use", "id": "call_d", "name": "list", "input": {"arguments": "[1, 2]"}},
    ]
    assert body["stop_reason"] == "tool_use"


def test_reasoning_becomes_a_thinking_block_first() -> None:
    for field in ("reasoning_content", "reasoning"):
        body = answered(completion({"content": "42", field: "Let me think."}))
        assert body["content"] == [
            {"type": "thinking", "thinking": "Let me think.", "signature": ""},
            {"type": "text", "text": "42"},
        ]


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        ("tool_calls", "end_turn"),  # said without any call: nothing to use
        (None, "end_turn"),
        ("eos", "end_turn"),
    ],
)
def test_finish_reasons_map_to_stop_reasons(finish: str | None, stop_reason: str) -> None:
    assert answered(completion({"content": "x"}, finish))["stop_reason"] == stop_reason


def test_a_stop_sequence_is_named_when_the_provider_shows_it() -> None:
    stops = face(request(stop_sequences=["END", "###"]))
    assert (
        answered(completion({"content": "x"}, stop_reason="###"), stops)["stop_sequence"] == "###"
    )
    assert (
        answered(completion({"content": "x"}, matched_stop="END"), stops)["stop_reason"]
        == "stop_sequence"
    )
    kept = answered(completion({"content": "done END"}), stops)
    assert (kept["stop_reason"], kept["stop_sequence"]) == ("stop_sequence", "END")
    # Most providers strip it and say nothing: then it cannot be told from the end of a turn.
    plain = answered(completion({"content": "done"}), stops)
    assert (plain["stop_reason"], plain["stop_sequence"]) == ("end_turn", None)
    # Without stop sequences in the request, nothing is one.
    assert answered(completion({"content": "x"}, stop_reason="###"))["stop_reason"] == "end_turn"


def test_an_answer_without_usage_has_the_estimates() -> None:
    messages_face = face()
    body = answered(completion({"content": "Hello there, how are you?"}), messages_face)
    assert body["usage"] == {
        "input_tokens": messages_face.translated.shape.prompt_tokens,
        "output_tokens": estimate_text("Hello there, how are you?"),
    }


def test_an_answer_without_a_choice_is_an_api_error() -> None:
    for raw in (b"not json", wire.dumps({"choices": []}), wire.dumps([1])):
        body = json.loads(face().answer(200, raw))
        assert body["type"] == "error"
        assert body["error"]["type"] == "api_error"


# --- the round trip -------------------------------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
words = st.text(
    st.characters(codec="utf-8"),
    min_size=1,
    max_size=40,
)
json_leaves = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | words
arguments = st.dictionaries(
    names,
    st.recursive(
        json_leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
        max_leaves=6,
    ),
    max_size=4,
)


@st.composite
def chat_answers(draw: st.DrawFn) -> dict[str, Any]:
    """A chat answer that Messages can express: a finish reason of ``tool_calls`` exactly when
    there are calls, every call with its id, and text or none when there are calls."""
    calls = [
        {
            "id": f"call_{index}",
            "type": "function",
            "function": {"name": draw(names), "arguments": wire.dumps(draw(arguments)).decode()},
        }
        for index in range(draw(st.integers(0, 3)))
    ]
    message: dict[str, Any] = {"role": "assistant"}
    if calls:
        message["content"] = draw(st.none() | words)
        message["tool_calls"] = calls
        finish = "tool_calls"
    else:
        message["content"] = draw(st.just("") | words)
        finish = draw(st.sampled_from(["stop", "length", "content_filter"]))
    reasoning = draw(st.none() | words)
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    prompt, output = draw(st.integers(0, 10**6)), draw(st.integers(0, 10**6))
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": draw(names),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": output,
            "total_tokens": prompt + output,
        },
    }


BACK: Mapping[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def chat_answer_of(message: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse: a Message as the chat answer it came from (ids and times aside)."""
    blocks = message["content"]
    texts = [block["text"] for block in blocks if block["type"] == "text"]
    thoughts = [block["thinking"] for block in blocks if block["type"] == "thinking"]
    calls = [
        {
            "id": block["id"],
            "type": "function",
            "function": {"name": block["name"], "arguments": wire.dumps(block["input"]).decode()},
        }
        for block in blocks
        if block["type"] == "tool_use"
    ]
    out: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if calls:
        out["tool_calls"] = calls
    if thoughts:
        out["reasoning_content"] = "".join(thoughts)
    usage = message["usage"]
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": message["model"],
        "choices": [{"index": 0, "message": out, "finish_reason": BACK[message["stop_reason"]]}],
        "usage": {
            "prompt_tokens": usage["input_tokens"],
            "completion_tokens": usage["output_tokens"],
            "total_tokens": usage["input_tokens"] + usage["output_tokens"],
        },
    }


@given(chat_answers())
def test_a_chat_answer_to_messages_and_back_is_the_same_answer(data: dict[str, Any]) -> None:
    ChatCompletion.model_validate(data)
    assert chat_answer_of(answered(data)) == data


# --- streams --------------------------------------------------------------------------------------


def chunk(
    delta: dict[str, Any] | None,
    finish: str | None = None,
    choice: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A ``chat.completion.chunk``: ``choice`` adds to its choice, ``extra`` to the chunk."""
    choices = [{"index": 0, "delta": delta, "finish_reason": finish, **(choice or {})}]
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "m",
        "choices": [] if delta is None else choices,
        **extra,
    }


def sse(chunks: Sequence[Mapping[str, Any]], *, done: bool = True) -> bytes:
    out = b"".join(b"data: " + wire.dumps(c) + b"\n\n" for c in chunks)
    return out + (b"data: [DONE]\n\n" if done else b"")


def pieces(value: str, cuts: Sequence[int]) -> list[str]:
    bounds = sorted({0, len(value), *(c % (len(value) + 1) for c in cuts)})
    return [value[a:b] for a, b in itertools.pairwise(bounds)]


def stream_of(
    data: Mapping[str, Any], draw: Callable[[st.SearchStrategy[Any]], Any]
) -> list[dict[str, Any]]:
    """``data``'s content as chunks, each text cut into pieces, the tool calls' pieces
    interleaved in any order (each call's own in order, its first piece with its id and name;
    the calls starting in the order of their index)."""
    choice = data["choices"][0]
    message = choice["message"]
    cut = st.lists(st.integers(0, 100), max_size=4)
    with_model = {"model": data["model"]}
    chunks = [chunk({"role": "assistant", "content": ""}, **with_model)]
    for piece in pieces(message.get("reasoning_content") or "", draw(cut)):
        chunks.append(chunk({"reasoning_content": piece}, **with_model))
    for piece in pieces(message["content"] or "", draw(cut)):
        chunks.append(chunk({"content": piece}, **with_model))
    queues = []
    for index, call in enumerate(message.get("tool_calls") or ()):
        parts = pieces(call["function"]["arguments"], draw(cut)) or [""]
        first = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": parts[0]},
        }
        queues.append([first, *({"index": index, "function": {"arguments": p}} for p in parts[1:])])
    started = 0  # calls start in the order of their index, as OpenAI sends them
    while any(queues):
        position = draw(st.sampled_from([i for i, q in enumerate(queues[: started + 1]) if q]))
        started += position == started
        queue = queues[position]
        chunks.append(chunk({"tool_calls": [queue.pop(0)]}, **with_model))
    chunks.append(chunk({}, choice["finish_reason"], **with_model))
    chunks.append(chunk(None, usage=data["usage"], **with_model))
    return chunks


def fed(messages_face: MessagesFace, data: bytes, cuts: Sequence[int] = ()) -> bytes:
    out = b""
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        out += messages_face.feed(data[start:cut])
        start = cut
    return out + messages_face.close()


def events_of(raw: bytes) -> list[dict[str, Any]]:
    """The events of the door's stream, each checked: named for its type, of the SDK's types."""
    decoder = Decoder()
    events = [*decoder.feed(raw), *decoder.close()]
    out = []
    for event in events:
        data = json.loads(event.data)
        assert event.event == data["type"]
        if data["type"] == "error":
            ErrorResponse.model_validate(data)
        elif data["type"] != "ping":  # not in the SDK's union: its stream skips pings
            adapter(at.RawMessageStreamEvent).validate_python(data)
        out.append(data)
    return out


def accumulated(events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The Message the SDK's stream helper assembles from ``events``."""
    snapshot = None
    bufs: dict[int, bytes] = {}
    for event in events:
        if event["type"] == "ping":
            continue
        parsed = adapter(at.RawMessageStreamEvent).validate_python(event)
        snapshot = accumulate_event(event=parsed, current_snapshot=snapshot, json_bufs=bufs)
    assert snapshot is not None
    return at.Message.model_validate(snapshot.to_dict()).model_dump(exclude_none=True)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(chat_answers(), st.data())
def test_a_stream_cut_anywhere_gives_the_events_of_the_json_answer(
    data: dict[str, Any], draw: st.DataObject
) -> None:
    raw = sse(stream_of(data, draw.draw))
    cuts = draw.draw(st.lists(st.integers(0, len(raw)), max_size=8))
    whole = fed(face(), raw)
    assert fed(face(), raw, cuts) == whole
    events = events_of(whole)
    assert [e["type"] for e in events[:2]] == ["message_start", "ping"]
    assert [e["type"] for e in events[-2:]] == ["message_delta", "message_stop"]
    # Blocks open one at a time, each closed before the next, numbered in order.
    opened = [e["index"] for e in events if e["type"] == "content_block_start"]
    closed = [e["index"] for e in events if e["type"] == "content_block_stop"]
    assert opened == closed == list(range(len(opened)))
    for event in events:
        if event["type"] == "content_block_delta":
            assert event["index"] == max(i for i in opened if i <= event["index"])
    assert accumulated(events) == at.Message.model_validate(answered(data)).model_dump(
        exclude_none=True
    )


def stream_events(
    chunks: Sequence[Mapping[str, Any]], *, done: bool = True, body: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    return events_of(fed(face(body), sse(chunks, done=done)))


def test_a_stream_of_text_is_anthropics_event_sequence() -> None:
    events = stream_events(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, "stop"),
            chunk(None, usage={"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}),
        ]
    )
    assert [(e["type"], e.get("delta")) for e in events] == [
        ("message_start", None),
        ("ping", None),
        ("content_block_start", None),
        ("content_block_delta", {"type": "text_delta", "text": "Hel"}),
        ("content_block_delta", {"type": "text_delta", "text": "lo"}),
        ("content_block_stop", None),
        ("message_delta", {"stop_reason": "end_turn", "stop_sequence": None}),
        ("message_stop", None),
    ]
    assert events[0]["message"]["id"] == "msg_0123abc"
    assert events[0]["message"]["model"] == "m"
    assert events[-2]["usage"] == {"output_tokens": 2, "input_tokens": 9}


def test_a_stream_without_usage_ends_with_the_estimates() -> None:
    messages_face = face()
    events = events_of(
        fed(messages_face, sse([chunk({"content": "Hello world"}), chunk({}, "length")]))
    )
    assert events[0]["message"]["usage"] == {
        "input_tokens": messages_face.translated.shape.prompt_tokens,
        "output_tokens": 0,
    }
    assert events[-2]["usage"] == {"output_tokens": estimate_text("Hello world")}
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"


def test_the_first_tool_call_streams_and_interleaved_ones_are_held_whole() -> None:
    call = {"type": "function", "function": {"name": "f", "arguments": '{"a":'}}
    events = stream_events(
        [
            chunk({"tool_calls": [{"index": 0, "id": "c0", **call}]}),
            chunk(
                {
                    "tool_calls": [
                        {"index": 1, "id": "c1", "function": {"name": "g", "arguments": '{"b"'}}
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            chunk({"tool_calls": [{"index": 1, "function": {"arguments": ":2}"}}]}),
            chunk({}, "tool_calls"),
        ]
    )
    blocks = [
        (e["type"], e["index"], e.get("delta") or e.get("content_block")) for e in events[2:-2]
    ]
    assert blocks == [
        ("content_block_start", 0, {"type": "tool_use", "id": "c0", "name": "f", "input": {}}),
        ("content_block_delta", 0, {"type": "input_json_delta", "partial_json": '{"a":'}),
        ("content_block_delta", 0, {"type": "input_json_delta", "partial_json": "1}"}),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, {"type": "tool_use", "id": "c1", "name": "g", "input": {}}),
        ("content_block_delta", 1, {"type": "input_json_delta", "partial_json": '{"b":2}'}),
        ("content_block_stop", 1, None),
    ]
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_calls_one_after_another_each_stream_as_they_come() -> None:
    events = stream_events(
        [
            chunk({"tool_calls": [{"index": 0, "id": "c0", "function": {"name": "f"}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":1}'}}]}),
            chunk({"tool_calls": [{"index": 1, "id": "c1", "function": {"name": "g"}}]}),
            chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"b"'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": " "}}]}),  # too late
            chunk({"tool_calls": [{"index": 1, "function": {"arguments": ":2}"}}]}),
            chunk({}, "tool_calls"),
        ]
    )
    blocks = [(e["type"], e["index"], e.get("delta")) for e in events[2:-2]]
    assert blocks == [
        ("content_block_start", 0, None),
        ("content_block_delta", 0, {"type": "input_json_delta", "partial_json": '{"a":1}'}),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, None),
        ("content_block_delta", 1, {"type": "input_json_delta", "partial_json": '{"b"'}),
        ("content_block_delta", 1, {"type": "input_json_delta", "partial_json": ":2}"}),
        ("content_block_stop", 1, None),
    ]


def test_text_after_an_unfinished_call_is_held_and_after_a_whole_one_streams() -> None:
    held = stream_events(
        [
            chunk({"tool_calls": [{"index": 0, "id": "c0", "function": {"name": "f"}}]}),
            chunk({"content": "and"}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
            chunk({"content": " more"}),
            chunk({}, "tool_calls"),
        ]
    )
    assert [(e["type"], e.get("delta")) for e in held[2:-2]] == [
        ("content_block_start", None),
        ("content_block_delta", {"type": "input_json_delta", "partial_json": "{}"}),
        ("content_block_stop", None),
        ("content_block_start", None),
        ("content_block_delta", {"type": "text_delta", "text": "and more"}),
        ("content_block_stop", None),
    ]
    live = stream_events(
        [
            chunk({"tool_calls": [{"index": 0, "id": "c0", "function": {"name": "f"}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
            chunk({"content": "and"}),
            chunk({"content": " more"}),
            chunk({}, "tool_calls"),
        ]
    )
    assert [e.get("delta", {}).get("text") for e in live[2:-2]] == [
        None,
        None,
        None,
        None,
        "and",
        " more",
        None,
    ]


def test_a_tool_call_without_a_name_yet_is_held_and_gets_an_id() -> None:
    events = stream_events(
        [
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"name": "late"}}]}),
            chunk({}, "tool_calls"),
        ]
    )
    assert events[2]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_0123abc_0",
        "name": "late",
        "input": {},
    }
    assert events[3]["delta"] == {"type": "input_json_delta", "partial_json": "{}"}


def test_thinking_then_text_stream_as_two_blocks() -> None:
    events = stream_events(
        [chunk({"reasoning": "Hmm."}), chunk({"content": "Yes."}), chunk({}, "stop")]
    )
    assert events[2]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert events[3]["delta"] == {"type": "thinking_delta", "thinking": "Hmm."}
    assert events[4] == {"type": "content_block_stop", "index": 0}
    assert events[5]["content_block"] == {"type": "text", "text": ""}


def test_a_streamed_stop_sequence_is_named_when_the_text_ends_with_it() -> None:
    body = request(stop_sequences=["END"])
    kept = stream_events(
        [chunk({"content": "done E"}), chunk({"content": "ND"}), chunk({}, "stop")], body=body
    )
    assert kept[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    said = stream_events(
        [chunk({"content": "done"}), chunk({}, "stop", {"stop_reason": "END"})], body=body
    )
    assert said[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


def test_a_mid_stream_error_becomes_an_error_event_and_the_end() -> None:
    messages_face = face()
    raw = sse([chunk({"content": "Hel"})], done=False)
    raw += b'event: error\ndata: {"error":{"message":"groq broke","type":"upstream_error"}}\n\n'
    raw += b"data: [DONE]\n\n"
    events = events_of(fed(messages_face, raw))
    assert [e["type"] for e in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "error",
    ]
    assert events[-1] == {"type": "error", "error": {"type": "api_error", "message": "groq broke"}}
    assert messages_face.feed(sse([chunk({"content": "more"})])) == b""


def test_a_stream_cut_before_done_ends_with_an_error_event() -> None:
    events = stream_events([chunk({"content": "Hel"})], done=False)
    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["type"] == "api_error"
    assert "ended before" in events[-1]["error"]["message"]
    nothing = events_of(face().close())
    assert [e["type"] for e in nothing] == ["error"]


def test_close_after_done_owes_nothing() -> None:
    messages_face = face()
    messages_face.feed(sse([chunk({"content": "x"}), chunk({}, "stop")]))
    assert messages_face.close() == b""


# --- anything at all ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
BLOCK_TYPES = [
    "text",
    "image",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "document",
    "x",
]
blocks = st.fixed_dictionaries(
    {"type": st.sampled_from(BLOCK_TYPES) | json_values},
    optional={
        "text": words | json_values,
        "source": st.fixed_dictionaries(
            {"type": st.sampled_from(["base64", "url", "file"])},
            optional={
                "media_type": st.sampled_from(["image/png", "x"]),
                "data": words,
                "url": words,
            },
        )
        | json_values,
        "id": words | json_values,
        "name": words | json_values,
        "input": arguments | json_values,
        "tool_use_id": words | json_values,
        "content": words
        | st.lists(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["text", "image", "x"])}, optional={"text": words}
            ),
            max_size=2,
        )
        | json_values,
        "is_error": st.booleans() | json_values,
    },
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": words | json_values,
        "max_tokens": st.integers(-1, 10) | json_values,
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "assistant", "system"]) | json_values,
                    "content": words | st.lists(blocks, max_size=3) | json_values,
                }
            ),
            max_size=3,
        )
        | json_values,
        "system": words | st.lists(blocks, max_size=2) | json_values,
        "tools": st.lists(
            st.fixed_dictionaries(
                {
                    "name": names | json_values,
                    "input_schema": st.just({"type": "object"}) | json_values,
                }
            ),
            max_size=2,
        )
        | json_values,
        "tool_choice": st.fixed_dictionaries(
            {"type": st.sampled_from(["auto", "any", "tool", "none"]) | json_values},
            optional={"name": names | json_values},
        )
        | json_values,
        "thinking": st.fixed_dictionaries(
            {"type": st.sampled_from(["enabled", "disabled"]) | json_values},
            optional={"budget_tokens": st.integers(-1, 20000) | json_values},
        )
        | json_values,
        "stop_sequences": json_values,
        "temperature": json_values,
        "top_k": json_values,
        "metadata": json_values,
        "stream": json_values,
        "output_config": json_values,
    },
)


good_blocks = st.one_of(
    st.builds(text, words),
    st.just({"type": "image", "source": PNG}),
    st.builds(
        lambda i, n, a: {"type": "tool_use", "id": i, "name": n, "input": a},
        names,
        names,
        arguments,
    ),
    st.builds(
        lambda i, c, e: {"type": "tool_result", "tool_use_id": i, "content": c, "is_error": e},
        names,
        words | st.lists(st.builds(text, words), max_size=2),
        st.booleans(),
    ),
)
# Mostly right, now and then wrong anywhere: past the first checks, into every branch.
near_bodies = st.fixed_dictionaries(
    {
        "model": names,
        "max_tokens": st.integers(1, 100),
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "assistant"]),
                    "content": words | st.lists(good_blocks | blocks, min_size=1, max_size=3),
                }
            ),
            min_size=1,
            max_size=3,
        ),
    },
    optional={
        "system": words | st.lists(st.builds(text, words), max_size=2) | blocks,
        "tools": st.lists(st.just(WEATHER) | blocks, max_size=2),
        "tool_choice": st.sampled_from(
            [{"type": "auto"}, {"type": "any"}, {"type": "tool", "name": "get_weather"}]
        )
        | json_values,
        "thinking": st.sampled_from(
            [{"type": "enabled", "budget_tokens": 2048}, {"type": "disabled"}, {"type": "x"}]
        ),
        "stream": st.booleans(),
        "stop_sequences": st.lists(words, max_size=2),
    },
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(json_values | bodies | near_bodies)
def test_translate_never_raises_on_any_json(body: Any) -> None:
    result = translate(body)
    assert isinstance(result, Translated | DoorError)
    if isinstance(result, DoorError):
        assert result.status == 400
    counted = count_tokens(body)
    assert isinstance(counted, int | DoorError)
    if isinstance(result, Translated):
        assert isinstance(counted, int)
        json.dumps(result.body)  # a body the chat path can send


chunkish = st.fixed_dictionaries(
    {},
    optional={
        "model": json_values,
        "usage": st.fixed_dictionaries(
            {}, optional={"prompt_tokens": json_values, "completion_tokens": json_values}
        )
        | json_values,
        "error": json_values,
        "choices": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "delta": st.fixed_dictionaries(
                        {},
                        optional={
                            "content": json_values,
                            "reasoning": json_values,
                            "tool_calls": st.lists(
                                st.fixed_dictionaries(
                                    {},
                                    optional={
                                        "index": st.integers(-1, 3) | json_values,
                                        "id": json_values,
                                        "function": st.fixed_dictionaries(
                                            {},
                                            optional={
                                                "name": names | json_values,
                                                "arguments": words | json_values,
                                            },
                                        )
                                        | json_values,
                                    },
                                ),
                                max_size=2,
                            )
                            | json_values,
                        },
                    )
                    | json_values,
                    "finish_reason": st.sampled_from(["stop", "length", "tool_calls"])
                    | json_values,
                    "stop_reason": json_values,
                },
            ),
            max_size=2,
        )
        | json_values,
    },
)
stream_events_anything = st.lists(
    st.builds(lambda c: b"data: " + wire.dumps(c) + b"\n\n", chunkish | json_values)
    | st.just(b"data: [DONE]\n\n")
    | st.just(b'event: error\ndata: {"error":{"message":"x"}}\n\n')
    | st.binary(max_size=20),
    max_size=8,
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(stream_events_anything, st.booleans())
def test_a_face_never_raises_and_writes_only_anthropics_events(
    events: list[bytes], stream: bool
) -> None:
    messages_face = face(request(stream=stream, stop_sequences=["END"]))
    out = b"".join(messages_face.feed(event) for event in events) + messages_face.close()
    written = events_of(out)
    assert written  # an answer, or an error: never silence
    if written[-1]["type"] != "error":
        assert written[-1]["type"] == "message_stop"
    assert all(e["type"] != "error" for e in written[:-1])
    json.loads(messages_face.answer(200, b"".join(events)))
