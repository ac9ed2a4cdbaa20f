"""The Gemini dialect: requests going up, answers and streams coming back, signatures both ways.

Every Gemini response and stream event used here is first parsed by the official SDK
(``google.genai.types.GenerateContentResponse``), and every request the translation produces is
validated against the SDK's request types, so the fixtures and the translation speak real
Gemini. What comes back is checked against the ``openai`` SDK's ``ChatCompletion`` and
``ChatCompletionChunk``.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from google.genai import types as genai
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from freellm.core.chat import ChatShape, inspect_request
from freellm.core.dialects.gemini import (
    FINISH_REASONS,
    SKIP_SIGNATURE,
    GeminiStreamFold,
    Signature,
    StreamState,
    Untranslatable,
    clean_schema,
    decode_call_id,
    encode_call_id,
    endpoint,
    stream_step,
    translate_request,
    translate_response,
    usage_of,
)
from freellm.core.dialects.openai import StreamError, Usage
from freellm.core.sse import Decoder, Event
from freellm.core.tokens import estimate_text
from sdk_checks import check_gemini_request
from sse_feed import feed

SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")
SIGNATURE = base64.b64encode(b"\x01signature of the weather call\xff").decode()
TEXT_SIGNATURE = base64.b64encode(b"\x02signature of the text part").decode()


# --- helpers ------------------------------------------------------------------------------------


def gemini_checked(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` after the Gemini SDK has parsed it as a GenerateContentResponse."""
    genai.GenerateContentResponse.model_validate_json(json.dumps(data))
    return data


def translated(body: dict[str, Any]) -> dict[str, Any]:
    request = translate_request({"model": "gemini-2.5-flash", **body})
    assert isinstance(request, dict), request
    check_gemini_request(request)
    return request


def refused(body: dict[str, Any]) -> Untranslatable:
    result = translate_request({"model": "gemini-2.5-flash", **body})
    assert isinstance(result, Untranslatable), result
    return result


def user(text: str = "Hi") -> dict[str, Any]:
    return {"role": "user", "content": text}


def declaration(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def tool_params(parameters: dict[str, Any]) -> dict[str, Any]:
    request = translated({"messages": [user()], "tools": [declaration("f", parameters)]})
    result: dict[str, Any] = request["tools"][0]["functionDeclarations"][0].get("parameters")
    return result


def sse(events: list[dict[str, Any]], *, newline: str = "\r\n") -> bytes:
    return "".join(f"data: {json.dumps(e)}{newline}{newline}" for e in events).encode()


def assemble(wire: bytes) -> dict[str, Any]:
    """What an OpenAI client builds from the stream, checking each chunk on the way."""
    events = Decoder().feed(wire)
    assert events, "an empty stream"
    assert events[-1].done, "the stream must end with [DONE]"
    assert not any(event.done for event in events[:-1])
    message: dict[str, Any] = {"content": None, "tool_calls": {}, "finish_reason": None}
    usage = None
    roles = 0
    for event in events[:-1]:
        chunk = json.loads(event.data)
        ChatCompletionChunk.model_validate(chunk)
        assert chunk["object"] == "chat.completion.chunk"
        if not chunk["choices"]:
            assert usage is None
            usage = chunk["usage"]
            continue
        assert usage is None, "the usage chunk comes last"
        (choice,) = chunk["choices"]
        delta = choice["delta"]
        if delta.get("role"):
            assert delta["role"] == "assistant"
            roles += 1
        if delta.get("content"):
            message["content"] = (message["content"] or "") + delta["content"]
        for call in delta.get("tool_calls") or ():
            assert isinstance(call["index"], int), "index on every tool-call delta"
            known = message["tool_calls"].get(call["index"])
            if known is None:
                assert call["id"]
                assert call["type"] == "function"
                assert call["function"]["name"]
                known = message["tool_calls"][call["index"]] = {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""},
                }
            known["function"]["arguments"] += call["function"].get("arguments") or ""
        if choice["finish_reason"] is not None:
            assert message["finish_reason"] is None
            message["finish_reason"] = choice["finish_reason"]
    assert roles == 1, "one role delta, first"
    calls = [message["tool_calls"][index] for index in sorted(message["tool_calls"])]
    assert list(range(len(calls))) == sorted(message["tool_calls"])
    return {**message, "tool_calls": calls, "usage": usage}


def fold_bytes(
    wire: bytes, cuts: list[int], *, wants_usage: bool
) -> tuple[bytes, GeminiStreamFold]:
    fold = GeminiStreamFold(client_wants_usage=wants_usage, model="gemini-2.5-flash")
    return feed(fold, wire, cuts), fold


# --- requests: messages -------------------------------------------------------------------------


