"""The Cohere dialect: OpenAI chat requests to Cohere's native ``POST /v2/chat``, and answers back.

Three pure translations, none of which raises on any input:

- :func:`prepare_body` turns an OpenAI ``/v1/chat/completions`` body into a Cohere v2 chat body,
  or returns an :class:`Untranslatable` naming the OpenAI field (``param`` style, as in
  :mod:`freellm.core.chat`) that Cohere cannot express. The shell turns that into a 400 or skips
  to a provider that can serve the request.
- :func:`translate_response` turns a Cohere ``V2ChatResponse`` into an OpenAI ``chat.completion``
  (an :class:`Answer`), or an :class:`UpstreamFailure` when Cohere reports ``ERROR``/``TIMEOUT``
  or the body is not a chat response.
- :func:`fold_event` is one step of the stream translation: ``(StreamState, sse.Event) ->
  (StreamState, [chunk bytes])``. :class:`StreamFold` wraps it behind the interface of
  :class:`freellm.core.dialects.openai.StreamFold` (``step``, ``usage``, ``done``,
  ``completion_chars``; :class:`~freellm.core.dialects.openai.StreamError` on an error).

What is translated (OpenAI -> Cohere)
-------------------------------------
==========================================  ======================================================
OpenAI                                      Cohere v2
==========================================  ======================================================
``messages``: system, developer             ``system`` (text, or text parts)
user (text and ``image_url`` parts)         ``user``, parts kept; ``image_url`` {url, detail} is
                                            Cohere's own shape (only vision models such as
                                            command-a-vision accept it; routing checks that)
assistant (text, ``refusal`` parts)         ``assistant`` ``content``
assistant with ``tool_calls``               ``tool_calls`` [{id, type, function{name, arguments}}];
                                            its text (or a ``tool_plan`` field) -> ``tool_plan``
tool (``tool_call_id``, text)               ``tool`` with ``tool_call_id``; a string stays a
                                            string, text parts stay text parts
``tools`` (function)                        ``tools`` {type, function{name, description,
                                            parameters}}; no parameters -> an empty object schema;
                                            every tool ``strict`` -> ``strict_tools: true``
``tool_choice`` auto / none / required      omitted / ``NONE`` / ``REQUIRED``
``max_tokens``, ``max_completion_tokens``   ``max_tokens`` (the smaller of the two)
``temperature``, ``seed``                   the same
``top_p``                                   ``p``, clamped to Cohere's [0.01, 0.99] (Cohere's
                                            default is 0.75, so an explicit 1 becomes 0.99)
``top_k`` (not OpenAI, sent by some)        ``k``, clamped to [0, 500]
``frequency_penalty``, ``presence_penalty`` the same, clamped from OpenAI's [-2, 2] to [0, 1]
``stop`` (string or array)                  ``stop_sequences``
``response_format`` json_object             ``{type: "json_object"}``
``response_format`` json_schema             ``{type: "json_object", json_schema: <its schema>}``
``stream``                                  ``stream`` (Cohere always reports usage at the end)
==========================================  ======================================================

Dropped: hints Cohere has no knob for, which leave the answer's shape as it is: ``user``,
``metadata``, ``store``, ``service_tier``, ``stream_options`` (honoured by the fold),
``parallel_tool_calls`` (Cohere may call several tools at once either way), ``n`` (1;
:mod:`freellm.core.chat` refuses more), ``reasoning_effort``, ``verbosity``, ``prediction``, a
user message's ``name``, and any field unknown to OpenAI (vendor extensions mean nothing to
Cohere, so they are not forwarded).

Untranslatable: ``tool_choice`` naming a function (Cohere can only force *some* tool) or
``required`` without tools, the legacy ``functions``/``function_call`` and ``function`` role,
a non-empty ``logit_bias``, ``logprobs``/``top_logprobs`` (Cohere's logprobs have another shape),
audio output (``audio``, ``modalities`` other than text), ``web_search_options``, images outside
user messages, content parts other than text and images (``input_audio``, ``file``), and values
of the wrong type where a translation has to read them.

What comes back (Cohere -> OpenAI)
----------------------------------
- ``finish_reason``: COMPLETE and STOP_SEQUENCE -> ``stop``, MAX_TOKENS -> ``length``, TOOL_CALL
  -> ``tool_calls`` (so is COMPLETE when the message made tool calls); ERROR and TIMEOUT are
  failures, not answers. Anything else -> ``stop``.
- ``tool_plan`` (the model's "I will look up the weather...") becomes the message's ``content``,
  before any text. It is what an OpenAI model says beside its tool calls, clients show it, and
  when the client sends the assistant message back its text becomes ``tool_plan`` again, so the
  plan survives the round trip. In streams, tool-plan deltas are content deltas.
- ``content`` text parts are joined; ``thinking`` parts (reasoning models) become
  ``reasoning_content``, the field other OpenAI-compatible providers use for it.
- Tool calls keep Cohere's ids. ``refusal`` is ``null``, ``annotations`` ``[]``. Citations are
  dropped: OpenAI's annotations describe URLs, Cohere's describe spans of documents.
- Usage: ``usage.billed_units`` input/output tokens, each falling back to ``usage.tokens``.
- The OpenAI ``id`` is ``chatcmpl-`` + Cohere's id; ``model`` and ``created`` come in as
  arguments (the core reads no clock).

The stream (theory of operation)
--------------------------------
Cohere frames its stream as SSE with the event type twice, ``event: content-delta`` and
``data: {"type": "content-delta", ...}``. The fold reads ``type`` from the data and falls back to
the ``event:`` name, so either alone is enough. It sends, as OpenAI does: a role chunk first (on
message-start, or before the first delta if message-start never came), content deltas (tool plan,
text), ``reasoning_content`` deltas, tool-call deltas with ``index`` on every one (``id``,
``type`` and ``name`` on the first delta of each call, ``arguments`` in pieces), then on
message-end a chunk with ``finish_reason``, a usage chunk (``choices: []``) only when the client
asked for ``stream_options.include_usage``, and ``data: [DONE]``. The stream is done at
message-end, whether or not a ``[DONE]`` follows (Cohere's SDK accepts one; one after
message-end is ignored, one before it ends the stream as it is). content-end, tool-call-end,
citation-* and debug events produce nothing. A message-end with ERROR/TIMEOUT, an ``error``
event, or an event whose data is an error object puts a :class:`StreamFailure` in the state;
the fold then raises ``StreamError`` and nothing more is sent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final, TypeGuard

import attrs

from freellm.core.dialects import Untranslatable
from freellm.core.dialects.openai import StreamError, Usage
from freellm.core.sse import Event

__all__ = [
    "FINISH_REASONS",
    "Answer",
    "StreamFailure",
    "StreamFold",
    "StreamState",
    "Untranslatable",
    "UpstreamFailure",
    "fold_event",
    "prepare_body",
    "translate_response",
    "usage_of",
]

FINISH_REASONS: Final[Mapping[str, str]] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}
FAILED_FINISH: Final = frozenset({"ERROR", "TIMEOUT"})
IMAGE_DETAILS: Final = frozenset({"auto", "low", "high"})
EMPTY_SCHEMA: Final[Mapping[str, Any]] = {"type": "object", "properties": {}}
DONE: Final = b"data: [DONE]\n\n"


# --- requests -----------------------------------------------------------------------------------


def prepare_body(
    body: Mapping[str, Any], model: str, *, stream: bool
) -> dict[str, Any] | Untranslatable:
    """The Cohere ``/v2/chat`` body for an OpenAI chat body, or what stops the translation.

    ``model`` is the provider's model id; ``stream`` whether to ask for an SSE stream. Never
    raises: anything it cannot read or express comes back as an :class:`Untranslatable`.
    """
    refused = _refused_fields(body)
    if refused is not None:
        return refused
    messages = _messages(body.get("messages"))
    if isinstance(messages, Untranslatable):
        return messages
    upstream: dict[str, Any] = {"model": model, "messages": messages}

    tools = body.get("tools")
    has_tools = isinstance(tools, list) and bool(tools)
    if tools is not None:
        translated = _tools(tools)
        if isinstance(translated, Untranslatable):
            return translated
        if translated:
            upstream["tools"] = translated
            if all(_strict(tool) for tool in tools):
                upstream["strict_tools"] = True
    choice = _tool_choice(body.get("tool_choice"), has_tools=has_tools)
    if isinstance(choice, Untranslatable):
        return choice
    if choice is not None:
        upstream["tool_choice"] = choice

    sampling = _sampling(body)
    if isinstance(sampling, Untranslatable):
        return sampling
    upstream.update(sampling)
    response_format = _response_format(body.get("response_format"))
    if isinstance(response_format, Untranslatable):
        return response_format
    if response_format is not None:
        upstream["response_format"] = response_format
    upstream["stream"] = stream
    return upstream


def _refused_fields(body: Mapping[str, Any]) -> Untranslatable | None:
    for name in ("functions", "function_call", "audio", "web_search_options"):
        if body.get(name) is not None:
            return Untranslatable(name, f"Cohere's chat API has no counterpart of `{name}`.")
    if body.get("logit_bias"):
        return Untranslatable("logit_bias", "Cohere's v2 chat API has no `logit_bias`.")
    if body.get("logprobs") or body.get("top_logprobs"):
        name = "logprobs" if body.get("logprobs") else "top_logprobs"
        return Untranslatable(name, "Log probabilities are not translated from Cohere's format.")
    modalities = body.get("modalities")
    if modalities is not None and (
        not isinstance(modalities, list) or any(kind != "text" for kind in modalities)
    ):
        return Untranslatable("modalities", "Cohere answers in text only.")
    return None


def _messages(messages: object) -> list[dict[str, Any]] | Untranslatable:
    if not isinstance(messages, list) or not messages:
        return Untranslatable("messages", "`messages` must be a non-empty array.")
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        translated = _message(message, f"messages[{index}]")
        if isinstance(translated, Untranslatable):
            return translated
        out.append(translated)
    return out


def _message(message: object, where: str) -> dict[str, Any] | Untranslatable:
    if not isinstance(message, dict):
        return Untranslatable(where, f"`{where}` must be an object.")
    role = message.get("role")
    content = message.get("content")
    if role in ("system", "developer"):
        text = _text_content(content, f"{where}.content", as_parts=True)
        if isinstance(text, Untranslatable):
            return text
        return {"role": "system", "content": text}
    if role == "user":
        parts = _user_content(content, f"{where}.content")
        if isinstance(parts, Untranslatable):
            return parts
        return {"role": "user", "content": parts}
    if role == "assistant":
        return _assistant(message, where)
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            return Untranslatable(
                f"{where}.tool_call_id", f"`{where}.tool_call_id` must be a non-empty string."
            )
        text = _text_content(content, f"{where}.content", as_parts=True)
        if isinstance(text, Untranslatable):
            return text
        return {"role": "tool", "tool_call_id": call_id, "content": text}
    return Untranslatable(
        f"{where}.role", f"Cohere has no `{role}` role (use tools and tool messages)."
    )


def _assistant(message: Mapping[str, Any], where: str) -> dict[str, Any] | Untranslatable:
    calls = message.get("tool_calls")
    content = message.get("content")
    if not calls:
        text = _text_content(content, f"{where}.content", as_parts=True, refusals=True)
        if isinstance(text, Untranslatable):
            return text
        return {"role": "assistant", "content": text}
    if not isinstance(calls, list):
        return Untranslatable(f"{where}.tool_calls", f"`{where}.tool_calls` must be an array.")
    out: dict[str, Any] = {"role": "assistant", "tool_calls": []}
    for index, call in enumerate(calls):
        translated = _tool_call(call, f"{where}.tool_calls[{index}]")
        if isinstance(translated, Untranslatable):
            return translated
        out["tool_calls"].append(translated)
    plan = message.get("tool_plan")  # sent back by clients that keep unknown fields
    if not isinstance(plan, str):
        text = _text_content(content, f"{where}.content", as_parts=False, refusals=True)
        if isinstance(text, Untranslatable):
            return text
        plan = text
    if plan:
        out["tool_plan"] = plan
    return out


def _tool_call(call: object, where: str) -> dict[str, Any] | Untranslatable:
    if not isinstance(call, dict) or call.get("type", "function") != "function":
        return Untranslatable(f"{where}.type", "Only function tool calls can be sent to Cohere.")
    call_id = call.get("id")
    function = call.get("function")
    if not isinstance(call_id, str) or not call_id:
        return Untranslatable(f"{where}.id", f"`{where}.id` must be a non-empty string.")
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(function, dict) or not isinstance(name, str) or not name:
        return Untranslatable(
            f"{where}.function.name", f"`{where}.function.name` must be a non-empty string."
        )
    arguments = function.get("arguments")
    if arguments is None:
        arguments = "{}"
    elif isinstance(arguments, dict | list):  # some clients send them decoded
        arguments = json.dumps(arguments, ensure_ascii=False)
    elif not isinstance(arguments, str):
        return Untranslatable(
            f"{where}.function.arguments", f"`{where}.function.arguments` must be a JSON string."
        )
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _text_content(
    content: object, where: str, *, as_parts: bool, refusals: bool = False
) -> str | list[dict[str, Any]] | Untranslatable:
    """Text-only content: a string stays a string; text parts stay parts (``as_parts``) or are
    joined. A ``refusal`` part (assistant messages) counts as text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return Untranslatable(where, f"`{where}` must be a string or an array of text parts.")
    texts: list[str] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        key = "refusal" if refusals and kind == "refusal" else "text"
        text = part.get(key) if isinstance(part, dict) and kind in ("text", key) else None
        if not isinstance(text, str):
            return Untranslatable(
                f"{where}[{index}]", f"Cohere takes only text here, not a `{kind}` part."
            )
        texts.append(text)
    if as_parts:
        return [{"type": "text", "text": text} for text in texts]
    return "".join(texts)


