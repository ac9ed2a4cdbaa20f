"""A Responses request as a chat completion request: its fields, its tools, its refusals."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from freellm.core.chat import BadRequest, inspect_request
from freellm.core.doors import DoorError, Translated
from freellm.core.doors.responses.common import bad, unsupported
from freellm.core.doors.responses.items import input_messages

TOOL_CHOICES: Final = frozenset({"none", "auto", "required"})
EFFORTS: Final = frozenset({"none", "minimal", "low", "medium", "high", "xhigh", "max"})
SUMMARIES: Final = frozenset({"auto", "concise", "detailed"})

HARMLESS_INCLUDES: Final = frozenset(
    {"reasoning.encrypted_content", "message.input_image.image_url"}
)
"""``include`` values freellm honours by having nothing to add: it writes no reasoning items, and
an input image's URL is the client's own. Codex sends the first with every request."""

_PARAMS: Final = {
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "session_id": "prompt_cache_key",
    "response_format": "text.format",
    "reasoning_effort": "reasoning.effort",
}
"""The chat request's fields that come from a differently named field of the door's."""


def translate(
    body: object, *, previous: Sequence[Mapping[str, Any]] | None = None
) -> Translated | DoorError:
    """``body`` (decoded JSON) as a chat completion request, or why it cannot be one.

    ``previous`` is the stored conversation of the response that ``previous_response_id``
    names: chat messages, put before this turn's input (its ``instructions`` are not carried
    over, as OpenAI documents). Never raises.
    """
    if not isinstance(body, dict):
        return bad("The request body must be a JSON object.")
    refused = _refused(body)
    if refused is not None:
        return refused

    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        return bad("`instructions` must be a string.", "instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    messages += [dict(message) for message in previous or ()]
    turn = input_messages(body.get("input"))
    if isinstance(turn, DoorError):
        return turn
    messages += turn
    if not messages:
        return bad("`input` is required: a string or an array of input items.", "input")

    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    options = _options(body)
    if isinstance(options, DoorError):
        return options
    chat.update(options)
    shape = inspect_request(chat)
    if isinstance(shape, BadRequest):
        return DoorError(400, shape.message, param=_door_param(shape.param), code=shape.code)
    return Translated(chat, shape)


def wants_store(body: object) -> bool:
    """Whether the response is to be stored for ``previous_response_id`` and ``GET``: OpenAI
    stores unless told ``store: false``."""
    return isinstance(body, dict) and body.get("store", True) is not False


def _refused(body: Mapping[str, Any]) -> DoorError | None:
    """The first field that asks for what freellm cannot do, as its 400."""
    if body.get("background") is True:
        return unsupported(
            "`background` responses are not supported: freellm answers while the request is open.",
            "background",
        )
    if body.get("conversation") is not None:
        return unsupported(
            "`conversation` is not supported: continue a conversation with `previous_response_id`.",
            "conversation",
        )
    if body.get("prompt") is not None:
        return unsupported(
            "`prompt` templates are not supported: send `instructions` and `input`.", "prompt"
        )
    top_logprobs = body.get("top_logprobs")
    if top_logprobs is not None and top_logprobs != 0:
        return unsupported("`top_logprobs` is not supported.", "top_logprobs")
    include = body.get("include")
    if include is not None:
        if not isinstance(include, list):
            return bad("`include` must be an array of strings.", "include")
        for index, value in enumerate(include):
            if not isinstance(value, str) or value not in HARMLESS_INCLUDES:
                shown = value if isinstance(value, str) else json.dumps(value)
                return unsupported(
                    f"`include` value {shown} is not supported: freellm can include only "
                    f"{', '.join(sorted(HARMLESS_INCLUDES))}.",
                    f"include[{index}]",
                )
    return None


def _options(body: Mapping[str, Any]) -> dict[str, Any] | DoorError:
    """The chat request's fields besides ``model`` and ``messages``."""
    chat: dict[str, Any] = {}
    for name in ("temperature", "top_p", "user"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    stream = body.get("stream")
    if stream is not None:
        chat["stream"] = stream
        if stream is True:
            chat["stream_options"] = {"include_usage": True}  # a response always carries usage

    for name in ("store", "parallel_tool_calls"):
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            return bad(f"`{name}` must be a boolean.", name)
    for name in ("previous_response_id", "prompt_cache_key"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            return bad(f"`{name}` must be a string.", name)
    if body.get("prompt_cache_key"):
        chat["session_id"] = body["prompt_cache_key"]  # names the conversation: Codex sends it
    truncation = body.get("truncation")
    if truncation is not None and truncation not in ("auto", "disabled"):
        return bad('`truncation` must be "auto" or "disabled".', "truncation")
    metadata = body.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(value, str) for value in metadata.values())
    ):
        return bad("`metadata` must be an object of strings.", "metadata")

    tools = _tools(body.get("tools"))
    if isinstance(tools, DoorError):
        return tools
    if tools:
        chat["tools"] = tools
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    choice = body.get("tool_choice")
    if choice is not None:
        translated = _tool_choice(choice)
        if isinstance(translated, DoorError):
            return translated
        chat["tool_choice"] = translated

    text = body.get("text")
    if text is not None:
        if not isinstance(text, dict):
            return bad("`text` must be an object.", "text")
        form = text.get("format")
        if form is not None:
            response_format = _format(form)
            if isinstance(response_format, DoorError):
                return response_format
            if response_format is not None:
                chat["response_format"] = response_format

    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            return bad("`reasoning` must be an object.", "reasoning")
        effort = reasoning.get("effort")
        if effort is not None:
            if not isinstance(effort, str) or effort not in EFFORTS:
                return bad(
                    f"`reasoning.effort` must be one of {', '.join(sorted(EFFORTS))}.",
                    "reasoning.effort",
                )
            chat["reasoning_effort"] = effort
        for name in ("summary", "generate_summary"):
            summary = reasoning.get(name)
            if summary is not None and not (isinstance(summary, str) and summary in SUMMARIES):
                return bad(
                    f"`reasoning.{name}` must be auto, concise or detailed.", f"reasoning.{name}"
                )
    return chat


