"""OpenAI chat bodies to Cohere ``/v2/chat`` bodies: :func:`prepare_body`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from freellm.core.dialects import Untranslatable
from freellm.core.dialects.cohere.common import finite, is_int

IMAGE_DETAILS: Final = frozenset({"auto", "low", "high"})
EMPTY_SCHEMA: Final[Mapping[str, Any]] = {"type": "object", "properties": {}}


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
        if not is_int(value):
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
        number = finite(value)
        if number is None:
            return Untranslatable(name, f"`{name}` must be a number.")
        clamped = max(low, number)
        out[target] = clamped if high is None else min(high, clamped)
    for name, target in (("seed", "seed"), ("top_k", "k")):
        value = body.get(name)
        if value is None:
            continue
        if not is_int(value):
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
