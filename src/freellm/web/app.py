"""The ASGI application: the ``/v1`` hot path and probes in plain ASGI, the rest on Quart.

``create_app(runtime)`` builds everything from the runtime it is given; nothing is built at import
time. Requests for ``/v1/...``, ``/livez``, ``/readyz`` and ``/metrics`` never touch Quart;
the dashboard's two streams (``/api/events``, the playground's ``/api/chat/completions``) are
plain ASGI too (:mod:`freellm.web.streams`); everything else (the dashboard's pages and
``/api/...``) goes to the quart-trio app, which is built on the first such request. The ASGI
lifespan is answered here: the long-lived work runs in the runtime's nursery, not in Quart's.

Who may call what: every route needs the unified key (or the dashboard's session) but the two
probes, ``/livez`` and ``/readyz``: a load balancer or an orchestrator asks them without
credentials, and they tell only whether the server is up and which background job fails.
``/metrics`` needs the key too (Prometheus sends it with ``authorization: {credentials: ...}``
in its scrape config): it names the providers and counts the traffic. So does ``/openapi.json``,
the description of this API (:mod:`freellm.web.openapi`).
The app keeps its plain routes in :attr:`App.paths` and :attr:`App.prefixes`, so that a test can
list every route there is (tests/e2e/test_security.py).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from freellm.core.wire import error_body
from freellm.shell.runtime import Runtime
from freellm.web.asgi import Message, Receive, Scope, Send, json_response
from freellm.web.auth import Access, access
from freellm.web.openapi import OpenAPI
from freellm.web.v1 import V1

__all__ = ["STREAM_PATHS", "App", "create_app"]

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
STREAM_PATHS = frozenset({"/api/events", "/api/chat/completions"})


def create_app(runtime: Runtime) -> Any:  # an App: Any for hypercorn's ASGI types
    v1 = V1(runtime.dispatcher, runtime.authorized, runtime.store)
    built: dict[str, Any] = {}  # the dashboard's parts, made when first asked for

    def quart() -> Any:
        if "quart" not in built:
            from freellm.web.dashboard import create_dashboard

            built["quart"] = create_dashboard(runtime)
        return built["quart"]

    async def streams(scope: Scope, receive: Receive, send: Send) -> None:
        if "streams" not in built:
            from freellm.web.streams import Streams

            built["streams"] = Streams(runtime, v1)
        await built["streams"](scope, receive, send)

    async def dashboard(scope: Scope, receive: Receive, send: Send) -> None:
        await quart()(scope, receive, _shield_the_end(send))

    async def livez(scope: Scope, receive: Receive, send: Send) -> None:
        await json_response(send, 200, b'{"status":"ok"}')

    async def readyz(scope: Scope, receive: Receive, send: Send) -> None:
        status, detail = runtime.readiness()
        await json_response(send, status, json.dumps(detail).encode())

    async def metrics(scope: Scope, receive: Receive, send: Send) -> None:
        if access(runtime, scope["method"], scope["headers"]) is Access.DENIED:
            body = error_body(
                "Send the unified freellm key as `Authorization: Bearer <key>`.",
                "invalid_request_error",
                code="invalid_api_key",
            )
            await json_response(send, 401, body)
            return
        if scope["method"] not in ("GET", "HEAD"):  # after the key: a stranger learns nothing
            await _not_allowed(scope, send)
            return
        body = runtime.metrics.render()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", METRICS_TYPE)],
            }
        )
        await send({"type": "http.response.body", "body": body})

    paths: dict[str, Handler] = {
        "/livez": _get_only(livez),
        "/readyz": _get_only(readyz),
        "/metrics": metrics,
        "/openapi.json": OpenAPI(runtime),
    }
    paths.update(dict.fromkeys(STREAM_PATHS, streams))
    return App(paths, {"/v1/": v1}, dashboard)


class App:
    """The ASGI app: a request whose path is one of :attr:`paths` goes to its handler, one that
    starts with one of :attr:`prefixes` (``/v1/``) to that handler, anything else (a websocket
    too) to the dashboard's Quart app."""

    def __init__(self, paths: dict[str, Handler], prefixes: dict[str, Handler], rest: Handler):
        self.paths = paths
        self.prefixes = prefixes
        self.rest = rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] == "http":
            twice = _twice(scope["headers"])
            if twice is not None:
                body = error_body(
                    f"Send one {twice} header, not several: which one counts would be a guess.",
                    "invalid_request_error",
                    code="duplicate_header",
                )
                await json_response(send, 400, body)
                return
            path = scope["path"]
            for prefix, handler in self.prefixes.items():
                if path.startswith(prefix):
                    await handler(scope, receive, send)
                    return
            exact = self.paths.get(path)
            if exact is not None:
                await exact(scope, receive, send)
                return
        await self.rest(scope, receive, send)


def _get_only(handler: Handler) -> Handler:
    """``handler`` for GET and HEAD; any other method gets a 405 that says so (``Allow``)."""

    async def get_only(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] in ("GET", "HEAD"):
            await handler(scope, receive, send)
        else:
            await _not_allowed(scope, send)

    return get_only


async def _not_allowed(scope: Scope, send: Send) -> None:
    body = error_body(
        f"{scope['method']} is not allowed here: use GET.",
        "invalid_request_error",
        code="method_not_allowed",
    )
    await json_response(send, 405, body, [(b"allow", b"GET, HEAD")])


SINGLE_HEADERS: Final = {
    b"authorization": "Authorization",
    b"x-api-key": "x-api-key",
    b"content-type": "Content-Type",
    b"x-csrf-token": "X-CSRF-Token",
    b"x-session-id": "X-Session-Id",
}
"""Headers that hold one value, which freellm reads: sent twice, they are refused (400), since
the readers disagree on which counts (the credential checks took the last Authorization, the
session header its first). Content-Length is h11's to refuse."""


def _twice(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The name of the first of :data:`SINGLE_HEADERS` that ``headers`` holds more than once."""
    seen: set[bytes] = set()
    for name, _ in headers:
        if name in SINGLE_HEADERS:
            if name in seen:
                return SINGLE_HEADERS[name]
            seen.add(name)
    return None


def _shield_the_end(send: Send) -> Send:
    """``send``, with the message that ends a response shielded from cancellation.

    hypercorn closes a connection that is not kept alive inside that last send (``send_eof``,
    then ``aclose``), and the close hands the app an ``http.disconnect`` on its way. quart-trio
    cancels its request the moment it hears one: the cancellation can land between the two, and
    the socket then stays open for good (a client that asked for ``Connection: close`` and waits
    for the close waits forever). hypercorn shields its own writes the same way.
    """

    async def send_shielded(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            with trio.CancelScope(shield=True):
                await send(message)
        else:
            await send(message)

    return send_shielded


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