def test_system_and_developer_messages_become_the_system_instruction() -> None:
    request = translated(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                user("Hi"),
                {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
                user("Again"),
            ]
        }
    )
    assert request["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "No emoji."}]}
    # The two user turns around the hoisted developer message merge into one.
    assert request["contents"] == [{"role": "user", "parts": [{"text": "Hi"}, {"text": "Again"}]}]


def test_consecutive_turns_of_one_role_merge_and_empty_messages_vanish() -> None:
    request = translated(
        {
            "messages": [
                user("a"),
                user(""),
                {"role": "assistant", "content": "b"},
                {"role": "assistant", "content": "c"},
                user("d"),
            ]
        }
    )
    assert request["contents"] == [
        {"role": "user", "parts": [{"text": "a"}]},
        {"role": "model", "parts": [{"text": "b"}, {"text": "c"}]},
        {"role": "user", "parts": [{"text": "d"}]},
    ]


def test_a_conversation_of_system_text_alone_becomes_the_user_turn() -> None:
    request = translated({"messages": [{"role": "system", "content": "Say hi."}]})
    assert request == {"contents": [{"role": "user", "parts": [{"text": "Say hi."}]}]}


def test_a_conversation_with_nothing_to_send_is_refused_naming_messages() -> None:
    assert refused({"messages": [user("")]}).param == "messages"


def test_images_go_inline_from_data_urls_and_by_uri_from_http_urls() -> None:
    content = [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {
            "type": "image_url",
            "image_url": {"url": "https://x.test/cat.JPG?size=2", "detail": "low"},
        },
        {"type": "image_url", "image_url": {"url": "http://x.test/picture"}},
    ]
    request = translated({"messages": [{"role": "user", "content": content}]})
    assert request["contents"][0]["parts"] == [
        {"text": "Compare"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"fileUri": "https://x.test/cat.JPG?size=2", "mimeType": "image/jpeg"}},
        {"fileData": {"fileUri": "http://x.test/picture"}},
    ]


PDF = "data:application/pdf;base64,JVBERi0="


def test_audio_and_file_parts_go_inline() -> None:
    content = [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"file_data": PDF, "filename": "a.pdf"}},
    ]
    request = translated({"messages": [{"role": "user", "content": content}]})
    assert request["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]


@pytest.mark.parametrize(
    ("part", "param"),
    [
        (
            {"type": "image_url", "image_url": {"url": "ftp://x.test/a.png"}},
            "messages[0].content[0].image_url.url",
        ),
        (
            {"type": "image_url", "image_url": {"url": "data:image/png,%89PNG"}},
            "messages[0].content[0].image_url.url",
        ),
        ({"type": "file", "file": {"file_id": "file-abc"}}, "messages[0].content[0].file.file_id"),
        ({"type": "video", "video": {}}, "messages[0].content[0].type"),
    ],
)
def test_content_gemini_cannot_take_is_refused_naming_the_part(
    part: dict[str, Any], param: str
) -> None:
    problem = refused({"messages": [{"role": "user", "content": [part]}]})
    assert problem.param == param
    assert problem.message


def test_an_image_in_a_system_message_is_refused() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    problem = refused({"messages": [{"role": "system", "content": [image]}, user()]})
    assert problem.param == "messages[0].content[0]"


PARIS: dict[str, Any] = {"name": "get_weather", "args": {"city": "Paris"}}
WEATHER_CALL: dict[str, Any] = {
    "id": "call_abc",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


@pytest.mark.parametrize(
    ("content", "response"),
    [
        ('{"temp": 22}', {"temp": 22}),
        ("[1, 2]", {"result": [1, 2]}),
        ("22", {"result": 22}),
        ("sunny, 22C", {"result": "sunny, 22C"}),
        ("NaN", {"result": "NaN"}),
        ([{"type": "text", "text": '{"a": '}, {"type": "text", "text": "1}"}], {"a": 1}),
    ],
)
def test_tool_calls_and_results_become_function_calls_and_responses(
    content: Any, response: dict[str, Any]
) -> None:
    request = translated(
        {
            "messages": [
                user("Weather in Paris?"),
                {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
                {"role": "tool", "tool_call_id": "call_abc", "content": content},
            ]
        }
    )
    assert request["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    # A turn not written by Gemini gets the documented placeholder.
                    "thoughtSignature": SKIP_SIGNATURE,
                }
            ],
        },
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": response}}],
        },
    ]


