"""An OpenAI conversation as Gemini's ``systemInstruction`` parts and ``contents`` turns."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from freellm.core.dialects import Untranslatable
from freellm.core.dialects.gemini.common import parse_json
from freellm.core.dialects.gemini.signatures import SKIP_SIGNATURE, Signature, decode_call_id

_DATA_URL: Final = re.compile(r"data:([^;,]+)((?:;[^;,]*)*);base64,(.*)", re.DOTALL)
_IMAGE_TYPES: Final[Mapping[str, str]] = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "heic": "image/heic",
    "heif": "image/heif",
    "pdf": "application/pdf",
}


def conversation_contents(
    messages: Sequence[object],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | Untranslatable:
    """The system parts and the merged turns of an OpenAI conversation."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            continue
        where = f"messages[{index}]"
        role = message.get("role")
        parts: list[dict[str, Any]] | Untranslatable
        if role in ("system", "developer"):
            text = _system_parts(message.get("content"), where)
            if isinstance(text, Untranslatable):
                return text
            system += text
            continue
        if role == "assistant":
            parts = _assistant_parts(message, where, call_names)
            gemini_role = "model"
        elif role in ("tool", "function"):
            parts = _tool_result_parts(message, where, call_names)
            gemini_role = "user"
        else:
            parts = _user_parts(message.get("content"), where)
            gemini_role = "user"
        if isinstance(parts, Untranslatable):
            return parts
        if not parts:
            continue
        if turns and turns[-1]["role"] == gemini_role:
            turns[-1]["parts"] += parts  # Gemini wants the roles to alternate
        else:
            turns.append({"role": gemini_role, "parts": parts})
    for turn in turns:
        if turn["role"] == "model":
            calls = [part for part in turn["parts"] if "functionCall" in part]
            if calls and "thoughtSignature" not in calls[0]:
                calls[0]["thoughtSignature"] = SKIP_SIGNATURE
    return system, turns


def _system_parts(content: object, where: str) -> list[dict[str, Any]] | Untranslatable:
    parts = _user_parts(content, where)
    if isinstance(parts, Untranslatable):
        return parts
    for index, part in enumerate(parts):
        if "text" not in part:
            return Untranslatable(
                f"{where}.content[{index}]", "Gemini's system instruction takes text only."
            )
    return parts


def _user_parts(content: object, where: str) -> list[dict[str, Any]] | Untranslatable:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        return []
    parts: list[dict[str, Any]] = []
    for index, item in enumerate(content):
        part_where = f"{where}.content[{index}]"
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type")
        part: dict[str, Any] | Untranslatable | None
        if kind in ("text", "refusal"):
            text = item.get(kind)
            part = {"text": text} if isinstance(text, str) and text else None
        elif kind == "image_url":
            image = item.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            part = _media(url, f"{part_where}.image_url.url", image=True)
        elif kind == "input_audio":
            part = _audio(item.get("input_audio"), f"{part_where}.input_audio")
        elif kind == "file":
            part = _file(item.get("file"), f"{part_where}.file")
        else:
            return Untranslatable(
                f"{part_where}.type", f"Content parts of type {kind!r} are not translated."
            )
        if isinstance(part, Untranslatable):
            return part
        if part is not None:
            parts.append(part)
    return parts


def _media(url: object, where: str, *, image: bool) -> dict[str, Any] | Untranslatable:
    if not isinstance(url, str) or not url:
        return Untranslatable(where, "A URL is required.")
    if url[:5].lower() == "data:":
        match = _DATA_URL.fullmatch(url)
        if match is None or not match.group(3):
            return Untranslatable(where, "Only base64 data URLs are translated for Gemini.")
        return {"inlineData": {"mimeType": match.group(1).strip(), "data": match.group(3)}}
    if url[:8].lower() == "https://" or url[:7].lower() == "http://":
        file_data = {"fileUri": url}
        path = url.split("?", 1)[0].split("#", 1)[0]
        mime = _IMAGE_TYPES.get(path.rsplit(".", 1)[-1].lower()) if "." in path else None
        if mime is not None:
            file_data["mimeType"] = mime
        return {"fileData": file_data}
    what = "Image" if image else "File"
    return Untranslatable(where, f"{what} URLs must be data: or http(s) URLs for Gemini.")


