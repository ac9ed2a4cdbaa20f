"""The ASGI application: the ``/v1`` hot path and probes in plain ASGI, the rest on Quart.

``create_app(runtime)`` builds everything from the runtime it is given; nothing is built at import
time. Requests for ``/v1/...``, ``/livez``, ``/readyz`` and ``/metrics`` never touch Quart;
the dashboard's two streams (``/api/events``, the playground's ``/api/chat/completions``) are
plain ASGI too (:mod:`freellm.web.streams`); everything else (the dashboard's pages and
``/api/...``) goes to the quart-trio app, which is built on the first such request. The ASGI
lifespan is answered here: the long-lived work runs in the runtime's nursery, not in Quart's.
"""

from __future__ import annotations

import json
from typing import Any

from freellm.shell.runtime import Runtime
from freellm.web.v1 import V1, Receive, Scope, Send, json_response

__all__ = ["create_app"]

METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
STREAM_PATHS = frozenset({"/api/events", "/api/chat/completions"})


def create_app(runtime: Runtime) -> Any:
    v1 = V1(runtime.dispatcher, runtime.authorized)
    built: dict[str, Any] = {}  # the dashboard's parts, made when first asked for

    def quart() -> Any:
        if "quart" not in built:
            from freellm.web.dashboard import create_dashboard

            built["quart"] = create_dashboard(runtime)
        return built["quart"]

    def streams() -> Any:
        if "streams" not in built:
            from freellm.web.streams import Streams

            built["streams"] = Streams(runtime, v1)
        return built["streams"]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            await quart()(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith("/v1/"):
            await v1(scope, receive, send)
        elif path == "/livez":
            await json_response(send, 200, b'{"status":"ok"}')
        elif path == "/readyz":
            status, detail = runtime.readiness()
            await json_response(send, status, json.dumps(detail).encode())
        elif path in STREAM_PATHS:
            await streams()(scope, receive, send)
        elif path == "/metrics":
            body = runtime.metrics.render()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", METRICS_TYPE)],
                }
            )
            await send({"type": "http.response.body", "body": body})
        else:
            await quart()(scope, receive, send)

    return app


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
