"""What a fake says: request checks, deterministic replies, token counts and the wire shapes.

Counting rules (exact, so tests can predict every number):

- Prompt tokens: the characters of all message text (string contents, the ``text`` of content
  parts, tool calls' names and arguments) divided by 4, rounded up, at least 1.
- A text reply is ``fake-{flavor} says: {last user text[:40]}`` (trailing space trimmed). It is
  split into words, every word after the first keeping its leading space; each word is one
  completion token and one stream chunk. ``max_completion_tokens`` (else ``max_tokens``) keeps
  the first N words and finishes with ``length``.
- A tool call is made when the request has ``tools`` and ``tool_choice`` is ``"required"`` (the
  tool named by "call <name>" in the last user message, else the first tool) or names a
  function, or when ``tool_choice`` is absent or ``"auto"``, the last message is the user's and
  it contains "call <name>" for one of the tools. Its arguments hold a placeholder for every
  property of the tool's JSON schema; it costs (characters of name + arguments) / 4 tokens,
  rounded up, at least 1, and finishes with ``tool_calls``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

JSON = dict[str, Any]
FINGERPRINT: Final = "fp_fake"
DONE: Final = b"data: [DONE]\n\n"


class BadRequest(Exception):
    """The request body breaks the OpenAI contract; `param` names the field, if one."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@attrs.frozen
class ChatRequest:
    model: str
    messages: tuple[Mapping[str, Any], ...]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    tools: tuple[Mapping[str, Any], ...]
    tool_choice: Any


def _positive_int(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"`{name}` must be a positive integer", name)
    return value


def parse_chat(body: Any) -> ChatRequest:
    """Check a chat completions body; raises :class:`BadRequest` naming the first bad field."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("`model` is required", "model")
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
    ):
        raise BadRequest("`messages` must be a non-empty list of messages with a role", "messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("`stream` must be a boolean", "stream")
    if body.get("n", 1) != 1:
        raise BadRequest("Only n = 1 is supported", "n")
    max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    tools = body.get("tools") or []
    if not isinstance(tools, list) or not all(
        isinstance(t, dict)
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
        for t in tools
    ):
        raise BadRequest("`tools` must be a list of functions with a name", "tools")
    tool_choice = body.get("tool_choice")
    if isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name")
        if wanted not in {t["function"]["name"] for t in tools}:
            raise BadRequest(f"`tool_choice` names an unknown function {wanted!r}", "tool_choice")
    elif tool_choice not in (None, "none", "auto", "required"):
        raise BadRequest("`tool_choice` must be none, auto, required or a function", "tool_choice")
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return ChatRequest(
        model=model,
        messages=tuple(messages),
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        tools=tuple(tools),
        tool_choice=tool_choice,
    )


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def count_tokens(characters: int) -> int:
    return max(1, math.ceil(characters / 4))


def prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    characters = 0
    for message in messages:
        characters += len(_text_of(message.get("content")))
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                characters += len(str(function.get("name", "")))
                characters += len(str(function.get("arguments", "")))
    return count_tokens(characters)


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


_PLACEHOLDERS: Final[Mapping[str, Any]] = {
    "integer": 1,
    "number": 1.5,
    "boolean": True,
    "array": [],
    "null": None,
}


def placeholder(schema: Any, depth: int = 0) -> Any:
    """A simple value that fits `schema`: "fake", 1, 1.5, true, [], or an object of those."""
    if not isinstance(schema, dict):
        return "fake"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties")
        if depth >= 4 or not isinstance(properties, dict):
            return {}
        return {name: placeholder(sub, depth + 1) for name, sub in properties.items()}
    return _PLACEHOLDERS.get(kind, "fake") if isinstance(kind, str) else "fake"


@attrs.frozen
class ToolCall:
    id: str
    name: str
    arguments: str


@attrs.frozen
class Reply:
    """One deterministic answer: text `pieces` (one per token) or a `tool_call`."""

    pieces: tuple[str, ...]
    tool_call: ToolCall | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _chosen_tool(request: ChatRequest) -> Mapping[str, Any] | None:
    if not request.tools or request.tool_choice == "none":
        return None
    functions: list[Mapping[str, Any]] = [tool["function"] for tool in request.tools]
    if isinstance(request.tool_choice, dict):
        wanted = request.tool_choice["function"]["name"]
        return next(f for f in functions if f["name"] == wanted)
    last = request.messages[-1]
    asked = _text_of(last.get("content")) if last.get("role") == "user" else ""
    named = next((f for f in functions if f"call {f['name']}" in asked), None)
    if request.tool_choice == "required":
        return named or functions[0]
    return named


def make_reply(flavor: str, request: ChatRequest, serial: int) -> Reply:
    prompt = prompt_tokens(request.messages)
    tool = _chosen_tool(request)
    if tool is not None:
        arguments = json.dumps(placeholder(tool.get("parameters") or {}))
        call = ToolCall(f"call_fake{serial:06d}", tool["name"], arguments)
        cost = count_tokens(len(call.name) + len(arguments))
        return Reply((), call, "tool_calls", prompt, cost)
    text = f"fake-{flavor} says: {last_user_text(request.messages)[:40]}".rstrip()
    first, *rest = text.split(" ")
    pieces = (first, *(f" {word}" for word in rest))
    finish = "stop"
    if request.max_tokens is not None and len(pieces) > request.max_tokens:
        pieces, finish = pieces[: request.max_tokens], "length"
    return Reply(pieces, None, finish, prompt, len(pieces))


def usage_json(reply: Reply) -> JSON:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def completion_json(reply: Reply, completion_id: str, model: str, created: int) -> JSON:
    message: JSON = {
        "role": "assistant",
        "content": reply.text if reply.tool_call is None else None,
    }
    if reply.tool_call is not None:
        call = reply.tool_call
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}
        ],
        "usage": usage_json(reply),
    }


def _split_arguments(arguments: str, parts: int = 3) -> list[str]:
    size = max(1, math.ceil(len(arguments) / parts))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]


def stream_chunks(
    reply: Reply, completion_id: str, model: str, created: int, include_usage: bool
) -> list[JSON]:
    """Every ``chat.completion.chunk`` of the streamed answer, in order, without ``[DONE]``."""
    deltas: list[JSON]
    if reply.tool_call is None:
        deltas = [{"role": "assistant", "content": ""}]
        deltas += [{"content": piece} for piece in reply.pieces]
    else:
        call = reply.tool_call
        deltas = [
            {"role": "assistant", "content": None},
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            },
        ]
        deltas += [
            {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            for piece in _split_arguments(call.arguments)
        ]
    deltas.append({})
    head = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
    }
    chunks: list[JSON] = []
    last = len(deltas) - 1
    for index, delta in enumerate(deltas):
        finish = reply.finish_reason if index == last else None
        chunk = {
            **head,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            chunk["usage"] = None
        chunks.append(chunk)
    if include_usage:
        chunks.append({**head, "choices": [], "usage": usage_json(reply)})
    return chunks


def sse(payload: JSON) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
