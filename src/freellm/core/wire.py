"""JSON as it goes on the wire: compact, UTF-8, and safe for any text a client or provider sent.

JSON's ``\\u`` escapes can spell a lone surrogate (``"\\ud83d"``, half an emoji), which Python
decodes into a ``str`` that has no UTF-8 encoding. Such text must pass through, not crash a
request: :func:`dumps` writes it escaped, exactly as it came.
"""

from __future__ import annotations

import json

__all__ = ["dumps", "error_body"]


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
