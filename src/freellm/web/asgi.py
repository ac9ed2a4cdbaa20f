"""What every plain ASGI handler here shares: the types, a JSON answer, the client's side of a
dispatched request, and the watch for a client that goes away.

The ``/v1`` routes (:mod:`freellm.web.v1`, :mod:`freellm.web.doors`) and the dashboard's streams
skip Quart for speed (DESIGN.md's measured notes), so they speak ASGI themselves, through these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Final

import trio

from freellm.core.catalog import Strategy
from freellm.core.doors import DoorError
from freellm.core.wire import error_body

__all__ = [
    "JSON",
    "Client",
    "ErrorWriter",
    "Headers",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "cancel_on_disconnect",
    "header",
    "json_response",
    "openai_errors",
    "requested_strategy",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
ErrorWriter = Callable[[DoorError], bytes]
"""A door's error body for an error: OpenAI's shape on ``/v1/chat/completions``, Anthropic's
on ``/v1/messages``."""

JSON: Final = (b"content-type", b"application/json")


def openai_errors(error: DoorError) -> bytes:
    """``{"error": {"message", "type", "param", "code"}}``."""
    return error_body(error.message, error.type, param=error.param, code=error.code)


async def json_response(
    send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [JSON, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Client:
    """The ASGI side of a request's answer, as the dispatcher writes it. ``ended`` once the
    last byte of the response is handed to the server."""

    __slots__ = ("_send", "ended")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.ended = False

    async def start(self, status: int, headers: Headers) -> None:
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def send(self, data: bytes, *, more: bool) -> None:
        self.ended = not more
        await self._send({"type": "http.response.body", "body": data, "more_body": more})


async def cancel_on_disconnect(receive: Receive, scope: trio.CancelScope, client: Client) -> None:
    """Cancel the request when its client goes away before its response ended. (Once it ended,
    the server says ``http.disconnect`` too: the dispatcher may still be settling, or giving a
    stream's connection back to its pool, and is left to finish.)"""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not client.ended:
                scope.cancel()
            return


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def requested_strategy(headers: list[tuple[bytes, bytes]]) -> Strategy | DoorError | None:
    """The routing strategy a request asks for (``X-Freellm-Strategy``; ``None``: the
    configured one), or the 400 for a value that names none."""
    value = header(headers, b"x-freellm-strategy")
    if value is None:
        return None
    try:
        return Strategy(value.strip().lower())
    except ValueError:
        choices = " or ".join(f"`{member.value}`" for member in Strategy)
        return DoorError(
            400,
            f"The X-Freellm-Strategy header must be {choices}, not {value!r}.",
            param="X-Freellm-Strategy",
        )
