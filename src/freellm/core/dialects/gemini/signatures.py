"""Thought signatures carried in tool-call ids: :func:`encode_call_id`, :func:`decode_call_id`."""

from __future__ import annotations

import hashlib
import re
from typing import Final

import attrs

SKIP_SIGNATURE: Final = "skip_thought_signature_validator"


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


def call_tag(response_id: str, choice: int, position: int, name: str, arguments: str) -> str:
    key = "\x1f".join((response_id, str(choice), str(position), name, arguments))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]
