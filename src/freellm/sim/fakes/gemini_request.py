"""Reading a Gemini ``generateContent`` body: the checks Gemini makes, and the neutral request.

Names and values are read as Google's JSON mapping says (:mod:`.gemini_fields`: either spelling
of a field name; unknown names, bad base64 and off-subset schemas refused). Refusals are 400
INVALID_ARGUMENT with Gemini's own message where its wording is known; the ones marked (*) are
worded by the fake:

- a body that is not a JSON object ("Invalid JSON payload received. ..."), or one that breaks
  the JSON mapping (see :mod:`.gemini_fields`);
- no ``contents`` ("* GenerateContentRequest.contents: contents is not specified");
- a role other than user and model ("Please use a valid role: user, model.");
- a part with no data ("* GenerateContentRequest.contents[0].parts[0].data: required oneof
  field 'data' must have one initialized field");
- a function call turn that follows neither a user turn nor a function response turn, a
  function response turn that follows no function call turn, a different number of responses
  than calls (all three Gemini's words), a response naming none of the calls (*);
- an invalid function name (Gemini's words); ``allowedFunctionNames`` naming an undeclared
  function (*); ``maxOutputTokens`` that is not a positive integer (*); ``candidateCount``
  other than 1 (*: the fake answers one candidate only).

The neutral :class:`~freellm.sim.fakes.replies.ChatRequest` reads: ``systemInstruction`` as a
system message; ``model`` turns as assistant messages whose ``functionCall`` parts are tool
calls (arguments: the compact JSON of ``args``); each ``functionResponse`` as a tool message
(content: the compact JSON of ``response``); other user parts as a user message; function
declarations as tools (``parameters``, else ``parametersJsonSchema``); mode NONE as
``tool_choice`` none, ANY as required, or as the named function when ``allowedFunctionNames``
holds one name (the tools are narrowed to the allowed names in every mode); ``maxOutputTokens``,
``stopSequences``; JSON mode when ``responseMimeType`` is ``application/json``, with
``responseJsonSchema``, else ``responseSchema``, as its schema. Thought parts are not counted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from freellm.sim.fakes.gemini_fields import (
    DATA_FIELDS,
    GENERATION_CONFIG,
    TOP_LEVEL,
    Invalid,
    bytes_field,
    check_schema,
    decode_bytes,
    field,
    known_names,
)
from freellm.sim.fakes.replies import ChatRequest

_FUNCTION_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
_ROLES: Final = ("user", "model")


@attrs.frozen
class SignedCall:
    """A ``functionCall`` part that must carry its thought signature back.

    `position` is its content's place in ``contents``, counted from 1, as Gemini reports it;
    `signature` is the decoded ``thoughtSignature`` (None when absent or empty).
    """

    position: int
    name: str
    signature: bytes | None


@attrs.frozen
class GeminiRequest:
    """A checked ``generateContent`` body: the neutral `chat`, the first call of each model
    content in the current turn (`signed`), and whether thought summaries are wanted.
    """

    chat: ChatRequest
    signed: tuple[SignedCall, ...]
    include_thoughts: bool
    streamed: bool
    sse: bool

    @property
    def model(self) -> str:
        return self.chat.model


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"Invalid value at '{where}', expected an object.", violation=True)
    return value


def _parts(content: Any, where: str) -> list[Mapping[str, Any]]:
    parts = field(content, "parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
        raise Invalid(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.")
    for index, part in enumerate(parts):
        if all(field(part, name) is None for name in DATA_FIELDS):
            raise Invalid(
                f"* GenerateContentRequest.{where}.parts[{index}].data: required oneof field "
                "'data' must have one initialized field"
            )
        inline = field(part, "inlineData")
        if isinstance(inline, dict):
            bytes_field(field(inline, "data"), f"{where}.parts[{index}].inline_data.data")
        bytes_field(field(part, "thoughtSignature"), f"{where}.parts[{index}].thought_signature")
    return parts


def _compact(value: Any) -> str:
    return json.dumps(value if value is not None else {}, separators=(",", ":"))


def _calls(parts: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [call for part in parts if isinstance(call := field(part, "functionCall"), dict)]


def _responses(parts: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [answer for part in parts if isinstance(answer := field(part, "functionResponse"), dict)]


def _visible_text(parts: Sequence[Mapping[str, Any]]) -> str:
    return "".join(
        text
        for part in parts
        if isinstance(text := field(part, "text"), str) and not field(part, "thought")
    )


def _check_turns(contents: Sequence[tuple[str, list[Mapping[str, Any]]]]) -> None:
    """Gemini's rules for where function call and function response turns may stand."""
    for index, (role, parts) in enumerate(contents):
        previous = contents[index - 1] if index else None
        calls, responses = _calls(parts), _responses(parts)
        if role == "model" and calls and previous is not None and previous[0] == "model":
            raise Invalid(
                "Please ensure that function call turns come immediately after a user turn "
                "or after a function response turn."
            )
        if not responses:
            continue
        asked = _calls(previous[1]) if previous is not None and previous[0] == "model" else []
        if not asked:
            raise Invalid(
                "Please ensure that function response turn comes immediately after a "
                "function call turn."
            )
        if len(responses) != len(asked):
            raise Invalid(
                "Please ensure that the number of function response parts is equal to the "
                "number of function call parts of the function call turn."
            )
        names = {call.get("name") for call in asked}
        for answer in responses:
            if answer.get("name") not in names:
                raise Invalid(
                    f"Function response `{answer.get('name')}` in contents[{index}] answers no "
                    "function call of the function call turn."
                )


