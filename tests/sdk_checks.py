"""What the providers' own SDKs say of the requests freellm sends them.

Used by the translation tests (``tests/core``) and the end-to-end tests (``tests/e2e``), which
check every request that reached a fake provider. The SDKs (``google-genai``, ``cohere``) are
test dependencies of the project.
"""

from __future__ import annotations

import functools
import itertools
import json
import typing
from collections.abc import Mapping
from typing import Any

import cohere
import pydantic
from google.genai import types as genai

GEMINI_FIELDS = frozenset(
    {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"}
)


def check_gemini_request(request: Mapping[str, Any]) -> None:
    """Every field of a ``generateContent`` body validates as the Gemini SDK's type (camelCase
    JSON), and the turns are well formed: some, each non-empty, user and model alternating."""
    assert set(request) <= GEMINI_FIELDS, sorted(set(request) - GEMINI_FIELDS)
    wire = json.loads(json.dumps(request, allow_nan=False))
    assert wire["contents"], "Gemini needs at least one turn"
    for content in wire["contents"]:
        genai.Content.model_validate_json(json.dumps(content))
        assert content["role"] in ("user", "model")
        assert content["parts"]
        assert all(part.get("text") != "" for part in content["parts"])
    roles = [content["role"] for content in wire["contents"]]
    assert all(a != b for a, b in itertools.pairwise(roles)), "roles must alternate"
    if "systemInstruction" in wire:
        genai.Content.model_validate_json(json.dumps(wire["systemInstruction"]))
    for tool in wire.get("tools", ()):
        genai.Tool.model_validate_json(json.dumps(tool))
    if "toolConfig" in wire:
        genai.ToolConfig.model_validate_json(json.dumps(wire["toolConfig"]))
    if "generationConfig" in wire:
        genai.GenerationConfig.model_validate_json(json.dumps(wire["generationConfig"]))


def assert_no_extras(value: object, where: str = "") -> None:
    """Every key we sent is a field the SDK's model knows (its models allow extras silently)."""
    if isinstance(value, pydantic.BaseModel):
        assert not value.model_extra, f"{where}: unknown fields {sorted(value.model_extra)}"
        for name in type(value).model_fields:
            assert_no_extras(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            assert_no_extras(item, f"{where}[{index}]")


@functools.cache
def cohere_request_field(name: str) -> pydantic.TypeAdapter[Any] | None:
    """A validator for the SDK's ``ClientV2.chat`` parameter ``name`` (built once: it is slow)."""
    hint = typing.get_type_hints(cohere.ClientV2.chat).get(name)
    return None if hint is None else pydantic.TypeAdapter(hint)


def check_cohere_request(body: Mapping[str, Any]) -> None:
    """Each field of a ``/v2/chat`` body validates as the SDK's ``ClientV2.chat`` parameter of
    that name, with no field the SDK does not know."""
    for key, value in body.items():
        if key == "stream":  # the SDK's chat/chat_stream split; the wire field is a boolean
            assert isinstance(value, bool)
            continue
        field = cohere_request_field(key)
        assert field is not None, f"the SDK has no request field {key!r}"
        assert_no_extras(field.validate_python(value), key)
    if "tool_choice" in body:
        assert body["tool_choice"] in ("REQUIRED", "NONE")
