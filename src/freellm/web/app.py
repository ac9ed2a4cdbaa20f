"""The ASGI application: the ``/v1`` hot path and probes in plain ASGI, the rest on Quart.

``create_app(runtime)`` builds everything from the runtime it is given; nothing is built at import
time. Requests for ``/v1/...``, ``/livez``, ``/readyz`` and ``/metrics`` never touch Quart;
everything else (``/api/...`` and, later, the dashboard) and the ASGI lifespan go to the
quart-trio app.
"""

from __future__ import annotations

import json
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from freellm.shell.dispatch import error_body
from freellm.shell.runtime import Runtime
from freellm.web.v1 import V1, Receive, Scope, Send, json_response

__all__ = ["create_app"]

METRICS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def create_app(runtime: Runtime) -> Any:
    v1 = V1(runtime.dispatcher, runtime.authorized)
    quart: Any = _quart_app(runtime)  # called as a plain ASGI app below

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await quart(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith("/v1/"):
            await v1(scope, receive, send)
        elif path == "/livez":
            await json_response(send, 200, b'{"status":"ok"}')
        elif path == "/readyz":
            ready = runtime.ready
            body = json.dumps({"status": "ready" if ready else "starting"}).encode()
            await json_response(send, 200 if ready else 503, body)
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
            await quart(scope, receive, send)

    app.quart = quart  # type: ignore[attr-defined]
    return app


def _quart_app(runtime: Runtime) -> QuartTrio:
    quart = QuartTrio("freellm")
    # Quart cuts responses after 60 s by default; deadlines belong to the shell.
    quart.config["RESPONSE_TIMEOUT"] = None
    quart.config["BODY_TIMEOUT"] = None

    @quart.before_request
    async def authorize() -> Response | None:
        if runtime.authorized(list(_raw_headers())):
            return None
        body = error_body(
            "Missing or wrong API key.", "invalid_request_error", code="invalid_api_key"
        )
        return Response(body, status=401, content_type="application/json")

    @quart.get("/api/keys")
    async def keys() -> Response:
        """The provider keys, without their secrets."""
        listed = [
            {
                "id": key.id,
                "provider": key.provider,
                "label": key.label,
                "enabled": key.enabled,
                "health": runtime.dispatcher.state.health.of(key.provider, key.id).state.value,
            }
            for key in await runtime.store.list_keys()
        ]
        return Response(json.dumps({"data": listed}), content_type="application/json")

    @quart.get("/api/chain")
    async def chain() -> Response:
        entries = list(runtime.dispatcher.state.catalog.settings.chain)
        return Response(json.dumps({"data": entries}), content_type="application/json")

    return quart


def _raw_headers() -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()]
