"""The Gemini dialect: OpenAI chat requests to ``generateContent`` and Gemini's answers back.

Theory of operation
-------------------
Four pure translations, each a function of its input alone (no clock, no randomness):

- :func:`translate_request`: an OpenAI ``/v1/chat/completions`` body (already checked by
  :func:`freellm.core.chat.inspect_request`) becomes a ``generateContent`` body, or an
  :class:`Untranslatable` naming the OpenAI field Gemini cannot honour. It never raises.
- :func:`translate_response`: a ``GenerateContentResponse`` becomes a ``chat.completion`` and its
  :class:`~freellm.core.dialects.openai.Usage`.
- :func:`stream_step`: the stream as a fold, ``(StreamState, event) -> (StreamState, chunks)``.
  With ``alt=sse`` every event is a whole ``GenerateContentResponse`` holding the next parts; there
  is no ``[DONE]``: the event carrying ``finishReason`` (and the final ``usageMetadata``) ends it.
  :class:`GeminiStreamFold` wraps the fold in :class:`~freellm.core.dialects.openai.StreamFold`'s
  interface (SSE wire bytes out, ``usage``, ``done``, ``completion_chars``, :class:`StreamError`).
  Responses and streams read parts through the same function, so a streamed answer assembles to
  exactly the message the same parts give unstreamed, tool-call ids included.
- :func:`encode_call_id` / :func:`decode_call_id`: Gemini's ``thoughtSignature`` round trip.

Thought signatures
------------------
Gemini 2.5+ puts an opaque ``thoughtSignature`` (base64 bytes) on some parts; Gemini 3 refuses a
tool-calling turn whose first ``functionCall`` part comes back without its signature. An OpenAI
client only echoes the assistant message, so the signature rides in the one field every client
echoes verbatim, the tool call's ``id``::

    call_<12 hex>                          no signature
    call_<12 hex>_<place><form><payload>   place: c = on this functionCall part,
                                                  t = on the message's text part
                                           form:  a = the signature's own base64 in the URL-safe
                                                      alphabet, padding dropped
                                                  h = hex of its UTF-8 (any other text)

The 12 hex digits are a digest of the response id, the choice, the call's position, its name and
its arguments: stable, deterministic and distinct within a conversation. Every id matches
``[A-Za-z0-9_-]+``, so strict validators of tool-call ids accept it; its length is
``20 + len(signature)`` for form ``a`` (less the padding), ``20 + 2 * bytes`` for ``h`` (which
Gemini's own signatures, canonical base64, never need).
Signatures run from a few hundred characters to several kilobytes, and so do these ids.

A text part's signature has no field of its own in an OpenAI message (putting it in ``content``
would show it to the user), so it is carried by the id of the next tool call that has no
signature of its own (place ``t``), and put back on the text part of that assistant message. A
text signature with no later tool call (a final answer) is dropped: Gemini validates signatures
only in the current tool-calling turn. Signatures on thought parts are dropped with the thoughts.
Going up, the first ``functionCall`` part of each model turn that has no signature (a turn
another provider or the client wrote) gets Gemini's documented placeholder, :data:`SKIP_SIGNATURE`.

Generation settings
-------------------
``temperature``, ``top_p``, ``top_k``, ``max_tokens``/``max_completion_tokens`` (the smaller),
``stop``, ``seed`` (folded into Gemini's int32), ``n`` and ``response_format`` go into
``generationConfig``; ``reasoning_effort`` becomes ``thinkingConfig.thinkingBudget`` with the
budgets Gemini's own OpenAI endpoint uses (none and minimal 0, low 1024, medium 8192, high 24576).

Not translated
--------------
An :class:`Untranslatable` (the shell answers 400 naming ``param``, or skips to another provider)
for: ``logit_bias``, ``logprobs``/``top_logprobs``, non-zero ``presence_penalty`` and
``frequency_penalty`` (Gemini 2.5 refuses penalties), ``audio`` and non-text ``modalities``,
``web_search_options``, an unknown ``reasoning_effort``, more than five ``stop`` sequences, non-text
system content, ``file_id`` files, non-base64 data URLs, image URLs that are neither ``data:`` nor
http(s), tool names Gemini refuses, tool parameters that do not describe an object, arguments of
a past tool call that are not a JSON object, a tool message whose ``tool_call_id`` matches no
earlier tool call, a named ``tool_choice`` that names no declared function, and any other
``tool_choice`` form. Ignored: ``parallel_tool_calls``, ``user``, ``metadata``, ``store``,
``service_tier``, ``prediction``, ``stream_options`` (the fold handles usage), image ``detail``,
and any field this module does not know. System and developer messages anywhere in the
conversation are joined into ``systemInstruction``. http(s) image URLs go as
``fileData{fileUri, mimeType}`` (Gemini fetches public and signed URLs itself since January 2026),
with the MIME type taken from the file extension when it is a known one.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

from freellm.core.dialects import Untranslatable
from freellm.core.dialects.openai import StreamError, Usage
from freellm.core.sse import Event

__all__ = [
    "FINISH_REASONS",
    "SKIP_SIGNATURE",
    "ChoiceState",
    "GeminiStreamFold",
    "Signature",
    "StreamState",
    "Untranslatable",
    "clean_schema",
    "decode_call_id",
    "encode_call_id",
    "endpoint",
    "stream_step",
    "translate_request",
    "translate_response",
    "usage_of",
]

SKIP_SIGNATURE: Final = "skip_thought_signature_validator"

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


def endpoint(model: str, *, stream: bool) -> str:
    """The path under the base URL (``.../v1beta``) for ``model``."""
    model = model.removeprefix("models/")
    if stream:
        return f"/models/{model}:streamGenerateContent?alt=sse"
    return f"/models/{model}:generateContent"


# --- thought signatures in tool-call ids --------------------------------------------------------


@attrs.frozen
class Signature:
    """A ``thoughtSignature``, and whether it sat on the text part rather than the call."""

    value: str
    on_text: bool = False


_CANONICAL_BASE64: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_CALL_ID: Final = re.compile(r"call_[0-9a-f]{12}_([ct])([ah])([A-Za-z0-9_-]*)")
_TO_URLSAFE: Final = str.maketrans("+/", "-_")
_FROM_URLSAFE: Final = str.maketrans("-_", "+/")


def encode_call_id(tag: str, signature: Signature | None) -> str:
    """The tool-call id for the call ``tag`` (12 hex digits), carrying ``signature`` if any."""
    if signature is None or not signature.value:
        return f"call_{tag}"
    value = signature.value
    place = "t" if signature.on_text else "c"
    if len(value) % 4 == 0 and _CANONICAL_BASE64.fullmatch(value):
        return f"call_{tag}_{place}a{value.rstrip('=').translate(_TO_URLSAFE)}"
    return f"call_{tag}_{place}h{value.encode('utf-8', 'surrogatepass').hex()}"


def decode_call_id(call_id: object) -> Signature | None:
    """The signature an id from :func:`encode_call_id` carries; ``None`` for any other id."""
    match = _CALL_ID.fullmatch(call_id) if isinstance(call_id, str) else None
    if match is None:
        return None
    place, form, payload = match.groups()
    if form == "a":
        if len(payload) % 4 == 1:  # no base64 string strips to this length
            return None
        value = (payload + "=" * (-len(payload) % 4)).translate(_FROM_URLSAFE)
    else:
        try:
            value = bytes.fromhex(payload).decode("utf-8", "surrogatepass")
        except ValueError:  # not hex, or not UTF-8 (UnicodeDecodeError is a ValueError)
            return None
    return Signature(value, on_text=place == "t") if value else None


def _call_tag(response_id: str, choice: int, position: int, name: str, arguments: str) -> str:
    key = "\x1f".join((response_id, str(choice), str(position), name, arguments))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]


# --- request ------------------------------------------------------------------------------------

_FUNCTION_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
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
_THINKING_BUDGETS: Final[Mapping[str, int]] = {
    "none": 0,
    "minimal": 0,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
}
_MAX_STOP_SEQUENCES: Final = 5


def _truthy(value: object) -> bool:
    return bool(value)


def _nonzero(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value != 0


def _not_text_only(value: object) -> bool:
    return isinstance(value, list) and any(item != "text" for item in value)


def _unknown_effort(value: object) -> bool:
    return value is not None and value not in _THINKING_BUDGETS


def _too_many_stops(value: object) -> bool:
    return isinstance(value, list) and len(value) > _MAX_STOP_SEQUENCES


#: Top-level fields Gemini cannot honour: (field, when the value asks for it, why).
_REFUSED: Final[tuple[tuple[str, Callable[[object], bool], str], ...]] = (
    ("logit_bias", _truthy, "Gemini has no token biases."),
    ("logprobs", _truthy, "Log probabilities are not translated for Gemini."),
    ("top_logprobs", _truthy, "Log probabilities are not translated for Gemini."),
    ("presence_penalty", _nonzero, "Gemini 2.5 models refuse penalties."),
    ("frequency_penalty", _nonzero, "Gemini 2.5 models refuse penalties."),
    ("modalities", _not_text_only, "Only text output is translated for Gemini."),
    ("audio", _truthy, "Audio output is not translated for Gemini."),
    ("web_search_options", _truthy, "Web search is not translated for Gemini."),
    ("reasoning_effort", _unknown_effort, "it must be none, minimal, low, medium or high."),
    ("stop", _too_many_stops, "Gemini takes at most 5 stop sequences."),
)


def translate_request(body: Mapping[str, Any]) -> dict[str, Any] | Untranslatable:
    """The ``generateContent`` body for an OpenAI chat body. Never raises.

    The model and streaming are not in the body: see :func:`endpoint`. Malformed values that
    :func:`~freellm.core.chat.inspect_request` would have refused are skipped, not reported.
    """
    for name, asks, why in _REFUSED:
        if asks(body.get(name)):
            return Untranslatable(name, f"`{name}` cannot be translated for Gemini: {why}")
    messages = body.get("messages")
    turns = _contents(messages if isinstance(messages, list) else [])
    if isinstance(turns, Untranslatable):
        return turns
    system, contents = turns
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    if not contents:
        if not system:
            return Untranslatable("messages", "Every message is empty: nothing to send Gemini.")
        # Gemini needs a turn; a conversation of system text alone is the user's request.
        request = {"contents": [{"role": "user", "parts": system}]}

    declarations = _declarations(body)
    if isinstance(declarations, Untranslatable):
        return declarations
    if declarations:
        request["tools"] = [{"functionDeclarations": declarations}]
        names = [declaration["name"] for declaration in declarations]
        config = _tool_config(body, names)
        if isinstance(config, Untranslatable):
            return config
        if config is not None:
            request["toolConfig"] = {"functionCallingConfig": config}

    generation = _generation_config(body)
    if generation:
        request["generationConfig"] = generation
    return request


def _contents(
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
    parsed = _json(arguments) if isinstance(arguments, str) else None
    return parsed if isinstance(parsed, dict) else None


def _json(text: str) -> object:
    """``text`` parsed, or ``None``; NaN and Infinity are refused (they are not JSON)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None


