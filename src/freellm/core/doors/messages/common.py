"""What the Messages door's modules share: the refusal the request checks raise, and the type
guards they (and the answers) read values through."""

from __future__ import annotations

from collections.abc import Collection
from typing import TypeGuard

from freellm.core.doors import DoorError


class Refusal(Exception):
    """A request this door refuses. The checks run many calls deep (a message, its blocks, a
    tool result's parts); one exception, caught in ``request._translate`` (behind
    :func:`~freellm.core.doors.messages.translate` and ``count_tokens``) and never let out, keeps
    each check a line where threading a value back through every level would not."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(problem)
        self.error = DoorError(400, f"{path}: {problem}" if path else problem, param=path or None)


def among(value: object, options: Collection[str]) -> TypeGuard[str]:
    """Whether ``value`` is one of ``options`` (a list or an object is never: unhashable,
    it cannot even be looked up in a set)."""
    return isinstance(value, str) and value in options


def is_int(value: object) -> TypeGuard[int]:
    """Whether ``value`` is a JSON integer (``True`` is an ``int`` to Python, never to JSON)."""
    return isinstance(value, int) and not isinstance(value, bool)
