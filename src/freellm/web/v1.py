"""The ``/v1`` hot path as a plain ASGI handler, in front of the Quart app.

Quart's request machinery costs about 0.3 ms and a fifth of the CPU of a proxied request
(DESIGN.md's measured notes), so the OpenAI-compatible routes are served here directly: read the
body once, check it, hand it to the dispatcher, write what it says. A task watches for the client
going away and cancels the request's scope, which cancels the upstream call at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

import trio

from freellm.core.chat import BadRequest, inspect_request
from freellm.core.doors import DoorError
from freellm.core.doors import messages as messages_door
from freellm.core.wire import NotJSON, decode, error_body
from freellm.shell.dispatch import Dispatcher, Headers, new_request_id
from freellm.shell.store import Store
from freellm.web.asgi import (
    Client,
    ErrorWriter,
    Receive,
    Scope,
    Send,
    cancel_on_disconnect,
    header,
    json_response,
    openai_errors,
    requested_strategy,
)
from freellm.web.doors import Doors

__all__ = ["V1", "json_response"]

MAX_BODY_BYTES: Final = 10 * 1024 * 1024
BODY_TIMEOUT_S = 60.0
"""How long a request's body may take to arrive, from its head on: then 408 and the connection
closes. A client that trickles its body (slowloris) would otherwise hold its connection for as
long as it likes; hypercorn's own read timeout cannot help, as it also cuts every stream whose
client sends nothing while it reads. Read when a body is read, so a test can shorten it."""

POST_ROUTES: Final = (
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/responses",
    "/v1/embeddings",
)
"""The ``/v1`` paths that take a POST, each a door onto the one dispatch path."""


class V1:
    """``/v1/chat/completions``, the other doors (:mod:`freellm.web.doors`), ``/v1/models`` and
    ``/v1/models/{id}``.

    ``authorized(headers)`` decides whether a request carries the unified key. Errors on
    ``/v1/messages`` are in Anthropic's shape, the client's SDK reads no other; everywhere else
    in OpenAI's.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        authorized: Callable[[list[tuple[bytes, bytes]]], bool],
        store: Store,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.dispatcher = dispatcher
        self.authorized = authorized
        self.max_body_bytes = max_body_bytes
        self.doors = Doors(dispatcher, store, self.read_body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        request_id = new_request_id()
        ids = [(b"x-request-id", request_id.encode())]
        errors = messages_door.error_body if path.startswith("/v1/messages") else openai_errors
        if not self.authorized(scope["headers"]):
            denied = DoorError(
                401,
                "Missing or wrong API key: send the unified freellm key as "
                "`Authorization: Bearer <key>` or `x-api-key`.",
                code="invalid_api_key",
            )
            await json_response(send, 401, errors(denied), ids)
            return
        if path in POST_ROUTES:
            if method != "POST":
                await _not_allowed(send, "POST", ids, errors)
            elif path == "/v1/chat/completions":
                await self.chat(scope, receive, send, request_id)
            elif path == "/v1/messages":
                await self.doors.messages(scope, receive, send, request_id)
            elif path == "/v1/messages/count_tokens":
                await self.doors.count_tokens(scope, receive, send, request_id)
            elif path == "/v1/responses":
                await self.doors.responses(scope, receive, send, request_id)
            else:
                await self.doors.embeddings(scope, receive, send, request_id)
        elif path.startswith("/v1/responses/") and "/" not in path.removeprefix("/v1/responses/"):
            if method not in ("GET", "DELETE"):
                await _not_allowed(send, "GET, DELETE", ids, errors)
                return
            response_id = path.removeprefix("/v1/responses/")
            await self.doors.stored_response(scope, send, request_id, response_id)
        elif path == "/v1/models":
            if method != "GET":
                await _not_allowed(send, "GET", ids, errors)
                return
            await json_response(send, 200, json.dumps(self.models()).encode(), ids)
        elif path.startswith("/v1/models/"):
            if method != "GET":
                await _not_allowed(send, "GET", ids, errors)
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
            missing = DoorError(404, f"Unknown endpoint {path}.", code="not_found")
            await json_response(send, 404, errors(missing), ids)

    def models(self) -> dict[str, Any]:
        """``auto``, then every ``provider/model`` that has a key, then every plain model id."""
        state = self.dispatcher.holder.state
        keyed = state.topology.keyed_providers
        data: list[dict[str, Any]] = [_model("auto", "freellm")]
        data += [_model(f"auto:{name}", "freellm") for name in state.catalog.chains]
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
        body = await self.read_body(scope, receive, send, ids, openai_errors)
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
        session = header(scope["headers"], b"x-session-id")
        strategy = requested_strategy(scope["headers"])
        if isinstance(strategy, DoorError):
            await json_response(send, 400, openai_errors(strategy), ids)
            return
        client = Client(send)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on_disconnect, receive, nursery.cancel_scope, client)
            await self.dispatcher.serve(
                shape,
                data,
                client,
                session_header=session,
                request_id=request_id,
                strategy=strategy,
            )
            nursery.cancel_scope.cancel()

    async def read_body(
        self, scope: Scope, receive: Receive, send: Send, ids: Headers, errors: ErrorWriter
    ) -> bytes | None:
        """The whole body, or None once the client left or got its error (413, 408), written
        by ``errors`` in the door's shape."""
        declared = header(scope["headers"], b"content-length") or ""
        if declared.isascii() and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(send, ids, errors)  # at once: the body is not worth waiting for
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
                    await self._too_large(send, ids, errors)
                    return None
                chunks.append(piece)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        late = DoorError(
            408,
            f"The request body did not arrive within {BODY_TIMEOUT_S:g} s.",
            code="request_timeout",
        )
        await json_response(send, 408, errors(late), ids)
        return None

    async def _too_large(self, send: Send, ids: Headers, errors: ErrorWriter) -> None:
        large = DoorError(
            413,
            f"The request body is larger than {self.max_body_bytes} bytes.",
            code="request_too_large",
        )
        await json_response(send, 413, errors(large), ids)


async def _not_allowed(send: Send, allowed: str, ids: Headers, errors: ErrorWriter) -> None:
    wrong = DoorError(405, f"Use {allowed} here.", code="method_not_allowed")
    await json_response(send, 405, errors(wrong), [*ids, (b"allow", allowed.encode())])


def _model(model_id: str, owner: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": owner}