def _user_content(content: object, where: str) -> str | list[dict[str, Any]] | Untranslatable:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return Untranslatable(where, f"`{where}` must be a string or an array of content parts.")
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        part_where = f"{where}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part, dict) and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url" and isinstance(part, dict):
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                return Untranslatable(
                    f"{part_where}.image_url.url", "An image part needs an `image_url.url`."
                )
            translated: dict[str, Any] = {"url": url}
            detail = image.get("detail") if isinstance(image, dict) else None
            if isinstance(detail, str) and detail in IMAGE_DETAILS:
                translated["detail"] = detail
            parts.append({"type": "image_url", "image_url": translated})
        else:
            return Untranslatable(
                part_where, f"Cohere takes text and image parts, not a `{kind}` part."
            )
    return parts


def _tools(tools: object) -> list[dict[str, Any]] | Untranslatable:
    if not isinstance(tools, list):
        return Untranslatable("tools", "`tools` must be an array.")
    out: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            return Untranslatable(f"{where}.type", "Cohere takes function tools only.")
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(function, dict) or not isinstance(name, str) or not name:
            return Untranslatable(
                f"{where}.function.name", f"`{where}.function.name` must be a non-empty string."
            )
        parameters = function.get("parameters")
        if parameters is None:
            parameters = dict(EMPTY_SCHEMA)  # Cohere requires a schema; OpenAI allows none
        elif not isinstance(parameters, dict):
            return Untranslatable(
                f"{where}.function.parameters", "Tool parameters must be a JSON Schema object."
            )
        translated: dict[str, Any] = {"name": name, "parameters": parameters}
        description = function.get("description")
        if isinstance(description, str):
            translated["description"] = description
        out.append({"type": "function", "function": translated})
    return out


