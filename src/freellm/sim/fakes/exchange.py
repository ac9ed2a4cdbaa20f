"""The raw ASGI side of a fake: reading a request, answering it, noticing the client leave."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import trio

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]


class Exchange:
    """The response side of one request, watching for the client going away.

    The fake reads the whole body first, so the only message left to receive is ASGI's
    ``http.disconnect``: hypercorn sends it when the connection closes.
    """

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.gone = False
        # Set just before the last send: hypercorn reports the stream closed (a disconnect)
        # while it completes a response, and that is not the client leaving.
        self._finishing = False

    async def guard(self, work: Callable[..., Awaitable[object]], *args: object) -> bool:
        """Run ``work(*args)`` until it returns or the client goes away; True if it returned."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch, nursery.cancel_scope)
            await work(*args)
            nursery.cancel_scope.cancel()
        return not self.gone

    async def _watch(self, scope: trio.CancelScope) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                if not self._finishing:
                    self.gone = True
                    scope.cancel()
                return

    async def start(self, status: int, headers: Headers) -> None:
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, *, more: bool = False) -> None:
        """Send part of the body; `more=False` (the default) completes the response."""
        if not more:
            self._finishing = True
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(self, status: int, payload: Any, headers: Headers = ()) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        await self.start(status, json_headers(len(data), headers))
        await self.body(data)


def json_headers(length: int, extra: Headers = ()) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(length).encode()),
        *extra,
    ]


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client went away first."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer ASGI's lifespan protocol: the fakes have nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
