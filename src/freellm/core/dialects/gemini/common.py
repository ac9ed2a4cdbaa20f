"""JSON helpers that more than one module of the Gemini dialect uses."""

from __future__ import annotations

import json


def parse_json(text: str) -> object:
    """``text`` parsed, or ``None``; NaN and Infinity are refused (they are not JSON)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return None


def _refuse_constant(name: str) -> object:
    raise ValueError(name)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
