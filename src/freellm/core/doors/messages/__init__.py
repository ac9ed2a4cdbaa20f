"""Anthropic's Messages API (``POST /v1/messages``) as a door onto the chat path.

A Messages request becomes an OpenAI chat completion request (:func:`translate`), routed like any
other; the chat answer becomes a Messages answer (:class:`MessagesFace`), a whole ``Message`` or
Anthropic's stream of events. ``POST /v1/messages/count_tokens`` is :func:`count_tokens`, the
estimator's count of the same translation. Errors are Anthropic-shaped (:func:`error_body`).

Requests
--------
Translated: ``model`` as given (``auto``, ``auto:NAME``, a catalog model, ``provider/model``, or a
Claude name the router maps to a chain); ``system`` (a string or text blocks) and ``system``-role
messages become system messages; ``text`` blocks (joined with a blank line when a message holds
text alone), ``image`` blocks (base64 as a ``data:`` URL, or a URL) in user turns; ``tool_use``
blocks become the assistant's ``tool_calls`` (``input`` as JSON text); ``tool_result`` blocks
become ``tool`` messages, ahead of the rest of their turn as OpenAI wants them (their text
joined; ``is_error`` marks the text with ``(error)``; their images follow in a user message);
``thinking`` and ``redacted_thinking`` blocks of past assistant turns are dropped (no provider
could check their signatures); ``tools`` (custom tools: ``name``, ``description``,
``input_schema``, ``strict``); ``tool_choice`` (``auto``, ``any`` as ``required``, ``tool`` as the
named function, ``none``; ``disable_parallel_tool_use`` as ``parallel_tool_calls: false``);
``max_tokens``; ``stop_sequences`` as ``stop``; ``temperature``, ``top_p``, ``top_k``;
``metadata.user_id`` as ``user`` (the session); ``stream`` (with ``stream_options.include_usage``:
the closing ``message_delta`` carries the usage); ``thinking`` ``enabled`` as ``reasoning_effort``
by its budget (below 4,096 tokens ``low``, below 16,384 ``medium``, else ``high``; the adapters
send it only to models that reason), else ``output_config.effort`` (``xhigh`` and ``max`` as
``high``); ``output_config.format`` (a JSON schema) as ``response_format``.

Ignored, as they ask nothing a free tier can give or refuse: ``cache_control`` (anywhere),
``citations`` on text blocks, ``service_tier``, ``inference_geo``, ``speed``, ``diagnostics``,
``user_profile_id``, ``workspace_id``, ``context_management`` (the conversation goes as sent,
uncleared: too long for a model, it is routed to a larger one or refused as any would be), and
top-level fields this door does not know. An assistant turn left with nothing (an empty one, or
one of thinking alone) is dropped.

Refused with a 400 naming Anthropic's field path (``messages.0.content.1.type``): a missing
``max_tokens`` (``count_tokens`` does without), ``max_tokens`` below 1 (no prompt cache to warm),
``document``, ``search_result``, ``server_tool_use`` and every server tool's result blocks, image
``file`` sources (no Files API), server and Anthropic-defined tools (web search and fetch, code
execution, bash, text editor, computer, memory, tool search...), ``container``, ``mcp_servers``,
and anything not of Anthropic's shapes.

Answers
-------
A ``chat.completion`` becomes a ``Message`` whose ``id`` comes from the request id (``req_X`` ->
``msg_X``): a ``thinking`` block for ``reasoning_content`` (or ``reasoning``) with an empty
``signature`` (freellm cannot sign), a ``text`` block when there is text, a ``tool_use`` block per
tool call (the call's id, or ``toolu_N`` by position when it has none; ``input`` the parsed
arguments: empty arguments are ``{}``, and arguments that are not a JSON object are kept as
``{"arguments": <the text>}``, so the client's schema check fails and shows the model what it
wrote instead of running the tool with nothing); ``stop_reason`` ``tool_use`` when there are tool
calls, ``max_tokens`` for ``length``, ``refusal`` for ``content_filter``, ``stop_sequence`` when the
provider says which stop sequence matched (vLLM's ``stop_reason``, SGLang's ``matched_stop``) or
the text ends with one (providers that keep it; the text keeps it too, as a stream's text
already sent would), else ``end_turn``: most providers strip the stop sequence and do not say,
so a stop sequence usually reads as ``end_turn``; ``usage`` from the chat usage, else the
estimates.

Streams: ``message_start`` (usage: the prompt's estimate) and ``ping`` at the first chunk; then
content blocks in order of appearance, each opened by ``content_block_start`` and closed by
``content_block_stop`` before the next starts, with ``thinking_delta``, ``text_delta`` and
``input_json_delta`` pieces as they come (a tool call's are the provider's argument pieces).
A block cannot reopen, and some providers interleave the pieces of parallel calls: so a tool
call's block closes for the next block only once its arguments are a whole JSON value; until
then, pieces of anything else are held, and sent whole, one block each, at the
``finish_reason`` (pieces that come for a call after its arguments were whole are dropped: they
could only break them). The JSON answer's rule for arguments that are not an object cannot apply
to pieces already sent. A call whose first piece has no name is held until its name comes. At
``[DONE]``: ``message_delta`` (``stop_reason``, the usage chunk's tokens, else the estimates)
and ``message_stop``. A failure mid-stream, or a stream cut before ``[DONE]``, is an ``error``
event (``api_error``), and nothing after it.

Errors: ``{"type": "error", "error": {"type", "message"}}`` with freellm's message and status, the
type by status: 400 ``invalid_request_error``, 401 ``authentication_error``, 403
``permission_error``, 404 ``not_found_error``, 408 and 504 ``timeout_error``, 413
``request_too_large``, 429 ``rate_limit_error``, 529 ``overloaded_error``, any other 4xx
``invalid_request_error``, any other 5xx (502: every provider failed; 503: no key configured)
``api_error``: ``overloaded_error`` would tell agents to retry at once, which a missing key does
not deserve.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any, Final, TypeGuard

import attrs

from freellm.core import wire
from freellm.core.chat import BadRequest, inspect_request
from freellm.core.doors import DoorError, Translated, openai_error
from freellm.core.sse import Decoder, Event, encode
from freellm.core.tokens import estimate_text

__all__ = ["MessagesFace", "count_tokens", "error_body", "translate"]

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

EFFORT_BUDGETS: Final = ((4096, "low"), (16384, "medium"))
"""``thinking.budget_tokens`` below each bound is that ``reasoning_effort``; above all, high."""

EFFORTS: Final[Mapping[str, str]] = {
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}

FINISH_REASONS: Final[Mapping[str, str]] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

REFUSED_FIELDS: Final[Mapping[str, str]] = {
    "container": "containers run Anthropic's code execution, which no free tier offers",
    "mcp_servers": "freellm does not connect to MCP servers for the model",
}

REFUSED_BLOCKS: Final[Mapping[str, str]] = {
    "document": "documents (PDF or text sources) cannot be sent to freellm's providers; "
    "send their text as a text block",
    "search_result": "search result blocks cannot be sent to freellm's providers; "
    "send their text as a text block",
}

USER_BLOCKS: Final = frozenset({"text", "image", "tool_result"})
ASSISTANT_BLOCKS: Final = frozenset({"text", "tool_use", "thinking", "redacted_thinking"})
TOOL_RESULT_BLOCKS: Final = frozenset({"text", "image"})
IMAGE_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
THINKING_TYPES: Final = frozenset({"enabled", "disabled", "adaptive", "between_tools"})
TOOL_CHOICES: Final = frozenset({"auto", "any", "tool", "none"})


class _Refusal(Exception):
    """A request this door refuses. The checks run many calls deep (a message, its blocks, a
    tool result's parts); one exception, caught in :func:`_translate` and never let out, keeps
    each check a line where threading a value back through every level would not."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(problem)
        self.error = DoorError(400, f"{path}: {problem}" if path else problem, param=path or None)


# --- requests -----------------------------------------------------------------------------------


def translate(body: object) -> Translated | DoorError:
    """A Messages request as a chat completion request, or why it is refused. Never raises."""
    return _translate(body, count_only=False)


def count_tokens(body: object) -> int | DoorError:
    """The estimator's count of a ``count_tokens`` request's prompt (system, messages, tools):
    what routing counts for the same request. ``max_tokens`` is not asked for."""
    translated = _translate(body, count_only=True)
    if isinstance(translated, DoorError):
        return translated
    return translated.shape.prompt_tokens


def _translate(body: object, *, count_only: bool) -> Translated | DoorError:
    try:
        chat = _chat_body(body, count_only=count_only)
    except _Refusal as refusal:
        return refusal.error
    shape = inspect_request(chat)
    if isinstance(shape, BadRequest):
        # The door's own checks come first; what is left is a value the chat path holds to
        # tighter bounds. Its OpenAI param names the translated field, not the client's.
        return DoorError(400, shape.message, code=shape.code)
    return Translated(chat, shape)


def _chat_body(body: object, *, count_only: bool) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _Refusal("", "The request body must be a JSON object.")
    for field, why in REFUSED_FIELDS.items():
        if body.get(field) is not None:
            raise _Refusal(field, f"not supported: {why}.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _Refusal("model", "Field required: a non-empty string.")
    chat: dict[str, Any] = {"model": model}

    messages: list[dict[str, Any]] = []
    if "system" in body:
        system = _system_text(body["system"], "system")
        if system:
            messages.append({"role": "system", "content": system})
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise _Refusal("messages", "Field required: a non-empty array of messages.")
    for index, message in enumerate(raw_messages):
        messages += _message(message, f"messages.{index}")
    chat["messages"] = messages

    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        if not count_only:
            raise _Refusal("max_tokens", "Field required.")
    elif not _is_int(max_tokens) or max_tokens < 1:
        raise _Refusal("max_tokens", "must be an integer >= 1.")
    elif not count_only:
        chat["max_tokens"] = max_tokens

    _sampling(body, chat)
    _session(body, chat)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _Refusal("stream", "must be a boolean.")
    if stream and not count_only:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}

    effort = _output_config(body.get("output_config"), chat)
    thinking = _thinking(body.get("thinking"))
    if thinking != "disabled" and (thinking or effort):
        chat["reasoning_effort"] = thinking or effort

    tools = body.get("tools")
    names: list[str] = []
    if tools is not None:
        if not isinstance(tools, list):
            raise _Refusal("tools", "must be an array of tools.")
        chat_tools = [_tool(tool, f"tools.{index}") for index, tool in enumerate(tools)]
        names = [tool["function"]["name"] for tool in chat_tools]
        if chat_tools:
            chat["tools"] = chat_tools
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], names, chat)
    return chat


