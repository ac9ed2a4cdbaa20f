"""The Responses door's translations: a Responses request onto a chat completion request, and
what the exchange writes back (a ``chat.completion``, or its chunks) into the Responses API's
objects and events, checked against the ``openai`` SDK's own pydantic types."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai._types import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent

from freellm.core.chat import inspect_request
from freellm.core.doors import DoorError, Translated
from freellm.core.doors.responses import (
    ResponsesFace,
    error_body,
    not_found,
    translate,
    wants_store,
)
from freellm.core.sse import Decoder
from sdk_checks import assert_no_extras

EVENT = pydantic.TypeAdapter[Any](ResponseStreamEvent)


def no_extras(value: object, where: str) -> None:
    """:func:`assert_no_extras`, but a response may echo ``store``, as OpenAI's do, though
    the SDK's ``Response`` type has no such field."""
    if isinstance(value, Response):
        assert set(value.model_extra or ()) <= {"store"}, value.model_extra
        for name in Response.model_fields:
            assert_no_extras(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, pydantic.BaseModel):
        assert not value.model_extra, f"{where}: unknown fields {sorted(value.model_extra)}"
        for name in type(value).model_fields:
            no_extras(getattr(value, name), f"{where}.{name}")
    else:
        assert_no_extras(value, where)


def ok(body: object, **kwargs: Any) -> Translated:
    translated = translate(body, **kwargs)
    assert isinstance(translated, Translated), translated
    return translated


def refused(body: object) -> DoorError:
    error = translate(body)
    assert isinstance(error, DoorError), error
    assert error.status == 400
    return error


def request(**fields: Any) -> dict[str, Any]:
    return {"model": "auto", "input": "Hi", **fields}


# --- requests -----------------------------------------------------------------------------------


def test_a_string_input_is_one_user_message_and_instructions_come_first() -> None:
    translated = ok(request(instructions="Be brief."))
    assert translated.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert translated.shape == inspect_request(translated.body)


def test_input_items_become_chat_messages() -> None:
    image = "data:image/png;base64,iVBORw0KGgo="
    items = [
        {"role": "developer", "content": "Use tools."},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "A"}]},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": image, "detail": "low"},
                {"type": "input_image", "image_url": "https://example.com/a.png"},
            ],
        },
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "Let me ", "annotations": []},
                {"type": "output_text", "text": "look.", "annotations": []},
            ],
        },
        {"type": "function_call", "call_id": "c1", "name": "look", "arguments": '{"a":1}'},
        {"type": "function_call", "call_id": "c2", "name": "look", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "a cat"},
        {"type": "function_call_output", "call_id": "c2", "output": [
            {"type": "input_text", "text": "a "}, {"type": "input_text", "text": "dog"}
        ]},
        {"type": "function_call", "call_id": "c3", "name": "more", "arguments": ""},
    ]  # fmt: skip
    messages = ok({"model": "auto", "input": items}).body["messages"]
    assert messages == [
        {"role": "system", "content": "Use tools."},
        {"role": "system", "content": "A"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": image, "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "look", "arguments": '{"a":1}'}},
                {"id": "c2", "type": "function", "function": {"name": "look", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
        {"role": "tool", "tool_call_id": "c2", "content": "a dog"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c3", "type": "function", "function": {"name": "more", "arguments": ""}}
            ],
        },
    ]  # fmt: skip
    assert ok({"model": "auto", "input": items}).shape.vision


def test_the_previous_conversation_comes_after_the_instructions_and_before_the_input() -> None:
    previous = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    body = request(instructions="New rules.", input="And now?")
    assert ok(body, previous=previous).body["messages"] == [
        {"role": "system", "content": "New rules."},
        *previous,
        {"role": "user", "content": "And now?"},
    ]
    assert ok({"model": "auto"}, previous=previous).body["messages"] == previous