def _refuse_constant(name: str) -> object:
    raise ValueError(name)


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
    parsed = _json(text) if text else None
    if not isinstance(parsed, dict):  # Gemini's response is an object: wrap anything else
        parsed = {"result": text if parsed is None else parsed}
    return [{"functionResponse": {"name": name, "response": parsed}}]


def _declarations(body: Mapping[str, Any]) -> list[dict[str, Any]] | Untranslatable:
    functions: list[tuple[str, object]] = []
    tools = body.get("tools")
    if isinstance(tools, list):
        for index, tool in enumerate(tools):
            if not isinstance(tool, Mapping):
                continue
            if tool.get("type", "function") != "function":
                return Untranslatable(f"tools[{index}].type", "Only function tools translate.")
            functions.append((f"tools[{index}].function", tool.get("function")))
    legacy = body.get("functions")
    if isinstance(legacy, list):
        functions += [(f"functions[{i}]", function) for i, function in enumerate(legacy)]
    declarations: list[dict[str, Any]] = []
    for where, function in functions:
        if not isinstance(function, Mapping):
            continue
        name = function.get("name")
        if not isinstance(name, str) or not _FUNCTION_NAME.fullmatch(name):
            return Untranslatable(
                f"{where}.name",
                "Gemini function names start with a letter or _ and hold at most 64 letters, "
                "digits, _ . : or -.",
            )
        declaration: dict[str, Any] = {"name": name}
        description = function.get("description")
        if isinstance(description, str) and description:
            declaration["description"] = description
        parameters = function.get("parameters")
        if isinstance(parameters, Mapping):
            cleaned = clean_schema(parameters)
            if cleaned.get("type", "OBJECT") != "OBJECT" or "anyOf" in cleaned:
                return Untranslatable(
                    f"{where}.parameters", "Gemini needs parameters that describe one object."
                )
            if cleaned.get("properties"):  # Gemini refuses an OBJECT without properties
                declaration["parameters"] = cleaned
        declarations.append(declaration)
    return declarations


