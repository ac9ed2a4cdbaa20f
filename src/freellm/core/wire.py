"""JSON as it goes on the wire: compact, UTF-8, and safe for any text a client or provider sent.

JSON's ``\\u`` escapes can spell a lone surrogate (``"\\ud83d"``, half an emoji), which Python
decodes into a ``str`` that has no UTF-8 encoding. Such text must pass through, not crash a
request: :func:`dumps` writes it escaped, exactly as it came.

A client's body comes in through :func:`decode`, which refuses what would otherwise pass the
JSON parser and break later: ``NaN``, ``Infinity`` and numbers too large for a float (Python reads
them, ``1e999`` as infinity, and writes them back as ``Infinity``, which no provider reads) and
nesting deeper than :data:`MAX_DEPTH` (Python's own encoder and every recursive walk of the body
would hit the interpreter's recursion limit, about a thousand levels, on the way out).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any, Final

import attrs

__all__ = ["MAX_DEPTH", "NotJSON", "decode", "dumps", "error_body"]

MAX_DEPTH: Final = 100
"""How deep a request body may nest arrays and objects. A JSON schema of tool parameters nests
two levels per level of its objects; a hundred leaves room for fifty, far past any real one."""


@attrs.frozen
class NotJSON:
    """Why a body was refused: ``message`` says what is wrong and where; ``param`` names the
    top-level field that holds the problem, when one does."""

    message: str
    param: str | None = None


def decode(raw: bytes) -> Any:
    """``raw`` as JSON in UTF-8, or a :class:`NotJSON` saying why not (the caller checks with
    ``isinstance``). Never raises."""
    try:
        value = _DECODER.decode(raw.decode("utf-8-sig"))  # a leading BOM is let through
    except UnicodeDecodeError as exc:
        return NotJSON(f"The request body is not valid UTF-8 (byte {exc.start}).")
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        return NotJSON(f"The request body is not valid JSON: {exc.msg} ({where}).")
    except _Constant as exc:
        return NotJSON(f"The request body is not valid JSON: {exc} is not a finite number.")
    except RecursionError:
        return NotJSON(f"The request body nests arrays and objects more than {MAX_DEPTH} deep.")
    except ValueError:  # the only other: an integer of more digits than Python converts
        return NotJSON("The request body is not valid JSON: a number has too many digits.")
    # Nesting needs at least as many brackets as levels: most bodies are never walked.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        deep = _too_deep(value)
        if deep is not None:
            where = f"`{deep}`" if deep else "The request body"
            message = f"{where} nests arrays and objects more than {MAX_DEPTH} deep."
            return NotJSON(message, deep or None)
    return value


class _Constant(ValueError):
    pass


def _no_constant(name: str) -> object:
    raise _Constant(name)


def _finite(text: str) -> float:
    """A JSON number with a fraction or exponent: ``1e999`` is valid JSON, but Python makes it
    ``inf``, which would go out again as ``Infinity``."""
    value = float(text)
    if math.isinf(value):
        raise _Constant(text)
    return value


_DECODER: Final = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def _too_deep(value: object) -> str | None:
    """The top-level field (``""`` for the body itself) under which ``value`` nests deeper than
    :data:`MAX_DEPTH`, or None. Walks with a list, not recursion, for the reason it exists."""
    tops: list[tuple[str, object]]
    if isinstance(value, dict):
        tops = [(str(key), item) for key, item in value.items()]
    elif isinstance(value, list):
        tops = [("", item) for item in value]
    else:
        return None
    for top, item in tops:
        stack: list[tuple[object, int]] = [(item, 2)]
        while stack:
            node, depth = stack.pop()
            children: Iterable[object]
            if isinstance(node, dict):
                children = node.values()
            elif isinstance(node, list):
                children = node
            else:
                continue
            if depth > MAX_DEPTH:
                return top
            for child in children:
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1))
    return None


def dumps(value: object) -> bytes:
    """``value`` as compact JSON in UTF-8; non-ASCII text stays as it is, unless some string
    holds a lone surrogate: then the whole document is ASCII with ``\\u`` escapes."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode()


def error_body(
    message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> bytes:
    """An OpenAI-shaped error: ``{"error": {"message", "type", "param", "code"}}``."""
    return dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})
