"""A Messages conversation as chat messages: system prompts, turns and their blocks, tool
results and images. Every check raises :class:`~freellm.core.doors.messages.common.Refusal`
with Anthropic's field path (``messages.0.content.1.type``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from freellm.core import wire
from freellm.core.doors.messages.common import Refusal, among

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


def system_text(system: object, path: str) -> str:
    """A system prompt (a string or text blocks) as one text."""
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise Refusal(path, "must be a string or an array of text blocks.")
    texts = []
    for index, block in enumerate(system):
        where = f"{path}.{index}"
        if not isinstance(block, dict) or block.get("type") != "text":
            raise Refusal(f"{where}.type", 'must be "text".')
        texts.append(_text(block, where))
    return "\n\n".join(texts)


def _text(block: Mapping[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise Refusal(f"{where}.text", "Field required: a string.")
    return text


def chat_messages(message: object, path: str) -> list[dict[str, Any]]:
    """The chat messages of one Messages turn: a tool result is a message of its own."""
    if not isinstance(message, dict):
        raise Refusal(path, "must be an object with `role` and `content`.")
    role = message.get("role")
    content = message.get("content")
    if role not in ("user", "assistant", "system"):
        raise Refusal(f"{path}.role", 'must be "user", "assistant" or "system".')
    if role == "system":
        return [{"role": "system", "content": system_text(content, f"{path}.content")}]
    if isinstance(content, str):
        return [{"role": role, "content": content}] if content or role == "user" else []
    if not isinstance(content, list):
        raise Refusal(f"{path}.content", "must be a string or an array of content blocks.")
    if role == "user" and not content:
        raise Refusal(f"{path}.content", "user messages must have non-empty content.")
    blocks = []
    allowed = USER_BLOCKS if role == "user" else ASSISTANT_BLOCKS
    for index, block in enumerate(content):
        where = f"{path}.content.{index}"
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(kind, str):
            raise Refusal(f"{where}.type", "Field required: the block's type.")
        if kind in REFUSED_BLOCKS:
            raise Refusal(f"{where}.type", f"`{kind}`: {REFUSED_BLOCKS[kind]}.")
        if kind not in allowed:
            raise Refusal(
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
        raise Refusal(f"{where}.source", "Field required: an object.")
    kind = source.get("type")
    if kind == "base64":
        media_type = source.get("media_type")
        data = source.get("data")
        if not among(media_type, IMAGE_TYPES):
            raise Refusal(
                f"{where}.source.media_type", f"must be one of {', '.join(sorted(IMAGE_TYPES))}."
            )
        if not isinstance(data, str) or not data:
            raise Refusal(f"{where}.source.data", "Field required: base64 text.")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url":
        link = source.get("url")
        if not isinstance(link, str) or not link:
            raise Refusal(f"{where}.source.url", "Field required: a URL.")
        url = link
    elif kind == "file":
        raise Refusal(
            f"{where}.source.type", "`file` sources (Anthropic's Files API) are not supported."
        )
    else:
        raise Refusal(f"{where}.source.type", 'must be "base64" or "url".')
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(
    block: Mapping[str, Any], where: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A tool result as a ``tool`` message, and its images (OpenAI's tool messages hold text
    alone: the images go to the user message that follows)."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise Refusal(f"{where}.tool_use_id", "Field required: a string.")
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
                raise Refusal(f"{part_where}.type", f"`{kind}`: {REFUSED_BLOCKS[kind]}.")
            if not among(kind, TOOL_RESULT_BLOCKS):
                raise Refusal(f"{part_where}.type", 'must be "text" or "image".')
            if kind == "text":
                texts.append(_text(part, part_where))
            else:
                images.append(_image(part, part_where))
    elif content is not None:
        raise Refusal(f"{where}.content", "must be a string or an array of text and image blocks.")
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise Refusal(f"{where}.is_error", "must be a boolean.")
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
        # thinking and redacted_thinking: dropped (see the package's docstring)
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
        raise Refusal(f"{where}.id", "Field required: a string.")
    if not isinstance(name, str) or not name:
        raise Refusal(f"{where}.name", "Field required: a string.")
    if not isinstance(arguments, dict):
        raise Refusal(f"{where}.input", "Field required: an object.")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": wire.dumps(arguments).decode()},
    }