def _tool_config(
    body: Mapping[str, Any], names: list[str]
) -> dict[str, Any] | Untranslatable | None:
    param = "tool_choice"
    choice = body.get("tool_choice")
    if choice is None and body.get("function_call") is not None:
        param, choice = "function_call", body.get("function_call")
    if choice is None:
        return None
    modes = {"none": "NONE", "auto": "AUTO", "required": "ANY"}
    if isinstance(choice, str) and choice in modes:
        return {"mode": modes[choice]}
    function = choice.get("function") if isinstance(choice, Mapping) else None
    name = function.get("name") if isinstance(function, Mapping) else None
    if name is None and isinstance(choice, Mapping):
        name = choice.get("name")  # the legacy function_call form
    if not isinstance(name, str):
        return Untranslatable(param, "This tool_choice form is not translated for Gemini.")
    if name not in names:
        return Untranslatable(param, f"{name!r} is not one of the declared functions.")
    return {"mode": "ANY", "allowedFunctionNames": [name]}


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _generation_config(body: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for openai_name, gemini_name in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
    ):
        value = body.get(openai_name)
        if _number(value):
            config[gemini_name] = value
    limits = [
        value
        for value in (body.get("max_completion_tokens"), body.get("max_tokens"))
        if isinstance(value, int) and not isinstance(value, bool) and value > 0
    ]
    if limits:
        config["maxOutputTokens"] = min(limits)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    stops = [item for item in stops if isinstance(item, str) and item]
    if stops:
        config["stopSequences"] = stops
    seed = body.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        # Gemini's seed is an int32; any deterministic fold keeps the seed's promise.
        config["seed"] = seed if -(2**31) <= seed < 2**31 else seed % 2**31
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        config["candidateCount"] = n
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    if kind == "json_schema" and isinstance(response_format, Mapping):
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if isinstance(schema, Mapping):
            cleaned = clean_schema(schema, ordering=True)
            if cleaned:
                config["responseSchema"] = cleaned
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort in _THINKING_BUDGETS:
        config["thinkingConfig"] = {"thinkingBudget": _THINKING_BUDGETS[effort]}
    return config