def _strict(tool: object) -> bool:
    function = tool.get("function") if isinstance(tool, dict) else None
    return isinstance(function, dict) and function.get("strict") is True


def _tool_choice(choice: object, *, has_tools: bool) -> str | Untranslatable | None:
    if choice is None or choice == "auto":
        return None
    if choice == "none":
        return "NONE" if has_tools else None
    if choice == "required":
        if not has_tools:
            return Untranslatable("tool_choice", '`tool_choice` "required" needs `tools`.')
        return "REQUIRED"
    return Untranslatable(
        "tool_choice",
        "Cohere can force a tool call but not a named one: use "
        '"required" with that one tool, or "auto".',
    )


def _sampling(body: Mapping[str, Any]) -> dict[str, Any] | Untranslatable:
    out: dict[str, Any] = {}
    limits: list[int] = []
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value):
            return Untranslatable(name, f"`{name}` must be an integer.")
        limits.append(value)
    if limits:
        out["max_tokens"] = min(limits)
    for name, target, low, high in (
        ("temperature", "temperature", 0.0, None),
        ("top_p", "p", 0.01, 0.99),
        ("frequency_penalty", "frequency_penalty", 0.0, 1.0),
        ("presence_penalty", "presence_penalty", 0.0, 1.0),
    ):
        value = body.get(name)
        if value is None:
            continue
        number = _finite(value)
        if number is None:
            return Untranslatable(name, f"`{name}` must be a number.")
        clamped = max(low, number)
        out[target] = clamped if high is None else min(high, clamped)
    for name, target in (("seed", "seed"), ("top_k", "k")):
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value):
            return Untranslatable(name, f"`{name}` must be an integer.")
        out[target] = min(500, max(0, value)) if target == "k" else value
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(item, str) for item in stop):
        if stop:
            out["stop_sequences"] = list(stop)
    elif stop is not None:
        return Untranslatable("stop", "`stop` must be a string or an array of strings.")
    return out


