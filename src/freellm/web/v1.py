"""The ``/v1`` hot path as a plain ASGI handler, in front of the Quart app.

Quart's request machinery costs about 0.3 ms and a fifth of the CPU of a proxied request
(DESIGN.md's measured notes), so the OpenAI-compatible routes are served here directly: read the
body once, check it, hand it to the dispatcher, write what it says. A task watches for the client
going away and cancels the request's scope, which cancels the upstream call at once.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Final

import trio

from freellm.core.catalog import Strategy
from freellm.core.chat import BadRequest, inspect_request
from freellm.core.wire import NotJSON, decode, error_body
from freellm.shell.dispatch import Dispatcher, Headers, new_request_id

__all__ = ["V1", "json_response"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY_BYTES: Final = 10 * 1024 * 1024
BODY_TIMEOUT_S = 60.0
"""How long a request's body may take to arrive, from its head on: then 408 and the connection
closes. A client that trickles its body (slowloris) would otherwise hold its connection for as
long as it likes; hypercorn's own read timeout cannot help, as it also cuts every stream whose
client sends nothing while it reads. Read when a body is read, so a test can shorten it."""
JSON: Final = (b"content-type", b"application/json")


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


class V1:
    """``/v1/chat/completions``, ``/v1/models``, ``/v1/models/{id}``.

    ``authorized(headers)`` decides whether a request carries the unified key.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        authorized: Callable[[list[tuple[bytes, bytes]]], bool],
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.dispatcher = dispatcher
        self.authorized = authorized
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        request_id = new_request_id()
        ids = [(b"x-request-id", request_id.encode())]
        if not self.authorized(scope["headers"]):
            body = error_body(
                "Missing or wrong API key: send the unified freellm key as "
                "`Authorization: Bearer <key>` or `x-api-key`.",
                "invalid_request_error",
                code="invalid_api_key",
            )
            await json_response(send, 401, body, ids)
            return
        if path == "/v1/chat/completions":
            if method != "POST":
                await _not_allowed(send, "POST", ids)
                return
            await self.chat(scope, receive, send, request_id)
        elif path == "/v1/models":
            if method != "GET":
                await _not_allowed(send, "GET", ids)
                return
            await json_response(send, 200, json.dumps(self.models()).encode(), ids)
        elif path.startswith("/v1/models/"):
            if method != "GET":
                await _not_allowed(send, "GET", ids)
                return
            model_id = path.removeprefix("/v1/models/")
            entry = next((m for m in self.models()["data"] if m["id"] == model_id), None)
            if entry is None:
                body = error_body(
                    f"The model `{model_id}` does not exist.",
                    "invalid_request_error",
                    param="model",
                    code="model_not_found",
                )
                await json_response(send, 404, body, ids)
            else:
                await json_response(send, 200, json.dumps(entry).encode(), ids)
        else:
            body = error_body(
                f"Unknown endpoint {path}.", "invalid_request_error", code="not_found"
            )
            await json_response(send, 404, body, ids)

    def models(self) -> dict[str, Any]:
        """``auto``, then every ``provider/model`` that has a key, then every plain model id."""
        state = self.dispatcher.holder.state
        keyed = state.topology.keyed_providers
        data: list[dict[str, Any]] = [_model("auto", "freellm")]
        plain: dict[str, str] = {}
        for provider_id, provider in state.catalog.providers.items():
            if provider_id not in keyed:
                continue
            for model_id in provider.models:
                data.append(_model(f"{provider_id}/{model_id}", provider_id))
                plain.setdefault(model_id, provider_id)
        data += [_model(model_id, owner) for model_id, owner in plain.items()]
        return {"object": "list", "data": data}

    async def chat(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        ids = [(b"x-request-id", request_id.encode())]
        body = await self._read_body(scope, receive, send, ids)
        if body is None:
            return
        data = decode(body)
        if isinstance(data, NotJSON):
            problem = error_body(data.message, "invalid_request_error", param=data.param)
            await json_response(send, 400, problem, ids)
            return
        shape = inspect_request(data)
        if isinstance(shape, BadRequest):
            problem = error_body(
                shape.message, "invalid_request_error", param=shape.param, code=shape.code
            )
            await json_response(send, 400, problem, ids)
            return
        session = _header(scope["headers"], b"x-session-id")
        strategy = _strategy(_header(scope["headers"], b"x-freellm-strategy"))
        if isinstance(strategy, bytes):
            await json_response(send, 400, strategy, ids)
            return
        client = _Client(send)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope, client)
            await self.dispatcher.serve(
                shape,
                data,
                client,
                session_header=session,
                request_id=request_id,
                strategy=strategy,
            )
            nursery.cancel_scope.cancel()

    async def _read_body(
        self, scope: Scope, receive: Receive, send: Send, ids: Headers
    ) -> bytes | None:
        """The whole body, or None once the client left or got its error (413, 408)."""
        declared = _header(scope["headers"], b"content-length") or ""
        if declared.isascii() and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(send, ids)  # at once: the body is not worth waiting for
            return None
        chunks: list[bytes] = []
        size = 0
        with trio.move_on_after(BODY_TIMEOUT_S):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                piece = message.get("body", b"")
                size += len(piece)
                if size > self.max_body_bytes:
                    await self._too_large(send, ids)
                    return None
                chunks.append(piece)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        late = error_body(
            f"The request body did not arrive within {BODY_TIMEOUT_S:g} s.",
            "invalid_request_error",
            code="request_timeout",
        )
        await json_response(send, 408, late, ids)
        return None

    async def _too_large(self, send: Send, ids: Headers) -> None:
        body = error_body(
            f"The request body is larger than {self.max_body_bytes} bytes.",
            "invalid_request_error",
            code="request_too_large",
        )
        await json_response(send, 413, body, ids)


class _Client:
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


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope, client: _Client) -> None:
    """Cancel the request when its client goes away before its response ended. (Once it ended,
    the server says ``http.disconnect`` too: the dispatcher may still be settling, or giving a
    stream's connection back to its pool, and is left to finish.)"""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not client.ended:
                scope.cancel()
            return


async def _not_allowed(send: Send, allowed: str, ids: Headers) -> None:
    body = error_body(f"Use {allowed} here.", "invalid_request_error", code="method_not_allowed")
    await json_response(send, 405, body, [*ids, (b"allow", allowed.encode())])


def _strategy(value: str | None) -> Strategy | bytes | None:
    """The routing strategy a request asks for (``X-Freellm-Strategy``), or the 400 body that
    answers a value that names none."""
    if value is None:
        return None
    try:
        return Strategy(value.strip().lower())
    except ValueError:
        choices = " or ".join(f"`{member.value}`" for member in Strategy)
        return error_body(
            f"The X-Freellm-Strategy header must be {choices}, not {value!r}.",
            "invalid_request_error",
            param="X-Freellm-Strategy",
        )


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _model(model_id: str, owner: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": owner}