# --- JSON Schema to Gemini's Schema -------------------------------------------------------------

_TYPES: Final[Mapping[str, str]] = {
    "string": "STRING",
    "number": "NUMBER",
    "integer": "INTEGER",
    "boolean": "BOOLEAN",
    "array": "ARRAY",
    "object": "OBJECT",
}
#: The ``format`` values Gemini accepts, by type; others are refused with a 400, so dropped.
_FORMATS: Final[Mapping[str, frozenset[str]]] = {
    "STRING": frozenset({"date-time"}),
    "NUMBER": frozenset({"float", "double"}),
    "INTEGER": frozenset({"int32", "int64"}),
}
#: Numeric keywords Gemini keeps, by type: (keyword, whether it must be a whole number).
_BOUNDS: Final[Mapping[str, tuple[tuple[str, bool], ...]]] = {
    "STRING": (("minLength", True), ("maxLength", True)),
    "NUMBER": (("minimum", False), ("maximum", False)),
    "INTEGER": (("minimum", False), ("maximum", False)),
    "ARRAY": (("minItems", True), ("maxItems", True)),
    "OBJECT": (("minProperties", True), ("maxProperties", True)),
}
_MAX_DEPTH: Final = 32
_MAX_NODES: Final = 5000


def clean_schema(schema: object, *, ordering: bool = False) -> dict[str, Any]:
    """A JSON Schema brought to the subset Gemini's ``Schema`` accepts. Never raises.

    Local ``$ref``\\ s (``#/$defs/...``, ``#/definitions/...``, any JSON pointer) are inlined; a
    recursive one becomes ``{}`` at its second visit. ``allOf`` is merged, ``oneOf`` becomes
    ``anyOf``, a ``null`` type or branch becomes ``nullable``, ``const`` becomes ``enum``. Enums
    must be strings for Gemini: other enums move into the description. Types are upper-cased;
    ``properties`` imply OBJECT, ``items`` ARRAY; an ARRAY without ``items`` gets string items
    (Gemini refuses it otherwise); ``required`` keeps only declared properties. Kept keywords:
    type, format (Gemini's few), title, description, nullable, enum, properties, required, items,
    anyOf and the numeric bounds of each type; ``propertyOrdering`` is added with ``ordering``
    (for response schemas, so the JSON keeps the client's key order). Everything else, such as
    ``$schema``, ``additionalProperties``, ``default``, ``pattern`` and ``examples``, is dropped.
    """
    return _Cleaner(schema, ordering=ordering).node(schema, 0, ())