def test_the_request_fields_map_onto_the_chat_request() -> None:
    body = request(
        tools=[
            {
                "type": "function",
                "name": "get_weather",
                "description": "The weather.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": True,
            }
        ],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        max_output_tokens=64,
        temperature=0.5,
        top_p=0.9,
        user="u1",
        metadata={"k": "v"},
        prompt_cache_key="conversation-7",
        store=False,
        truncation="auto",
        reasoning={"effort": "low", "summary": "auto"},
        text={"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
        stream=True,
        include=["reasoning.encrypted_content"],
        service_tier="auto",
    )
    chat = ok(body).body
    assert chat == {
        "model": "auto",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.5,
        "top_p": 0.9,
        "user": "u1",
        "max_tokens": 64,
        "stream": True,
        "stream_options": {"include_usage": True},
        "session_id": "conversation-7",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "The weather.",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                    "strict": True,
                },
            }
        ],
        "parallel_tool_calls": False,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "w", "schema": {"type": "object"}},
        },
        "reasoning_effort": "low",
    }
    shape = ok(body).shape
    assert (shape.stream, shape.include_usage, shape.tools, shape.json) == (True, True, True, True)
    assert (shape.max_tokens, shape.session_id, shape.user) == (64, "conversation-7", "u1")


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"type": "json_object"}),
        (
            {"type": "json_schema", "name": "n", "schema": {}, "strict": True, "description": "d"},
            {
                "type": "json_schema",
                "json_schema": {"name": "n", "schema": {}, "strict": True, "description": "d"},
            },
        ),
    ],
)
def test_text_formats(form: dict[str, Any], expected: dict[str, Any] | None) -> None:
    assert ok(request(text={"format": form})).body.get("response_format") == expected


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_tool_choice_words_pass(choice: str) -> None:
    assert ok(request(tool_choice=choice)).body["tool_choice"] == choice


def test_parallel_tool_calls_goes_only_with_tools() -> None:
    assert "parallel_tool_calls" not in ok(request(parallel_tool_calls=True)).body


@pytest.mark.parametrize(
    "kind",
    [
        "web_search",
        "web_search_preview",
        "file_search",
        "code_interpreter",
        "computer_use_preview",
        "mcp",
        "image_generation",
        "local_shell",
        "custom",
    ],
)
def test_a_tool_other_than_a_function_is_refused_by_its_place(kind: str) -> None:
    function = {"type": "function", "name": "f"}
    error = refused(request(tools=[function, function, {"type": kind}]))
    assert error.param == "tools[2].type"
    assert kind in error.message
    assert error.code == "unsupported_parameter"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        (
            {"include": ["reasoning.encrypted_content", "message.output_text.logprobs"]},
            "include[1]",
        ),
        ({"include": ["file_search_call.results"]}, "include[0]"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}}, "tool_choice"),
    ],
)
def test_what_would_change_the_answer_is_refused_by_name(
    fields: dict[str, Any], param: str
) -> None:
    assert refused(request(**fields)).param == param


