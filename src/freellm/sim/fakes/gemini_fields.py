"""Google's JSON mapping of Gemini's request, as its parser applies it.

- Field names come in either spelling: ``systemInstruction`` or ``system_instruction``
  (:func:`field`); values inside ``args``, ``response`` and schemas are left alone.
- A name the message type lacks is refused: 'Invalid JSON payload received. Unknown name "x" at
  'path': Cannot find field.' (:func:`known_names`), as a ``google.rpc.BadRequest`` field
  violation too. The fake knows the names of the request's top level, of ``generationConfig``
  and of ``Schema`` (a function's ``parameters``, ``responseSchema``: :func:`check_schema`),
  which is where clients most often send JSON Schema keys Gemini lacks (``$schema``,
  ``const``, ``oneOf``).
- A ``bytes`` field (``inlineData.data``, ``thoughtSignature``) is base64 in either alphabet,
  padding optional (:func:`decode_bytes`); anything else is refused as not base64.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any, Final

TOP_LEVEL: Final = frozenset(
    {
        "model",
        "contents",
        "systemInstruction",
        "generationConfig",
        "safetySettings",
        "tools",
        "toolConfig",
        "cachedContent",
        "labels",
        "serviceTier",
        "store",
    }
)
GENERATION_CONFIG: Final = frozenset(
    {
        "temperature",
        "topP",
        "topK",
        "candidateCount",
        "maxOutputTokens",
        "stopSequences",
        "responseLogprobs",
        "logprobs",
        "presencePenalty",
        "frequencyPenalty",
        "seed",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "responseModalities",
        "mediaResolution",
        "speechConfig",
        "audioTimestamp",
        "thinkingConfig",
        "imageConfig",
        "enableEnhancedCivicAnswers",
    }
)
# Gemini's ``Schema`` (an OpenAPI subset) as google-genai's ``types.Schema`` names it, with the
# JSON spellings of ``ref`` and ``defs``; ``parametersJsonSchema`` and ``responseJsonSchema``
# take any JSON Schema instead.
SCHEMA: Final = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "example",
        "default",
        "properties",
        "required",
        "propertyOrdering",
        "items",
        "anyOf",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minProperties",
        "maxProperties",
        "minimum",
        "maximum",
        "pattern",
        "additionalProperties",
        "ref",
        "defs",
        "$ref",
        "$defs",
    }
)
DATA_FIELDS: Final = (
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
    "toolCall",
    "toolResponse",
)


class Invalid(Exception):
    """Gemini refuses the body with 400 INVALID_ARGUMENT and `message`.

    `violation` is True for a JSON mapping error, which Gemini also lists as a field violation.
    """

    def __init__(self, message: str, *, violation: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.violation = violation


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word[:1].upper() + word[1:] for word in rest)


def field(obj: Mapping[str, Any], name: str) -> Any:
    """`obj`'s field `name` (lowerCamelCase), in either spelling; None when absent."""
    return obj[name] if name in obj else obj.get(_snake(name))


def known_names(obj: Mapping[str, Any], known: frozenset[str], where: str | None) -> None:
    """Refuse a key of `obj` that `known` lacks in both spellings; `where` is Gemini's path to
    `obj` (None for the request itself).
    """
    for key in obj:
        if _camel(key) not in known:
            at = f" at '{where}'" if where else ""
            message = f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.'
            raise Invalid(message, violation=True)


def check_schema(schema: Any, where: str, depth: int = 0) -> None:
    """Refuse a name :data:`SCHEMA` lacks anywhere in `schema`, at Gemini's path for it."""
    if not isinstance(schema, dict) or depth > 32:
        return
    known_names(schema, SCHEMA, where)
    properties = field(schema, "properties")
    if isinstance(properties, dict):
        for index, sub in enumerate(properties.values()):
            check_schema(sub, f"{where}.properties[{index}].value", depth + 1)
    check_schema(field(schema, "items"), f"{where}.items", depth + 1)
    any_of = field(schema, "anyOf")
    for index, sub in enumerate(any_of if isinstance(any_of, list) else ()):
        check_schema(sub, f"{where}.any_of[{index}]", depth + 1)


def decode_bytes(data: Any) -> bytes | None:
    """A JSON ``bytes`` field's value, read as Google's parser reads it (standard or URL-safe
    base64, padding optional); None when it is not base64.
    """
    if not isinstance(data, str):
        return None
    text = data.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        return None


def bytes_field(value: Any, where: str) -> bytes | None:
    """The decoded ``bytes`` field `value` (None when absent); raises :class:`Invalid` if bad."""
    if value is None:
        return None
    decoded = decode_bytes(value)
    if decoded is None:
        raise Invalid(
            f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed for "
            f'"{str(value)[:40]}"',
            violation=True,
        )
    return decoded
