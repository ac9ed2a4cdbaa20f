"""The dispatch loop: the driver of one request's machine, :class:`freellm.core.exchange.Exchange`.

::

    ex = Exchange(holder.state, request, ...)            # core: the plan, from one snapshot
    for slot in ex.plan:
        holder.apply(partial(ex.admit, slot, now=now))   # core: re-check, translate, reserve
        answer = await upstreams.send(...)               # shell: I/O, under deadlines
        do(ex.head(...)); do(ex.data(...)); ...          # core: effects; shell: carry them out
        if ex.answered: break
    else: do(ex.exhausted(holder.state, now=now))        # core: why nothing answered

The machine decides everything (failover, settlement, what the client gets); this module sends,
reads, waits, and carries out the effects: state changes through the one
:class:`~freellm.shell.state.StateHolder`, writes to the :class:`Client`. What can happen to an
attempt here becomes one event for the machine:

- the answer's head, its body bytes, its clean end;
- an ``httpx`` error of the transport (:func:`~freellm.shell.upstream.transport_error`), or a
  deadline: a stream's first chunk within ``first_byte``, the whole call within ``total``;
- ``trio.Cancelled`` (the client went away, or the server is stopping): the attempt is settled
  with no I/O, and the cancellation goes on;
- any other exception: logged once with its traceback, and a broken answer.

After a stream's ``[DONE]`` the client's response ends at once; the upstream body is then given
``drain`` seconds to end, so that its connection can go back to the pool, else it is closed.

Each request's log says when its answer's body began (:attr:`RequestLog.ttft_s`): the clock is
read once, when the client's response starts, since its first body bytes go out right after.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Final, Protocol

import attrs
import httpx
import trio

from freellm.core.attempt import DEFAULT_BOUNDS, FINAL, Attempt, Bounds, Phase
from freellm.core.catalog import ModelKind, Strategy
from freellm.core.chat import ChatShape
from freellm.core.dialects.openai import Usage
from freellm.core.exchange import Effect, Exchange, Send, Start
from freellm.core.outcome import Kind, TransportError
from freellm.core.sessions import session_key
from freellm.shell.state import StateHolder
from freellm.shell.transport import Answer
from freellm.shell.upstream import Upstreams, transport_error

__all__ = ["AttemptLog", "Client", "Dispatcher", "RequestLog", "new_request_id"]

logger = logging.getLogger("freellm.dispatch")

_NO_DEADLINE: Final = contextlib.nullcontext()

Headers = list[tuple[bytes, bytes]]

DRAIN_BYTES: Final = 64 * 1024
"""At most this much is read past a stream's ``[DONE]`` to reuse its connection."""


def new_request_id() -> str:
    """``req_`` and 24 hex digits: the time in milliseconds (12), then 48 random bits.

    Ids in the order of time go into the request log's indexes at their end, where random ones
    (a uuid4) land anywhere: as the log grows past SQLite's page cache, every insert then reads
    and writes pages all over its indexes. Writing a batch cost 10.5 µs a request so at any size,
    against 15 µs growing to 30 µs by 30,000 requests with random ids."""
    return f"req_{time.time_ns() // 1_000_000:012x}{os.urandom(6).hex()}"


class Client(Protocol):
    """Where a request's answer goes: ``start`` once, then ``send`` until ``more`` is False."""

    async def start(self, status: int, headers: Headers) -> None: ...

    async def send(self, data: bytes, *, more: bool) -> None: ...


@attrs.frozen
class AttemptLog:
    provider: str
    model: str
    key_id: str
    status: int | None
    outcome: Kind
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
    attempts: tuple[AttemptLog, ...]
    usage: Usage | None
    latency_s: float
    error: str | None = None
    # Time to first token: from the request's start to the first bytes of the answer's body
    # sent to the client (a stream's first chunk; a JSON answer's body), on the clock of
    # latency_s. None when nothing answered (an error, or the client left first).
    ttft_s: float | None = None


@attrs.define
class _Reply:
    """Where one request's answer goes, and when the response started (trio's clock)."""

    client: Client
    started: float | None = None


