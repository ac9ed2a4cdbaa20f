"""What a fake says, whatever its dialect: deterministic replies and their token counts.

Every dialect reads its request into a :class:`ChatRequest` (OpenAI-shaped messages, tools and
``tool_choice``: the fakes' neutral form) and writes the :class:`Reply` in its own wire format.

Counting rules (exact, so tests can predict every number):

- Prompt tokens: the characters of all message text (string contents, the ``text`` of content
  parts, tool calls' names and arguments) divided by 4, rounded up, at least 1.
- A text reply is ``fake-{flavor} says: {last user text[:40]}`` (trailing space trimmed). In JSON
  mode it is instead the JSON of a placeholder object fitting the request's schema, or
  ``{"reply": <that text>}`` without a schema. The text is cut before the first stop sequence it
  contains (finishing with ``stop_sequence``), then split into words, every word after the first
  keeping its leading space; each word is one completion token and one stream chunk. A token
  limit keeps the first N words and finishes with ``length``; else the finish is ``stop``.
- A tool call is made when the request has ``tools`` and ``tool_choice`` is ``"required"`` (the
  tool named by "call <name>" in the last user message, else the first tool) or names a
  function, or when ``tool_choice`` is absent or ``"auto"``, the last message is the user's and
  it contains "call <name>" for one of the tools. Its arguments are an object holding a
  placeholder for every property of the tool's JSON schema (none without properties); it costs
  (characters of name + arguments) / 4 tokens, rounded up, at least 1, and finishes with
  ``tool_calls``.
- Sized replies (opt in: a fake made with ``reply_tokens``, which fills in
  :attr:`ChatRequest.reply_tokens`): the text reply is cut or padded with `` ok`` words to
  exactly that many words (at least one), before JSON mode wraps it (a schema's placeholder
  is not sized) and before the stop sequences and the token limit cut it. The simulator's
  live replays ask for answers of the lengths a trace recorded this way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import attrs

JSON = dict[str, Any]
Finish = Literal["stop", "length", "stop_sequence", "tool_calls"]


@attrs.frozen
class ChatRequest:
    """A chat request in the fakes' neutral form; `max_tokens` None means no limit.

    `reply_tokens` is not read from the wire: a fake sets it when it was made with
    ``reply_tokens`` (see the module docstring); None keeps the counting rules above.
    """

    model: str
    messages: tuple[Mapping[str, Any], ...]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: Any = None
    stop: tuple[str, ...] = ()
    json_mode: bool = False
    json_schema: Any = None
    reply_tokens: int | None = None


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the ``text`` of its parts joined."""
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
        characters += len(text_of(message.get("content")))
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                characters += len(str(function.get("name", "")))
                characters += len(str(function.get("arguments", "")))
    return count_tokens(characters)


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


_PLACEHOLDERS: Final[Mapping[str, Any]] = {
    "integer": 1,
    "number": 1.5,
    "boolean": True,
    "array": [],
    "null": None,
}


def placeholder(schema: Any, depth: int = 0) -> Any:
    """A simple value that fits `schema`: "fake", 1, 1.5, true, [], or an object of those.

    Type names are matched without case: Gemini's OpenAPI schemas say ``OBJECT``, ``STRING``.
    """
    if not isinstance(schema, dict):
        return "fake"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if isinstance(k, str) and k.lower() != "null"), "string")
    kind = kind.lower() if isinstance(kind, str) else None
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties")
        if depth >= 4 or not isinstance(properties, dict):
            return {}
        return {name: placeholder(sub, depth + 1) for name, sub in properties.items()}
    return _PLACEHOLDERS.get(kind, "fake") if kind is not None else "fake"


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
    finish_reason: Finish
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
    asked = text_of(last.get("content")) if last.get("role") == "user" else ""
    named = next((f for f in functions if f"call {f['name']}" in asked), None)
    if request.tool_choice == "required":
        return named or functions[0]
    return named


def _reply_text(flavor: str, request: ChatRequest) -> str:
    text = f"fake-{flavor} says: {last_user_text(request.messages)[:40]}".rstrip()
    if request.reply_tokens is not None:
        text = _sized(text, request.reply_tokens)
    if not request.json_mode:
        return text
    if isinstance(request.json_schema, dict):
        return json.dumps(placeholder(request.json_schema))
    return json.dumps({"reply": text})


def _sized(text: str, size: int) -> str:
    """`text` cut or padded with `` ok`` to `size` words (at least one)."""
    pieces = words(text)[: max(1, size)]
    return "".join(pieces) + " ok" * (size - len(pieces))


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to its first stop sequence, and whether one was found."""
    found = [index for sequence in stop if sequence and (index := text.find(sequence)) >= 0]
    return (text[: min(found)], True) if found else (text, False)


def words(text: str) -> tuple[str, ...]:
    """`text` split into words, every word after the first keeping its leading space."""
    first, *rest = text.split(" ")
    return (first, *(f" {word}" for word in rest))


def make_reply(flavor: str, request: ChatRequest, serial: int) -> Reply:
    """The reply the counting rules above give for `request`; `serial` numbers tool calls."""
    prompt = prompt_tokens(request.messages)
    tool = _chosen_tool(request)
    if tool is not None:
        values = placeholder(tool.get("parameters"))
        arguments = json.dumps(values if isinstance(values, dict) else {})
        call = ToolCall(f"call_fake{serial:06d}", tool["name"], arguments)
        cost = count_tokens(len(call.name) + len(arguments))
        return Reply((), call, "tool_calls", prompt, cost)
    text, stopped = _cut_at_stop(_reply_text(flavor, request), request.stop)
    pieces = words(text)
    finish: Finish = "stop_sequence" if stopped else "stop"
    if request.max_tokens is not None and len(pieces) > request.max_tokens:
        pieces, finish = pieces[: request.max_tokens], "length"
    return Reply(pieces, None, finish, prompt, len(pieces))


def split_arguments(arguments: str, parts: int = 3) -> list[str]:
    """`arguments` in about `parts` pieces, for streams that send them bit by bit."""
    size = max(1, math.ceil(len(arguments) / parts))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]