def _sampling(body: Mapping[str, Any], chat: dict[str, Any]) -> None:
    """``stop_sequences``, ``temperature``, ``top_p`` and ``top_k``, onto ``chat``."""
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise _Refusal("stop_sequences", "must be an array of non-empty strings.")
        if stop:
            chat["stop"] = list(stop)
    for field in ("temperature", "top_p"):  # Anthropic's range for both
        value = body.get(field)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise _Refusal(field, "must be a number between 0 and 1.")
            chat[field] = value
    top_k = body.get("top_k")
    if top_k is not None:
        if not _is_int(top_k) or top_k < 0:
            raise _Refusal("top_k", "must be an integer >= 0.")
        chat["top_k"] = top_k


def _session(body: Mapping[str, Any], chat: dict[str, Any]) -> None:
    """``metadata.user_id`` as ``user``: what names the session (the sticky model)."""
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise _Refusal("metadata", "must be an object.")
        user = metadata.get("user_id")
        if user is not None and not isinstance(user, str):
            raise _Refusal("metadata.user_id", "must be a string.")
        if user:
            chat["user"] = user


def _among(value: object, options: Collection[str]) -> TypeGuard[str]:
    """Whether ``value`` is one of ``options`` (a list or an object is never: unhashable,
    it cannot even be looked up in a set)."""
    return isinstance(value, str) and value in options


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _system_text(system: object, path: str) -> str:
    """A system prompt (a string or text blocks) as one text."""
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise _Refusal(path, "must be a string or an array of text blocks.")
    texts = []
    for index, block in enumerate(system):
        where = f"{path}.{index}"
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _Refusal(f"{where}.type", 'must be "text".')
        texts.append(_text(block, where))
    return "\n\n".join(texts)


