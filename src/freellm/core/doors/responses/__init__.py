"""OpenAI's Responses API (``POST /v1/responses``) as a door onto chat completions.

Theory of operation
-------------------
:func:`translate` turns a Responses request into a chat completion request: ``instructions``
becomes a system message first, then come the messages of the conversation a
``previous_response_id`` names (the web layer looks them up and passes them as ``previous``), then
this turn's ``input`` items: ``message`` items become chat messages, ``function_call`` items the
assistant's ``tool_calls`` (joined onto the assistant message just before them, as a chat answer
holds them), ``function_call_output`` items ``tool`` messages; ``reasoning`` items are dropped (no
free tier reads them back). Output items read as input items the same way, which is what lets a
conversation continue by id and what the round trip of the tests rests on.

:class:`ResponsesFace` turns what the exchange writes back into the Responses API's shapes: a
``chat.completion`` becomes a ``response`` object; a stream of ``chat.completion.chunk`` events
becomes the Responses event sequence (``response.created``, ``response.in_progress``, an
``output_item.added`` and its deltas per output item, their ``.done`` events, and
``response.completed``), each with its ``sequence_number`` and an ``event:`` line. Items are
opened as their first delta arrives (text opens the message, a tool call its ``function_call``)
and closed together when the stream ends, in the order they were opened. A failure mid-stream is
``response.failed`` (the output so far, status ``incomplete``) followed by an ``error`` event.

What is refused, with a 400 naming the field: tools other than function tools (``tools[2].type``),
a ``tool_choice`` naming a built-in tool, ``background: true``, ``conversation``, ``prompt``
templates, ``include`` values that ask for output freellm cannot give (logprobs, built-in tool
results), ``top_logprobs``, file inputs (``input_file``, ``file_id``), and input items of built-in
tools. Fields that only tune the service (``service_tier``, ``safety_identifier``,
``prompt_cache_retention``, ``text.verbosity``) are accepted and ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from freellm.core import wire
from freellm.core.chat import BadRequest, inspect_request
from freellm.core.doors import DoorError, Translated, openai_error
from freellm.core.sse import Decoder, Event, EventTooLarge, encode

__all__ = [
    "ResponsesFace",
    "error_body",
    "not_found",
    "translate",
    "wants_store",
]

ROLES: Final = frozenset({"user", "assistant", "system", "developer"})
TOOL_CHOICES: Final = frozenset({"none", "auto", "required"})
EFFORTS: Final = frozenset({"none", "minimal", "low", "medium", "high", "xhigh", "max"})
SUMMARIES: Final = frozenset({"auto", "concise", "detailed"})
DETAILS: Final = frozenset({"low", "high", "auto"})

HARMLESS_INCLUDES: Final = frozenset(
    {"reasoning.encrypted_content", "message.input_image.image_url"}
)
"""``include`` values freellm honours by having nothing to add: it writes no reasoning items, and
an input image's URL is the client's own. Codex sends the first with every request."""

RATE_LIMIT_CODES: Final = frozenset({"rate_limited", "quota_exhausted"})
"""freellm's error codes that the Responses API calls ``rate_limit_exceeded`` in a failed
response; every other failure is its ``server_error``."""

_PARAMS: Final = {
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "session_id": "prompt_cache_key",
    "response_format": "text.format",
    "reasoning_effort": "reasoning.effort",
}
"""The chat request's fields that come from a differently named field of the door's."""


# --- requests -----------------------------------------------------------------------------------


def translate(
    body: object, *, previous: Sequence[Mapping[str, Any]] | None = None
) -> Translated | DoorError:
    """``body`` (decoded JSON) as a chat completion request, or why it cannot be one.

    ``previous`` is the stored conversation of the response that ``previous_response_id``
    names: chat messages, put before this turn's input (its ``instructions`` are not carried
    over, as OpenAI documents). Never raises.
    """
    if not isinstance(body, dict):
        return _bad("The request body must be a JSON object.")
    refused = _refused(body)
    if refused is not None:
        return refused

    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        return _bad("`instructions` must be a string.", "instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    messages += [dict(message) for message in previous or ()]
    turn = _input(body.get("input"))
    if isinstance(turn, DoorError):
        return turn
    messages += turn
    if not messages:
        return _bad("`input` is required: a string or an array of input items.", "input")

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


def not_found(response_id: str, *, param: str = "response_id") -> DoorError:
    """The 404 for a response id that is not stored (never was, was deleted, was pruned, or
    was made with ``store: false``); ``param`` names where the id came from
    (``previous_response_id`` for a conversation continued from it)."""
    return DoorError(404, f"Response with id '{response_id}' not found.", param=param)


def error_body(error: DoorError) -> bytes:
    """``error`` in OpenAI's shape, which the Responses API shares."""
    return wire.error_body(error.message, error.type, param=error.param, code=error.code)