def test_parallel_results_and_the_next_question_share_one_user_turn() -> None:
    second = {**WEATHER_CALL, "id": "call_def", "function": {"name": "get_time", "arguments": ""}}
    request = translated(
        {
            "messages": [
                user("Weather and time?"),
                {"role": "assistant", "content": "Checking.", "tool_calls": [WEATHER_CALL, second]},
                {"role": "tool", "tool_call_id": "call_def", "content": "noon"},
                {"role": "tool", "tool_call_id": "call_abc", "content": "sunny"},
                user("Thanks"),
            ]
        }
    )
    model, results = request["contents"][1:]
    assert model["parts"] == [
        {"text": "Checking."},
        {
            "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
            "thoughtSignature": SKIP_SIGNATURE,
        },
        {"functionCall": {"name": "get_time", "args": {}}},  # only the first call needs one
    ]
    assert results["parts"] == [
        {"functionResponse": {"name": "get_time", "response": {"result": "noon"}}},
        {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
        {"text": "Thanks"},
    ]


def test_legacy_function_calls_and_function_messages_translate_too() -> None:
    request = translated(
        {
            "messages": [
                user(),
                {"role": "assistant", "content": None, "function_call": WEATHER_CALL["function"]},
                {"role": "function", "name": "get_weather", "content": "sunny"},
            ],
            "functions": [{"name": "get_weather", "parameters": {"type": "object"}}],
            "function_call": {"name": "get_weather"},
        }
    )
    assert request["contents"][1]["parts"][0]["functionCall"]["name"] == "get_weather"
    assert request["contents"][2]["parts"][0]["functionResponse"]["name"] == "get_weather"
    assert request["tools"] == [{"functionDeclarations": [{"name": "get_weather"}]}]
    assert request["toolConfig"]["functionCallingConfig"] == {
        "mode": "ANY",
        "allowedFunctionNames": ["get_weather"],
    }


def test_a_tool_result_for_an_unknown_call_is_refused_naming_its_id() -> None:
    problem = refused(
        {"messages": [user(), {"role": "tool", "tool_call_id": "call_zzz", "content": "x"}]}
    )
    assert problem.param == "messages[1].tool_call_id"


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", "NaN"])
def test_past_arguments_that_are_not_a_json_object_are_refused(arguments: str) -> None:
    call = {**WEATHER_CALL, "function": {"name": "get_weather", "arguments": arguments}}
    problem = refused({"messages": [user(), {"role": "assistant", "tool_calls": [call]}]})
    assert problem.param == "messages[1].tool_calls[0].function.arguments"


# --- requests: tools and schemas ----------------------------------------------------------------


def test_refs_and_defs_are_inlined_and_unsupported_keys_dropped() -> None:
    parameters = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "home": {"$ref": "#/$defs/Place", "description": "Where you live"},
            "work": {"$ref": "#/definitions/Place"},
            "when": {"type": "string", "format": "date-time", "default": "now"},
            "email": {"type": "string", "format": "email", "pattern": "^.+@.+$"},
            "count": {"type": "integer", "format": "int32", "minimum": 1, "exclusiveMaximum": 9},
        },
        "required": ["home", "ghost", "home"],
        "$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}}}},
        "definitions": {"Place": {"type": "string", "examples": ["Paris"]}},
    }
    place = {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}
    assert tool_params(parameters) == {
        "type": "OBJECT",
        "properties": {
            "home": {"description": "Where you live", **place},
            "work": {"type": "STRING"},
            "when": {"type": "STRING", "format": "date-time"},
            "email": {"type": "STRING"},
            "count": {"type": "INTEGER", "format": "int32", "minimum": 1},
        },
        "required": ["home"],
    }


def test_a_recursive_ref_is_cut_at_its_second_visit() -> None:
    parameters = {
        "type": "object",
        "properties": {"tree": {"$ref": "#/$defs/Node"}},
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
            }
        },
    }
    node = tool_params(parameters)["properties"]["tree"]
    assert node["properties"]["children"]["items"] == {"type": "STRING"}


@pytest.mark.parametrize(
    ("schema", "cleaned"),
    [
        ({"type": ["string", "null"]}, {"type": "STRING", "nullable": True}),
        ({"anyOf": [{"type": "integer"}, {"type": "null"}]}, {"type": "INTEGER", "nullable": True}),
        (
            {"oneOf": [{"type": "integer"}, {"type": "string"}], "description": "id"},
            {"description": "id", "anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]},
        ),
        (
            {"type": ["integer", "boolean"]},
            {"anyOf": [{"type": "INTEGER"}, {"type": "BOOLEAN"}]},
        ),
        (
            {"allOf": [{"properties": {"a": {"type": "string"}}, "required": ["a"]},
                       {"properties": {"b": {"type": "number"}}, "required": ["b"]}]},
            {"type": "OBJECT", "properties": {"a": {"type": "STRING"}, "b": {"type": "NUMBER"}},
             "required": ["a", "b"]},
        ),
        ({"const": "on"}, {"type": "STRING", "enum": ["on"]}),
        ({"enum": ["a", "b", None]}, {"type": "STRING", "enum": ["a", "b"], "nullable": True}),
        (
            {"type": "integer", "enum": [1, 2], "description": "Level."},
            {"type": "INTEGER", "description": "Level. Allowed values: 1, 2."},
        ),
        ({"type": "array"}, {"type": "ARRAY", "items": {"type": "STRING"}}),
        ({"items": [{"type": "integer"}]}, {"type": "ARRAY", "items": {"type": "INTEGER"}}),
        ({"type": "object", "properties": {}}, {"type": "OBJECT"}),
        ({"type": "string", "minLength": 2, "maxLength": -1}, {"type": "STRING", "minLength": 2}),
        ({"$ref": "https://x.test/schema"}, {}),
        (True, {}),
    ],
)  # fmt: skip
def test_schema_keywords_map_to_what_gemini_accepts(schema: Any, cleaned: dict[str, Any]) -> None:
    assert clean_schema(schema) == cleaned
    genai.Schema.model_validate_json(json.dumps(cleaned))


def test_response_schemas_keep_the_clients_key_order() -> None:
    schema = {"type": "object", "properties": {"z": {"type": "string"}, "a": {"type": "string"}}}
    assert clean_schema(schema, ordering=True)["propertyOrdering"] == ["z", "a"]
    assert "propertyOrdering" not in clean_schema(schema)


def test_a_function_without_parameters_declares_none() -> None:
    for parameters in ({"type": "object", "properties": {}}, {}, {"type": "object"}):
        assert tool_params(parameters) is None


def test_tool_definitions_gemini_refuses_are_refused_naming_the_field() -> None:
    problem = refused({"messages": [user()], "tools": [declaration("2fast", {})]})
    assert problem.param == "tools[0].function.name"
    problem = refused({"messages": [user()], "tools": [declaration("f", {"type": "string"})]})
    assert problem.param == "tools[0].function.parameters"


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("none", {"mode": "NONE"}),
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "b"}},
            {"mode": "ANY", "allowedFunctionNames": ["b"]},
        ),
    ],
)
def test_tool_choice_maps_to_a_function_calling_mode(choice: Any, config: dict[str, Any]) -> None:
    tools = [declaration("a", {}), declaration("b", {})]
    request = translated({"messages": [user()], "tools": tools, "tool_choice": choice})
    assert request["toolConfig"] == {"functionCallingConfig": config}