def _response_format(value: object) -> dict[str, Any] | Untranslatable | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(value, dict):
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            return {"type": "json_object", "json_schema": schema}
        return {"type": "json_object"}
    return Untranslatable(
        "response_format.type", "`response_format.type` must be text, json_object or json_schema."
    )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: object) -> float | None:
    """``value`` as a float if it is a finite JSON number (``json.loads`` also makes NaN,
    infinities and integers too large for a float)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


# --- responses ----------------------------------------------------------------------------------


@attrs.frozen
class Answer:
    """An OpenAI ``chat.completion`` (``body``, a fresh dict the caller owns) and its usage."""

    body: dict[str, Any]
    usage: Usage | None


@attrs.frozen
class UpstreamFailure:
    """A 200 from Cohere that is not an answer.

    ``finish_reason`` is Cohere's (``ERROR``, ``TIMEOUT``) when it ended the generation with a
    failure, ``None`` when the body is not a V2 chat response at all. ``usage`` is what it
    reported, if anything: tokens it did generate still count.
    """

    message: str
    finish_reason: str | None = None
    usage: Usage | None = None


def usage_of(usage: object) -> Usage | None:
    """Usage from Cohere's ``usage`` object: ``billed_units``, each count falling back to
    ``tokens``; ``None`` when neither has both counts."""
    if not isinstance(usage, dict):
        return None
    counts: list[int] = []
    for name in ("input_tokens", "output_tokens"):
        for group in ("billed_units", "tokens"):
            section = usage.get(group)
            value = _finite(section.get(name)) if isinstance(section, dict) else None
            if value is not None:
                counts.append(max(0, int(value)))
                break
        else:
            return None
    return Usage(counts[0], counts[1])


def translate_response(data: object, *, model: str, created: int) -> Answer | UpstreamFailure:
    """The OpenAI ``chat.completion`` for a decoded Cohere ``V2ChatResponse``. Never raises.

    ``model`` is the model id to report, ``created`` the answer's time (epoch seconds).
    """
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(message, dict):
        return UpstreamFailure("not a Cohere v2 chat response")
    usage = usage_of(data.get("usage"))
    finish = data.get("finish_reason")
    if isinstance(finish, str) and finish in FAILED_FINISH:
        return UpstreamFailure(f"Cohere ended the answer with {finish}", str(finish), usage)
    texts: list[str] = []
    plan = message.get("tool_plan")
    if isinstance(plan, str):
        texts.append(plan)
    thoughts: list[str] = []
    parts = message.get("content")
    for part in parts if isinstance(parts, list) else ():
        if isinstance(part, dict):
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part.get("thinking"), str):
                thoughts.append(part["thinking"])
    calls = _response_tool_calls(message.get("tool_calls"), data.get("id"))
    content = "".join(texts)
    out_message: dict[str, Any] = {
        "role": "assistant",
        "content": content if content or not calls else None,
        "refusal": None,
        "annotations": [],
    }
    if calls:
        out_message["tool_calls"] = calls
    if thoughts:
        out_message["reasoning_content"] = "".join(thoughts)
    body: dict[str, Any] = {
        "id": _openai_id(data.get("id")),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": out_message,
                "logprobs": None,
                "finish_reason": _finish_reason(finish, tool_calls=bool(calls)),
            }
        ],
    }
    if usage is not None:
        body["usage"] = _openai_usage(usage)
    return Answer(body, usage)


def _response_tool_calls(calls: object, response_id: object) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        return []
    out: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or not isinstance(function, dict):
            continue
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            call_id = f"call_{response_id}_{index}"  # Cohere always sends one; stay stable
        out.append(
            {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": str(function.get("name") or ""),
                    "arguments": _arguments(function.get("arguments")),
                },
            }
        )
    return out


def _arguments(arguments: object) -> str:
    if isinstance(arguments, str):
        return arguments
    if arguments is None:
        return ""
    return json.dumps(arguments, ensure_ascii=False)


def _finish_reason(finish: object, *, tool_calls: bool) -> str:
    reason = FINISH_REASONS.get(finish, "stop") if isinstance(finish, str) else "stop"
    return "tool_calls" if tool_calls and reason == "stop" else reason


def _openai_id(cohere_id: object) -> str:
    return (
        f"chatcmpl-{cohere_id}" if isinstance(cohere_id, str) and cohere_id else "chatcmpl-cohere"
    )


def _openai_usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total,
    }


# --- streams ------------------------------------------------------------------------------------


@attrs.frozen
class StreamFailure:
    """Cohere reported a failure inside the stream: what it said, and the event's data."""

    message: str
    body: str


