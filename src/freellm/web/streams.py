"""The dashboard's two streaming routes, as plain ASGI in front of Quart.

- ``GET /api/events``: server-sent events for the live pages: ``quotas`` (the live ledger, when
  it changed, at most once a second), ``request`` (each request as it ends) and a comment now and
  then so that proxies keep the stream open.
- ``POST /api/chat/completions``: the playground's chat, the very ``/v1`` handler and dispatch
  path behind the dashboard's session (and CSRF token) instead of the bearer key.
"""

from __future__ import annotations

import json
from typing import Any, Final

import trio

from freellm.core import quotas as quotas_
from freellm.core.wire import error_body
from freellm.shell.dispatch import new_request_id
from freellm.shell.runtime import Runtime
from freellm.web.asgi import Receive, Scope, Send, json_response
from freellm.web.auth import Access, access
from freellm.web.v1 import V1

__all__ = ["QUOTAS_EVERY_S", "Streams"]

QUOTAS_EVERY_S: Final = 1.0
PING_EVERY_S: Final = 15.0
SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]


class Streams:
    def __init__(self, runtime: Runtime, v1: V1) -> None:
        self.runtime = runtime
        self.v1 = v1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        allowed = access(self.runtime, scope["method"], scope["headers"])
        if allowed is Access.DENIED:
            body = error_body(
                "Log in, or send the unified freellm key as `Authorization: Bearer <key>`.",
                "invalid_request_error",
                code="invalid_api_key",
            )
            await json_response(send, 401, body)
            return
        if allowed is Access.NO_CSRF:
            body = error_body(
                "This call changes something: send the page's CSRF token as X-CSRF-Token.",
                "invalid_request_error",
                code="csrf_token_invalid",
            )
            await json_response(send, 403, body)
            return
        path, method = scope["path"], scope["method"]
        expected = "GET" if path == "/api/events" else "POST"
        if method != expected:
            body = error_body(f"Use {expected} here.", "invalid_request_error")
            await json_response(send, 405, body, [(b"allow", expected.encode())])
            return
        if path == "/api/events":
            await self.events(receive, send)
        else:
            await self.v1.chat(scope, receive, send, new_request_id())

    async def events(self, receive: Receive, send: Send) -> None:
        runtime = self.runtime
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        gone = trio.Event()
        with runtime.events.subscribe() as channel:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope, gone)
                await _write(send, "retry: 2000\n\n")
                last_quotas = ""
                next_quotas = trio.current_time()
                next_ping = next_quotas + PING_EVERY_S
                while True:
                    with trio.move_on_at(min(next_quotas, next_ping)):
                        try:
                            kind, data = await channel.receive()
                        except trio.EndOfChannel:
                            break  # fell too far behind: the browser reconnects
                        await _write(send, _event(kind, json.dumps(data)))
                        continue
                    now = trio.current_time()
                    if now >= next_quotas:
                        view = quotas_.quota_view(runtime.holder.state, now=runtime.clock())
                        data = quotas_.to_data(view)
                        text = json.dumps(_steady(data))
                        if text != last_quotas:
                            last_quotas = text
                            await _write(send, _event("quotas", json.dumps(data)))
                            next_ping = now + PING_EVERY_S
                        next_quotas = now + QUOTAS_EVERY_S
                    if now >= next_ping:
                        await _write(send, ": ping\n\n")
                        next_ping = now + PING_EVERY_S
                nursery.cancel_scope.cancel()
        if not gone.is_set():
            await send({"type": "http.response.body", "body": b"", "more_body": False})


_TICKING: Final = frozenset({"now", "seconds_left"})


def _steady(data: Any) -> Any:
    """``data`` without the fields that change only because time passes: the page counts those
    down itself, so a view that differs only in them is not sent again."""
    if isinstance(data, dict):
        return {k: _steady(v) for k, v in data.items() if k not in _TICKING}
    if isinstance(data, list):
        return [_steady(v) for v in data]
    return data


def _event(kind: str, data: str) -> str:
    return f"event: {kind}\ndata: {data}\n\n"


async def _write(send: Send, text: str) -> None:
    await send({"type": "http.response.body", "body": text.encode(), "more_body": True})


async def _cancel_on_disconnect(
    receive: Receive, scope: trio.CancelScope, gone: trio.Event
) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            scope.cancel()
            return
