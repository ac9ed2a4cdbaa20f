"""Checking a chat request once, before routing: what it needs, or which field is wrong."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freellm.core.chat import BadRequest, ChatShape, inspect_request

USER = {"role": "user", "content": "hi"}


def shape(**body: Any) -> ChatShape:
    result = inspect_request({"model": "auto", "messages": [USER], **body})
    assert isinstance(result, ChatShape), result
    return result


def test_a_plain_request_needs_nothing_special() -> None:
    plain = shape()
    assert (plain.tools, plain.vision, plain.json, plain.stream) == (False, False, False, False)
    assert plain.prompt_tokens > 0
    assert plain.max_tokens is None


def test_what_a_request_needs_is_read_from_its_fields() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    rich = shape(
        messages=[{"role": "user", "content": [{"type": "text", "text": "look"}, image]}],
        tools=[tool],
        response_format={"type": "json_object"},
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=300,
        max_completion_tokens=200,
        user="alice",
    )
    assert (rich.tools, rich.vision, rich.json, rich.stream) == (True, True, True, True)
    assert rich.include_usage
    assert rich.max_tokens == 200
    assert rich.user == "alice"


def test_tools_with_tool_choice_none_need_no_tool_support() -> None:
    tool = {"type": "function", "function": {"name": "f"}}
    assert not shape(tools=[tool], tool_choice="none").tools


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], None),
        ({"messages": [USER]}, "model"),
        ({"model": "auto"}, "messages"),
        ({"model": "auto", "messages": []}, "messages"),
        ({"model": "auto", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "auto", "messages": [USER, {"role": "user"}]}, "messages[1].content"),
        ({"model": "auto", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"model": "auto", "messages": [{"role": "user", "content": [{"text": "x"}]}]},
            "messages[0].content[0].type",
        ),
        (
            {"model": "auto", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0].image_url.url",
        ),
        ({"model": "auto", "messages": [USER], "stream": "yes"}, "stream"),
        ({"model": "auto", "messages": [USER], "max_tokens": 0}, "max_tokens"),
        ({"model": "auto", "messages": [USER], "temperature": 3}, "temperature"),
        ({"model": "auto", "messages": [USER], "top_p": -1}, "top_p"),
        ({"model": "auto", "messages": [USER], "n": 2}, "n"),
        ({"model": "auto", "messages": [USER], "tools": {}}, "tools"),
        ({"model": "auto", "messages": [USER], "tools": [{"type": "function"}]},
         "tools[0].function"),
        ({"model": "auto", "messages": [USER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "auto", "messages": [USER], "response_format": {"type": "xml"}},
         "response_format.type"),
        ({"model": "auto", "messages": [USER], "stream_options": {"include_usage": 1}},
         "stream_options.include_usage"),
        ({"model": "auto", "messages": [USER], "user": 7}, "user"),
    ],
)  # fmt: skip
def test_a_bad_field_is_named_in_param(body: Any, param: str | None) -> None:
    result = inspect_request(body)
    assert isinstance(result, BadRequest)
    assert result.param == param
    assert result.message


def test_n_above_one_is_refused_with_a_reason() -> None:
    result = inspect_request({"model": "auto", "messages": [USER], "n": 3})
    assert isinstance(result, BadRequest)
    assert result.code == "unsupported_value"
    assert "separate requests" in result.message


def test_an_assistant_message_with_tool_calls_may_have_no_content() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert shape(messages=[USER, {"role": "assistant", "content": None, "tool_calls": [call]}])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(JSON)
def test_never_raises_on_any_json(body: Any) -> None:
    assert isinstance(inspect_request(body), ChatShape | BadRequest)


@given(st.dictionaries(st.sampled_from(["model", "messages", "tools", "stream", "n"]), JSON))
def test_never_raises_on_requests_with_odd_fields(body: dict[str, Any]) -> None:
    assert isinstance(
        inspect_request({"model": "auto", "messages": [USER], **body}), ChatShape | BadRequest
    )


def test_a_named_tool_choice_is_accepted() -> None:
    tool = {"type": "function", "function": {"name": "f"}}
    named = {"type": "function", "function": {"name": "f"}}
    assert shape(tools=[tool], tool_choice=named).tools


@pytest.mark.parametrize("choice", [{"type": "function"}, ["auto"], 3, {"function": "f"}])
def test_a_malformed_tool_choice_is_named(choice: Any) -> None:
    result = inspect_request({"model": "auto", "messages": [USER], "tool_choice": choice})
    assert isinstance(result, BadRequest)
    assert result.param == "tool_choice"