@attrs.frozen
class StreamState:
    """Where one Cohere stream is. ``calls`` holds, for each OpenAI tool-call index, the Cohere
    ``index`` its tool-call-start carried (``None`` if none): deltas find their call by it."""

    model: str
    created: int
    include_usage: bool
    id: str = "chatcmpl-cohere"
    started: bool = False
    calls: tuple[int | None, ...] = ()
    usage: Usage | None = None
    completion_chars: int = 0
    chunks: int = 0
    done: bool = False
    failure: StreamFailure | None = None


def fold_event(state: StreamState, event: Event) -> tuple[StreamState, list[bytes]]:
    """One Cohere SSE event in, the new state and the OpenAI SSE bytes to send out. Never raises;
    a failure is recorded in ``state.failure`` and nothing is sent for it."""
    if state.done or state.failure is not None:
        return state, []
    if event.done:
        return attrs.evolve(state, done=True), [DONE]
    try:
        data = json.loads(event.data)
    except ValueError:
        return state, []  # not Cohere's: nothing to translate
    if not isinstance(data, dict):
        return state, []
    kind = data.get("type")
    if not isinstance(kind, str):
        kind = event.event
    if kind == "error" or (kind is None and ("message" in data or "error" in data)):
        error = data.get("error")
        said = error.get("message") if isinstance(error, dict) else error or data.get("message")
        failure = StreamFailure(str(said or event.data)[:500], event.data)
        return attrs.evolve(state, failure=failure), []
    delta = data.get("delta")
    message = delta.get("message") if isinstance(delta, dict) else None
    message = message if isinstance(message, dict) else {}
    if kind == "message-start":
        cohere_id = data.get("id")
        if isinstance(cohere_id, str) and cohere_id and not state.started:
            state = attrs.evolve(state, id=_openai_id(cohere_id))
        return _emit(state, [])
    if kind in ("content-start", "content-delta"):
        content = message.get("content")
        if isinstance(content, dict):
            if isinstance(content.get("text"), str) and content["text"]:
                return _emit(state, [{"content": content["text"]}], len(content["text"]))
            if isinstance(content.get("thinking"), str) and content["thinking"]:
                thought = content["thinking"]
                return _emit(state, [{"reasoning_content": thought}], len(thought))
        return state, []
    if kind == "tool-plan-delta":
        plan = message.get("tool_plan")
        if isinstance(plan, str) and plan:
            return _emit(state, [{"content": plan}], len(plan))
        return state, []
    if kind == "tool-call-start":
        return _tool_call_start(state, data.get("index"), message.get("tool_calls"))
    if kind == "tool-call-delta":
        return _tool_call_delta(state, data.get("index"), message.get("tool_calls"))
    if kind == "message-end":
        return _message_end(state, delta if isinstance(delta, dict) else {}, event.data)
    return state, []  # content-end, tool-call-end, citation-*, debug, anything new


