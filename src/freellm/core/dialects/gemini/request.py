"""OpenAI chat bodies to ``generateContent`` bodies: refusals, tools, generation settings."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from freellm.core.dialects import Untranslatable
from freellm.core.dialects.gemini.common import is_number
from freellm.core.dialects.gemini.messages import conversation_contents
from freellm.core.dialects.gemini.schema import clean_schema


def endpoint(model: str, *, stream: bool) -> str:
    """The path under the base URL (``.../v1beta``) for ``model``."""
    model = model.removeprefix("models/")
    if stream:
        return f"/models/{model}:streamGenerateContent?alt=sse"
    return f"/models/{model}:generateContent"


_FUNCTION_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
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
    turns = conversation_contents(messages if isinstance(messages, list) else [])
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


def _generation_config(body: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for openai_name, gemini_name in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
    ):
        value = body.get(openai_name)
        if is_number(value):
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
