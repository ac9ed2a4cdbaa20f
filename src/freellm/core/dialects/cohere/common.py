"""Number checks that more than one module of the Cohere dialect uses."""

from __future__ import annotations

import math
from typing import TypeGuard


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def finite(value: object) -> float | None:
    """``value`` as a float if it is a finite JSON number (``json.loads`` also makes NaN,
    infinities and integers too large for a float)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
