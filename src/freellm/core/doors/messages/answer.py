"""A whole chat answer as the door's own: a ``chat.completion`` as an Anthropic ``Message``
(:func:`message_of`), and errors in Anthropic's shape (:func:`error_body`). The stream
(:mod:`~freellm.core.doors.messages.stream`) reads deltas and ends with ``stop_reason`` through
the same functions, so a streamed answer says what the whole one would."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from freellm.core import wire
from freellm.core.doors import DoorError, Translated
from freellm.core.doors.messages.common import is_int
from freellm.core.tokens import estimate_text

ERROR_TYPES: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
"""Anthropic's error type for a status; others are ``invalid_request_error`` (4xx) or
``api_error``."""

FINISH_REASONS: Final[Mapping[str, str]] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status (see the package's docstring)."""
    known = ERROR_TYPES.get(status)
    if known is not None:
        return known
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_body(error: DoorError) -> bytes:
    """``error`` in Anthropic's shape, its type from its status, freellm's message kept."""
    return error_json(error_type(error.status), error.message)


def error_json(type_: str, message: str) -> bytes:
    return wire.dumps({"type": "error", "error": {"type": type_, "message": message}})


def message_id(request_id: str) -> str:
    """The Message id of a request: ``req_X`` becomes ``msg_X``."""
    return "msg_" + request_id.removeprefix("req_")


def tool_input(arguments: object) -> dict[str, Any]:
    """A tool call's ``input``: its arguments parsed; ``{}`` for none, and
    ``{"arguments": <the text>}`` for arguments that are not a JSON object."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    text = arguments if isinstance(arguments, str) else wire.dumps(arguments).decode()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"arguments": text}


def reasoning_of(message: Mapping[str, Any]) -> str:
    for field in ("reasoning_content", "reasoning"):
        value = message.get(field)
        if isinstance(value, str) and value:
            return value
    return ""


def stop_of(
    finish: object, explicit: object, text: str, stop_sequences: tuple[str, ...], *, calls: bool
) -> tuple[str, str | None]:
    """``stop_reason`` and ``stop_sequence`` (see the package's docstring)."""
    if calls:
        return "tool_use", None
    reason = FINISH_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"
    if reason == "tool_use":  # said without a call: there is nothing to use
        reason = "end_turn"
    if reason != "end_turn" or not stop_sequences:
        return reason, None
    if isinstance(explicit, str) and explicit in stop_sequences:
        return "stop_sequence", explicit
    for sequence in stop_sequences:
        if text.endswith(sequence):
            return "stop_sequence", sequence
    return reason, None


def _call_id(call: Mapping[str, Any], base: str, position: int) -> str:
    call_id = call.get("id")
    return call_id if isinstance(call_id, str) and call_id else f"toolu_{base}_{position}"


def message_of(
    completion: Mapping[str, Any], *, id: str, translated: Translated
) -> dict[str, Any] | None:
    """A ``chat.completion`` as an Anthropic ``Message``, or None when it holds no choice."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, dict):
        return None
    message = choice.get("message")
    if not isinstance(message, dict):
        message = {}
    content: list[dict[str, Any]] = []
    reasoning = reasoning_of(message)
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    text = text if isinstance(text, str) else ""
    if text:
        content.append({"type": "text", "text": text})
    raw_calls = message.get("tool_calls")
    calls = [call for call in raw_calls or () if isinstance(call, dict)]
    base = id.removeprefix("msg_")
    arguments = []
    for position, call in enumerate(calls):
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        name = function.get("name")
        arguments.append(str(function.get("arguments") or ""))
        content.append(
            {
                "type": "tool_use",
                "id": _call_id(call, base, position),
                "name": name if isinstance(name, str) else "",
                "input": tool_input(function.get("arguments")),
            }
        )
    stop_reason, stop_sequence = stop_of(
        choice.get("finish_reason"),
        choice.get("stop_reason") or choice.get("matched_stop"),
        text,
        stop_sequences_of(translated),
        calls=bool(calls),
    )
    usage = completion.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    prompt = usage.get("prompt_tokens")
    output = usage.get("completion_tokens")
    model = completion.get("model")
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model if isinstance(model, str) else translated.body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": prompt if is_int(prompt) else translated.shape.prompt_tokens,
            "output_tokens": output
            if is_int(output)
            else estimate_text(reasoning + text + "".join(arguments)),
        },
    }


def stop_sequences_of(translated: Translated) -> tuple[str, ...]:
    stop = translated.body.get("stop")
    return tuple(stop) if isinstance(stop, list) else ()