def test_tool_choice_naming_an_undeclared_function_is_refused() -> None:
    choice = {"type": "function", "function": {"name": "nope"}}
    problem = refused(
        {"messages": [user()], "tools": [declaration("a", {})], "tool_choice": choice}
    )
    assert problem.param == "tool_choice"


def test_tool_choice_without_tools_sends_no_tool_config() -> None:
    assert "toolConfig" not in translated({"messages": [user()], "tool_choice": "required"})


# --- requests: generation config and refusals ---------------------------------------------------


def test_sampling_fields_become_the_generation_config() -> None:
    request = translated(
        {
            "messages": [user()],
            "temperature": 0.3,
            "top_p": 0.9,
            "max_tokens": 500,
            "max_completion_tokens": 200,
            "stop": ["END", "", "STOP"],
            "seed": 2**40 + 5,
            "n": 2,
            "reasoning_effort": "low",
            "presence_penalty": 0,
            "logprobs": False,
        }
    )
    assert request["generationConfig"] == {
        "temperature": 0.3,
        "topP": 0.9,
        "maxOutputTokens": 200,
        "stopSequences": ["END", "STOP"],
        "seed": (2**40 + 5) % 2**31,
        "candidateCount": 2,
        "thinkingConfig": {"thinkingBudget": 1024},
    }
    assert translated({"messages": [user()], "stop": "END"})["generationConfig"] == {
        "stopSequences": ["END"]
    }


def test_json_modes_set_the_mime_type_and_the_cleaned_schema() -> None:
    plain = translated({"messages": [user()], "response_format": {"type": "json_object"}})
    assert plain["generationConfig"] == {"responseMimeType": "application/json"}
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    request = translated({"messages": [user()], "response_format": response_format})
    assert request["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "OBJECT",
            "properties": {"name": {"type": "STRING"}, "age": {"type": "INTEGER"}},
            "required": ["name", "age"],
            "propertyOrdering": ["name", "age"],
        },
    }
    text = translated({"messages": [user()], "response_format": {"type": "text"}})
    assert "generationConfig" not in text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("logit_bias", {"50256": -100}),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1),
        ("modalities", ["text", "audio"]),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("web_search_options", {"search_context_size": "low"}),
        ("reasoning_effort", "extreme"),
        ("stop", ["a", "b", "c", "d", "e", "f"]),
    ],
)
def test_fields_gemini_cannot_honour_are_refused_by_name(field: str, value: Any) -> None:
    problem = refused({"messages": [user()], field: value})
    assert problem.param == field
    assert field in problem.message


def test_fields_that_ask_nothing_are_ignored() -> None:
    request = translated(
        {
            "messages": [user()],
            "parallel_tool_calls": False,
            "user": "u1",
            "metadata": {"a": "b"},
            "store": False,
            "stream": True,
            "stream_options": {"include_usage": True},
            "logit_bias": {},
            "modalities": ["text"],
            "x_vendor": 1,
        }
    )
    assert request == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}


def test_the_endpoint_names_the_model_and_the_stream_mode() -> None:
    assert endpoint("gemini-2.5-flash", stream=False) == "/models/gemini-2.5-flash:generateContent"
    assert (
        endpoint("models/gemini-2.5-pro", stream=True)
        == "/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    )


# --- responses ----------------------------------------------------------------------------------

USAGE = {
    "promptTokenCount": 12,
    "candidatesTokenCount": 7,
    "thoughtsTokenCount": 30,
    "totalTokenCount": 49,
    "cachedContentTokenCount": 4,
}


def response(parts: list[dict[str, Any]], finish: str = "STOP", **extra: Any) -> dict[str, Any]:
    return gemini_checked(
        {
            "candidates": [
                {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}
            ],
            "usageMetadata": USAGE,
            "modelVersion": "gemini-2.5-flash",
            "responseId": "resp-1",
            **extra,
        }
    )


def completion_of(data: dict[str, Any]) -> tuple[dict[str, Any], Usage | None]:
    completion, usage = translate_response(data, model="fallback", created=1700000000)
    ChatCompletion.model_validate(completion)
    return completion, usage


def test_a_text_answer_becomes_a_chat_completion_without_its_thoughts() -> None:
    data = response(
        [{"text": "Let me think", "thought": True}, {"text": "Hello"}, {"text": ", world"}]
    )
    completion, usage = completion_of(data)
    assert completion == {
        "id": "chatcmpl-resp-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gemini-2.5-flash",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello, world",
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 37,
            "total_tokens": 49,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 30},
        },
    }
    assert usage == Usage(12, 37)  # thoughts are billed as completion tokens


