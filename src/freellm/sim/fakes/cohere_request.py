"""Reading a Cohere v2 chat body: the checks the fake makes, and the neutral request.

Known fields (Cohere's ``V2ChatRequest``): ``model``, ``messages``, ``tools``, ``strict_tools``,
``documents``, ``citation_options``, ``response_format``, ``safety_mode``, ``max_tokens``,
``stop_sequences``, ``temperature``, ``seed``, ``frequency_penalty``, ``presence_penalty``, ``k``,
``p``, ``logprobs``, ``tool_choice``, ``thinking``, ``priority`` and ``stream``. Any other field
(``stream_options`` for one) is refused the way Cohere refuses it: 422 ``{"message": "unknown
field: parameter stream_options is not a valid field. For proper usage, please refer to
https://docs.cohere.com/reference/chat"}``.

Other refusals are 400 ``{"message": "invalid request: ..."}`` in the fake's words: no model; no
messages; a role other than system, user, assistant and tool; a user or system message without
content; an assistant message with neither content nor tool calls, or a malformed tool call; a
tool message whose ``tool_call_id`` answers no earlier tool call; tools that are not functions
with a name; ``tool_choice`` other than REQUIRED and NONE, or REQUIRED without tools;
``response_format`` other than text and json_object; ``max_tokens`` that is not a positive
integer; more than five ``stop_sequences``; ``stream`` that is not a boolean.

The neutral :class:`~freellm.sim.fakes.replies.ChatRequest` keeps the messages (Cohere's are
OpenAI-shaped: text or text parts, ``tool_calls``, ``tool_call_id``), with an assistant's
``tool_plan`` counted as its text; REQUIRED reads as required, NONE as none; ``json_object``
turns JSON mode on, with its ``json_schema``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from freellm.sim.fakes.replies import ChatRequest, text_of

FIELDS: Final = frozenset(
    {
        "model",
        "messages",
        "tools",
        "strict_tools",
        "documents",
        "citation_options",
        "response_format",
        "safety_mode",
        "max_tokens",
        "stop_sequences",
        "temperature",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "k",
        "p",
        "logprobs",
        "tool_choice",
        "thinking",
        "priority",
        "stream",
    }
)
ROLES: Final = ("system", "user", "assistant", "tool")
DOCS: Final = "https://docs.cohere.com/reference/chat"


class Refused(Exception):
    """Cohere refuses the body with HTTP `status` and ``{"message": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _invalid(reason: str) -> Refused:
    return Refused(f"invalid request: {reason}")


def _has_content(content: Any) -> bool:
    return (isinstance(content, str) and bool(content)) or (
        isinstance(content, list) and bool(content) and all(isinstance(c, dict) for c in content)
    )


def _check_tool_calls(calls: Any, index: int) -> list[str]:
    """The ids of an assistant message's tool calls; raises :class:`Refused` if one is bad."""
    if not isinstance(calls, list):
        raise _invalid(f"messages[{index}].tool_calls must be a list")
    ids = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(call.get("id") if isinstance(call, dict) else None, str)
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments", ""), str)
        ):
            raise _invalid(f"messages[{index}].tool_calls must have an id and a named function")
        ids.append(call["id"])
    return ids


def _messages(raw: Any) -> list[Mapping[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise _invalid("messages must be a non-empty list")
    messages: list[Mapping[str, Any]] = []
    called: set[str] = set()
    for index, message in enumerate(raw):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            raise _invalid(f"messages[{index}].role must be one of {', '.join(ROLES)}")
        content = message.get("content")
        if role in ("system", "user") and not _has_content(content):
            raise _invalid(f"messages[{index}] must have content")
        if role == "assistant":
            calls = message.get("tool_calls")
            if calls is None and not _has_content(content):
                raise _invalid(f"messages[{index}] must have content or tool_calls")
            called.update(_check_tool_calls(calls or [], index))
            plan = message.get("tool_plan")
            text = text_of(content) + (plan if isinstance(plan, str) else "")
            messages.append({"role": role, "content": text, "tool_calls": calls or []})
            continue
        if role == "tool" and message.get("tool_call_id") not in called:
            raise _invalid(f"messages[{index}].tool_call_id answers no earlier tool call")
        messages.append({"role": role, "content": content})
    return messages


def _tools(raw: Any) -> list[Mapping[str, Any]]:
    tools = raw or []
    if not isinstance(tools, list) or not all(
        isinstance(tool, dict)
        and tool.get("type") == "function"
        and isinstance(tool.get("function"), dict)
        and isinstance(tool["function"].get("name"), str)
        for tool in tools
    ):
        raise _invalid("tools must be a list of functions with a name")
    return tools


def _tool_choice(raw: Any, tools: Sequence[Mapping[str, Any]]) -> str | None:
    if raw not in (None, "REQUIRED", "NONE"):
        raise _invalid("tool_choice must be REQUIRED or NONE")
    if raw == "REQUIRED" and not tools:
        raise _invalid("tool_choice REQUIRED needs tools")
    return {"REQUIRED": "required", "NONE": "none"}.get(raw) if raw is not None else None


def _json_format(raw: Any) -> tuple[bool, Any]:
    """Whether JSON mode is on, and its schema."""
    if raw is None:
        return False, None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind not in ("text", "json_object"):
        raise _invalid("response_format.type must be text or json_object")
    return kind == "json_object", raw.get("json_schema")


def _max_tokens(raw: Any) -> int | None:
    if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int) or raw < 1):
        raise _invalid("max_tokens must be a positive integer")
    return raw


def _stop(raw: Any) -> tuple[str, ...]:
    stop = raw or []
    if not isinstance(stop, list) or len(stop) > 5 or not all(isinstance(s, str) for s in stop):
        raise _invalid("stop_sequences must be a list of at most 5 strings")
    return tuple(stop)


def parse_cohere(body: Any) -> ChatRequest:
    """Check a ``/v2/chat`` body; raises :class:`Refused` with Cohere's refusal."""
    if not isinstance(body, dict):
        raise _invalid("the body must be a JSON object")
    for name in body:
        if name not in FIELDS:
            message = f"unknown field: parameter {name} is not a valid field. "
            raise Refused(message + f"For proper usage, please refer to {DOCS}", 422)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model must be a non-empty string")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid("stream must be a boolean")
    tools = _tools(body.get("tools"))
    json_mode, schema = _json_format(body.get("response_format"))
    return ChatRequest(
        model=model,
        messages=tuple(_messages(body.get("messages"))),
        stream=stream,
        max_tokens=_max_tokens(body.get("max_tokens")),
        tools=tuple(tools),
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        stop=_stop(body.get("stop_sequences")),
        json_mode=json_mode,
        json_schema=schema,
    )