def _audio(audio: object, where: str) -> dict[str, Any] | Untranslatable:
    data = audio.get("data") if isinstance(audio, Mapping) else None
    form = audio.get("format") if isinstance(audio, Mapping) else None
    if not isinstance(data, str) or not data or not isinstance(form, str) or not form:
        return Untranslatable(where, "`input_audio` needs `data` and `format`.")
    return {"inlineData": {"mimeType": f"audio/{form.lower()}", "data": data}}


def _file(file: object, where: str) -> dict[str, Any] | Untranslatable:
    if not isinstance(file, Mapping):
        return Untranslatable(where, "A file part needs `file`.")
    data = file.get("file_data")
    if isinstance(data, str) and data:
        return _media(data, f"{where}.file_data", image=False)
    return Untranslatable(f"{where}.file_id", "Uploaded OpenAI files cannot reach Gemini.")


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text") or part.get("refusal") or "")
            for part in content
            if isinstance(part, Mapping)
        )
    return ""


def _assistant_parts(
    message: Mapping[str, Any], where: str, call_names: dict[str, str]
) -> list[dict[str, Any]] | Untranslatable:
    text = _text_of(message.get("content"))
    calls: list[dict[str, Any]] = []
    text_signature: str | None = None
    tool_calls = message.get("tool_calls")
    legacy = message.get("function_call")
    entries: list[tuple[str, object]] = []
    if isinstance(tool_calls, list):
        entries = [(f"{where}.tool_calls[{i}]", call) for i, call in enumerate(tool_calls)]
    elif isinstance(legacy, Mapping):
        entries = [(f"{where}.function_call", {"function": legacy})]
    for call_where, call in entries:
        if not isinstance(call, Mapping):
            continue
        function = call.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str) or not name:
            return Untranslatable(f"{call_where}.function.name", "A tool call needs a name.")
        args = _arguments(function.get("arguments") if isinstance(function, Mapping) else None)
        if args is None:
            return Untranslatable(
                f"{call_where}.function.arguments",
                "Gemini needs the arguments of a past tool call as a JSON object.",
            )
        part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
        call_id = call.get("id")
        if isinstance(call_id, str):
            call_names[call_id] = name
        signature = decode_call_id(call_id) or _extra_signature(call)
        if signature is not None and signature.on_text:
            text_signature = signature.value
        elif signature is not None:
            part["thoughtSignature"] = signature.value
        calls.append(part)
    parts: list[dict[str, Any]] = []
    if text:
        parts.append({"text": text})
        if text_signature is not None:
            parts[0]["thoughtSignature"] = text_signature
    return parts + calls


def _extra_signature(call: Mapping[str, Any]) -> Signature | None:
    """Gemini's own OpenAI endpoint puts the signature in ``extra_content``; accept it too."""
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, Mapping) else None
    value = google.get("thought_signature") if isinstance(google, Mapping) else None
    return Signature(value) if isinstance(value, str) and value else None


def _arguments(arguments: object) -> dict[str, Any] | None:
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, Mapping):
        return dict(arguments)
    parsed = parse_json(arguments) if isinstance(arguments, str) else None
    return parsed if isinstance(parsed, dict) else None


def _tool_result_parts(
    message: Mapping[str, Any], where: str, call_names: Mapping[str, str]
) -> list[dict[str, Any]] | Untranslatable:
    if message.get("role") == "function":
        name = message.get("name")
        if not isinstance(name, str) or not name:
            return Untranslatable(f"{where}.name", "A function message needs a name.")
    else:
        call_id = message.get("tool_call_id")
        found = call_names.get(call_id) if isinstance(call_id, str) else None
        if found is None:
            return Untranslatable(
                f"{where}.tool_call_id", "No earlier assistant tool call has this id."
            )
        name = found
    text = _text_of(message.get("content"))
    parsed = parse_json(text) if text else None
    if not isinstance(parsed, dict):  # Gemini's response is an object: wrap anything else
        parsed = {"result": text if parsed is None else parsed}
    return [{"functionResponse": {"name": name, "response": parsed}}]