def test_what_only_tunes_the_service_is_accepted() -> None:
    ok(request(background=False, conversation=None, prompt=None, top_logprobs=0, include=[]))
    ok(request(safety_identifier="s", prompt_cache_retention="24h", text={"verbosity": "low"}))


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "auto"}, "input"),
        ({"model": "auto", "input": []}, "input"),
        ({"input": "Hi"}, "model"),
        (request(input=7), "input"),
        (request(input=[{"type": "message", "role": "tool", "content": "x"}]), "input[0].role"),
        (request(input=[{"role": "user", "content": 7}]), "input[0].content"),
        (request(input=[{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]),
         "input[0].content[0].type"),
        (request(input=[{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]),
         "input[0].content[0].file_id"),
        (request(input=[{"role": "assistant", "content": [{"type": "input_image",
                                                           "image_url": "https://x/y.png"}]}]),
         "input[0].content[0].type"),
        (request(input=[{"type": "item_reference", "id": "msg_1"}]), "input[0].type"),
        (request(input=[{"type": "web_search_call", "id": "ws_1"}]), "input[0].type"),
        (request(input=["Hi"]), "input[0]"),
        (request(input=[{"type": "function_call", "call_id": "c", "name": "", "arguments": ""}]),
         "input[0].name"),
        (request(input=[{"type": "function_call_output", "call_id": "c", "output": 1}]),
         "input[0].output"),
        (request(input=[{"type": "function_call_output", "call_id": "c",
                         "output": [{"type": "input_image", "image_url": "x"}]}]),
         "input[0].output[0]"),
        (request(instructions=["a"]), "instructions"),
        (request(max_output_tokens=0), "max_output_tokens"),
        (request(temperature=3), "temperature"),
        (request(tools=[{"type": "function"}]), "tools[0].name"),
        (request(tools=[{"type": "function", "name": "f", "parameters": []}]),
         "tools[0].parameters"),
        (request(tool_choice="any"), "tool_choice"),
        (request(text={"format": {"type": "yaml"}}), "text.format.type"),
        (request(text={"format": {"type": "json_schema", "schema": {}}}), "text.format.name"),
        (request(text={"format": {"type": "json_schema", "name": "n"}}), "text.format.schema"),
        (request(reasoning={"effort": "huge"}), "reasoning.effort"),
        (request(reasoning={"summary": "long"}), "reasoning.summary"),
        (request(metadata={"k": 1}), "metadata"),
        (request(store="yes"), "store"),
        (request(stream="yes"), "stream"),
        (request(user=1), "user"),
        (request(prompt_cache_key=1), "prompt_cache_key"),
        (request(truncation="middle"), "truncation"),
        (request(previous_response_id=1), "previous_response_id"),
    ],
)  # fmt: skip
def test_a_bad_request_names_the_door_field(body: object, param: str) -> None:
    assert refused(body).param == param


def test_a_body_that_is_not_an_object_is_refused() -> None:
    assert refused([1]).param is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = st.sampled_from(
    ["model", "input", "instructions", "tools", "tool_choice", "text", "reasoning", "include",
     "stream", "max_output_tokens", "metadata", "store", "background", "user", "truncation"]
)  # fmt: skip
ITEM = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "function_call", "function_call_output", "reasoning"])},
    optional={
        "role": st.sampled_from(["user", "assistant", "system", "developer"]) | JSON,
        "content": JSON | st.lists(st.dictionaries(st.sampled_from(
            ["type", "text", "image_url", "file_id"]), JSON | st.sampled_from(
                ["input_text", "output_text", "input_image", "refusal"])), max_size=3),
        "call_id": JSON, "name": JSON, "arguments": JSON, "output": JSON,
    },
)  # fmt: skip


@given(
    st.one_of(
        JSON,
        st.dictionaries(FIELDS, JSON, max_size=6),
        st.fixed_dictionaries({"model": st.just("auto"), "input": st.lists(ITEM, max_size=4)}),
    )
)
def test_translate_never_raises_and_its_shape_is_the_chat_requests(body: object) -> None:
    translated = translate(body)
    if isinstance(translated, Translated):
        assert translated.shape == inspect_request(translated.body)
    else:
        assert translated.status == 400
        assert translated.message


def test_store_is_the_default() -> None:
    assert wants_store(request())
    assert wants_store(request(store=True))
    assert not wants_store(request(store=False))
    assert not wants_store("not a body")


def test_errors_are_openai_shaped() -> None:
    assert json.loads(error_body(not_found("resp_1"))) == {
        "error": {
            "message": "Response with id 'resp_1' not found.",
            "type": "invalid_request_error",
            "param": "response_id",
            "code": None,
        }
    }
    assert not_found("resp_1").status == 404
    assert not_found("resp_1", param="previous_response_id").param == "previous_response_id"


# --- answers ------------------------------------------------------------------------------------


def completion(
    text: str | None,
    calls: Sequence[tuple[str, str, str]] = (),
    finish: str = "stop",
    usage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}
            for id_, name, arguments in calls
        ]
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "llama-3.3-70b",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
TOOL = {"type": "function", "name": "look", "parameters": {"type": "object"}}


def face(body: Mapping[str, Any] | None = None, **kwargs: Any) -> ResponsesFace:
    body = request() if body is None else body
    return ResponsesFace(ok(body, **kwargs), id="req_0001", created=1_700_000_000, request=body)


def response_of(data: bytes) -> dict[str, Any]:
    parsed = Response.model_validate_json(data)
    no_extras(parsed, "response")
    value: dict[str, Any] = json.loads(data)
    return value