class Dispatcher:
    """Runs requests through the router state that ``holder`` keeps.

    ``clock`` gives epoch seconds, for the ledger (tests pass a virtual one); latencies are
    measured on trio's monotonic clock. ``observers`` get every request's :class:`RequestLog`.
    """

    def __init__(
        self,
        holder: StateHolder,
        upstreams: Upstreams,
        *,
        clock: Callable[[], float],
        observers: tuple[Callable[[RequestLog], None], ...] = (),
        bounds: Bounds = DEFAULT_BOUNDS,
    ) -> None:
        self.holder = holder
        self.upstreams = upstreams
        self.clock = clock
        self.observers = observers
        self.bounds = bounds
        self.active = 0  # requests being answered now

    async def serve(
        self,
        shape: ChatShape,
        body: Mapping[str, Any],
        client: Client,
        *,
        session_header: str | None = None,
        request_id: str | None = None,
        strategy: Strategy | None = None,
    ) -> None:
        """Answer one chat completion request, JSON or stream, success or error, to ``client``."""
        began = trio.current_time()
        if shape.kind is ModelKind.CHAT:
            session = session_key(session_header or shape.session_id, shape.user, shape.messages)
        else:
            session = None  # embeddings keep no conversation
        ex = Exchange(
            self.holder.state,
            shape,
            body,
            id=request_id or new_request_id(),
            session=session,
            now=self.clock(),
            bounds=self.bounds,
            strategy=strategy,
        )
        latencies: list[float] = []
        reply = _Reply(client)
        self.active += 1
        try:
            for slot in ex.plan:
                self.holder.apply(partial(ex.admit, slot, now=self.clock()))
                attempt = ex.attempt
                if attempt is None:
                    continue  # not admitted: the plan knows why
                sent = trio.current_time()
                try:
                    await self._attempt(ex, attempt, reply)
                finally:
                    latencies.append(trio.current_time() - sent)
                if ex.answered:
                    return
            await self._do(ex.exhausted(self.holder.state, now=self.clock()), reply)
        finally:
            self.active -= 1
            self._log(ex, began, latencies, reply.started)

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt(self, ex: Exchange, attempt: Attempt, reply: _Reply) -> None:
        timeouts = self.upstreams.timeouts
        answer: Answer | None = None
        ended = False  # the upstream body ended cleanly
        try:
            with trio.move_on_after(timeouts.total):
                # A stream must bring its first chunk for the client within first_byte.
                first = trio.move_on_after(timeouts.first_byte) if attempt.stream else _NO_DEADLINE
                with first:
                    answer = await self.upstreams.send(attempt.provider.id, attempt.outgoing)
                    await self._do(ex.head(answer.status, answer.headers, now=self.clock()), reply)
                    while attempt.phase is Phase.HEAD:
                        ended = await self._read(ex, answer, reply)
                while answer is not None and attempt.phase is Phase.STREAMING:
                    ended = await self._read(ex, answer, reply)
            if attempt.phase not in FINAL:  # a deadline passed
                await self._do(ex.fail(TransportError.TIMEOUT, now=self.clock()), reply)
        except httpx.HTTPError as exc:
            await self._do(ex.fail(transport_error(exc), now=self.clock()), reply)
        except trio.Cancelled:
            self._apply(ex.cancel(now=self.clock()))
            raise
        except Exception:
            await self._crashed(ex, attempt, reply)
        finally:
            if answer is not None and not ended:
                await self._finish(attempt, answer)

    async def _read(self, ex: Exchange, answer: Answer, reply: _Reply) -> bool:
        """Feed the machine the answer's next bytes, or its end; whether it ended."""
        try:
            data = await answer.__anext__()
        except StopAsyncIteration:
            await self._do(ex.end(now=self.clock()), reply)
            return True
        await self._do(ex.data(data, now=self.clock()), reply)
        return False

    async def _crashed(self, ex: Exchange, attempt: Attempt, reply: _Reply) -> None:
        """An exception no rule expected: log it once, and let the machine call the answer
        broken. Past the attempt's end (a write to a client that went away), the request is
        over instead."""
        slot = attempt.slot
        logger.error("unexpected error in an attempt on %s", slot.name, exc_info=True)
        if attempt.phase in FINAL:
            ex.cancel(now=self.clock())
            return
        note = "an unexpected error in freellm (logged) broke the answer"
        await self._do(ex.crash(note, now=self.clock()), reply)

    async def _finish(self, attempt: Attempt, answer: Answer) -> None:
        """Give the connection back, or close it. After a stream's ``[DONE]``, its body gets a
        short while to end (then the connection is reused); any other unread body is dropped."""
        with trio.CancelScope(shield=True):
            done = attempt.outcome is not None and attempt.outcome.kind is Kind.SUCCESS
            if done:
                read = 0
                with trio.move_on_after(self.upstreams.timeouts.drain):
                    try:
                        async for data in answer:
                            read += len(data)
                            if read > DRAIN_BYTES:
                                break
                    except httpx.HTTPError:
                        pass  # the connection is gone; aclose below forgets it
            await answer.aclose()

    # -- effects -----------------------------------------------------------------------------

    async def _do(self, effects: list[Effect], reply: _Reply) -> None:
        """Carry out the machine's effects in order: state changes, then writes."""
        for effect in effects:
            if isinstance(effect, Start):
                await reply.client.start(effect.status, effect.headers)
                reply.started = trio.current_time()  # the body's first bytes go out next
            elif isinstance(effect, Send):
                await reply.client.send(effect.data, more=effect.more)
            else:
                self.holder.apply(effect)

    def _apply(self, effects: list[Effect]) -> None:
        """State changes only: what a cancelled attempt leaves (it writes nothing)."""
        for effect in effects:
            if isinstance(effect, Start | Send):
                raise AssertionError(f"a cancelled attempt cannot write: {effect}")
            self.holder.apply(effect)

    # -- the log -----------------------------------------------------------------------------

    def _log(
        self, ex: Exchange, began: float, latencies: list[float], started: float | None
    ) -> None:
        attempts = tuple(
            AttemptLog(
                provider=a.slot.provider,
                model=a.slot.model.id,
                key_id=a.slot.key_id,
                status=a.outcome.status if a.outcome is not None else a.status,
                outcome=a.outcome.kind if a.outcome is not None else Kind.CANCELLED,
                latency_s=latency,
                usage=a.usage,
            )
            for a, latency in zip(ex.attempts, latencies, strict=False)
        )
        log = RequestLog(
            id=ex.id,
            at=ex.started,
            model=ex.shape.model,
            stream=ex.shape.stream,
            session=ex.session,
            status=ex.status or 500,
            routed_via=None if ex.routed_via is None else ex.routed_via.name,
            attempts=attempts,
            usage=ex.usage,
            latency_s=trio.current_time() - began,
            error=ex.error,
            ttft_s=None if ex.routed_via is None or started is None else started - began,
        )
        for observer in self.observers:
            observer(log)
