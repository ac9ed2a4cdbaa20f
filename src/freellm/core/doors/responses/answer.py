"""The Responses API's objects, as a response holds them: errors, usage, the request's echo and
output items. The shapes only; :mod:`~freellm.core.doors.responses.face` decides when each is
written."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from freellm.core import wire
from freellm.core.doors import DoorError


def not_found(response_id: str, *, param: str = "response_id") -> DoorError:
    """The 404 for a response id that is not stored (never was, was deleted, was pruned, or
    was made with ``store: false``); ``param`` names where the id came from
    (``previous_response_id`` for a conversation continued from it)."""
    return DoorError(404, f"Response with id '{response_id}' not found.", param=param)


def error_body(error: DoorError) -> bytes:
    """``error`` in OpenAI's shape, which the Responses API shares."""
    return wire.error_body(error.message, error.type, param=error.param, code=error.code)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def usage_of(usage: object) -> dict[str, Any] | None:
    """A chat answer's ``usage`` as a response's (None when it has none)."""
    if not isinstance(usage, dict):
        return None
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    total = usage.get("total_tokens")
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = prompt_details.get("cached_tokens") if isinstance(prompt_details, dict) else 0
    thought = (
        completion_details.get("reasoning_tokens") if isinstance(completion_details, dict) else 0
    )
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": _int(cached), "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": _int(thought)},
        "total_tokens": _int(total) if total is not None else prompt + completion,
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def echo(request: Mapping[str, Any]) -> dict[str, Any]:
    """What a response repeats of its request, in the shape the Responses API gives it back
    (``translate`` has accepted ``request``, so its fields hold the types checked there)."""
    tools = []
    for tool in request.get("tools") or ():
        echoed = {"type": "function", "name": tool["name"]}
        for field in ("description", "parameters", "strict"):
            echoed[field] = tool.get(field)
        tools.append(echoed)
    text = _mapping(request.get("text"))
    reasoning = _mapping(request.get("reasoning"))
    metadata = request.get("metadata")
    return {
        "background": False,
        "instructions": request.get("instructions") or None,
        "max_output_tokens": request.get("max_output_tokens"),
        "metadata": metadata if isinstance(metadata, dict) else {},
        "parallel_tool_calls": request.get("parallel_tool_calls") is not False,
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": request.get("store") is not False,
        "temperature": request.get("temperature"),
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": tools,
        "top_p": request.get("top_p"),
        "truncation": request.get("truncation") or "disabled",
        "user": request.get("user"),
    }


class Item:
    """An output item being streamed: the message's text or one tool call's pieces. Mutable,
    like the SSE decoder's buffer, and local to one stream."""

    def __init__(self, kind: str, id: str, index: int, call_id: str = "", name: str = "") -> None:
        self.kind = kind
        self.id = id
        self.index = index
        self.call_id = call_id
        self.name = name
        self.pieces: list[str] = []

    def value(self, status: str) -> dict[str, Any]:
        """The item as an output item with ``status``."""
        joined = "".join(self.pieces)
        if self.kind == "message":
            return {
                "type": "message",
                "id": self.id,
                "status": status,
                "role": "assistant",
                "content": [text_part(joined)],
            }
        return {
            "type": "function_call",
            "id": self.id,
            "call_id": self.call_id,
            "name": self.name,
            "arguments": joined,
            "status": status,
        }