@pytest.mark.parametrize(("gemini", "openai"), [*FINISH_REASONS.items(), ("OTHER", "stop")])
def test_every_finish_reason_maps(gemini: str, openai: str) -> None:
    completion, _ = completion_of(response([{"text": "x"}], gemini))
    assert completion["choices"][0]["finish_reason"] == openai


def test_function_calls_become_tool_calls_with_stable_ids() -> None:
    parts = [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
    ]
    completion, _ = completion_of(response(parts))
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [call["function"] for call in calls] == [
        {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"name": "get_weather", "arguments": '{"city":"Rome"}'},
    ]
    assert all(call["type"] == "function" and SAFE_ID.fullmatch(call["id"]) for call in calls)
    assert calls[0]["id"] != calls[1]["id"]
    again, _ = completion_of(response(parts))
    assert again == completion  # same response, same ids: no randomness
    other, _ = completion_of(response(parts, responseId="resp-2"))
    assert other["choices"][0]["message"]["tool_calls"][0]["id"] != calls[0]["id"]


def test_a_call_cut_by_the_token_limit_still_finishes_with_length() -> None:
    completion, _ = completion_of(response([{"functionCall": {"name": "f"}}], "MAX_TOKENS"))
    assert completion["choices"][0]["finish_reason"] == "length"


def test_a_blocked_prompt_is_an_empty_answer_filtered_for_content() -> None:
    data = gemini_checked(
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 9}}
    )
    completion, usage = completion_of(data)
    assert completion["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "", "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "content_filter",
        }
    ]
    assert usage == Usage(9, 0)


def test_several_candidates_become_several_choices() -> None:
    data = gemini_checked(
        {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": "b"}]}, "index": 1},
                {"content": {"role": "model", "parts": [{"text": "a"}]}, "finishReason": "STOP"},
            ]
        }
    )
    completion, usage = completion_of(data)
    assert [(c["index"], c["message"]["content"]) for c in completion["choices"]] == [
        (0, "a"),
        (1, "b"),
    ]
    assert usage is None
    assert usage_of({"usageMetadata": {"promptTokenCount": 3}}) == Usage(3, 0)


@pytest.mark.parametrize("data", [[], {"error": {"code": 500}}, {"modelVersion": "m"}])
def test_what_is_not_a_response_raises_value_error(data: Any) -> None:
    with pytest.raises(ValueError, match="GenerateContentResponse"):
        translate_response(data)


# --- thought signatures -------------------------------------------------------------------------


def echoed(completion: dict[str, Any]) -> dict[str, Any]:
    """The assistant message as an OpenAI client sends it back: known fields only."""
    message = completion["choices"][0]["message"]
    return {key: message[key] for key in ("role", "content", "tool_calls") if key in message}


def test_signatures_survive_a_client_that_echoes_the_assistant_message() -> None:
    parts: list[dict[str, Any]] = [
        {"text": "I will check.", "thoughtSignature": TEXT_SIGNATURE},
        {"functionCall": PARIS, "thoughtSignature": SIGNATURE},
        {"functionCall": {"name": "get_time", "args": {}}},
    ]
    completion, _ = completion_of(response(parts))
    assistant = echoed(completion)
    first, second = assistant["tool_calls"]
    request = translated(
        {
            "messages": [
                user("Weather and time?"),
                assistant,
                {"role": "tool", "tool_call_id": first["id"], "content": "sunny"},
                {"role": "tool", "tool_call_id": second["id"], "content": "noon"},
            ]
        }
    )
    assert request["contents"][1] == {
        "role": "model",
        "parts": [
            {"text": "I will check.", "thoughtSignature": TEXT_SIGNATURE},
            {
                "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                "thoughtSignature": SIGNATURE,
            },
            {"functionCall": {"name": "get_time", "args": {}}},
        ],
    }


def test_a_text_signature_rides_on_the_first_call_without_its_own() -> None:
    parts: list[dict[str, Any]] = [
        {"text": "Checking.", "thoughtSignature": TEXT_SIGNATURE},
        {"functionCall": {"name": "f", "args": {}}},
    ]
    completion, _ = completion_of(response(parts))
    (call,) = completion["choices"][0]["message"]["tool_calls"]
    assert decode_call_id(call["id"]) == Signature(TEXT_SIGNATURE, on_text=True)
    request = translated(
        {
            "messages": [
                user(),
                echoed(completion),
                {"role": "tool", "tool_call_id": call["id"], "content": "ok"},
            ]
        }
    )
    assert request["contents"][1]["parts"] == [
        {"text": "Checking.", "thoughtSignature": TEXT_SIGNATURE},
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": SKIP_SIGNATURE},
    ]


