"""What a provider key's secret and label may contain: checked once, the same for every way in.

A secret goes into an HTTP header of every upstream call (``Authorization: Bearer <secret>``,
``x-goog-api-key``). A carriage return or line feed there would end the header and let the rest
of the secret write headers of its own (header injection); a NUL or another control character,
or a character outside ASCII, makes the HTTP library refuse the call, and its error quotes the
header, secret and all, into a traceback. So a secret is *visible ASCII* (``!`` to ``~``):
every provider's keys are, and anything else is a paste gone wrong.

Decisions:

- Spaces, tabs and line ends around a secret are **stripped**: a paste or ``echo KEY |`` adds
  them, and they are never part of a key. Anything else outside visible ASCII, anywhere in the
  secret (a space or line end inside it included), is **refused**.
- A label never goes into a header; it is shown on the dashboard and printed by
  ``freellm keys list``, one key a line. It may be any text (accents, scripts, emoji) but not a
  control character (a line end would forge a line, an escape sequence would drive the
  terminal), a line or paragraph separator, or an invisible formatting character (bidi
  overrides that make a label read backwards, zero-width spaces); the joiners that emoji and
  some scripts are written with are text and stay. Whitespace around a label is stripped.
- A refusal names the field and the first offending character by its code point and position;
  it never quotes the secret.

The command line (``keys add``, ``keys edit``), the dashboard's ``/api/keys`` (POST and PATCH)
and the server's loading of stored keys all call :func:`clean_secret` and :func:`clean_label`.
A provider's extra ``headers`` in the config file (which may carry a key of their own) are
checked by :func:`header_problem` when the config is read.
"""

from __future__ import annotations

import string
import unicodedata
from typing import Final

import attrs

__all__ = [
    "MAX_LABEL",
    "MAX_SECRET",
    "Refused",
    "clean_label",
    "clean_secret",
    "describe",
    "header_problem",
]

MAX_SECRET: Final = 4096
MAX_LABEL: Final = 200

_AROUND_SECRET: Final = " \t\r\n"
_VISIBLE_ASCII: Final = frozenset(chr(c) for c in range(0x21, 0x7F))

# Unicode general categories a label may not hold: controls (Cc), lone surrogates (Cs: no UTF-8
# encoding, so no row in the store), line and paragraph separators (Zl, Zp) and format
# characters (Cf: bidi controls, zero-width spaces, the soft hyphen), but for those below.
_REFUSED_IN_LABEL: Final = frozenset({"Cc", "Cs", "Zl", "Zp", "Cf"})
# Format characters that are part of writing: the zero-width non-joiner and joiner (Persian,
# Indic scripts; emoji sequences such as a family) and the tag characters of flag emoji.
_JOINERS: Final = frozenset({"\u200c", "\u200d"})
_TAGS: Final = range(0xE0020, 0xE0080)

_NAMES: Final = {
    "\r": "a carriage return",
    "\n": "a line feed",
    "\t": "a tab",
    " ": "a space",
    "\x00": "a NUL",
    "\x1b": "an escape",
}


@attrs.frozen
class Refused:
    """Why a value was refused: ``field`` is ``"secret"`` or ``"label"``; ``message`` says what
    is wrong, for the user, without quoting a secret."""

    field: str
    message: str


def clean_secret(text: str) -> str | Refused:
    """``text`` as a provider key's secret: without the whitespace around it, or why not."""
    secret = text.strip(_AROUND_SECRET)
    if not secret:
        return Refused("secret", "The key is empty.")
    if len(secret) > MAX_SECRET:
        return Refused("secret", f"The key is longer than {MAX_SECRET} characters.")
    for position, char in enumerate(secret, start=1):
        if char not in _VISIBLE_ASCII:
            return Refused(
                "secret",
                f"The key contains {describe(char)} at position {position}: a provider key is"
                " printable ASCII, with no spaces, line breaks or control characters.",
            )
    return secret


def clean_label(text: str) -> str | Refused:
    """``text`` as a key's label: without the whitespace around it, or why not."""
    label = text.strip()
    if len(label) > MAX_LABEL:
        return Refused("label", f"The label is longer than {MAX_LABEL} characters.")
    for position, char in enumerate(label, start=1):
        if _refused_in_label(char):
            return Refused(
                "label",
                f"The label contains {describe(char)} at position {position}: a label is text"
                " on one line, without control or invisible formatting characters.",
            )
    return label


_TOKEN: Final = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")  # RFC 9110
_PRINTABLE_ASCII: Final = frozenset(chr(c) for c in range(0x20, 0x7F))


def header_problem(name: str, value: str) -> str | None:
    """Why ``name: value`` cannot go into an HTTP request as it is, or ``None`` if it can: a name
    is an HTTP token (letters, digits, ``-`` and a few signs), a value printable ASCII on one
    line, with no space at either end. The problem names the first bad character of the value,
    never quotes it."""
    if not name or any(char not in _TOKEN for char in name):
        return "a header name is letters, digits and -, with no spaces or other signs"
    for position, char in enumerate(value, start=1):
        if char not in _PRINTABLE_ASCII:
            return (
                f"the value contains {describe(char)} at position {position}: a header value"
                " is printable ASCII on one line"
            )
    if value != value.strip(" "):
        return "the value starts or ends with a space"
    return None


def _refused_in_label(char: str) -> bool:
    if char in _JOINERS or ord(char) in _TAGS:
        return False
    return unicodedata.category(char) in _REFUSED_IN_LABEL


def describe(char: str) -> str:
    """A character as a message can show it without printing it: ``a line feed (U+000A)``,
    ``U+202E (RIGHT-TO-LEFT OVERRIDE)``."""
    code = f"U+{ord(char):04X}"
    named = _NAMES.get(char)
    if named is not None:
        return f"{named} ({code})"
    name = unicodedata.name(char, "")
    return f"{code} ({name})" if name else code
