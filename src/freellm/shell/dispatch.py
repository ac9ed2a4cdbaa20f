"""The dispatch loop: plan, reserve, call, classify, settle, next.

::

    plan = router.plan(state, request, now)          # core: candidates, lazily
    for slot in plan:
        admitted = plan.admit(state, slot, now)       # core: re-check + reserve ...
        state = admitted.state                        # ... and replace, with no await between
        outcome = await call(slot)                    # shell: I/O under deadlines
        state = router.record(state, ticket, outcome) # core: settle, cooldowns, health
        plan.after(slot, outcome)                     # core: fail over how far?

Between reading :attr:`Dispatcher.state` and replacing it there is never an ``await``, so trio's
single thread makes every transition atomic. A ticket is always settled: if the call is cancelled
(the client went away), the ``finally`` records a ``cancelled`` outcome, which needs no I/O.

Streams fail over too, until the first chunk: the response to the client starts only once an
upstream has produced one. After that, a failure becomes an SSE ``error`` event and
``data: [DONE]``, and the ledger is settled with what was streamed.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, NamedTuple

import attrs
import httpx
import trio

from freellm.core import router, wire
from freellm.core.catalog import Catalog
from freellm.core.chat import ChatShape
from freellm.core.dialects import Untranslatable
from freellm.core.dialects.openai import StreamError, Usage
from freellm.core.ledger import Refusal, Slot, Ticket
from freellm.core.outcome import Failover, Kind, Outcome, TransportError, classify
from freellm.core.sessions import session_key
from freellm.core.sse import Decoder, encode
from freellm.shell.upstream import Adapter, Answer, Fold, Outgoing, Upstreams, transport_error

__all__ = ["Attempt", "Dispatcher", "Reply", "RequestLog", "error_body"]

Headers = list[tuple[bytes, bytes]]
Start = Callable[[int, Headers], Awaitable[None]]
Send = Callable[[bytes], Awaitable[None]]

DEFAULT_RETRY_AFTER_S: Final = 60
CHARS_PER_TOKEN: Final = 4


@attrs.frozen
class Reply:
    status: int
    headers: Headers
    body: bytes


@attrs.frozen
class Attempt:
    provider: str
    model: str
    key_id: str
    status: int | None
    outcome: str
    latency_s: float
    usage: Usage | None


@attrs.frozen
class RequestLog:
    """What happened to one client request: for the store, metrics and the dashboard."""

    id: str
    at: float
    model: str
    stream: bool
    session: str | None
    status: int
    routed_via: str | None
    attempts: tuple[Attempt, ...]
    usage: Usage | None
    latency_s: float
    error: str | None = None


def error_body(
    message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> bytes:
    error = {"message": message, "type": type_, "param": param, "code": code}
    return wire.dumps({"error": error})


class _Prepared(NamedTuple):
    """One attempt's request, in its provider's dialect, and the adapter that reads the answer."""

    adapter: Adapter
    outgoing: Outgoing


@attrs.frozen
class _OpenStream:
    """A stream whose upstream produced the first chunk for the client, still being read."""

    answer: Answer
    decoder: Decoder
    fold: Fold
    first: list[bytes]


@attrs.define
class _Call:
    """The outcome of one attempt, and for a stream the response still open."""

    outcome: Outcome
    usage: Usage | None = None
    answer: dict[str, Any] | None = None
    stream: _OpenStream | None = None


class Dispatcher:
    """Owns the router state and runs requests through it.

    ``secrets`` maps key ids to plaintext provider keys (decrypted once at start-up and kept in
    memory only); ``clock`` gives epoch seconds (tests pass a virtual one).
    """

    def __init__(
        self,
        state: router.RouterState,
        secrets: Mapping[str, str],
        upstreams: Upstreams,
        *,
        clock: Callable[[], float],
        observers: tuple[Callable[[RequestLog], None], ...] = (),
    ) -> None:
        self.state = state
        self.secrets = dict(secrets)
        self.upstreams = upstreams
        self.clock = clock
        self.observers = observers

    @property
    def catalog(self) -> Catalog:
        return self.state.catalog

    # -- entry points ----------------------------------------------------------------------

    async def complete(
        self,
        shape: ChatShape,
        body: Mapping[str, Any],
        *,
        session_header: str | None = None,
        request_id: str | None = None,
    ) -> Reply:
        """A non-streamed chat completion: the reply to send, success or error."""
        run = _Run(self, shape, body, session_header, request_id)
        try:
            return await run.complete()
        finally:
            run.finish()

    async def stream(
        self,
        shape: ChatShape,
        body: Mapping[str, Any],
        start: Start,
        send: Send,
        *,
        session_header: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """A streamed chat completion: ``start(status, headers)`` once, then ``send`` chunks.

        If nothing can serve it, ``start`` gets the error status and ``send`` the error body.
        """
        run = _Run(self, shape, body, session_header, request_id)
        try:
            await run.stream(start, send)
        finally:
            run.finish()


class _Run:
    """One client request going through the loop."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        shape: ChatShape,
        body: Mapping[str, Any],
        session_header: str | None,
        request_id: str | None,
    ) -> None:
        self.d = dispatcher
        self.shape = shape
        self.body = body
        self.id = request_id or f"req_{uuid.uuid4().hex[:24]}"
        self.session = session_key(session_header, shape.user, shape.messages)
        self.started = dispatcher.clock()
        self.request = router.RouteRequest(
            model=shape.model,
            prompt_tokens=shape.prompt_tokens,
            max_tokens=shape.max_tokens,
            tools=shape.tools,
            vision=shape.vision,
            json=shape.json,
            session=self.session,
        )
        self.plan = router.plan(dispatcher.state, self.request, now=self.started)
        self.attempts: list[Attempt] = []
        self.status = 500
        self.routed_via: str | None = None
        self.usage: Usage | None = None
        self.error: str | None = None
        self.untranslatable: Untranslatable | None = None

    # -- the loop --------------------------------------------------------------------------

    async def complete(self) -> Reply:
        for slot in self.plan:
            reserved = self._reserve(slot)
            if reserved is None:
                continue
            prepared, ticket = reserved
            call = await self._settled(ticket, self._call_json(slot, prepared))
            if call.outcome.kind is Kind.SUCCESS:
                assert call.answer is not None
                self._succeeded(slot, call.usage)
                return Reply(
                    200, self._headers(slot, len(self.attempts) - 1), wire.dumps(call.answer)
                )
            if call.outcome.rule.failover is Failover.CLIENT:
                return self._client_error(call.outcome)
        return self._exhausted()

    async def stream(self, start: Start, send: Send) -> None:
        for slot in self.plan:
            reserved = self._reserve(slot)
            if reserved is None:
                continue
            prepared, ticket = reserved
            call = await self._settled(ticket, self._open_stream(slot, prepared), keep_open=True)
            if call.outcome.kind is Kind.SUCCESS:
                await self._relay(slot, ticket, call, start, send)
                return
            if call.outcome.rule.failover is Failover.CLIENT:
                reply = self._client_error(call.outcome)
                await start(reply.status, reply.headers)
                await send(reply.body)
                return
        reply = self._exhausted()
        await start(reply.status, reply.headers)
        await send(reply.body)

    def _reserve(self, slot: Slot) -> tuple[_Prepared, Ticket] | None:
        """``slot``'s request, translated, and its reservation; None when the dialect cannot
        express the request or the slot has no room for it (no ``await``: see the module)."""
        prepared = self._prepare(slot)
        if prepared is None:
            return None
        ticket = self._admit(slot)
        return None if ticket is None else (prepared, ticket)

    def _prepare(self, slot: Slot) -> _Prepared | None:
        """The request for ``slot`` in its provider's dialect; None (and the target ruled out)
        when the dialect cannot express it."""
        provider = self.d.catalog.providers[slot.provider]
        adapter = self.d.upstreams.adapter(provider)
        outgoing = adapter.request(
            provider, slot, self.d.secrets[slot.key], self.body, stream=self.shape.stream
        )
        if isinstance(outgoing, Untranslatable):
            self.plan.cannot_serve(slot, outgoing.message)
            self.untranslatable = outgoing
            return None
        return _Prepared(adapter, outgoing)

    def _admit(self, slot: Slot) -> Ticket | None:
        d = self.d
        # The first candidate comes with no await since the plan was made: the plan's own time
        # lets it count the reservation without checking it again.
        now = self.started if not self.attempts else d.clock()
        admitted = self.plan.admit(d.state, slot, now=now)
        if isinstance(admitted, Refusal):
            self.plan.refused(slot, admitted)
            return None
        d.state = admitted.state
        return admitted.ticket

    async def _settled(
        self, ticket: Ticket, call: Awaitable[_Call], *, keep_open: bool = False
    ) -> _Call:
        """Run ``call`` and settle ``ticket`` with its outcome, whatever happens to it.

        A successful stream (``keep_open``) is settled later, by :meth:`_relay`.
        """
        began = self.d.clock()
        try:
            result = await call
        except BaseException:
            # Cancelled (the client went away) or crashed: settle with no I/O, and let it go on.
            self._record(ticket, Outcome(Kind.CANCELLED), None, began)
            raise
        if not (keep_open and result.outcome.kind is Kind.SUCCESS):
            self._record(ticket, result.outcome, result.usage, began)
        self.plan.after(ticket.slot, result.outcome)
        return result

    def _record(self, ticket: Ticket, outcome: Outcome, usage: Usage | None, began: float) -> None:
        d = self.d
        now = d.clock()
        d.state = router.record(
            d.state, ticket, outcome, tokens=None if usage is None else usage.total, now=now
        )
        slot = ticket.slot
        self.attempts.append(
            Attempt(
                slot.provider,
                slot.model.id,
                slot.key,
                outcome.status,
                outcome.kind.value,
                now - began,
                usage,
            )
        )

    def _succeeded(self, slot: Slot, usage: Usage | None) -> None:
        d = self.d
        d.state = router.bind_session(d.state, self.session, slot, now=d.clock())
        self.status = 200
        self.routed_via = slot.name
        self.usage = usage

    # -- one attempt -----------------------------------------------------------------------

    async def _call_json(self, slot: Slot, prepared: _Prepared) -> _Call:
        adapter, outgoing = prepared
        upstreams = self.d.upstreams
        with trio.move_on_after(upstreams.timeouts.total):
            try:
                answer = await upstreams.send(slot.provider, outgoing)
                body = await answer.read()
            except httpx.HTTPError as exc:
                return _Call(classify(None, {}, error=transport_error(exc), now=self.d.clock()))
            outcome = classify(answer.status, answer.headers, body, now=self.d.clock())
            if outcome.kind is not Kind.SUCCESS:
                return _Call(outcome)
            try:
                parsed, usage = adapter.answer(
                    body, model=slot.model.id, created=int(self.d.clock())
                )
            except ValueError:
                broken = classify(200, {}, error=TransportError.PROTOCOL, now=self.d.clock())
                return _Call(broken)
            return _Call(outcome, usage, parsed)
        return _Call(classify(None, {}, error=TransportError.TIMEOUT, now=self.d.clock()))

    async def _open_stream(self, slot: Slot, prepared: _Prepared) -> _Call:
        """Send the request and read until the first chunk for the client, or a failure."""
        adapter, outgoing = prepared
        upstreams = self.d.upstreams
        answer: Answer | None = None
        try:
            with trio.move_on_after(upstreams.timeouts.first_byte):
                answer = await upstreams.send(slot.provider, outgoing)
                if answer.status != 200:
                    body = await answer.read()
                    return _Call(classify(answer.status, answer.headers, body, now=self.d.clock()))
                fold = adapter.stream(
                    client_wants_usage=self.shape.include_usage,
                    model=slot.model.id,
                    created=int(self.d.clock()),
                )
                decoder = Decoder()
                first: list[bytes] = []
                while not first:
                    data = await answer.__anext__()
                    for event in decoder.feed(data):
                        first += fold.step(event)
                outcome = classify(200, answer.headers, now=self.d.clock())
                open_stream = _OpenStream(answer, decoder, fold, first)
                answer = None  # handed over to _relay
                return _Call(outcome, stream=open_stream)
            timeout = classify(None, {}, error=TransportError.TIMEOUT, now=self.d.clock())
            return _Call(timeout)
        except httpx.HTTPError as exc:
            return _Call(classify(None, {}, error=transport_error(exc), now=self.d.clock()))
        except StopAsyncIteration:
            return _Call(classify(200, {}, error=TransportError.PROTOCOL, now=self.d.clock()))
        except StreamError as exc:
            return _Call(classify(502, {}, exc.body, now=self.d.clock()))
        finally:
            if answer is not None:
                with trio.CancelScope(shield=True):
                    await answer.aclose()

    async def _relay(
        self, slot: Slot, ticket: Ticket, call: _Call, start: Start, send: Send
    ) -> None:
        """Stream an upstream that produced its first chunk to the client, then settle."""
        opened = call.stream
        assert opened is not None
        chunks, decoder, fold = opened.answer, opened.decoder, opened.fold
        began = self.d.clock()
        outcome = Outcome(Kind.CANCELLED)
        try:
            self._succeeded(slot, None)
            await start(200, self._headers(slot, len(self.attempts), stream=True))
            await send(b"".join(opened.first))
            idle = self.d.upstreams.timeouts.idle
            # Read to the end of the body, past [DONE]: the body ends right after it, and the
            # connection goes back to the pool only when its body was read to the end.
            while True:
                with trio.move_on_after(idle) as scope:
                    try:
                        data = await chunks.__anext__()
                    except StopAsyncIteration:
                        data = None
                if scope.cancelled_caught:
                    if not fold.done:
                        outcome = Outcome(Kind.TIMEOUT, 200, "the stream stalled")
                    break
                if not fold.done:
                    events = decoder.close() if data is None else decoder.feed(data)
                    pieces: list[bytes] = []
                    try:
                        for event in events:
                            pieces += fold.step(event)
                    finally:  # one write for what one read carried, even up to an error event
                        if pieces:
                            await send(b"".join(pieces))
                if data is None:
                    break
            if fold.done:
                outcome = Outcome(Kind.SUCCESS, 200)
            elif outcome.kind is Kind.CANCELLED:
                outcome = Outcome(Kind.BROKEN_RESPONSE, 200, "the stream ended without [DONE]")
        except StreamError as exc:
            outcome = Outcome(Kind.BROKEN_RESPONSE, 200, exc.message)
        except httpx.HTTPError as exc:
            outcome = classify(200, {}, error=transport_error(exc), now=self.d.clock())
        finally:
            usage = fold.usage or self._streamed_usage(fold)
            self._record(ticket, outcome, usage, began)
            self.usage = usage
            with trio.CancelScope(shield=True):
                await chunks.aclose()
        if outcome.kind is not Kind.SUCCESS:
            self.error = outcome.message or outcome.kind.value
            payload = json.loads(error_body(self.error, "upstream_error", code=outcome.kind.value))
            await send(encode(json.dumps(payload), event="error"))
            await send(b"data: [DONE]\n\n")

    def _streamed_usage(self, fold: Fold) -> Usage:
        completion = math.ceil(fold.completion_chars / CHARS_PER_TOKEN)
        return Usage(self.shape.prompt_tokens, completion)

    # -- answers ---------------------------------------------------------------------------

    def _headers(self, slot: Slot | None, failed: int, *, stream: bool = False) -> Headers:
        content_type = b"text/event-stream" if stream else b"application/json"
        headers = [(b"content-type", content_type), (b"x-request-id", self.id.encode())]
        if stream:
            headers.append((b"cache-control", b"no-cache"))
        if slot is not None:
            headers.append((b"x-routed-via", slot.name.encode()))
        if failed > 0:
            headers.append((b"x-fallback-attempts", str(failed).encode()))
        return headers

    def _client_error(self, outcome: Outcome) -> Reply:
        status = outcome.status or 400
        self.status = status
        self.error = outcome.message
        body = error_body(
            outcome.message or "The provider refused the request.",
            "invalid_request_error",
            code="upstream_rejected",
        )
        return Reply(status, self._headers(None, len(self.attempts)), body)

    def _exhausted(self) -> Reply:
        now = self.d.clock()
        verdict = self.plan.no_capacity()
        if self.attempts:
            # The attempts changed the state (cooldowns): ask it again for when something frees.
            fresh = router.plan(self.d.state, self.request, now=now)
            verdict = fresh.no_capacity() if next(fresh, None) is None else verdict
        if verdict.unknown_model:
            self.status = 404
            self.error = "unknown model"
            message = f"The model `{self.shape.model}` does not exist or no provider serves it."
            body = error_body(
                message, "invalid_request_error", param="model", code="model_not_found"
            )
            return Reply(404, self._headers(None, len(self.attempts)), body)
        upstream_failures = [
            a
            for a in self.attempts
            if a.outcome not in (Kind.RATE_LIMITED.value, Kind.QUOTA_EXHAUSTED.value)
        ]
        if upstream_failures:
            self.status = 502
            self.error = "every attempt failed upstream"
            tried = ", ".join(f"{a.provider}/{a.model}: {a.outcome}" for a in self.attempts)
            body = error_body(
                f"Every provider tried failed ({tried}).", "upstream_error", code="upstream_failed"
            )
            return Reply(502, self._headers(None, len(self.attempts)), body)
        if verdict.retry_at is None and not self.attempts:
            self.status = 400
            self.error = "no model can serve this request"
            reasons = "; ".join(sorted({reason for _, reason in verdict.refusals}))
            message = f"No configured model can serve this request ({reasons or 'no keys'})."
            # A field no dialect could translate is what the client can change: name it.
            untranslatable = self.untranslatable
            body = error_body(
                message,
                "invalid_request_error",
                param=untranslatable.param if untranslatable else None,
                code=untranslatable.code if untranslatable else "no_suitable_model",
            )
            return Reply(400, self._headers(None, len(self.attempts)), body)
        self.status = 429
        self.error = "no capacity"
        wait = DEFAULT_RETRY_AFTER_S
        if verdict.retry_at is not None:
            wait = max(1, math.ceil(verdict.retry_at - now))
        headers = self._headers(None, len(self.attempts))
        headers.append((b"retry-after", str(wait).encode()))
        message = f"Every provider is at its free-tier limit; the first frees up in {wait} s."
        body = error_body(message, "rate_limit_error", code="no_capacity")
        return Reply(429, headers, body)

    def finish(self) -> None:
        log = RequestLog(
            id=self.id,
            at=self.started,
            model=self.shape.model,
            stream=self.shape.stream,
            session=self.session,
            status=self.status,
            routed_via=self.routed_via,
            attempts=tuple(self.attempts),
            usage=self.usage,
            latency_s=self.d.clock() - self.started,
            error=self.error,
        )
        for observer in self.d.observers:
            observer(log)