def _signed_calls(contents: Sequence[tuple[str, list[Mapping[str, Any]]]]) -> list[SignedCall]:
    """The first call of each model content since the last user turn that is not only
    function responses: the calls Gemini checks thought signatures on.
    """
    start = 0
    for index, (role, parts) in enumerate(contents):
        if role == "user" and len(_responses(parts)) < len(parts):
            start = index + 1
    signed = []
    for index, (role, parts) in enumerate(contents[start:], start):
        with_call = [part for part in parts if isinstance(field(part, "functionCall"), dict)]
        if role == "model" and with_call:
            part = with_call[0]
            name = str(field(part, "functionCall").get("name"))
            signature = decode_bytes(field(part, "thoughtSignature"))
            signed.append(SignedCall(index + 1, name, signature or None))
    return signed


def _messages(
    system: Mapping[str, Any], contents: Sequence[tuple[str, list[Mapping[str, Any]]]]
) -> list[Mapping[str, Any]]:
    messages: list[Mapping[str, Any]] = []
    if system:
        messages.append(
            {"role": "system", "content": _visible_text(_parts(system, "system_instruction"))}
        )
    for role, parts in contents:
        if role == "model":
            tool_calls = [
                {
                    "id": f"gemini_call_{index}",
                    "type": "function",
                    "function": {"name": call.get("name"), "arguments": _compact(call.get("args"))},
                }
                for index, call in enumerate(_calls(parts))
            ]
            messages.append(
                {"role": "assistant", "content": _visible_text(parts), "tool_calls": tool_calls}
            )
            continue
        for answer in _responses(parts):
            messages.append({"role": "tool", "content": _compact(answer.get("response"))})
        if len(_responses(parts)) < len(parts):
            messages.append({"role": "user", "content": _visible_text(parts)})
    return messages


