"""Cohere ``V2ChatResponse`` to ``chat.completion``, and the pieces the stream fold shares."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import attrs

from freellm.core.dialects.cohere.common import finite
from freellm.core.dialects.openai import Usage

FINISH_REASONS: Final[Mapping[str, str]] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}
FAILED_FINISH: Final = frozenset({"ERROR", "TIMEOUT"})


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
            value = finite(section.get(name)) if isinstance(section, dict) else None
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
        "id": openai_id(data.get("id")),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": out_message,
                "logprobs": None,
                "finish_reason": finish_reason_of(finish, tool_calls=bool(calls)),
            }
        ],
    }
    if usage is not None:
        body["usage"] = openai_usage(usage)
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
                    "arguments": arguments_json(function.get("arguments")),
                },
            }
        )
    return out


def arguments_json(arguments: object) -> str:
    if isinstance(arguments, str):
        return arguments
    if arguments is None:
        return ""
    return json.dumps(arguments, ensure_ascii=False)


def finish_reason_of(finish: object, *, tool_calls: bool) -> str:
    reason = FINISH_REASONS.get(finish, "stop") if isinstance(finish, str) else "stop"
    return "tool_calls" if tool_calls and reason == "stop" else reason


def openai_id(cohere_id: object) -> str:
    return (
        f"chatcmpl-{cohere_id}" if isinstance(cohere_id, str) and cohere_id else "chatcmpl-cohere"
    )


def openai_usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total,
    }
