"""The doors besides chat completions: ``/v1/messages``, ``/v1/responses``, ``/v1/embeddings``.

Each is a pure translation (:mod:`freellm.core.doors`, :mod:`freellm.core.dialects.embeddings`)
onto the one dispatch path: the door's request becomes a chat completion request (or an
embeddings one), :meth:`~freellm.shell.dispatch.Dispatcher.serve` answers it, and what it writes
goes through the request's :class:`~freellm.core.doors.Face` (:class:`FacedClient`) into the
door's own shapes. This module only reads bodies, looks up and keeps stored responses, and writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from freellm.core import wire
from freellm.core.chat import BadRequest, ChatShape
from freellm.core.dialects import embeddings
from freellm.core.doors import DoorError, Face, Translated
from freellm.core.doors import messages as messages_door
from freellm.core.doors import responses as responses_door
from freellm.core.wire import NotJSON, decode
from freellm.shell.dispatch import Dispatcher
from freellm.shell.store import Store
from freellm.web.asgi import (
    Client,
    ErrorWriter,
    Headers,
    Receive,
    Scope,
    Send,
    cancel_on_disconnect,
    header,
    json_response,
    openai_errors,
    requested_strategy,
)

__all__ = ["Doors", "FacedClient"]

Keep = Callable[[], Awaitable[None]]
BodyReader = Callable[[Scope, Receive, Send, Headers, ErrorWriter], Awaitable[bytes | None]]
STREAM_TYPE: Final = (b"content-type", b"text/event-stream")


class FacedClient:
    """A dispatched request's client, seen through a door's :class:`Face`: stream bytes pass
    through :meth:`Face.feed` as they come; a JSON answer is held until its last byte, turned
    into the door's body, and sent with its new length. Status and every other header stay."""

    __slots__ = ("_client", "_face", "_head", "_keep", "_parts")

    def __init__(self, client: Client, face: Face, keep: Keep | None = None) -> None:
        self._client = client
        self._face = face
        self._keep = keep  # awaited before each write: what the door keeps is kept first
        self._head: tuple[int, Headers] | None = None  # a JSON answer's, until its body is in
        self._parts: list[bytes] = []

    async def start(self, status: int, headers: Headers) -> None:
        if STREAM_TYPE in headers:
            await self._client.start(status, headers)
        else:
            self._head = (status, headers)

    async def send(self, data: bytes, *, more: bool) -> None:
        head = self._head
        if head is None:  # a stream
            out = self._face.feed(data) if data else b""
            if not more:
                out += self._face.close()
            if out or not more:
                if self._keep is not None:
                    await self._keep()
                await self._client.send(out, more=more)
            return
        self._parts.append(data)
        if more:
            return
        status, headers = head
        body = self._face.answer(status, b"".join(self._parts))
        headers = [(n, v) for n, v in headers if n != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        if self._keep is not None:
            await self._keep()
        await self._client.start(status, headers)
        await self._client.send(body, more=False)


class Doors:
    """The handlers of the doors. ``read_body`` is the ``/v1`` body reader (413, 408, a client
    that leaves), writing its errors in the door's shape."""

    def __init__(self, dispatcher: Dispatcher, store: Store, read_body: BodyReader) -> None:
        self.dispatcher = dispatcher
        self.store = store
        self.read_body = read_body

    # -- Anthropic Messages ------------------------------------------------------------------

    async def messages(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        ids = _ids(request_id)
        errors = messages_door.error_body
        body = await self._json(scope, receive, send, ids, errors)
        if body is None:
            return
        translated = messages_door.translate(body)
        if isinstance(translated, DoorError):
            await _error(send, translated, ids, errors)
            return
        face = messages_door.MessagesFace(translated, id=request_id, created=self._now())
        await self._serve(scope, receive, send, request_id, translated, face, errors)

    async def count_tokens(
        self, scope: Scope, receive: Receive, send: Send, request_id: str
    ) -> None:
        ids = _ids(request_id)
        errors = messages_door.error_body
        body = await self._json(scope, receive, send, ids, errors)
        if body is None:
            return
        counted = messages_door.count_tokens(body)
        if isinstance(counted, DoorError):
            await _error(send, counted, ids, errors)
            return
        await json_response(send, 200, wire.dumps({"input_tokens": counted}), ids)

    # -- OpenAI Responses --------------------------------------------------------------------

    async def responses(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        ids = _ids(request_id)
        body = await self._json(scope, receive, send, ids, openai_errors)
        if body is None:
            return
        previous = None
        previous_id = body.get("previous_response_id") if isinstance(body, dict) else None
        if isinstance(previous_id, str):
            stored = await self.store.get_response(previous_id)
            if stored is None:
                missing = responses_door.not_found(previous_id, param="previous_response_id")
                await _error(send, missing, ids, openai_errors)
                return
            previous = stored.conversation
        translated = responses_door.translate(body, previous=previous)
        if isinstance(translated, DoorError):
            await _error(send, translated, ids, openai_errors)
            return
        now = self._now()
        face = responses_door.ResponsesFace(translated, id=request_id, created=now, request=body)
        store = responses_door.wants_store(body)
        kept = False

        async def keep() -> None:
            """Store the response once it is finished, before the bytes that finish it go
            out: a client that reads response.completed may at once ask for it by id."""
            nonlocal kept
            finished = face.finished() if store and not kept else None
            if finished is None:
                return
            kept = True
            response, conversation = finished
            with trio.CancelScope(shield=True):  # answered: keep it even if the client left
                await self.store.put_response(response["id"], now, response, conversation)

        await self._serve(scope, receive, send, request_id, translated, face, openai_errors, keep)

    async def stored_response(
        self, scope: Scope, send: Send, request_id: str, response_id: str
    ) -> None:
        """``GET`` or ``DELETE /v1/responses/{id}``."""
        ids = _ids(request_id)
        if scope["method"] == "DELETE":
            if await self.store.delete_response(response_id):
                deleted = {"id": response_id, "object": "response", "deleted": True}
                await json_response(send, 200, wire.dumps(deleted), ids)
            else:
                await _error(send, responses_door.not_found(response_id), ids, openai_errors)
            return
        stored = await self.store.get_response(response_id)
        if stored is None:
            await _error(send, responses_door.not_found(response_id), ids, openai_errors)
            return
        await json_response(send, 200, wire.dumps(stored.response), ids)

    # -- embeddings --------------------------------------------------------------------------

    async def embeddings(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        ids = _ids(request_id)
        body = await self._json(scope, receive, send, ids, openai_errors)
        if body is None:
            return
        shape = embeddings.inspect_embeddings(body)
        if isinstance(shape, BadRequest):
            problem = DoorError(400, shape.message, param=shape.param, code=shape.code)
            await _error(send, problem, ids, openai_errors)
            return
        translated = Translated(body, shape)
        face = embeddings.EmbeddingsFace(body.get("encoding_format"), shape.prompt_tokens)
        await self._serve(scope, receive, send, request_id, translated, face, openai_errors)

    # -- shared ------------------------------------------------------------------------------

    async def _json(
        self, scope: Scope, receive: Receive, send: Send, ids: Headers, errors: ErrorWriter
    ) -> Any | None:
        """The request's body, decoded; None once the client left or got its error."""
        raw = await self.read_body(scope, receive, send, ids, errors)
        if raw is None:
            return None
        data = decode(raw)
        if isinstance(data, NotJSON):
            await _error(send, DoorError(400, data.message, param=data.param), ids, errors)
            return None
        return data

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
        translated: Translated,
        face: Face,
        errors: ErrorWriter,
        keep: Keep | None = None,
    ) -> None:
        shape: ChatShape = translated.shape
        strategy = requested_strategy(scope["headers"])
        if isinstance(strategy, DoorError):
            await _error(send, strategy, _ids(request_id), errors)
            return
        client = Client(send)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on_disconnect, receive, nursery.cancel_scope, client)
            await self.dispatcher.serve(
                shape,
                translated.body,
                FacedClient(client, face, keep),
                session_header=header(scope["headers"], b"x-session-id"),
                request_id=request_id,
                strategy=strategy,
            )
            nursery.cancel_scope.cancel()

    def _now(self) -> int:
        return int(self.dispatcher.clock())


def _ids(request_id: str) -> Headers:
    return [(b"x-request-id", request_id.encode())]


async def _error(send: Send, error: DoorError, ids: Headers, errors: ErrorWriter) -> None:
    await json_response(send, error.status, errors(error), ids)
