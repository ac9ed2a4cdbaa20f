"""The 400s that the request's translation and its input items both write."""

from __future__ import annotations

from freellm.core.doors import DoorError


def bad(message: str, param: str | None = None, code: str | None = None) -> DoorError:
    """A 400 for a field that is not of the form the Responses API gives it."""
    return DoorError(400, message, param=param, code=code)


def unsupported(message: str, param: str) -> DoorError:
    """A 400 for a field of the right form that asks for what freellm cannot do."""
    return DoorError(400, message, param=param, code="unsupported_parameter")