def _tool_call_start(
    state: StreamState, cohere_index: object, call: object
) -> tuple[StreamState, list[bytes]]:
    call = call[0] if isinstance(call, list) and call else call
    if not isinstance(call, dict):
        return state, []
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    index = len(state.calls)
    name = str(function.get("name") or "")
    arguments = _arguments(function.get("arguments"))
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        call_id = f"call_{state.id}_{index}"
    state = attrs.evolve(
        state, calls=(*state.calls, cohere_index if _is_int(cohere_index) else None)
    )
    first = {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    return _emit(state, [{"tool_calls": [first]}], len(name) + len(arguments))


def _tool_call_delta(
    state: StreamState, cohere_index: object, call: object
) -> tuple[StreamState, list[bytes]]:
    function = call.get("function") if isinstance(call, dict) else None
    arguments = function.get("arguments") if isinstance(function, dict) else None
    if not state.calls or not isinstance(arguments, str) or not arguments:
        return state, []
    index = len(state.calls) - 1
    if _is_int(cohere_index) and cohere_index in state.calls:
        index = state.calls.index(cohere_index)
    piece = {"index": index, "function": {"arguments": arguments}}
    return _emit(state, [{"tool_calls": [piece]}], len(arguments))


def _message_end(
    state: StreamState, delta: Mapping[str, Any], raw: str
) -> tuple[StreamState, list[bytes]]:
    usage = usage_of(delta.get("usage"))
    finish = delta.get("finish_reason")
    if isinstance(finish, str) and finish in FAILED_FINISH:
        said = delta.get("error")
        message = str(said) if said else f"Cohere ended the stream with {finish}"
        return attrs.evolve(state, usage=usage, failure=StreamFailure(message[:500], raw)), []
    state, out = _emit(state, [])
    tail = [_chunk(state, {}, _finish_reason(finish, tool_calls=bool(state.calls)))]
    if state.include_usage and usage is not None:
        body = {
            "id": state.id,
            "object": "chat.completion.chunk",
            "created": state.created,
            "model": state.model,
            "choices": [],
            "usage": _openai_usage(usage),
        }
        tail.append(_sse(body))
    state = attrs.evolve(state, usage=usage, done=True, chunks=state.chunks + len(tail))
    return state, [*out, *tail, DONE]


def _emit(
    state: StreamState, deltas: list[dict[str, Any]], chars: int = 0
) -> tuple[StreamState, list[bytes]]:
    """The chunks of ``deltas``, after the role chunk if it has not gone out yet."""
    out: list[bytes] = []
    if not state.started:
        out.append(_chunk(state, {"role": "assistant", "content": "", "refusal": None}, None))
    out += [_chunk(state, delta, None) for delta in deltas]
    changed = attrs.evolve(
        state,
        started=True,
        chunks=state.chunks + len(out),
        completion_chars=state.completion_chars + chars,
    )
    return changed, out


def _chunk(state: StreamState, delta: dict[str, Any], finish: str | None) -> bytes:
    return _sse(
        {
            "id": state.id,
            "object": "chat.completion.chunk",
            "created": state.created,
            "model": state.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
    )


def _sse(body: Mapping[str, Any]) -> bytes:
    # json.dumps escapes line breaks inside strings, so one data: line always holds the chunk.
    return (
        b"data: " + json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"
    )


class StreamFold:
    """One Cohere stream, translated: the interface of the OpenAI dialect's ``StreamFold``.

    :meth:`step` takes one SSE event and returns the OpenAI SSE bytes to send the client (possibly
    none); it raises :class:`~freellm.core.dialects.openai.StreamError` when Cohere reports a
    failure (an error event, or message-end with ERROR/TIMEOUT), and again on any later step.
    ``model`` and ``created`` go
    into every chunk; ``fallback_id`` is the chunks' id until message-start brings Cohere's.
    """

    def __init__(
        self,
        *,
        client_wants_usage: bool,
        model: str,
        created: int,
        fallback_id: str = "chatcmpl-cohere",
    ) -> None:
        self.state = StreamState(
            model=model, created=created, include_usage=client_wants_usage, id=fallback_id
        )

    def step(self, event: Event) -> list[bytes]:
        self.state, out = fold_event(self.state, event)
        failure = self.state.failure
        if failure is not None:
            raise StreamError(failure.message, failure.body)
        return out

    @property
    def usage(self) -> Usage | None:
        return self.state.usage

    @property
    def done(self) -> bool:
        return self.state.done

    @property
    def completion_chars(self) -> int:
        return self.state.completion_chars

    @property
    def chunks(self) -> int:
        return self.state.chunks