def test_gemini_openai_extra_content_signatures_are_accepted() -> None:
    call = {**WEATHER_CALL, "extra_content": {"google": {"thought_signature": SIGNATURE}}}
    request = translated(
        {
            "messages": [
                user(),
                {"role": "assistant", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_abc", "content": "x"},
            ]
        }
    )
    assert request["contents"][1]["parts"][0]["thoughtSignature"] == SIGNATURE


@given(st.text(min_size=1), st.booleans(), st.from_regex(r"[0-9a-f]{12}", fullmatch=True))
def test_any_signature_survives_encode_and_decode(value: str, on_text: bool, tag: str) -> None:
    call_id = encode_call_id(tag, Signature(value, on_text=on_text))
    assert SAFE_ID.fullmatch(call_id)
    assert call_id.startswith(f"call_{tag}_")
    assert decode_call_id(call_id) == Signature(value, on_text=on_text)


@given(st.binary(min_size=1, max_size=4096))
def test_a_base64_signature_costs_its_own_length_plus_twenty(raw: bytes) -> None:
    value = base64.b64encode(raw).decode()
    call_id = encode_call_id("0123456789ab", Signature(value))
    assert len(call_id) == 20 + len(value.rstrip("="))
    assert decode_call_id(call_id) == Signature(value)


@given(st.text())
def test_decoding_any_id_never_raises(call_id: str) -> None:
    decoded = decode_call_id(call_id)
    assert decoded is None or decoded.value


def test_ids_of_other_providers_carry_no_signature() -> None:
    assert decode_call_id("call_abc") is None
    assert decode_call_id("call_0123456789ab") is None
    assert decode_call_id("call_0123456789ab_caA") is None  # a payload that no base64 can be
    assert decode_call_id(None) is None
    assert encode_call_id("0123456789ab", None) == "call_0123456789ab"


# --- streams ------------------------------------------------------------------------------------


def event(parts: list[dict[str, Any]], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
    if finish is not None:
        candidate["finishReason"] = finish
    return gemini_checked(
        {
            "candidates": [candidate],
            "modelVersion": "gemini-2.5-flash",
            "responseId": "stream-1",
            **extra,
        }
    )


def merged(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The stream's events as one response: every part, the last event's finish and usage."""
    parts = [part for e in events for part in e["candidates"][0]["content"]["parts"]]
    finish = events[-1]["candidates"][0]["finishReason"]
    candidate = {"content": {"role": "model", "parts": parts}, "finishReason": finish}
    return gemini_checked({**events[-1], "candidates": [candidate]})


STREAM_EVENTS = [
    event([{"text": "Pondering", "thought": True}], usageMetadata={"promptTokenCount": 12}),
    event([{"text": "Let me "}]),
    event([{"text": "check."}]),
    event([{"functionCall": PARIS, "thoughtSignature": SIGNATURE}]),
    event([{"functionCall": {"name": "get_time", "args": {}}}], "STOP", usageMetadata=USAGE),
]


@pytest.mark.parametrize("wants_usage", [True, False])
def test_a_stream_becomes_openai_chunks_ending_in_done(wants_usage: bool) -> None:
    out, fold = fold_bytes(sse(STREAM_EVENTS), [], wants_usage=wants_usage)
    message = assemble(out)
    assert message["content"] == "Let me check."
    assert [call["function"] for call in message["tool_calls"]] == [
        {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"name": "get_time", "arguments": "{}"},
    ]
    assert decode_call_id(message["tool_calls"][0]["id"]) == Signature(SIGNATURE)
    assert message["finish_reason"] == "tool_calls"
    assert (message["usage"] is not None) is wants_usage
    assert fold.done
    assert fold.usage == Usage(12, 37)
    pieces = ["Let me ", "check.", '{"city":"Paris"}', "{}"]
    assert fold.completion_tokens == sum(map(estimate_text, pieces))


def test_a_stream_assembles_to_the_same_message_as_the_whole_response() -> None:
    out, _ = fold_bytes(sse(STREAM_EVENTS), [], wants_usage=True)
    completion, _ = completion_of(merged(STREAM_EVENTS))
    message = assemble(out)
    choice = completion["choices"][0]
    assert message["tool_calls"] == choice["message"]["tool_calls"]
    assert message["content"] == choice["message"]["content"]
    assert message["usage"] == completion["usage"]


def test_the_first_chunk_is_the_role_and_every_chunk_names_the_stream() -> None:
    state, chunks = stream_step(StreamState(model="fallback", created=5), STREAM_EVENTS[1])
    assert [chunk["choices"][0]["delta"] for chunk in chunks] == [
        {"role": "assistant"},
        {"content": "Let me "},
    ]
    assert {(c["id"], c["model"], c["created"]) for c in chunks} == {
        ("chatcmpl-stream-1", "gemini-2.5-flash", 5)
    }
    assert not state.finished
    finished, _ = stream_step(state, STREAM_EVENTS[-1])
    assert finished.finished
    assert stream_step(finished, STREAM_EVENTS[2]) == (finished, [])  # after the end: nothing


def test_a_blocked_prompt_streams_a_content_filter_finish() -> None:
    blocked = gemini_checked({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})
    out, fold = fold_bytes(sse([blocked]), [], wants_usage=False)
    message = assemble(out)
    assert message["finish_reason"] == "content_filter"
    assert message["content"] is None
    assert fold.done


def test_a_mid_stream_error_raises_stream_error_with_geminis_message() -> None:
    fold = GeminiStreamFold(client_wants_usage=False)
    assert fold.step(Decoder().feed(sse(STREAM_EVENTS[:1]))[0])
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    with pytest.raises(StreamError, match=r"^The model is overloaded\.$"):
        fold.step(Event(json.dumps(error)))
    with pytest.raises(StreamError):
        fold.step(Event("not json"))


def test_events_without_data_are_ignored() -> None:
    fold = GeminiStreamFold(client_wants_usage=False)
    assert fold.step(Event("")) == []
    assert fold.step(Event("[DONE]")) == []
    assert not fold.done


# --- properties ---------------------------------------------------------------------------------

signatures = st.binary(min_size=1, max_size=64).map(lambda raw: base64.b64encode(raw).decode())
json_scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
arguments = st.dictionaries(st.text(max_size=6), json_values, max_size=3)


@st.composite
def stream_parts(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "thought", "call", "signature"]))
    part: dict[str, Any]
    if kind == "text":
        part = {"text": draw(st.text(min_size=1, max_size=12))}
    elif kind == "thought":
        part = {"text": draw(st.text(max_size=12)), "thought": True}
    elif kind == "call":
        name = draw(st.sampled_from(["get_weather", "get_time", "search"]))
        part = {"functionCall": {"name": name, "args": draw(arguments)}}
    else:
        part = {"text": ""}
    if kind == "signature" or draw(st.booleans()):
        part["thoughtSignature"] = draw(signatures)
    return part


@st.composite
def gemini_streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    bodies = draw(st.lists(st.lists(stream_parts(), max_size=3), min_size=1, max_size=5))
    finish = draw(st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY", "MALFORMED_FUNCTION_CALL"]))
    prompt = draw(st.integers(0, 10_000))
    events = []
    for position, parts in enumerate(bodies):
        last = position == len(bodies) - 1
        meta = {"promptTokenCount": prompt, "candidatesTokenCount": position}
        if last:
            meta = {**meta, "thoughtsTokenCount": draw(st.integers(0, 500))}
        events.append(event(parts, finish if last else None, usageMetadata=meta))
    return events


@given(
    gemini_streams(),
    st.lists(st.integers(0, 10_000), max_size=12),
    st.booleans(),
    st.sampled_from(["\n", "\r\n"]),
)
def test_any_split_of_a_stream_assembles_the_same_message(
    events: list[dict[str, Any]], cuts: list[int], wants_usage: bool, newline: str
) -> None:
    wire = sse(events, newline=newline)
    out, fold = fold_bytes(wire, [cut % (len(wire) + 1) for cut in cuts], wants_usage=wants_usage)
    whole, _ = fold_bytes(wire, [], wants_usage=wants_usage)
    assert out == whole
    message = assemble(out)

    # The same parts as one response translate to the same message, ids included.
    completion, usage = completion_of(merged(events))
    expected = completion["choices"][0]
    # A client assembles no content deltas as None; the unstreamed answer says "" there.
    assert (message["content"] or "") == (expected["message"]["content"] or "")
    assert message["tool_calls"] == expected["message"].get("tool_calls", [])
    assert message["finish_reason"] == expected["finish_reason"]
    assert message["usage"] == (completion["usage"] if wants_usage else None)
    assert fold.done
    assert fold.usage == usage
    # Estimated piece by piece: at least the estimate of the whole (estimates are subadditive).
    calls = sum(estimate_text(call["function"]["arguments"]) for call in message["tool_calls"])
    assert fold.completion_tokens >= estimate_text(message["content"] or "") + calls


schema_keys = st.sampled_from(
    ["type", "properties", "items", "required", "enum", "const", "anyOf", "oneOf", "allOf",
     "$ref", "$defs", "definitions", "format", "nullable", "description", "title", "default",
     "additionalProperties", "minimum", "maxLength", "minItems", "prefixItems", "$schema"]
)  # fmt: skip
schema_values = st.one_of(
    st.sampled_from(["object", "string", "integer", "number", "boolean", "array", "null"]),
    st.lists(st.sampled_from(["object", "string", "null", "integer"]), max_size=3),
    st.sampled_from(["#", "#/$defs/A", "#/definitions/B", "#/properties/a", "#/x/0", "date-time"]),
    json_scalars,
)
schemas = st.recursive(
    schema_values,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(schema_keys | st.text(max_size=3), inner, max_size=5)
    ),
    max_leaves=25,
)


@given(schemas, st.booleans())
def test_cleaning_any_schema_never_raises_and_gemini_accepts_the_result(
    schema: Any, ordering: bool
) -> None:
    cleaned = clean_schema(schema, ordering=ordering)
    genai.Schema.model_validate_json(json.dumps(cleaned, allow_nan=False))


texts = st.text(max_size=10)
SIGNED_ID = encode_call_id("0123456789ab", Signature(SIGNATURE))
# Mostly valid values, now and then one Gemini cannot take (refused, never raised).
urls = st.sampled_from(
    ["data:image/png;base64,iVBORw0KGgo=", "https://x.test/a.png", "http://x.test/b"] * 3
    + ["ftp://x.test/c", "data:,x"]
)
content_parts = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, texts),
    st.builds(lambda url: {"type": "image_url", "image_url": {"url": url}}, urls),
    st.just({"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "mp3"}}),
)
contents = texts | st.lists(content_parts, max_size=3)
tool_call_entries = st.builds(
    lambda call_id, name, args: {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": args},
    },
    st.sampled_from(["call_a", "call_b", SIGNED_ID]),
    st.sampled_from(["get_weather", "search"]),
    st.one_of(*[arguments.map(json.dumps)] * 4, st.sampled_from(["", "{"])),
)


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Conversations whose tool results mostly answer the calls before them."""
    out: list[dict[str, Any]] = []
    kinds = [*["system", "user", "user", "assistant", "calls", "calls", "function"] * 3, "stray"]
    for kind in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=6)):
        if kind == "system":
            role = draw(st.sampled_from(["system", "developer"]))
            out.append({"role": role, "content": draw(texts | st.lists(content_parts, max_size=2))})
        elif kind == "user":
            out.append({"role": "user", "content": draw(contents)})
        elif kind == "assistant":
            out.append({"role": "assistant", "content": draw(texts)})
        elif kind == "calls":
            calls = draw(st.lists(tool_call_entries, min_size=1, max_size=2))
            content = draw(st.none() | texts)
            out.append({"role": "assistant", "content": content, "tool_calls": calls})
            for call in calls:
                out.append({"role": "tool", "tool_call_id": call["id"], "content": draw(texts)})
        elif kind == "function":
            out.append({"role": "function", "name": "search", "content": draw(texts)})
        else:
            out.append({"role": "tool", "tool_call_id": "call_unknown", "content": draw(texts)})
    return out


object_schemas = st.builds(
    lambda properties, required: {"type": "object", "properties": properties, "required": required},
    st.dictionaries(st.text(max_size=4), schemas, max_size=4),
    st.lists(st.text(max_size=4), max_size=3),
)
tools = st.lists(
    st.builds(
        declaration,
        st.sampled_from(["get_weather", "search", "ns.lookup:v2", "_x-y", "9lives"] * 2)
        | st.from_regex(r"[A-Za-z_][A-Za-z0-9_.:-]{0,9}", fullmatch=True),
        st.one_of(
            object_schemas, object_schemas, st.dictionaries(schema_keys, schemas, max_size=4)
        ),
    ),
    max_size=3,
)
choices = st.sampled_from(
    [None, "none", "auto", "required", {"type": "function", "function": {"name": "search"}}]
)
formats = st.one_of(
    st.none(),
    st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
    st.builds(
        lambda s: {"type": "json_schema", "json_schema": {"name": "x", "schema": s}},
        object_schemas | schemas,
    ),
)
options = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "max_tokens": st.integers(1, 10**6),
        "max_completion_tokens": st.integers(1, 10**6),
        "stop": st.none() | texts | st.lists(texts, max_size=6),
        "seed": st.integers(-(2**63), 2**63),
        "n": st.just(1),
        "presence_penalty": st.sampled_from([0, 0.0, 0, 1.5]),
        "logit_bias": st.sampled_from([{}, {}, {}, {"1": 2}]),
        "reasoning_effort": st.sampled_from(["low", "high", "none", "minimal", "huge"]),
        "parallel_tool_calls": st.booleans(),
        "user": texts,
    },
)