class _Cleaner:
    """One cleaning pass; the node budget bounds what inlining shared ``$ref``\\ s can grow to."""

    def __init__(self, root: object, *, ordering: bool) -> None:
        self.root = root
        self.ordering = ordering
        self.budget = _MAX_NODES

    def node(self, schema: object, depth: int, refs: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(schema, Mapping) or depth > _MAX_DEPTH or self.budget <= 0:
            return {}
        self.budget -= 1
        ref = schema.get("$ref")
        if isinstance(ref, str):
            siblings = {key: value for key, value in schema.items() if key != "$ref"}
            target = self.resolve(ref) if ref not in refs else None
            if not isinstance(target, Mapping):
                return self.node(siblings, depth + 1, refs) if siblings else {}
            return self.node({**target, **siblings}, depth + 1, (*refs, ref))
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and all_of:
            return self.node(self.merge(schema, all_of, refs), depth + 1, refs)

        out: dict[str, Any] = {}
        for key in ("title", "description"):
            if isinstance(schema.get(key), str) and schema[key]:
                out[key] = schema[key]
        nullable = schema.get("nullable") is True

        raw_type = schema.get("type")
        names = raw_type if isinstance(raw_type, list) else [raw_type]
        nullable = nullable or "null" in names
        types = list(dict.fromkeys(_TYPES[n] for n in names if isinstance(n, str) and n in _TYPES))
        branches_raw = schema.get("anyOf", schema.get("oneOf"))
        if len(types) > 1:
            rest = {k: v for k, v in schema.items() if k not in ("type", "anyOf", "oneOf")}
            branches_raw = [{**rest, "type": name.lower()} for name in types]
        if isinstance(branches_raw, list) and branches_raw:
            branches = [self.node(branch, depth + 1, refs) for branch in branches_raw]
            nullable = nullable or any(branch == {"nullable": True} for branch in branches)
            branches = [branch for branch in branches if branch != {"nullable": True}]
            if len(branches) == 1:
                out = {**branches[0], **out}
            elif branches:
                out["anyOf"] = branches
            if nullable:
                out["nullable"] = True
            return out

        kind = types[0] if types else None
        values = schema.get("enum")
        if not isinstance(values, list):
            values = [schema["const"]] if "const" in schema else None
        if values is not None:
            nullable = nullable or None in values
            values = [value for value in values if value is not None]
            if values and all(isinstance(value, str) for value in values):
                kind = "STRING"  # Gemini allows enums on strings only
                out["enum"] = list(dict.fromkeys(values))
            elif values:
                allowed = ", ".join(json.dumps(value) for value in values)
                out["description"] = f"{out.get('description', '')} Allowed values: {allowed}."
                out["description"] = out["description"].strip()
        if kind is None and isinstance(schema.get("properties"), Mapping):
            kind = "OBJECT"
        if kind is None and ("items" in schema or "prefixItems" in schema):
            kind = "ARRAY"
        if kind is not None:
            out["type"] = kind
        if nullable:
            out["nullable"] = True
        if kind is None:
            return out

        form = schema.get("format")
        if isinstance(form, str) and form in _FORMATS.get(kind, ()):
            out["format"] = form
        for keyword, whole in _BOUNDS.get(kind, ()):
            bound = schema.get(keyword)
            if _number(bound) and (not whole or (isinstance(bound, int) and bound >= 0)):
                out[keyword] = bound
        if kind == "OBJECT":
            self.properties(schema, out, depth, refs)
        elif kind == "ARRAY":
            items = schema.get("items")
            if isinstance(items, list):  # the old tuple form: any of the listed schemas
                items = {"anyOf": items} if items else None
            if not isinstance(items, Mapping) and isinstance(schema.get("prefixItems"), list):
                items = {"anyOf": schema["prefixItems"]}
            cleaned = self.node(items, depth + 1, refs) if isinstance(items, Mapping) else {}
            out["items"] = cleaned or {"type": "STRING"}
        return out

    def properties(
        self, schema: Mapping[str, Any], out: dict[str, Any], depth: int, refs: tuple[str, ...]
    ) -> None:
        properties = schema.get("properties")
        if not isinstance(properties, Mapping) or not properties:
            return
        cleaned = {
            str(name): self.node(value, depth + 1, refs) for name, value in properties.items()
        }
        out["properties"] = cleaned
        required = schema.get("required")
        if isinstance(required, list):
            names = (name for name in required if isinstance(name, str))
            kept = [name for name in dict.fromkeys(names) if name in cleaned]
            if kept:
                out["required"] = kept
        if self.ordering and len(cleaned) > 1:
            out["propertyOrdering"] = list(cleaned)

    def merge(
        self, schema: Mapping[str, Any], all_of: list[object], refs: tuple[str, ...]
    ) -> dict[str, Any]:
        """``allOf`` folded into one schema: properties and required joined, first value wins."""
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for branch in all_of:
            while isinstance(branch, Mapping) and isinstance(branch.get("$ref"), str):
                ref = branch["$ref"]
                target = self.resolve(ref) if ref not in refs else None
                rest = {k: v for k, v in branch.items() if k != "$ref"}
                branch = {**target, **rest} if isinstance(target, Mapping) else rest
                refs = (*refs, ref)
            if not isinstance(branch, Mapping):
                continue
            for key, value in branch.items():
                if key == "properties" and isinstance(value, Mapping):
                    mine = merged.get("properties")
                    base = dict(mine) if isinstance(mine, Mapping) else {}
                    merged["properties"] = {**value, **base}
                elif key == "required" and isinstance(value, list):
                    mine = merged.get("required")
                    base_list = list(mine) if isinstance(mine, list) else []
                    merged["required"] = base_list + value
                else:
                    merged.setdefault(key, value)
        return merged

    def resolve(self, ref: str) -> object:
        """The target of a local JSON pointer ``ref``, or ``None``."""
        if not ref.startswith("#"):
            return None
        target: object = self.root
        for token in ref[1:].split("/")[1:] if ref != "#" else []:
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(target, Mapping):
                target = target.get(token)
            elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
                target = target[int(token)]
            else:
                return None
        return target


# --- responses ----------------------------------------------------------------------------------


@attrs.frozen
class ChoiceState:
    """What one candidate has produced so far."""

    index: int
    started: bool = False
    calls: int = 0
    text_signature: str | None = None  # waiting for the next tool call to carry it
    finish_reason: str | None = None


def _read_parts(
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
            tag = _call_tag(response_id, choice.index, count, name, arguments)
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


def _finish(choice: ChoiceState, reason: object) -> str:
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


def _usage_json(meta: Mapping[str, Any]) -> dict[str, Any]:
    usage = usage_of({"usageMetadata": meta}) or Usage(0, 0)
    total = _count(meta, "totalTokenCount") or usage.total
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": _count(meta, "cachedContentTokenCount")},
        "completion_tokens_details": {"reasoning_tokens": _count(meta, "thoughtsTokenCount")},
    }


def _candidates(data: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    found = data.get("candidates")
    out: list[tuple[int, Mapping[str, Any]]] = []
    for candidate in found if isinstance(found, list) else ():
        if isinstance(candidate, Mapping):
            index = candidate.get("index", 0)  # proto JSON leaves a 0 index out
            out.append((index if isinstance(index, int) else 0, candidate))
    return sorted(out, key=lambda pair: pair[0])


def _parts_of(candidate: Mapping[str, Any]) -> object:
    content = candidate.get("content")
    return content.get("parts") if isinstance(content, Mapping) else None


def _blocked(data: Mapping[str, Any]) -> bool:
    feedback = data.get("promptFeedback")
    return isinstance(feedback, Mapping) and bool(feedback.get("blockReason"))


def _response_id(data: Mapping[str, Any]) -> str:
    value = data.get("responseId")
    return value if isinstance(value, str) else ""


def _model(data: Mapping[str, Any], fallback: str) -> str:
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
    candidates = _candidates(data)
    if not candidates and not _blocked(data):
        raise ValueError("a GenerateContentResponse without candidates")
    response_id = _response_id(data)
    choices = []
    for index, candidate in candidates:
        state, text, calls = _read_parts(ChoiceState(index), _parts_of(candidate), response_id)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text if text or not calls else None,
            "refusal": None,
            "annotations": [],
        }
        if calls:
            message["tool_calls"] = calls
        reason = _finish(state, candidate.get("finishReason"))
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
        "model": _model(data, model),
        "choices": choices,
    }
    meta = data.get("usageMetadata")
    if isinstance(meta, Mapping):
        completion["usage"] = _usage_json(meta)
    return completion, usage_of(data)