def _tools(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tools = field(body, "tools") or []
    if not isinstance(tools, list):
        raise Invalid("Invalid value at 'tools', expected a list.", violation=True)
    functions: list[Mapping[str, Any]] = []
    for t, tool in enumerate(tools):
        declarations = field(_object(tool, f"tools[{t}]"), "functionDeclarations") or []
        for d, declaration in enumerate(declarations):
            name = declaration.get("name") if isinstance(declaration, dict) else None
            if not isinstance(name, str) or not _FUNCTION_NAME.fullmatch(name):
                raise Invalid(
                    f"* GenerateContentRequest.tools[{t}].function_declarations[{d}].name: "
                    "Invalid function name. Must start with a letter or an underscore. Must be "
                    "a-z, A-Z, 0-9, or contain underscores, dots, colons and dashes, with a "
                    "maximum length of 64."
                )
            parameters = field(declaration, "parameters")
            check_schema(parameters, f"tools[{t}].function_declarations[{d}].parameters")
            schema = parameters or field(declaration, "parametersJsonSchema")
            functions.append({"type": "function", "function": {"name": name, "parameters": schema}})
    return functions


def _tool_choice(
    config: Mapping[str, Any], tools: list[Mapping[str, Any]]
) -> tuple[list[Mapping[str, Any]], Any]:
    """The tools narrowed to the allowed names, and the neutral ``tool_choice``."""
    calling = _object(field(config, "functionCallingConfig"), "tool_config")
    mode = field(calling, "mode") or "AUTO"
    allowed = field(calling, "allowedFunctionNames") or []
    if not isinstance(allowed, list) or not all(isinstance(name, str) for name in allowed):
        raise Invalid(
            "Invalid value at 'tool_config.function_calling_config.allowed_function_names'."
        )
    if allowed:
        declared = {tool["function"]["name"] for tool in tools}
        unknown = [name for name in allowed if name not in declared]
        if unknown:
            raise Invalid(f"allowed_function_names names undeclared functions: {unknown}.")
        tools = [tool for tool in tools if tool["function"]["name"] in allowed]
    if mode == "NONE":
        return tools, "none"
    if mode == "ANY" and allowed and len(allowed) == 1:
        return tools, {"type": "function", "function": {"name": allowed[0]}}
    return tools, "required" if mode == "ANY" else None


def _generation(body: Mapping[str, Any]) -> Mapping[str, Any]:
    config = _object(field(body, "generationConfig"), "generation_config")
    known_names(config, GENERATION_CONFIG, "generation_config")
    limit = field(config, "maxOutputTokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise Invalid("generation_config.max_output_tokens must be a positive integer.")
    check_schema(field(config, "responseSchema"), "generation_config.response_schema")
    if field(config, "candidateCount") not in (None, 1):
        raise Invalid("This fake answers one candidate only: candidate_count must be 1.")
    return config


def parse_gemini(model: str, body: Any, *, streamed: bool, sse: bool) -> GeminiRequest:
    """Check `body` for `model`; raises :class:`Invalid` with Gemini's refusal."""
    if not isinstance(body, dict):
        raise Invalid("Invalid JSON payload received. Unexpected token.", violation=True)
    known_names(body, TOP_LEVEL, None)
    raw_contents = field(body, "contents")
    if not isinstance(raw_contents, list) or not raw_contents:
        raise Invalid("* GenerateContentRequest.contents: contents is not specified")
    contents = []
    for index, content in enumerate(raw_contents):
        role = field(content, "role") if isinstance(content, dict) else None
        if role not in (*_ROLES, None):
            raise Invalid("Please use a valid role: user, model.")
        contents.append((role or "user", _parts(content, f"contents[{index}]")))
    _check_turns(contents)
    config = _generation(body)
    tool_config = _object(field(body, "toolConfig"), "tool_config")
    tools, tool_choice = _tool_choice(tool_config, _tools(body))
    system = _object(field(body, "systemInstruction"), "system_instruction")
    schema = field(config, "responseJsonSchema") or field(config, "responseSchema")
    thinking = _object(field(config, "thinkingConfig"), "generation_config.thinking_config")
    chat = ChatRequest(
        model=model,
        messages=tuple(_messages(system, contents)),
        max_tokens=field(config, "maxOutputTokens"),
        tools=tuple(tools),
        tool_choice=tool_choice,
        stop=tuple(field(config, "stopSequences") or ()),
        json_mode=field(config, "responseMimeType") == "application/json",
        json_schema=schema,
    )
    return GeminiRequest(
        chat=chat,
        signed=tuple(_signed_calls(contents)),
        include_thoughts=field(thinking, "includeThoughts") is True,
        streamed=streamed,
        sse=sse,
    )