def test_a_text_answer_is_a_completed_response() -> None:
    the_face = face(request(instructions="Be brief.", temperature=0.2, metadata={"a": "b"}))
    response = response_of(
        the_face.answer(200, json.dumps(completion("Hello", usage=USAGE)).encode())
    )
    assert Response.model_validate(response).output_text == "Hello"
    assert response["id"] == "resp_0001"
    assert response["object"] == "response"
    assert (response["status"], response["incomplete_details"], response["error"]) == (
        "completed",
        None,
        None,
    )
    assert response["created_at"] == 1_700_000_000
    assert response["model"] == "llama-3.3-70b"  # the model that answered
    assert response["output"] == [
        {
            "type": "message",
            "id": "msg_0001_0",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}
            ],
        }
    ]
    assert response["usage"] == {
        "input_tokens": 11,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 18,
    }
    assert response["instructions"] == "Be brief."
    assert (response["temperature"], response["metadata"]) == (0.2, {"a": "b"})
    assert (response["store"], response["tool_choice"], response["tools"]) == (True, "auto", [])
    assert response["text"] == {"format": {"type": "text"}}


def test_tool_calls_are_function_call_items_and_the_request_is_echoed() -> None:
    body = request(
        tools=[TOOL],
        tool_choice="required",
        text={"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}},
        reasoning={"effort": "high"},
        max_output_tokens=99,
        parallel_tool_calls=False,
        previous_response_id="resp_0000",
        store=False,
    )
    calls = [("call_1", "look", '{"x":1}'), ("call_2", "look", "{}")]
    answer = completion(None, calls, "tool_calls")
    response = response_of(face(body).answer(200, json.dumps(answer).encode()))
    assert response["output"] == [
        {"type": "function_call", "id": "fc_0001_0", "call_id": "call_1", "name": "look",
         "arguments": '{"x":1}', "status": "completed"},
        {"type": "function_call", "id": "fc_0001_1", "call_id": "call_2", "name": "look",
         "arguments": "{}", "status": "completed"},
    ]  # fmt: skip
    assert response["usage"] is None
    assert response["tools"] == [
        {"type": "function", "name": "look", "description": None,
         "parameters": {"type": "object"}, "strict": None}
    ]  # fmt: skip
    assert response["tool_choice"] == "required"
    assert response["text"]["format"]["type"] == "json_schema"
    assert response["reasoning"] == {"effort": "high", "summary": None}
    assert (response["max_output_tokens"], response["parallel_tool_calls"]) == (99, False)
    assert (response["previous_response_id"], response["store"]) == ("resp_0000", False)


def test_an_answer_cut_by_max_tokens_is_incomplete() -> None:
    response = response_of(
        face().answer(200, json.dumps(completion("Hel", finish="length")).encode())
    )
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"


def test_a_refusal_is_a_refusal_part() -> None:
    answer = completion(None)
    answer["choices"][0]["message"]["refusal"] = "I can't."
    response = response_of(face().answer(200, json.dumps(answer).encode()))
    assert response["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't."}]


@pytest.mark.parametrize("status", [400, 404, 429, 502, 503])
def test_an_error_answer_is_openai_shaped_and_nothing_is_stored(status: int) -> None:
    body = json.dumps(
        {"error": {"message": "No capacity.", "type": "rate_limit_error", "param": None,
                   "code": "no_capacity"}}
    ).encode()  # fmt: skip
    the_face = face()
    assert json.loads(the_face.answer(status, body)) == json.loads(body)
    assert the_face.finished() is None


def test_finished_keeps_the_turn_without_the_instructions() -> None:
    previous = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    body = request(instructions="Rules.", input="Weather?", tools=[TOOL])
    the_face = face(body, previous=previous)
    answer = completion("Looking.", [("c1", "look", "{}")], "tool_calls")
    the_face.answer(200, json.dumps(answer).encode())
    finished = the_face.finished()
    assert finished is not None
    response, conversation = finished
    assert response["id"] == "resp_0001"
    assert conversation == [
        *previous,
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Looking.",
         "tool_calls": answer["choices"][0]["message"]["tool_calls"]},
    ]  # fmt: skip