# --- streams ------------------------------------------------------------------------------------


@attrs.frozen
class StreamState:
    """One Gemini stream so far. ``finished`` once every candidate has its finish reason."""

    include_usage: bool = False
    model: str = ""
    created: int = 0
    id: str | None = None
    choices: tuple[ChoiceState, ...] = ()
    usage: Mapping[str, Any] | None = None  # the latest usageMetadata
    finished: bool = False


def stream_step(
    state: StreamState, event: Mapping[str, Any]
) -> tuple[StreamState, list[dict[str, Any]]]:
    """Fold one stream event (a ``GenerateContentResponse``) into OpenAI chunk dicts.

    Emits a ``role`` delta when a choice starts, content and tool-call deltas (every tool-call
    delta has ``index``; each Gemini ``functionCall`` arrives whole, so each delta is a call's
    first, with id, type, name and its arguments as a JSON string), a finish chunk per choice, and
    once every choice is finished the usage chunk if the client asked for it. Events after the
    end are ignored. The ``[DONE]`` line is the wire's business (:class:`GeminiStreamFold`).
    """
    if state.finished:
        return state, []
    stream_id = state.id or f"chatcmpl-{_response_id(event) or 'gemini'}"
    model = state.model if state.id is not None and state.model else _model(event, state.model)
    meta = event.get("usageMetadata")
    usage = meta if isinstance(meta, Mapping) else state.usage
    choices = {choice.index: choice for choice in state.choices}
    chunks: list[dict[str, Any]] = []

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> None:
        chunks.append(
            {
                "id": stream_id,
                "object": "chat.completion.chunk",
                "created": state.created,
                "model": model,
                "choices": [
                    {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
        )

    candidates = _candidates(event)
    if not candidates and _blocked(event) and not choices:
        candidates = [(0, {"finishReason": "SAFETY"})]
    for index, candidate in candidates:
        choice = choices.get(index, ChoiceState(index))
        if choice.finish_reason is not None:
            continue
        if not choice.started:
            choice = attrs.evolve(choice, started=True)
            chunk(index, {"role": "assistant"})
        choice, text, calls = _read_parts(choice, _parts_of(candidate), _response_id(event))
        if text:
            chunk(index, {"content": text})
        first = choice.calls - len(calls)
        for offset, call in enumerate(calls):
            chunk(index, {"tool_calls": [{"index": first + offset, **call}]})
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and reason:
            choice = attrs.evolve(choice, finish_reason=_finish(choice, reason))
            chunk(index, {}, choice.finish_reason)
        choices[index] = choice
    finished = bool(choices) and all(c.finish_reason is not None for c in choices.values())
    if finished and state.include_usage and usage is not None:
        chunks.append(
            {
                "id": stream_id,
                "object": "chat.completion.chunk",
                "created": state.created,
                "model": model,
                "choices": [],
                "usage": _usage_json(usage),
            }
        )
    new_state = attrs.evolve(
        state,
        id=stream_id,
        model=model,
        choices=tuple(choices[index] for index in sorted(choices)),
        usage=usage,
        finished=finished,
    )
    return new_state, chunks


class GeminiStreamFold:
    """:func:`stream_step` behind :class:`~freellm.core.dialects.openai.StreamFold`'s interface.

    :meth:`step` takes one SSE event and returns the wire bytes for the client; after the last
    finish reason it adds ``data: [DONE]`` and sets :attr:`done`. It raises
    :class:`~freellm.core.dialects.openai.StreamError` for an ``error`` event or an event that is
    not a JSON object (Gemini sends neither in a healthy stream).
    """

    def __init__(self, *, client_wants_usage: bool, model: str = "", created: int = 0) -> None:
        self.state = StreamState(include_usage=client_wants_usage, model=model, created=created)
        self.usage: Usage | None = None
        self.done = False
        self.chunks = 0
        self.completion_chars = 0

    def step(self, event: Event) -> list[bytes]:
        if self.done or not event.data.strip() or event.done:
            return []
        data = event.data
        parsed = _json(data)
        if not isinstance(parsed, dict) or event.event == "error" or "error" in parsed:
            error = parsed.get("error") if isinstance(parsed, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            raise StreamError(str(message or data)[:500], data)
        self.state, chunks = stream_step(self.state, parsed)
        if isinstance(parsed.get("usageMetadata"), Mapping):
            self.usage = usage_of(parsed)
        out = []
        for chunk in chunks:
            self.completion_chars += _chars(chunk["choices"])
            out.append(b"data: " + _dumps(chunk).encode() + b"\n\n")
        self.chunks += len(out)
        if self.state.finished:
            self.done = True
            out.append(b"data: [DONE]\n\n")
        return out


def _chars(choices: Iterable[Mapping[str, Any]]) -> int:
    total = 0
    for choice in choices:
        delta = choice["delta"]
        total += len(delta.get("content") or "")
        for call in delta.get("tool_calls") or ():
            total += len(call["function"]["arguments"])
    return total


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