def _tools(value: object) -> list[dict[str, Any]] | DoorError:
    if value is None:
        return []
    if not isinstance(value, list):
        return bad("`tools` must be an array.", "tools")
    tools: list[dict[str, Any]] = []
    for index, tool in enumerate(value):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            return bad(f"`{where}` must be an object.", where)
        kind = tool.get("type")
        if kind != "function":
            shown = kind if isinstance(kind, str) else json.dumps(kind)
            return unsupported(
                f"`{where}.type` {shown} is not supported: freellm serves function tools only "
                "(the free tiers run no built-in tools).",
                f"{where}.type",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            return bad(f"`{where}.name` must be a non-empty string.", f"{where}.name")
        function: dict[str, Any] = {"name": name}
        for field, types, what in (
            ("description", str, "a string"),
            ("parameters", dict, "a JSON Schema object"),
            ("strict", bool, "a boolean"),
        ):
            given = tool.get(field)
            if given is None:
                continue
            if not isinstance(given, types):
                return bad(f"`{where}.{field}` must be {what}.", f"{where}.{field}")
            function[field] = given
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(choice: object) -> str | dict[str, Any] | DoorError:
    if isinstance(choice, str) and choice in TOOL_CHOICES:
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if isinstance(name, str) and name:
            return {"type": "function", "function": {"name": name}}
    if isinstance(choice, dict) and isinstance(choice.get("type"), str):
        return unsupported(
            f"`tool_choice` of type {choice['type']} is not supported: freellm serves function "
            "tools only.",
            "tool_choice",
        )
    return bad(
        '`tool_choice` must be "none", "auto", "required" or {"type": "function", "name": ...}.',
        "tool_choice",
    )


def _format(form: object) -> dict[str, Any] | DoorError | None:
    """``text.format`` as the chat request's ``response_format`` (None for plain text)."""
    kind = form.get("type") if isinstance(form, dict) else None
    if not isinstance(form, dict) or kind not in ("text", "json_object", "json_schema"):
        return bad(
            "`text.format.type` must be text, json_object or json_schema.", "text.format.type"
        )
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    name = form.get("name")
    if not isinstance(name, str) or not name:
        return bad("`text.format.name` must be a non-empty string.", "text.format.name")
    schema = form.get("schema")
    if not isinstance(schema, dict):
        return bad("`text.format.schema` must be a JSON Schema object.", "text.format.schema")
    spec: dict[str, Any] = {"name": name, "schema": schema}
    for field, types, what in (("strict", bool, "a boolean"), ("description", str, "a string")):
        given = form.get(field)
        if given is None:
            continue
        if not isinstance(given, types):
            return bad(f"`text.format.{field}` must be {what}.", f"text.format.{field}")
        spec[field] = given
    return {"type": "json_schema", "json_schema": spec}


def _door_param(param: str | None) -> str | None:
    """A chat request's field, named as the door's client named it."""
    if param is None:
        return None
    head = param.split(".", 1)[0].split("[", 1)[0]
    if head == "messages":
        return "input"  # the messages were built from input items (and checked as such)
    if head == "tools":
        return param.replace(".function", "", 1)
    if head in _PARAMS:
        return _PARAMS[head]
    return param
