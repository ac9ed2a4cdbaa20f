"""Input items as chat messages: ``message``, ``function_call``, ``function_call_output`` and
``reasoning`` items; the 400s for items freellm cannot carry (built-in tools' items, files).

The same reading serves a request's ``input`` and a finished response's ``output`` (output items
read as input items), which is how a stored conversation is written and continued by id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from freellm.core.doors import DoorError
from freellm.core.doors.responses.common import bad, unsupported

ROLES: Final = frozenset({"user", "assistant", "system", "developer"})
DETAILS: Final = frozenset({"low", "high", "auto"})


def input_messages(value: object) -> list[dict[str, Any]] | DoorError:
    """The chat messages of ``input`` (a string, or an array of items)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        return bad("`input` must be a string or an array of input items.", "input")
    messages: list[dict[str, Any]] = []
    joinable = False  # whether the last message is the assistant's, open to more tool calls
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            return bad(f"`{where}` must be an object.", where)
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
            return unsupported(
                f"`{where}.type` {shown} is not supported: input items are messages, "
                "function_call, function_call_output and reasoning.",
                f"{where}.type",
            )
    return messages


def _message(item: Mapping[str, Any], where: str) -> dict[str, Any] | DoorError:
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:
        return bad(f"`{where}.role` must be one of {', '.join(sorted(ROLES))}.", f"{where}.role")
    # Every provider reads "system"; not every one reads "developer", which means the same.
    chat_role = "system" if role == "developer" else role
    content = item.get("content")
    if isinstance(content, str):
        return {"role": chat_role, "content": content}
    if not isinstance(content, list):
        return bad(
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
        return bad(f"`{where}.type` is required.", f"{where}.type")
    if kind in ("input_text", "output_text", "refusal"):
        field = "refusal" if kind == "refusal" else "text"
        text = part.get(field)
        if not isinstance(text, str):
            return bad(f"`{where}.{field}` must be a string.", f"{where}.{field}")
        return {"type": "text", "text": text}
    if kind == "input_image" and role == "user":
        if part.get("file_id") is not None:
            return unsupported(
                f"`{where}.file_id` is not supported: freellm has no files; send the image as "
                "`image_url` (a URL or a data URL).",
                f"{where}.file_id",
            )
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            return bad(f"`{where}.image_url` must be a URL or a data URL.", f"{where}.image_url")
        image: dict[str, Any] = {"url": url}
        detail = part.get("detail")
        if isinstance(detail, str) and detail in DETAILS:
            image["detail"] = detail
        return {"type": "image_url", "image_url": image}
    return unsupported(
        f"`{where}.type` {kind} is not supported in a {role} message.", f"{where}.type"
    )


def _call(item: Mapping[str, Any], where: str) -> dict[str, Any] | DoorError:
    fields: dict[str, str] = {}
    for field in ("call_id", "name", "arguments"):
        value = item.get(field)
        if not isinstance(value, str) or (not value and field != "arguments"):
            return bad(f"`{where}.{field}` must be a non-empty string.", f"{where}.{field}")
        fields[field] = value
    return {
        "id": fields["call_id"],
        "type": "function",
        "function": {"name": fields["name"], "arguments": fields["arguments"]},
    }


def _call_output(item: Mapping[str, Any], where: str) -> dict[str, Any] | DoorError:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        return bad(f"`{where}.call_id` must be a non-empty string.", f"{where}.call_id")
    output = item.get("output")
    if isinstance(output, list):
        texts: list[str] = []
        for index, part in enumerate(output):
            part_where = f"{where}.output[{index}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "input_text" or not isinstance(part.get("text"), str):
                return unsupported(
                    f"`{part_where}` is not supported: a function's output is text.", part_where
                )
            texts.append(part["text"])
        output = "".join(texts)
    if not isinstance(output, str):
        return bad(f"`{where}.output` must be a string.", f"{where}.output")
    return {"role": "tool", "tool_call_id": call_id, "content": output}
