"""The JSON bodies ``/api`` accepts, structured and validated with cattrs.

The converter is strict: a string is a string (``123`` is not ``"123"``), a boolean is a boolean,
and a key the body should not have is an error, not silently dropped. :func:`parse` turns the
first problem into an OpenAI-style 400 that names the field (``param``), e.g. ``entries[2].target``.
"""

from __future__ import annotations

import re
from typing import Any, Final, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from freellm.core.catalog import AUTO, CHAIN_NAME
from freellm.core.keys import MAX_LABEL, MAX_SECRET
from freellm.core.wire import NotJSON, decode

__all__ = [
    "BadBody",
    "ChainBody",
    "ChainEntry",
    "KeyPatch",
    "LoginBody",
    "NewKey",
    "parse",
]

T = TypeVar("T")

MAX_CHAIN: Final = 500


@attrs.frozen
class BadBody:
    """Why a body was refused, and the field to blame (``None`` for the body as a whole)."""

    message: str
    param: str | None = None


class FieldError(ValueError):
    """A field's value is of the right type but wrong: ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _nonblank(limit: int) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
        if not value.strip():
            raise FieldError(attribute.name, "must not be empty")
        if len(value) > limit:
            raise FieldError(attribute.name, f"is longer than {limit} characters")

    return check


def _at_most(limit: int) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
        if value is not None and len(value) > limit:
            raise FieldError(attribute.name, f"is longer than {limit} characters")

    return check


@attrs.frozen
class LoginBody:
    token: str = attrs.field(validator=_at_most(MAX_SECRET))


@attrs.frozen
class NewKey:
    provider: str = attrs.field(validator=_nonblank(100))
    secret: str = attrs.field(validator=_nonblank(MAX_SECRET))
    label: str = attrs.field(default="", validator=_at_most(MAX_LABEL))


@attrs.frozen
class KeyPatch:
    enabled: bool | None = None
    label: str | None = attrs.field(default=None, validator=_at_most(MAX_LABEL))
    secret: str | None = attrs.field(default=None, validator=_at_most(MAX_SECRET))

    def __attrs_post_init__(self) -> None:
        if self.secret is not None and not self.secret.strip():
            raise FieldError("secret", "must not be empty")


_TARGET: Final = re.compile(r"[^/\s]+/\S+")


def _target(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not _TARGET.fullmatch(value):
        raise FieldError(attribute.name, f'must look like "provider/model", got {value!r}')


@attrs.frozen
class ChainEntry:
    target: str = attrs.field(validator=_target)
    enabled: bool = True


def _chain_name(instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and value != AUTO and not CHAIN_NAME.fullmatch(value):
        raise FieldError(attribute.name, "is lower-case letters, digits, '-' and '_' (64 at most)")


@attrs.frozen
class ChainBody:
    """``PUT /api/chain``: the chain ``name`` (left out, or ``auto``: the one ``auto``
    follows)."""

    entries: list[ChainEntry]
    name: str | None = attrs.field(default=None, validator=_chain_name)

    def __attrs_post_init__(self) -> None:
        if not self.entries:
            raise FieldError("entries", "must not be empty")
        if len(self.entries) > MAX_CHAIN:
            raise FieldError("entries", f"has more than {MAX_CHAIN} items")


def _exact(kind: type[Any]) -> Any:
    def structure(value: Any, _: type[Any]) -> Any:
        if type(value) is not kind:
            raise TypeError(f"expected {_NAMES[kind]}, got {_json_type(value)}")
        if kind is str and not _is_text(value):
            raise ValueError("holds half of a character (a lone \\ud800-\\udfff escape)")
        return value

    return structure


def _is_text(value: str) -> bool:
    """Whether ``value`` is Unicode text: JSON's escapes can spell half of a surrogate pair,
    which Python keeps in a ``str`` that no UTF-8 (the store, a header, a digest) can take."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


_NAMES: Final = {str: "a string", bool: "true or false", int: "an integer"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


_converter = cattrs.Converter(forbid_extra_keys=True)
for _kind in (str, bool, int):
    _converter.register_structure_hook(_kind, _exact(_kind))


def _only_arrays(kind: Any) -> None:
    """A JSON string is iterable too: make a list field take only an array."""
    items = _converter.get_structure_hook(kind)

    def structure(value: Any, type_: Any) -> Any:
        if not isinstance(value, list):
            raise TypeError(f"expected an array, got {_json_type(value)}")
        return items(value, type_)

    _converter.register_structure_hook_func(lambda type_: type_ == kind, structure)


def _only_objects(kind: type[Any]) -> None:
    fields = _converter.get_structure_hook(kind)

    def structure(value: Any, type_: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {_json_type(value)}")
        return fields(value, type_)

    _converter.register_structure_hook(kind, structure)


_only_objects(ChainEntry)  # before the list of them, whose hook takes the item's as it is now
_only_arrays(list[ChainEntry])


def parse(raw: bytes, kind: type[T]) -> T | BadBody:
    """``raw`` (a request body) as a ``kind``, or why not."""
    data = decode(raw or b"null")
    if isinstance(data, NotJSON):
        return BadBody(data.message, data.param)
    if not isinstance(data, dict):
        return BadBody(f"The request body must be a JSON object, got {_json_type(data)}.")
    try:
        return _converter.structure(data, kind)
    except Exception as exc:  # cattrs wraps the field's error: find it, and where it was
        return _explain(exc, ())


def _explain(exc: BaseException, path: tuple[str, ...]) -> BadBody:
    if isinstance(exc, ForbiddenExtraKeysError):
        field = _param((*path, sorted(exc.extra_fields)[0]))
        return BadBody(f"Unknown field `{field}`.", field)
    if isinstance(exc, ClassValidationError | IterableValidationError):
        for inner in exc.exceptions:
            note = _note_of(inner)
            if note is None:
                continue
            return _explain(inner, (*path, note))
        if exc.exceptions:
            return _explain(exc.exceptions[0], path)
    if isinstance(exc, FieldError):
        return _explain(ValueError(str(exc)), (*path, exc.field))
    if isinstance(exc, KeyError):
        return BadBody(f"`{_param(path)}` is required.", _param(path))
    message = str(exc) if isinstance(exc, ValueError | TypeError) else "is not valid"
    if path:
        return BadBody(f"`{_param(path)}`: {message}.", _param(path))
    return BadBody(f"{message[:1].upper()}{message[1:]}.")


def _note_of(exc: BaseException) -> str | None:
    """The field or index cattrs noted on an inner error (``name`` or ``[2]``)."""
    for note in getattr(exc, "__notes__", ()):
        name = getattr(note, "name", None)
        index = getattr(note, "index", None)
        if name is not None:
            return str(name)
        if index is not None:
            return f"[{index}]"
    return None


def _param(path: tuple[str, ...]) -> str:
    text = ""
    for part in path:
        text += part if part.startswith("[") or not text else f".{part}"
    return text
