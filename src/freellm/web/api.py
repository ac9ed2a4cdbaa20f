"""``/api/...`` on quart-trio: the JSON the dashboard reads (same auth as ``/v1``).

Imported only when the first such request arrives, so a server that only proxies never loads
Quart (about 8 MB of RSS).
"""

from __future__ import annotations

import json

from quart import Response, request
from quart_trio import QuartTrio

from freellm.core.wire import error_body
from freellm.shell.runtime import Runtime

__all__ = ["create_api"]


def create_api(runtime: Runtime) -> QuartTrio:
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
        records = await runtime.store.list_keys()
        health = runtime.holder.state.health  # what the server observed: the one source
        listed = []
        for key in records:
            entry = health.of(key.provider, key.id)
            listed.append(
                {
                    "id": key.id,
                    "provider": key.provider,
                    "label": key.label,
                    "enabled": key.enabled,
                    "health": entry.state.value,
                    "last_check": entry.checked_at,
                    "last_error": entry.last_error,
                }
            )
        return Response(json.dumps({"data": listed}), content_type="application/json")

    @quart.get("/api/chain")
    async def chain() -> Response:
        entries = list(runtime.holder.state.catalog.settings.chain)
        return Response(json.dumps({"data": entries}), content_type="application/json")

    return quart


def _raw_headers() -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()]