def _bad(message: str, param: str | None = None, code: str | None = None) -> DoorError:
    return DoorError(400, message, param=param, code=code)


def _unsupported(message: str, param: str) -> DoorError:
    return DoorError(400, message, param=param, code="unsupported_parameter")


def _refused(body: Mapping[str, Any]) -> DoorError | None:
    """The first field that asks for what freellm cannot do, as its 400."""
    if body.get("background") is True:
        return _unsupported(
            "`background` responses are not supported: freellm answers while the request is open.",
            "background",
        )
    if body.get("conversation") is not None:
        return _unsupported(
            "`conversation` is not supported: continue a conversation with `previous_response_id`.",
            "conversation",
        )
    if body.get("prompt") is not None:
        return _unsupported(
            "`prompt` templates are not supported: send `instructions` and `input`.", "prompt"
        )
    top_logprobs = body.get("top_logprobs")
    if top_logprobs is not None and top_logprobs != 0:
        return _unsupported("`top_logprobs` is not supported.", "top_logprobs")
    include = body.get("include")
    if include is not None:
        if not isinstance(include, list):
            return _bad("`include` must be an array of strings.", "include")
        for index, value in enumerate(include):
            if not isinstance(value, str) or value not in HARMLESS_INCLUDES:
                shown = value if isinstance(value, str) else json.dumps(value)
                return _unsupported(
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
            return _bad(f"`{name}` must be a boolean.", name)
    for name in ("previous_response_id", "prompt_cache_key"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            return _bad(f"`{name}` must be a string.", name)
    if body.get("prompt_cache_key"):
        chat["session_id"] = body["prompt_cache_key"]  # names the conversation: Codex sends it
    truncation = body.get("truncation")
    if truncation is not None and truncation not in ("auto", "disabled"):
        return _bad('`truncation` must be "auto" or "disabled".', "truncation")
    metadata = body.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(value, str) for value in metadata.values())
    ):
        return _bad("`metadata` must be an object of strings.", "metadata")

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
            return _bad("`text` must be an object.", "text")
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
            return _bad("`reasoning` must be an object.", "reasoning")
        effort = reasoning.get("effort")
        if effort is not None:
            if not isinstance(effort, str) or effort not in EFFORTS:
                return _bad(
                    f"`reasoning.effort` must be one of {', '.join(sorted(EFFORTS))}.",
                    "reasoning.effort",
                )
            chat["reasoning_effort"] = effort
        for name in ("summary", "generate_summary"):
            summary = reasoning.get(name)
            if summary is not None and not (isinstance(summary, str) and summary in SUMMARIES):
                return _bad(
                    f"`reasoning.{name}` must be auto, concise or detailed.", f"reasoning.{name}"
                )
    return chat


