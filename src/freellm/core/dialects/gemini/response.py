"""``GenerateContentResponse`` to ``chat.completion``, and the part reader streams share."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import attrs

from freellm.core.dialects.gemini.signatures import Signature, call_tag, encode_call_id
from freellm.core.dialects.openai import Usage

#: Gemini ``finishReason`` -> OpenAI ``finish_reason``; anything else maps to ``stop``. A choice
#: that produced a tool call finishes with ``tool_calls`` unless this says length or a filter.
FINISH_REASONS: Final[Mapping[str, str]] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MODEL_ARMOR": "content_filter",
}


@attrs.frozen
class ChoiceState:
    """What one candidate has produced so far."""

    index: int
    started: bool = False
    calls: int = 0
    text_signature: str | None = None  # waiting for the next tool call to carry it
    finish_reason: str | None = None


def read_parts(
    choice: ChoiceState, parts: object, response_id: str
) -> tuple[ChoiceState, str, list[dict[str, Any]]]:
    """The text and tool calls of a candidate's next ``parts``; thought parts are skipped."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    pending, count = choice.text_signature, choice.calls
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, Mapping):
            continue
        signature = part.get("thoughtSignature")
        signature = signature if isinstance(signature, str) and signature else None
        call = part.get("functionCall")
        if isinstance(call, Mapping):
            name = call.get("name")
            name = name if isinstance(name, str) else ""
            args = call.get("args")
            arguments = json.dumps(
                args if isinstance(args, Mapping) else {}, ensure_ascii=False, separators=(",", ":")
            )
            carried: Signature | None = None
            if signature is not None:
                carried = Signature(signature)
            elif pending is not None:
                carried, pending = Signature(pending, on_text=True), None
            tag = call_tag(response_id, choice.index, count, name, arguments)
            calls.append(
                {
                    "id": encode_call_id(tag, carried),
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            )
            count += 1
        elif part.get("thought") is True:
            continue
        else:
            text = part.get("text")
            if isinstance(text, str):
                texts.append(text)
            if signature is not None and ("text" in part or len(part) == 1):
                pending = signature
    choice = attrs.evolve(choice, calls=count, text_signature=pending)
    return choice, "".join(texts), calls


def finish_reason_of(choice: ChoiceState, reason: object) -> str:
    mapped = FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"
    if choice.calls and mapped == "stop":
        return "tool_calls"
    return mapped


def usage_of(data: Mapping[str, Any]) -> Usage | None:
    """The usage of a response: thoughts count as completion tokens, as OpenAI bills them."""
    meta = data.get("usageMetadata")
    if not isinstance(meta, Mapping):
        return None
    prompt, candidates, thoughts = (
        _count(meta, "promptTokenCount"),
        _count(meta, "candidatesTokenCount"),
        _count(meta, "thoughtsTokenCount"),
    )
    return Usage(prompt, candidates + thoughts)


def _count(meta: Mapping[str, Any], key: str) -> int:
    value = meta.get(key)
    return max(0, value) if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_json(meta: Mapping[str, Any]) -> dict[str, Any]:
    usage = usage_of({"usageMetadata": meta}) or Usage(0, 0)
    total = _count(meta, "totalTokenCount") or usage.total
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": _count(meta, "cachedContentTokenCount")},
        "completion_tokens_details": {"reasoning_tokens": _count(meta, "thoughtsTokenCount")},
    }


def candidates_of(data: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    found = data.get("candidates")
    out: list[tuple[int, Mapping[str, Any]]] = []
    for candidate in found if isinstance(found, list) else ():
        if isinstance(candidate, Mapping):
            index = candidate.get("index", 0)  # proto JSON leaves a 0 index out
            out.append((index if isinstance(index, int) else 0, candidate))
    return sorted(out, key=lambda pair: pair[0])


def parts_of(candidate: Mapping[str, Any]) -> object:
    content = candidate.get("content")
    return content.get("parts") if isinstance(content, Mapping) else None


def prompt_blocked(data: Mapping[str, Any]) -> bool:
    feedback = data.get("promptFeedback")
    return isinstance(feedback, Mapping) and bool(feedback.get("blockReason"))


def response_id_of(data: Mapping[str, Any]) -> str:
    value = data.get("responseId")
    return value if isinstance(value, str) else ""


def model_of(data: Mapping[str, Any], fallback: str) -> str:
    value = data.get("modelVersion")
    return value if isinstance(value, str) and value else fallback


def translate_response(
    data: object, *, model: str = "", created: int = 0
) -> tuple[dict[str, Any], Usage | None]:
    """The OpenAI ``chat.completion`` of a ``GenerateContentResponse``, and its usage.

    ``model`` names the model when the response does not (``modelVersion``); ``created`` is the
    shell's clock. Raises ``ValueError`` if ``data`` is not a response: not an object, an
    ``error``, or neither candidates nor a blocked prompt.
    """
    if not isinstance(data, Mapping) or "error" in data:
        raise ValueError("not a GenerateContentResponse")
    candidates = candidates_of(data)
    if not candidates and not prompt_blocked(data):
        raise ValueError("a GenerateContentResponse without candidates")
    response_id = response_id_of(data)
    choices = []
    for index, candidate in candidates:
        state, text, calls = read_parts(ChoiceState(index), parts_of(candidate), response_id)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text if text or not calls else None,
            "refusal": None,
            "annotations": [],
        }
        if calls:
            message["tool_calls"] = calls
        reason = finish_reason_of(state, candidate.get("finishReason"))
        choices.append(
            {"index": index, "message": message, "logprobs": None, "finish_reason": reason}
        )
    if not choices:  # the prompt itself was blocked
        message = {"role": "assistant", "content": "", "refusal": None, "annotations": []}
        choices.append(
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "content_filter"}
        )
    completion: dict[str, Any] = {
        "id": f"chatcmpl-{response_id or 'gemini'}",
        "object": "chat.completion",
        "created": created,
        "model": model_of(data, model),
        "choices": choices,
    }
    meta = data.get("usageMetadata")
    if isinstance(meta, Mapping):
        completion["usage"] = usage_json(meta)
    return completion, usage_of(data)
