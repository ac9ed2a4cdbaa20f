"""What an OpenAI chat request asks for, checked once, before routing.

:func:`inspect_request` reads a decoded ``/v1/chat/completions`` body and returns either a
:class:`ChatShape` (what routing and the dialects need to know about it) or a :class:`BadRequest`
naming the offending field in OpenAI's ``param`` style (``messages[2].content``). Fields it does not
know are left alone: OpenAI clients send many, and openai-dialect providers get them untouched.

The checks are written out by hand rather than through a schema library: they run on every request
on the hot path, and the error has to name the exact field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from freellm.core.catalog import ModelKind
from freellm.core.tokens import estimate_messages

__all__ = ["BadRequest", "ChatShape", "inspect_request"]

ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
TOOL_CHOICES: Final = frozenset({"none", "auto", "required"})
FORMATS: Final = frozenset({"text", "json_object", "json_schema"})


@attrs.frozen
class BadRequest:
    message: str
    param: str | None = None
    code: str | None = None


@attrs.frozen
class ChatShape:
    model: str
    messages: Sequence[Mapping[str, Any]]
    prompt_tokens: int
    stream: bool = False
    include_usage: bool = False  # the client asked for a usage chunk at the end of a stream
    max_tokens: int | None = None
    tools: bool = False
    vision: bool = False
    json: bool = False
    user: str | None = None
    session_id: str | None = None  # freellm's own field: names the session like X-Session-Id
    # What the request asks of a model. An embeddings request (/v1/embeddings) has no messages:
    # its prompt_tokens are its inputs', and only an embedding model serves it.
    kind: ModelKind = ModelKind.CHAT
    longest_input: int = 0  # embeddings: the estimate of the longest of its texts


def inspect_request(body: object) -> ChatShape | BadRequest:
    """Check ``body`` (decoded JSON) as a chat completion request. Never raises."""
    if not isinstance(body, dict):
        return BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return BadRequest("`model` is required and must be a non-empty string.", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return BadRequest("`messages` must be a non-empty array.", "messages")
    vision = False
    for index, message in enumerate(messages):
        problem = _check_message(message, index)
        if isinstance(problem, BadRequest):
            return problem
        vision = vision or problem

    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        return BadRequest("`stream` must be a boolean.", "stream")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            return BadRequest("`stream_options` must be an object.", "stream_options")
        flag = options.get("include_usage", False)
        if not isinstance(flag, bool):
            return BadRequest(
                "`stream_options.include_usage` must be a boolean.", "stream_options.include_usage"
            )
        include_usage = flag

    max_tokens = None
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return BadRequest(f"`{name}` must be an integer >= 1.", name)
        max_tokens = value if max_tokens is None else min(max_tokens, value)

    for name, low, high in (("temperature", 0, 2), ("top_p", 0, 1)):
        value = body.get(name)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            return BadRequest(f"`{name}` must be a number between {low} and {high}.", name)
    n = body.get("n")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            return BadRequest("`n` must be an integer >= 1.", "n")
        if n > 1:
            return BadRequest(
                "`n` > 1 is not supported: free tiers count every choice as a request. "
                "Send n separate requests instead.",
                "n",
                "unsupported_value",
            )

    tools = body.get("tools")
    if tools is not None:
        problem_ = _check_tools(tools)
        if problem_ is not None:
            return problem_
    choice = body.get("tool_choice")
    if choice is not None and not (isinstance(choice, str) and choice in TOOL_CHOICES):
        function = choice.get("function") if isinstance(choice, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return BadRequest(
                '`tool_choice` must be "none", "auto", "required" or '
                '{"type": "function", "function": {"name": ...}}.',
                "tool_choice",
            )
    wants_tools = bool(tools) and choice != "none"

    json_mode = False
    response_format = body.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if not isinstance(kind, str) or kind not in FORMATS:
            return BadRequest(
                "`response_format.type` must be text, json_object or json_schema.",
                "response_format.type",
            )
        json_mode = kind != "text"

    user = body.get("user")
    if user is not None and not isinstance(user, str):
        return BadRequest("`user` must be a string.", "user")
    session_id = body.get("session_id")
    if session_id is not None and not isinstance(session_id, str):
        return BadRequest("`session_id` must be a string.", "session_id")

    return ChatShape(
        model=model,
        messages=messages,
        prompt_tokens=estimate_messages(messages, tools if isinstance(tools, list) else None),
        stream=bool(stream),
        include_usage=include_usage,
        max_tokens=max_tokens,
        tools=wants_tools,
        vision=vision,
        json=json_mode,
        user=user,
        session_id=session_id or None,
    )


def _check_message(message: object, index: int) -> BadRequest | bool:
    """A problem with one message, or whether it carries an image."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        return BadRequest(f"`{where}` must be an object.", where)
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:  # a list or an object is not hashable
        return BadRequest(
            f"`{where}.role` must be one of {', '.join(sorted(ROLES))}.", f"{where}.role"
        )
    content = message.get("content")
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return False
        if role != "assistant":
            return BadRequest(f"`{where}.content` is required.", f"{where}.content")
        return False
    if isinstance(content, str):
        return False
    if not isinstance(content, list):
        return BadRequest(
            f"`{where}.content` must be a string or an array of content parts.", f"{where}.content"
        )
    vision = False
    for part_index, part in enumerate(content):
        part_where = f"{where}.content[{part_index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str):
            return BadRequest(f"`{part_where}.type` is required.", f"{part_where}.type")
        if kind == "text" and not isinstance(part.get("text"), str):
            return BadRequest(f"`{part_where}.text` must be a string.", f"{part_where}.text")
        if kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                return BadRequest(
                    f"`{part_where}.image_url.url` must be a string.", f"{part_where}.image_url.url"
                )
            vision = True
    return vision


def _check_tools(tools: object) -> BadRequest | None:
    if not isinstance(tools, list):
        return BadRequest("`tools` must be an array.", "tools")
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            return BadRequest(f'`{where}.type` must be "function".', f"{where}.type")
        function = tool.get("function")
        if not isinstance(function, dict):
            return BadRequest(f"`{where}.function` must be an object.", f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            return BadRequest(
                f"`{where}.function.name` must be a non-empty string.", f"{where}.function.name"
            )
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            return BadRequest(
                f"`{where}.function.parameters` must be a JSON Schema object.",
                f"{where}.function.parameters",
            )
    return None