TEXTS = st.text(max_size=20)
CALLS = st.lists(
    st.tuples(st.text(min_size=1, max_size=8), st.text(min_size=1, max_size=8), TEXTS),
    max_size=3,
    unique_by=lambda call: call[0],
)
ANSWERS = st.builds(
    completion,
    st.one_of(st.none(), TEXTS),
    CALLS,
    st.sampled_from(["stop", "length", "tool_calls", "content_filter"]),
    st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {"prompt_tokens": st.integers(0, 10**6), "completion_tokens": st.integers(0, 10**6)}
        ).map(lambda u: {**u, "total_tokens": u["prompt_tokens"] + u["completion_tokens"]}),
    ),
)


def same_answer(message: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """What an answer says: its text (none is empty) and its tool calls."""
    return message.get("content") or "", list(message.get("tool_calls") or ())


@given(ANSWERS)
def test_a_chat_answer_translated_to_a_response_and_back_is_the_same_answer(
    answer: dict[str, Any],
) -> None:
    response = response_of(face().answer(200, json.dumps(answer).encode()))
    back = ok({"model": "auto", "input": response["output"]}).body["messages"]
    assert len(back) == 1
    original = answer["choices"][0]["message"]
    assert same_answer(back[0]) == same_answer(original)
    assert back[0]["role"] == "assistant"
    finish = answer["choices"][0]["finish_reason"]
    assert (response["status"] == "incomplete") == (finish == "length")
    usage = answer.get("usage")
    if usage is None:
        assert response["usage"] is None
    else:
        assert (response["usage"]["input_tokens"], response["usage"]["output_tokens"]) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )


# --- streams ------------------------------------------------------------------------------------


