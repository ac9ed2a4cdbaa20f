"""Front doors: the APIs freellm answers besides OpenAI's chat completions, as pure translations.

A door (Anthropic's Messages, OpenAI's Responses) is not a second proxy. Its request is
translated into an OpenAI chat completion request (:class:`Translated`), which takes the one
routing and dispatch path there is; what that path writes for the client, OpenAI-shaped, goes
through the request's :class:`Face` on its way out and becomes the door's own shapes: a whole
JSON answer or error (:meth:`Face.answer`), or stream events as they come (:meth:`Face.feed`).
Routing, failover, caps and the response headers (``X-Routed-Via``, ``X-Fallback-Trail``,
``Retry-After``) are the same for every door.

Errors are plain values until a door writes them in its own shape: a request a door refuses
before routing is a :class:`DoorError`, and so is an OpenAI error body the exchange wrote
(:func:`openai_error`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from freellm.core.chat import ChatShape

__all__ = ["DoorError", "Face", "Translated", "openai_error"]


@attrs.frozen
class DoorError:
    """An error for the client, in OpenAI's vocabulary: ``type`` is OpenAI's error type
    (``invalid_request_error``, ``rate_limit_error``, ...), ``param`` the field at fault, in
    the door's own naming, and ``code`` freellm's code (``model_not_found``, ``no_capacity``)."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


def openai_error(status: int, body: bytes) -> DoorError:
    """The error an OpenAI-shaped error body holds (``{"error": {"message", "type", ...}}``),
    as the exchange writes it; a body that is not one keeps its status and says so."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return DoorError(status, f"The request failed with status {status}.", "api_error")
    message = error.get("message")
    type_ = error.get("type")
    param = error.get("param")
    code = error.get("code")
    return DoorError(
        status,
        message if isinstance(message, str) else f"The request failed with status {status}.",
        type_ if isinstance(type_, str) else "api_error",
        param if isinstance(param, str) else None,
        code if isinstance(code, str) else None,
    )


@attrs.frozen
class Translated:
    """A door's request as an OpenAI chat completion request: ``body`` as a client would send
    it to ``/v1/chat/completions``, and ``shape``, what :func:`~freellm.core.chat.inspect_request`
    found in it (what routing needs)."""

    body: Mapping[str, Any]
    shape: ChatShape


class Face(Protocol):
    """The client's side of one request through a door: what the exchange writes, OpenAI
    chat-shaped, turned into the door's own bytes as it goes. Pure and sans-IO; one per request.

    A stream's bytes reach :meth:`feed` only once its first chunk is in; an error before that
    (no capacity, every provider failed, a bad request) is a whole JSON :meth:`answer`, even when
    the client asked for a stream.
    """

    def answer(self, status: int, body: bytes) -> bytes:
        """The door's body for a whole JSON response: a ``chat.completion`` when ``status`` is
        2xx, else an OpenAI error body."""
        ...

    def feed(self, data: bytes) -> bytes:
        """The door's SSE bytes for stream bytes as the exchange writes them, cut anywhere:
        ``chat.completion.chunk`` events, then ``data: [DONE]``; a failure mid-stream is an
        ``error`` event, then ``data: [DONE]``."""
        ...

    def close(self) -> bytes:
        """The stream ended (after ``[DONE]``, or cut short): what the door still owes."""
        ...