def _tools(value: object) -> list[dict[str, Any]] | DoorError:
    if value is None:
        return []
    if not isinstance(value, list):
        return _bad("`tools` must be an array.", "tools")
    tools: list[dict[str, Any]] = []
    for index, tool in enumerate(value):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            return _bad(f"`{where}` must be an object.", where)
        kind = tool.get("type")
        if kind != "function":
            shown = kind if isinstance(kind, str) else json.dumps(kind)
            return _unsupported(
                f"`{where}.type` {shown} is not supported: freellm serves function tools only "
                "(the free tiers run no built-in tools).",
                f"{where}.type",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            return _bad(f"`{where}.name` must be a non-empty string.", f"{where}.name")
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
                return _bad(f"`{where}.{field}` must be {what}.", f"{where}.{field}")
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
        return _unsupported(
            f"`tool_choice` of type {choice['type']} is not supported: freellm serves function "
            "tools only.",
            "tool_choice",
        )
    return _bad(
        '`tool_choice` must be "none", "auto", "required" or {"type": "function", "name": ...}.',
        "tool_choice",
    )


def _format(form: object) -> dict[str, Any] | DoorError | None:
    """``text.format`` as the chat request's ``response_format`` (None for plain text)."""
    kind = form.get("type") if isinstance(form, dict) else None
    if not isinstance(form, dict) or kind not in ("text", "json_object", "json_schema"):
        return _bad(
            "`text.format.type` must be text, json_object or json_schema.", "text.format.type"
        )
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    name = form.get("name")
    if not isinstance(name, str) or not name:
        return _bad("`text.format.name` must be a non-empty string.", "text.format.name")
    schema = form.get("schema")
    if not isinstance(schema, dict):
        return _bad("`text.format.schema` must be a JSON Schema object.", "text.format.schema")
    spec: dict[str, Any] = {"name": name, "schema": schema}
    for field, types, what in (("strict", bool, "a boolean"), ("description", str, "a string")):
        given = form.get(field)
        if given is None:
            continue
        if not isinstance(given, types):
            return _bad(f"`text.format.{field}` must be {what}.", f"text.format.{field}")
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


# --- input items --------------------------------------------------------------------------------


def _input(value: object) -> list[dict[str, Any]] | DoorError:
    """The chat messages of ``input`` (a string, or an array of items)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        return _bad("`input` must be a string or an array of input items.", "input")
    messages: list[dict[str, Any]] = []
    joinable = False  # whether the last message is the assistant's, open to more tool calls
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            return _bad(f"`{where}` must be an object.", where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            message = _message(item, where)
            if isinstance(message, DoorError):
                return message
            messages.append(message)
            joinable = message["role"] == "assistant"
        elif kind == "function_call":
            call = _call(item, where)
            if isinstance(call, DoorError):
                return call
            if joinable:
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            joinable = True
        elif kind == "function_call_output":
            result = _call_output(item, where)
            if isinstance(result, DoorError):
                return result
            messages.append(result)
            joinable = False
        elif kind == "reasoning":
            continue  # the model's own notes: no free tier takes them back
        else:
            shown = kind if isinstance(kind, str) else json.dumps(kind)
            return _unsupported(
                f"`{where}.type` {shown} is not supported: input items are messages, "
                "function_call, function_call_output and reasoning.",
                f"{where}.type",
            )
    return messages


def _message(item: Mapping[str, Any], where: str) -> dict[str, Any] | DoorError:
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:
        return _bad(f"`{where}.role` must be one of {', '.join(sorted(ROLES))}.", f"{where}.role")
    # Every provider reads "system"; not every one reads "developer", which means the same.
    chat_role = "system" if role == "developer" else role
    content = item.get("content")
    if isinstance(content, str):
        return {"role": chat_role, "content": content}
    if not isinstance(content, list):
        return _bad(
            f"`{where}.content` must be a string or an array of content parts.", f"{where}.content"
        )
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        translated = _part(part, f"{where}.content[{index}]", role)
        if isinstance(translated, DoorError):
            return translated
        parts.append(translated)
    if role == "user" and not (len(parts) == 1 and parts[0]["type"] == "text"):
        return {"role": chat_role, "content": parts}
    # Only a user's message holds images; the others' text is one string, which every provider
    # reads (an assistant's parts are pieces of one answer; instructions are paragraphs).
    texts = [part["text"] for part in parts]
    return {"role": chat_role, "content": ("" if role == "assistant" else "\n").join(texts)}


def _part(part: object, where: str, role: str) -> dict[str, Any] | DoorError:
    kind = part.get("type") if isinstance(part, dict) else None
    if not isinstance(part, dict) or not isinstance(kind, str):
        return _bad(f"`{where}.type` is required.", f"{where}.type")
    if kind in ("input_text", "output_text", "refusal"):
        field = "refusal" if kind == "refusal" else "text"
        text = part.get(field)
        if not isinstance(text, str):
            return _bad(f"`{where}.{field}` must be a string.", f"{where}.{field}")
        return {"type": "text", "text": text}
    if kind == "input_image" and role == "user":
        if part.get("file_id") is not None:
            return _unsupported(
                f"`{where}.file_id` is not supported: freellm has no files; send the image as "
                "`image_url` (a URL or a data URL).",
                f"{where}.file_id",
            )
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            return _bad(f"`{where}.image_url` must be a URL or a data URL.", f"{where}.image_url")
        image: dict[str, Any] = {"url": url}
        detail = part.get("detail")
        if isinstance(detail, str) and detail in DETAILS:
            image["detail"] = detail
        return {"type": "image_url", "image_url": image}
    return _unsupported(
        f"`{where}.type` {kind} is not supported in a {role} message.", f"{where}.type"
    )


def _call(item: Mapping[str, Any], where: str) -> dict[str, Any] | DoorError:
    fields: dict[str, str] = {}
    for field in ("call_id", "name", "arguments"):
        value = item.get(field)
        if not isinstance(value, str) or (not value and field != "arguments"):
            return _bad(f"`{where}.{field}` must be a non-empty string.", f"{where}.{field}")
        fields[field] = value
    return {
        "id": fields["call_id"],
        "type": "function",
        "function": {"name": fields["name"], "arguments": fields["arguments"]},
    }


def _call_output(item: Mapping[str, Any], where: str) -> dict[str, Any] | DoorError:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        return _bad(f"`{where}.call_id` must be a non-empty string.", f"{where}.call_id")
    output = item.get("output")
    if isinstance(output, list):
        texts: list[str] = []
        for index, part in enumerate(output):
            part_where = f"{where}.output[{index}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "input_text" or not isinstance(part.get("text"), str):
                return _unsupported(
                    f"`{part_where}` is not supported: a function's output is text.", part_where
                )
            texts.append(part["text"])
        output = "".join(texts)
    if not isinstance(output, str):
        return _bad(f"`{where}.output` must be a string.", f"{where}.output")
    return {"role": "tool", "tool_call_id": call_id, "content": output}


# --- answers ------------------------------------------------------------------------------------


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _usage(usage: object) -> dict[str, Any] | None:
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


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _echo(request: Mapping[str, Any]) -> dict[str, Any]:
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


class _Item:
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
                "content": [_text_part(joined)],
            }
        return {
            "type": "function_call",
            "id": self.id,
            "call_id": self.call_id,
            "name": self.name,
            "arguments": joined,
            "status": status,
        }


class ResponsesFace:
    """One Responses request's side of the exchange (see :class:`freellm.core.doors.Face`).

    ``id`` is the request's id (``req_...``); the response's id is ``resp_`` and the same
    suffix, and its items' ids are ``msg_``/``fc_``, the suffix and the item's output index, so
    that a response and its stored copy name the same items. ``created`` is the request's time
    (whole epoch seconds); ``request`` the body the client sent, which ``translate`` accepted.
    """

    def __init__(
        self, translated: Translated, *, id: str, created: int, request: Mapping[str, Any]
    ) -> None:
        self._suffix = id.removeprefix("req_")
        self.id = "resp_" + self._suffix
        self._created = created
        self._model = request.get("model") if isinstance(request.get("model"), str) else ""
        self._echo = _echo(request)
        messages = list(translated.body.get("messages") or ())
        if isinstance(request.get("instructions"), str) and request["instructions"]:
            messages = messages[1:]
        # The conversation so far, to store with the answer: the instructions are left out, as
        # they are not carried over to the next turn.
        self._turn: tuple[Mapping[str, Any], ...] = tuple(messages)
        self._final: dict[str, Any] | None = None
        self._over = False  # answered, finished or failed: nothing more is written
        # The stream's state.
        self._decoder = Decoder()
        self._sequence = 0
        self._started = False
        self._items: list[_Item] = []
        self._message: _Item | None = None
        self._calls: dict[object, _Item] = {}
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None

    # -- the whole answer --

    def answer(self, status: int, body: bytes) -> bytes:
        """A ``response`` object for a 200 ``chat.completion``; else the error, as it is."""
        self._over = True
        if not 200 <= status < 300:
            return error_body(openai_error(status, body))
        try:
            completion = json.loads(body)
        except ValueError:
            completion = None
        choices = completion.get("choices") if isinstance(completion, dict) else None
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(completion, dict) or not isinstance(message, dict):
            return error_body(
                DoorError(502, "The provider's answer could not be read.", "api_error")
            )
        if isinstance(completion.get("model"), str) and completion["model"]:
            self._model = completion["model"]
        finish = choice.get("finish_reason") if isinstance(choice, dict) else None
        self._finish = finish if isinstance(finish, str) else None
        output = self._whole_output(message)
        self._final = self._response(self._status(), output, _usage(completion.get("usage")))
        return wire.dumps(self._final)

    def _whole_output(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(
                part["text"]
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
        text = content if isinstance(content, str) else ""
        refusal = message.get("refusal") if isinstance(message.get("refusal"), str) else ""
        calls = [
            call
            for call in message.get("tool_calls") or ()
            if isinstance(call, dict) and isinstance(call.get("function"), dict)
        ]
        output: list[dict[str, Any]] = []
        status = "incomplete" if self._finish == "length" else "completed"
        if text or refusal or not calls:
            item = _Item("message", self._item_id("msg", 0), 0)
            item.pieces.append(text)
            value = item.value(status)
            if refusal:
                if not text:
                    value["content"] = []
                value["content"].append({"type": "refusal", "refusal": refusal})
            output.append(value)
        for call in calls:
            function = call["function"]
            index = len(output)
            name = function.get("name")
            arguments = function.get("arguments")
            item = _Item(
                "function_call",
                self._item_id("fc", index),
                index,
                call_id=self._call_id(call.get("id"), index),
                name=name if isinstance(name, str) else "",
            )
            item.pieces.append(arguments if isinstance(arguments, str) else "")
            output.append(item.value("completed"))
        return output

    # -- the stream --

    def feed(self, data: bytes) -> bytes:
        """The Responses events for stream bytes as the exchange writes them."""
        if self._over:
            return b""
        try:
            events = self._decoder.feed(data)
        except EventTooLarge:
            return self._fail("server_error", "The provider's stream held an event too large.")
        return self._events(events)

    def close(self) -> bytes:
        """What is still owed when the stream ends: a stream cut before its end fails."""
        if self._over:
            return b""
        try:
            out = self._events(self._decoder.close())
        except EventTooLarge:
            out = b""
        if self._over or not self._started:
            return out
        return out + self._fail("server_error", "The stream ended before the response did.")

    def _events(self, events: list[Event]) -> bytes:
        out = bytearray()
        for event in events:
            if self._over:
                break
            out += self._event(event)
        return bytes(out)

    def _event(self, event: Event) -> bytes:
        if event.event == "error":
            error = openai_error(502, event.data.encode())
            return self._fail(error.code or "server_error", error.message)
        if event.done:
            return self._close_items()
        try:
            chunk = json.loads(event.data)
        except ValueError:
            return b""
        if not isinstance(chunk, dict):
            return b""
        out = bytearray()
        if not self._started:
            if isinstance(chunk.get("model"), str) and chunk["model"]:
                self._model = chunk["model"]
            out += self._start()
        usage = _usage(chunk.get("usage"))
        if usage is not None:
            self._usage = usage
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict):
            return bytes(out)
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = delta.get("content")
            if isinstance(content, str) and content:
                out += self._text(content)
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for position, call in enumerate(calls):
                    if isinstance(call, dict):
                        out += self._call_piece(call, position)
        finish = choice.get("finish_reason")
        if isinstance(finish, str):
            self._finish = finish
        return bytes(out)

    def _start(self) -> bytes:
        self._started = True
        response = self._response("in_progress", [], None)
        return self._emit("response.created", response=response) + self._emit(
            "response.in_progress", response=response
        )

    def _open(self, kind: str, call_id: object = None, name: str = "") -> _Item:
        index = len(self._items)
        prefix = "msg" if kind == "message" else "fc"
        item = _Item(
            kind,
            self._item_id(prefix, index),
            index,
            call_id=self._call_id(call_id, index) if kind != "message" else "",
            name=name,
        )
        self._items.append(item)
        return item

    def _text(self, text: str) -> bytes:
        out = b""
        item = self._message
        if item is None:
            item = self._message = self._open("message")
            out = self._added(item)
        item.pieces.append(text)
        return out + self._emit(
            "response.output_text.delta",
            item_id=item.id,
            output_index=item.index,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _added(self, item: _Item) -> bytes:
        out = self._emit(
            "response.output_item.added", output_index=item.index, item=item.value("in_progress")
        )
        if item.kind == "message":
            out += self._emit(
                "response.content_part.added",
                item_id=item.id,
                output_index=item.index,
                content_index=0,
                part=_text_part(""),
            )
        return out

    def _call_piece(self, call: Mapping[str, Any], position: int) -> bytes:
        """One piece of a streamed tool call: the first opens its item (OpenAI sends the call's
        id and name with it), the rest add to its arguments."""
        index = call.get("index")
        key: object = index if isinstance(index, int) else call.get("id") or position
        given = call.get("function")
        function: Mapping[str, Any] = given if isinstance(given, dict) else {}
        name = function.get("name")
        out = b""
        item = self._calls.get(key)
        if item is None:
            item = self._open(
                "function_call", call.get("id"), name if isinstance(name, str) else ""
            )
            self._calls[key] = item
            out = self._added(item)
        elif isinstance(name, str) and name and not item.name:
            item.name = name
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item.pieces.append(arguments)
            out += self._emit(
                "response.function_call_arguments.delta",
                item_id=item.id,
                output_index=item.index,
                delta=arguments,
            )
        return out

    def _close_items(self) -> bytes:
        """The stream's end: every item's ``.done`` events, then the whole response."""
        out = bytearray()
        if not self._started:
            out += self._start()
        if not self._items:  # an empty answer is an empty message, as in a whole answer
            self._message = self._open("message")
            out += self._added(self._message)
        status = self._status()
        item_status = "incomplete" if status == "incomplete" else "completed"
        for item in self._items:
            value = item.value("completed" if item.kind == "function_call" else item_status)
            if item.kind == "message":
                text = value["content"][0]["text"]
                common = {"item_id": item.id, "output_index": item.index, "content_index": 0}
                out += self._emit("response.output_text.done", **common, text=text, logprobs=[])
                out += self._emit("response.content_part.done", **common, part=_text_part(text))
            else:
                out += self._emit(
                    "response.function_call_arguments.done",
                    item_id=item.id,
                    output_index=item.index,
                    arguments=value["arguments"],
                )
            out += self._emit("response.output_item.done", output_index=item.index, item=value)
        output = [
            item.value("completed" if item.kind == "function_call" else item_status)
            for item in self._items
        ]
        self._final = self._response(status, output, self._usage)
        self._over = True
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        out += self._emit(kind, response=self._final)
        return bytes(out)

    def _fail(self, code: str, message: str) -> bytes:
        """A failure mid-stream: ``response.failed`` with what came so far, then ``error``."""
        out = b"" if self._started else self._start()
        self._over = True
        output = [item.value("incomplete") for item in self._items]
        failed_code = "rate_limit_exceeded" if code in RATE_LIMIT_CODES else "server_error"
        error = {"code": failed_code, "message": message}
        response = self._response("failed", output, self._usage, error=error)
        out += self._emit("response.failed", response=response)
        return out + self._emit("error", code=code, message=message, param=None)

    # -- both --

    def finished(self) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """The finished response and the conversation to store with it (the previous
        conversation, this turn's input and the answer, as chat messages); None when the request
        failed or has not finished."""
        if self._final is None:
            return None
        answer = _input(self._final["output"])
        if isinstance(answer, DoorError):
            return None  # a tool call with no name: not something a next turn could send
        return self._final, [dict(message) for message in self._turn] + answer

    def _status(self) -> str:
        return "incomplete" if self._finish == "length" else "completed"

    def _response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        *,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self._created,
            "status": status,
            "error": error,
            "incomplete_details": incomplete,
            "model": self._model,
            "output": output,
            "usage": usage,
            **self._echo,
        }

    def _emit(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return encode(wire.dumps(event).decode(), event=kind)

    def _item_id(self, prefix: str, index: int) -> str:
        return f"{prefix}_{self._suffix}_{index}"

    def _call_id(self, given: object, index: int) -> str:
        return given if isinstance(given, str) and given else f"call_{self._suffix}_{index}"