def sse(chunk: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def chunks_of(answer: Mapping[str, Any], pieces: int = 3) -> bytes:
    """The stream a provider would send for ``answer``: the text in ``pieces``, each tool call's
    id and name first and its arguments in pieces, the finish, the usage, ``[DONE]``."""
    choice = answer["choices"][0]
    message = choice["message"]
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": answer["model"]}

    def delta(value: dict[str, Any], finish: str | None = None) -> bytes:
        return sse({**base, "choices": [{"index": 0, "delta": value, "finish_reason": finish}]})

    out = delta({"role": "assistant", "content": ""})
    text = message.get("content") or ""
    size = max(1, -(-len(text) // pieces))
    for start in range(0, len(text), size):
        out += delta({"content": text[start : start + size]})
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call["function"]
        first = {"index": index, "id": call["id"], "type": "function",
                 "function": {"name": function["name"], "arguments": ""}}  # fmt: skip
        out += delta({"tool_calls": [first]})
        arguments = function["arguments"]
        for start in range(0, len(arguments), 2):
            piece = {"index": index, "function": {"arguments": arguments[start : start + 2]}}
            out += delta({"tool_calls": [piece]})
    out += delta({}, choice["finish_reason"])
    if "usage" in answer:
        out += sse({**base, "choices": [], "usage": answer["usage"]})
    return out + b"data: [DONE]\n\n"


def events_of(data: bytes) -> list[dict[str, Any]]:
    """The events of a Responses stream, each checked against the SDK's type and its
    ``event:`` line."""
    events = []
    for event in Decoder().feed(data):
        parsed = EVENT.validate_json(event.data)
        no_extras(parsed, parsed.type)
        value = json.loads(event.data)
        assert event.event == value["type"]
        events.append(value)
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    return events


def stream(the_face: ResponsesFace, data: bytes, cuts: Iterable[int] = ()) -> bytes:
    out = b""
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        out += the_face.feed(data[start:cut])
        start = cut
    return out + the_face.close()


def test_a_streamed_answer_is_the_responses_event_sequence() -> None:
    answer = completion("Hello there", [("c1", "look", '{"a":1}')], "tool_calls", USAGE)
    the_face = face(request(stream=True, tools=[TOOL]))
    events = events_of(stream(the_face, chunks_of(answer)))
    assert [event["type"] for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["output"] == []
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == (
        "Hello there"
    )
    assert events[12]["text"] == "Hello there"
    assert events[15]["arguments"] == '{"a":1}'
    final = events[-1]["response"]
    assert final["status"] == "completed"
    assert final["usage"]["total_tokens"] == 18
    finished = the_face.finished()
    assert finished is not None
    assert finished[0] == final


def test_a_stream_cut_by_max_tokens_ends_incomplete() -> None:
    the_face = face(request(stream=True))
    events = events_of(stream(the_face, chunks_of(completion("Hel", finish="length"))))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-2]["item"]["status"] == "incomplete"


def test_an_empty_stream_is_an_empty_message() -> None:
    events = events_of(stream(face(request(stream=True)), chunks_of(completion(""))))
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""


@pytest.mark.parametrize(
    ("code", "failed_code"),
    [("timeout", "server_error"), ("rate_limited", "rate_limit_exceeded"), (None, "server_error")],
)
def test_a_failure_mid_stream_is_response_failed_then_error(
    code: str | None, failed_code: str
) -> None:
    error = {
        "message": "The provider failed.",
        "type": "upstream_error",
        "param": None,
        "code": code,
    }
    data = sse({"choices": [{"index": 0, "delta": {"content": "He"}}]})
    data += b"event: error\ndata: " + json.dumps({"error": error}).encode() + b"\n\n"
    the_face = face(request(stream=True))
    out = stream(the_face, data + b"data: [DONE]\n\n")
    events = events_of(out)
    assert [event["type"] for event in events[-2:]] == ["response.failed", "error"]
    failed = events[-2]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": failed_code, "message": "The provider failed."}
    assert failed["output"][0]["status"] == "incomplete"
    assert failed["output"][0]["content"][0]["text"] == "He"
    assert events[-1]["code"] == (code or "server_error")
    assert events[-1]["message"] == "The provider failed."
    assert the_face.finished() is None


def test_a_stream_cut_before_its_end_fails() -> None:
    the_face = face(request(stream=True))
    out = stream(the_face, chunks_of(completion("Hello")).split(b"data: [DONE]")[0])
    events = events_of(out)
    assert [event["type"] for event in events[-2:]] == ["response.failed", "error"]
    assert the_face.finished() is None


def test_a_face_fed_nothing_owes_nothing() -> None:
    assert face().close() == b""


def test_an_error_before_the_stream_is_a_json_error() -> None:
    the_face = face(request(stream=True))
    body = b'{"error":{"message":"m","type":"invalid_request_error","param":null,"code":null}}'
    assert json.loads(the_face.answer(400, body)) == json.loads(body)
    assert the_face.close() == b""
    assert the_face.finished() is None


@given(ANSWERS, st.lists(st.integers(min_value=0), max_size=8))
def test_a_stream_cut_anywhere_gives_the_events_it_gives_whole(
    answer: dict[str, Any], cuts: list[int]
) -> None:
    data = chunks_of(answer)
    whole = stream(face(request(stream=True)), data)
    cut = stream(face(request(stream=True)), data, [c % (len(data) + 1) for c in cuts])
    assert cut == whole
    events_of(whole)


@given(ANSWERS)
def test_a_streamed_response_is_the_response_answered_whole(answer: dict[str, Any]) -> None:
    whole_face = face(request(stream=True))
    whole = response_of(whole_face.answer(200, json.dumps(answer).encode()))
    streamed_face = face(request(stream=True))
    events = events_of(stream(streamed_face, chunks_of(answer)))
    assert events[-1]["response"] == whole
    assert streamed_face.finished() == whole_face.finished()


@given(ANSWERS)
def test_the_sdks_stream_accumulator_reads_the_stream_to_the_same_response(
    answer: dict[str, Any],
) -> None:
    events = events_of(stream(face(request(stream=True)), chunks_of(answer)))
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for event in events:
        state.handle_event(EVENT.validate_python(event))
    final = events[-1]
    if final["type"] == "response.completed":
        completed = state._completed_response
        assert completed is not None
        assert completed.id == final["response"]["id"]
        assert completed.output_text == Response.model_validate(final["response"]).output_text
    else:
        assert final["type"] == "response.incomplete"