@given(conversations(), tools, choices, formats, options)
def test_translating_any_valid_body_never_raises_and_gemini_accepts_it(
    conversation: list[dict[str, Any]],
    tool_list: list[dict[str, Any]],
    choice: Any,
    response_format: Any,
    extra: dict[str, Any],
) -> None:
    body: dict[str, Any] = {"model": "auto", "messages": conversation, **extra}
    if tool_list:
        body["tools"] = tool_list
    if choice is not None:
        body["tool_choice"] = choice
    if response_format is not None:
        body["response_format"] = response_format
    # inspect_request raises TypeError on a dict tool_choice today (`dict in frozenset`), so it
    # checks the body without it; the choices drawn here are all valid ones.
    if not isinstance(inspect_request({**body, "tool_choice": None}), ChatShape):
        return
    result = translate_request(body)
    if isinstance(result, Untranslatable):
        assert result.param
        assert result.message
        return
    check_gemini_request(result)
    for content in result["contents"]:
        calls = [part for part in content["parts"] if "functionCall" in part]
        assert not calls or calls[0].get("thoughtSignature"), "the first call is signed"


def test_a_required_list_holding_non_names_is_cleaned_not_fatal() -> None:
    # Found by Hypothesis in CI: `required` entries that are not strings (here a list).
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": [[], "city"],
    }
    assert clean_schema(schema)["required"] == ["city"]