def _text(block: Mapping[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise _Refusal(f"{where}.text", "Field required: a string.")
    return text


def _message(message: object, path: str) -> list[dict[str, Any]]:
    """The chat messages of one Messages turn: a tool result is a message of its own."""
    if not isinstance(message, dict):
        raise _Refusal(path, "must be an object with `role` and `content`.")
    role = message.get("role")
    content = message.get("content")
    if role not in ("user", "assistant", "system"):
        raise _Refusal(f"{path}.role", 'must be "user", "assistant" or "system".')
    if role == "system":
        return [{"role": "system", "content": _system_text(content, f"{path}.content")}]
    if isinstance(content, str):
        return [{"role": role, "content": content}] if content or role == "user" else []
    if not isinstance(content, list):
        raise _Refusal(f"{path}.content", "must be a string or an array of content blocks.")
    if role == "user" and not content:
        raise _Refusal(f"{path}.content", "user messages must have non-empty content.")
    blocks = []
    allowed = USER_BLOCKS if role == "user" else ASSISTANT_BLOCKS
    for index, block in enumerate(content):
        where = f"{path}.content.{index}"
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(kind, str):
            raise _Refusal(f"{where}.type", "Field required: the block's type.")
        if kind in REFUSED_BLOCKS:
            raise _Refusal(f"{where}.type", f"`{kind}`: {REFUSED_BLOCKS[kind]}.")
        if kind not in allowed:
            raise _Refusal(
                f"{where}.type",
                f"`{kind}` blocks are not supported in {role} messages here "
                f"(only {', '.join(sorted(allowed))}).",
            )
        blocks.append((kind, block, where))
    if role == "user":
        return _user_turn(blocks)
    turn = _assistant_turn(blocks)
    return [turn] if turn["content"] or turn.get("tool_calls") else []


def _user_turn(blocks: list[tuple[str, Any, str]]) -> list[dict[str, Any]]:
    tool_messages = []
    parts: list[dict[str, Any]] = []
    for kind, block, where in blocks:
        if kind == "tool_result":
            message, images = _tool_result(block, where)
            tool_messages.append(message)
            parts += images
        elif kind == "text":
            parts.append({"type": "text", "text": _text(block, where)})
        else:
            parts.append(_image(block, where))
    if not parts:
        return tool_messages
    if all(part["type"] == "text" for part in parts):
        return [*tool_messages, {"role": "user", "content": "\n\n".join(p["text"] for p in parts)}]
    return [*tool_messages, {"role": "user", "content": parts}]


def _image(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _Refusal(f"{where}.source", "Field required: an object.")
    kind = source.get("type")
    if kind == "base64":
        media_type = source.get("media_type")
        data = source.get("data")
        if not _among(media_type, IMAGE_TYPES):
            raise _Refusal(
                f"{where}.source.media_type", f"must be one of {', '.join(sorted(IMAGE_TYPES))}."
            )
        if not isinstance(data, str) or not data:
            raise _Refusal(f"{where}.source.data", "Field required: base64 text.")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url":
        link = source.get("url")
        if not isinstance(link, str) or not link:
            raise _Refusal(f"{where}.source.url", "Field required: a URL.")
        url = link
    elif kind == "file":
        raise _Refusal(
            f"{where}.source.type", "`file` sources (Anthropic's Files API) are not supported."
        )
    else:
        raise _Refusal(f"{where}.source.type", 'must be "base64" or "url".')
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(
    block: Mapping[str, Any], where: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A tool result as a ``tool`` message, and its images (OpenAI's tool messages hold text
    alone: the images go to the user message that follows)."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise _Refusal(f"{where}.tool_use_id", "Field required: a string.")
    content = block.get("content")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for index, part in enumerate(content):
            part_where = f"{where}.content.{index}"
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind in REFUSED_BLOCKS:
                raise _Refusal(f"{part_where}.type", f"`{kind}`: {REFUSED_BLOCKS[kind]}.")
            if not _among(kind, TOOL_RESULT_BLOCKS):
                raise _Refusal(f"{part_where}.type", 'must be "text" or "image".')
            if kind == "text":
                texts.append(_text(part, part_where))
            else:
                images.append(_image(part, part_where))
    elif content is not None:
        raise _Refusal(f"{where}.content", "must be a string or an array of text and image blocks.")
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise _Refusal(f"{where}.is_error", "must be a boolean.")
    text = "\n\n".join(texts)
    if is_error:
        text = f"(error) {text}" if text else "(error)"
    if images:
        images.insert(0, {"type": "text", "text": f"(the images of tool result {call_id})"})
    return {"role": "tool", "tool_call_id": call_id, "content": text}, images


def _assistant_turn(blocks: list[tuple[str, Any, str]]) -> dict[str, Any]:
    texts = []
    calls = []
    for kind, block, where in blocks:
        if kind == "text":
            texts.append(_text(block, where))
        elif kind == "tool_use":
            calls.append(_tool_call(block, where))
        # thinking and redacted_thinking: dropped (see the module's docstring)
    message: dict[str, Any] = {"role": "assistant", "content": "\n\n".join(texts)}
    if calls:
        message["tool_calls"] = calls
        if not texts:
            message["content"] = None
    return message


def _tool_call(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    call_id = block.get("id")
    name = block.get("name")
    arguments = block.get("input")
    if not isinstance(call_id, str) or not call_id:
        raise _Refusal(f"{where}.id", "Field required: a string.")
    if not isinstance(name, str) or not name:
        raise _Refusal(f"{where}.name", "Field required: a string.")
    if not isinstance(arguments, dict):
        raise _Refusal(f"{where}.input", "Field required: an object.")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": wire.dumps(arguments).decode()},
    }


def _tool(tool: object, path: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise _Refusal(path, "must be an object.")
    kind = tool.get("type")
    if kind not in (None, "custom"):
        raise _Refusal(
            f"{path}.type",
            f"`{kind}` is a tool Anthropic defines or runs itself; freellm's providers know only "
            "custom tools (name, description, input_schema).",
        )
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise _Refusal(f"{path}.name", "Field required: a non-empty string.")
    schema = tool.get("input_schema")
    if not isinstance(schema, dict):
        raise _Refusal(f"{path}.input_schema", "Field required: a JSON Schema object.")
    function: dict[str, Any] = {"name": name, "parameters": schema}
    description = tool.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise _Refusal(f"{path}.description", "must be a string.")
        function["description"] = description
    strict = tool.get("strict")
    if strict is not None:
        if not isinstance(strict, bool):
            raise _Refusal(f"{path}.strict", "must be a boolean.")
        function["strict"] = strict
    return {"type": "function", "function": function}


def _tool_choice(choice: object, names: list[str], chat: dict[str, Any]) -> None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or not _among(kind, TOOL_CHOICES):
        raise _Refusal("tool_choice.type", 'must be "auto", "any", "tool" or "none".')
    parallel = choice.get("disable_parallel_tool_use")
    if parallel is not None and not isinstance(parallel, bool):
        raise _Refusal("tool_choice.disable_parallel_tool_use", "must be a boolean.")
    if not names:
        if kind in ("any", "tool"):
            raise _Refusal("tool_choice", f'"{kind}" needs `tools`.')
        return  # OpenAI refuses a tool_choice without tools; without tools there is no choice
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or name not in names:
            raise _Refusal("tool_choice.name", "must name one of `tools`.")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    if parallel:
        chat["parallel_tool_calls"] = False


def _thinking(thinking: object) -> str | None:
    """``reasoning_effort`` for ``thinking``, ``"disabled"``, or None (the provider's default)."""
    if thinking is None:
        return None
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if not isinstance(thinking, dict) or not _among(kind, THINKING_TYPES):
        raise _Refusal("thinking.type", f"must be one of {', '.join(sorted(THINKING_TYPES))}.")
    if kind == "disabled":
        return "disabled"
    if kind != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if not _is_int(budget) or budget < 1:
        raise _Refusal("thinking.budget_tokens", "Field required: an integer >= 1.")
    for bound, effort in EFFORT_BUDGETS:
        if budget < bound:
            return effort
    return "high"


def _output_config(config: object, chat: dict[str, Any]) -> str | None:
    """Sets ``response_format`` from ``output_config.format``; returns its effort, if any."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise _Refusal("output_config", "must be an object.")
    effort = config.get("effort")
    if effort is not None and not _among(effort, EFFORTS):
        raise _Refusal("output_config.effort", f"must be one of {', '.join(EFFORTS)}.")
    format_ = config.get("format")
    if format_ is not None:
        if not isinstance(format_, dict) or format_.get("type") != "json_schema":
            raise _Refusal("output_config.format.type", 'must be "json_schema".')
        schema = format_.get("schema")
        if not isinstance(schema, dict):
            raise _Refusal("output_config.format.schema", "Field required: a JSON Schema object.")
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": True},
        }
    return EFFORTS[effort] if effort is not None else None


# --- errors -------------------------------------------------------------------------------------


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status (see the module's docstring)."""
    known = ERROR_TYPES.get(status)
    if known is not None:
        return known
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_body(error: DoorError) -> bytes:
    """``error`` in Anthropic's shape, its type from its status, freellm's message kept."""
    return _error_json(error_type(error.status), error.message)


def _error_json(type_: str, message: str) -> bytes:
    return wire.dumps({"type": "error", "error": {"type": type_, "message": message}})


# --- answers ------------------------------------------------------------------------------------


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


def _reasoning(message: Mapping[str, Any]) -> str:
    for field in ("reasoning_content", "reasoning"):
        value = message.get(field)
        if isinstance(value, str) and value:
            return value
    return ""


def _stop(
    finish: object, explicit: object, text: str, stop_sequences: tuple[str, ...], *, calls: bool
) -> tuple[str, str | None]:
    """``stop_reason`` and ``stop_sequence`` (see the module's docstring)."""
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
    reasoning = _reasoning(message)
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
    stop_reason, stop_sequence = _stop(
        choice.get("finish_reason"),
        choice.get("stop_reason") or choice.get("matched_stop"),
        text,
        _stop_sequences(translated),
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
            "input_tokens": prompt if _is_int(prompt) else translated.shape.prompt_tokens,
            "output_tokens": output
            if _is_int(output)
            else estimate_text(reasoning + text + "".join(arguments)),
        },
    }


def _stop_sequences(translated: Translated) -> tuple[str, ...]:
    stop = translated.body.get("stop")
    return tuple(stop) if isinstance(stop, list) else ()


@attrs.define
class _Call:
    """A tool call of a stream, by its OpenAI ``index``."""

    position: int  # among the stream's tool calls, in order of appearance
    id: str | None = None
    name: str | None = None
    closed: bool = False  # its block was sent and closed


@attrs.define
class _Block:
    """A content block of a stream: ``live`` (sent as it comes) or held (sent whole later)."""

    kind: str  # "text", "thinking" or "tool_use"
    call: _Call | None = None
    pieces: list[str] = attrs.field(factory=list)  # a held block's, or a live tool call's


class MessagesFace:
    """One Messages request's answer, from the chat path's bytes (see the module's docstring).

    Theory of operation: a stream is folded event by event. The first chunk sends
    ``message_start``. A piece of content goes to the ``live`` block when it is of the same kind
    (and the same tool call); else, when nothing is held and the live block is whole (not a tool
    call whose arguments are still an unfinished JSON value), the live block closes and the
    piece opens a new one; else it is held. Held blocks are sent whole at the ``finish_reason``
    (or ``[DONE]``), after the live one closes. ``[DONE]`` sends ``message_delta`` and
    ``message_stop``; an ``error`` event, or :meth:`close` before ``[DONE]``, sends Anthropic's
    ``error`` event. After either, nothing.
    """

    def __init__(self, translated: Translated, *, id: str, created: int) -> None:
        self.translated = translated
        self.id = message_id(id)
        self.created = created
        self._decoder = Decoder()
        self._stop_sequences = _stop_sequences(translated)
        self._tail = max((len(s) for s in self._stop_sequences), default=0)
        self._started = False
        self._finished = False
        self._index = -1  # the content block index last opened
        self._live: _Block | None = None
        self._held: list[_Block] = []
        self._calls: dict[int, _Call] = {}
        self._text_tail = ""  # the text's last characters, as long as the longest stop sequence
        self._streamed: list[str] = []  # every piece, for an estimate when no usage comes
        self._finish: object = None
        self._explicit_stop: object = None
        self._usage: tuple[int | None, int | None] | None = None

    # --- whole answers ----------------------------------------------------------------------

    def answer(self, status: int, body: bytes) -> bytes:
        """A ``Message`` for a 2xx ``chat.completion``; else the error, Anthropic-shaped."""
        if not 200 <= status < 300:
            return error_body(openai_error(status, body))
        try:
            completion = json.loads(body)
        except ValueError:
            completion = None
        message = (
            message_of(completion, id=self.id, translated=self.translated)
            if isinstance(completion, dict)
            else None
        )
        if message is None:
            return _error_json("api_error", "The provider's answer held no message.")
        return wire.dumps(message)

    # --- streams ----------------------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """Anthropic's events for the chat stream's bytes ``data``, cut anywhere."""
        if self._finished:
            return b""
        out: list[bytes] = []
        try:
            events = self._decoder.feed(data)
        except ValueError:  # EventTooLarge: the exchange's own decoder bounds events first
            self._fail("The provider's stream broke: an event was too large.", out)
            return b"".join(out)
        for event in events:
            self._event(event, out)
        return b"".join(out)

    def close(self) -> bytes:
        """What the stream still owes: an ``error`` event when it ended before ``[DONE]``."""
        if self._finished:
            return b""
        out: list[bytes] = []
        try:
            events = self._decoder.close()
        except ValueError:
            events = []
        for event in events:
            self._event(event, out)
        if not self._finished:
            self._fail("The provider's stream ended before the answer was complete.", out)
        return b"".join(out)

    def _event(self, event: Event, out: list[bytes]) -> None:
        if self._finished:
            return
        if event.done:
            self._done(out)
            return
        try:
            chunk = json.loads(event.data)
        except ValueError:
            chunk = None
        if event.event == "error" or (isinstance(chunk, dict) and chunk.get("error") is not None):
            error = openai_error(200, event.data.encode())
            self._fail(error.message, out)
            return
        if not isinstance(chunk, dict):
            return  # not a chunk: nothing the client can be told about
        if not self._started:
            self._start(chunk, out)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            prompt = usage.get("prompt_tokens")
            output = usage.get("completion_tokens")
            self._usage = (
                prompt if _is_int(prompt) else None,
                output if _is_int(output) else None,
            )
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict):
            return
        delta = choice.get("delta")
        if isinstance(delta, dict):
            self._delta(delta, out)
        finish = choice.get("finish_reason")
        if finish is not None:
            self._finish = finish
            self._explicit_stop = choice.get("stop_reason") or choice.get("matched_stop")
            self._flush(out)

    def _start(self, chunk: Mapping[str, Any], out: list[bytes]) -> None:
        self._started = True
        model = chunk.get("model")
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": model if isinstance(model, str) else self.translated.body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.translated.shape.prompt_tokens, "output_tokens": 0},
        }
        _send(out, {"type": "message_start", "message": message})
        _send(out, {"type": "ping"})

    def _delta(self, delta: Mapping[str, Any], out: list[bytes]) -> None:
        reasoning = _reasoning(delta)
        if reasoning:
            self._piece("thinking", None, reasoning, out)
        text = delta.get("content")
        if isinstance(text, str) and text:
            self._piece("text", None, text, out)
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for order, call in enumerate(calls):
                if isinstance(call, dict):
                    self._tool_piece(call, order, out)

    def _tool_piece(self, call: Mapping[str, Any], order: int, out: list[bytes]) -> None:
        index = call.get("index")
        key: int = index if _is_int(index) else order
        known = self._calls.get(key)
        if known is None:
            known = self._calls[key] = _Call(len(self._calls))
        call_id = call.get("id")
        if isinstance(call_id, str) and call_id:
            known.id = known.id or call_id
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        name = function.get("name")
        if isinstance(name, str) and name:
            known.name = known.name or name
        arguments = function.get("arguments")
        self._piece("tool_use", known, arguments if isinstance(arguments, str) else "", out)

    def _piece(self, kind: str, call: _Call | None, text: str, out: list[bytes]) -> None:
        self._streamed.append(text)
        if kind == "text" and self._tail:
            self._text_tail = (self._text_tail + text)[-self._tail :]
        live = self._live
        if live is not None and live.kind == kind and live.call is call:
            if call is not None:
                live.pieces.append(text)
            self._send_piece(live, text, out)
            return
        if call is not None and call.closed:
            return  # more for a call whose arguments were whole: they could only break them
        if not self._held and self._live_is_whole() and (call is None or call.name is not None):
            self._close_live(out)
            self._live = self._open(kind, call, out)
            if call is not None:
                self._live.pieces.append(text)
            self._send_piece(self._live, text, out)
            return
        held = self._held[-1] if self._held else None
        if call is not None:
            held = next((block for block in self._held if block.call is call), None)
        elif held is not None and held.kind != kind:
            held = None
        if held is None:
            held = _Block(kind, call)
            self._held.append(held)
        held.pieces.append(text)

    def _live_is_whole(self) -> bool:
        """Whether the live block can be closed for another: any but a tool call whose
        arguments are not yet a whole JSON value (its next pieces may still come)."""
        live = self._live
        if live is None or live.call is None:
            return True
        try:
            json.loads("".join(live.pieces))
        except ValueError:
            return False
        return True

    def _open(self, kind: str, call: _Call | None, out: list[bytes]) -> _Block:
        self._index += 1
        block: dict[str, Any]
        if kind == "text":
            block = {"type": "text", "text": ""}
        elif kind == "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
        else:
            assert call is not None
            block = {
                "type": "tool_use",
                "id": call.id or f"toolu_{self.id.removeprefix('msg_')}_{call.position}",
                "name": call.name or "",
                "input": {},
            }
        _send(out, {"type": "content_block_start", "index": self._index, "content_block": block})
        return _Block(kind, call)

    def _send_piece(self, block: _Block, text: str, out: list[bytes]) -> None:
        if not text:
            return
        delta: dict[str, Any]
        if block.kind == "text":
            delta = {"type": "text_delta", "text": text}
        elif block.kind == "thinking":
            delta = {"type": "thinking_delta", "thinking": text}
        else:
            delta = {"type": "input_json_delta", "partial_json": text}
        _send(out, {"type": "content_block_delta", "index": self._index, "delta": delta})

    def _close_live(self, out: list[bytes]) -> None:
        if self._live is not None:
            _send(out, {"type": "content_block_stop", "index": self._index})
            if self._live.call is not None:
                self._live.call.closed = True
            self._live = None

    def _flush(self, out: list[bytes]) -> None:
        """Close the live block and send the held ones whole."""
        self._close_live(out)
        for block in self._held:
            self._open(block.kind, block.call, out)
            self._send_piece(block, "".join(block.pieces), out)
            _send(out, {"type": "content_block_stop", "index": self._index})
            if block.call is not None:
                block.call.closed = True
        self._held = []

    def _done(self, out: list[bytes]) -> None:
        if not self._started:
            self._fail("The provider's stream ended before any answer.", out)
            return
        self._flush(out)
        stop_reason, stop_sequence = _stop(
            self._finish,
            self._explicit_stop,
            self._text_tail,
            self._stop_sequences,
            calls=bool(self._calls),
        )
        prompt, output = self._usage or (None, None)
        usage: dict[str, int] = {
            "output_tokens": output
            if output is not None
            else estimate_text("".join(self._streamed))
        }
        if prompt is not None:
            usage["input_tokens"] = prompt
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        _send(out, {"type": "message_delta", "delta": delta, "usage": usage})
        _send(out, {"type": "message_stop"})
        self._finished = True

    def _fail(self, message: str, out: list[bytes]) -> None:
        out.append(encode(_error_json("api_error", message).decode(), event="error"))
        self._finished = True


def _send(out: list[bytes], event: Mapping[str, Any]) -> None:
    out.append(encode(wire.dumps(event).decode(), event=event["type"]))
