"""One client request as a sans-IO machine: its plan, its attempts, and the client's answer.

Theory of operation
-------------------
Like h11's ``Connection``, an :class:`Exchange` does no I/O. The shell's dispatch loop drives it:
it walks :attr:`Exchange.plan`, admits each candidate on the current router state (one pure
transition, :meth:`Exchange.admit`, which makes an :class:`~freellm.core.attempt.Attempt`),
sends the attempt's request, and feeds back what happened to it (:meth:`~Exchange.head`,
:meth:`~Exchange.data`, :meth:`~Exchange.end`, :meth:`~Exchange.fail`,
:meth:`~Exchange.crash`, :meth:`~Exchange.cancel`). The attempt's own life is
:mod:`freellm.core.attempt`; this module turns it into effects for the shell to carry out, in
order:

- changes of the router state, each a pure ``RouterState -> RouterState`` function:
  :class:`Observe` (the answer's rate-limit headers, when its head arrives), :class:`Settle` (the
  attempt's reservation, once, when it ends) and :class:`Bind` (the session stays on the model
  that answered). They always come before the writes, so a client that goes away during a write
  cannot keep a ticket from being settled;
- writes to the client: :class:`Start` (status and headers, once) and :class:`Send` (body bytes;
  ``more=False`` ends the response).

The client's side (:class:`ClientPhase`): IDLE --:class:`Start`--> STARTED --last
:class:`Send`--> DONE; a JSON answer starts and ends in one step. A stream starts only when its
first chunk for the client arrives, so a failure before it fails over to the next candidate
unseen, per the outcome's row of :data:`~freellm.core.outcome.RULES`; a failure after it ends
the stream with an SSE ``error`` event and ``data: [DONE]``. When the plan runs dry and nothing
answered, :meth:`Exchange.exhausted` says why, with the status the client gets: 404 (unknown
model), 503 (no key at all), 502 (a provider failed), 429 with ``Retry-After`` (the free tiers
are spent for now), else 400 (no model can serve this request).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from freellm.core import router, wire
from freellm.core.attempt import DEFAULT_BOUNDS, FINAL, Attempt, Bounds, Progress, ProtocolError
from freellm.core.catalog import ModelKind, Strategy
from freellm.core.chat import ChatShape
from freellm.core.dialects import Untranslatable
from freellm.core.dialects.adapters import ADAPTERS
from freellm.core.dialects.embeddings import EMBEDDING_ADAPTERS
from freellm.core.dialects.openai import Usage
from freellm.core.ledger import Refusal, Slot, Ticket
from freellm.core.outcome import RULES, Blame, Failover, Kind, Outcome, TransportError
from freellm.core.signals import Ceiling
from freellm.core.sse import encode

__all__ = [
    "Bind",
    "ClientPhase",
    "Effect",
    "Exchange",
    "Observe",
    "Send",
    "Settle",
    "Start",
]

Headers = list[tuple[bytes, bytes]]

DEFAULT_RETRY_AFTER_S: Final = 60
"""``Retry-After`` when every candidate is spent and none said when it frees up."""


class ClientPhase(enum.Enum):
    IDLE = "idle"  # nothing sent to the client yet
    STARTED = "started"  # status and headers sent; a stream is flowing
    DONE = "done"  # the response ended (or the client went away)


# --- effects ------------------------------------------------------------------------------------


@attrs.frozen
class Observe:
    """What the provider's rate-limit headers say ``slot`` has left."""

    slot: Slot
    ceilings: tuple[Ceiling, ...]
    now: float

    def __call__(self, state: router.RouterState) -> router.RouterState:
        return router.observe(state, self.slot, self.ceilings, now=self.now)


@attrs.frozen
class Settle:
    """The end of ``ticket``'s attempt: what it cost, its cooldowns and what it says of the key."""

    ticket: Ticket
    outcome: Outcome
    tokens: int | None
    now: float

    def __call__(self, state: router.RouterState) -> router.RouterState:
        return router.record(state, self.ticket, self.outcome, tokens=self.tokens, now=self.now)


@attrs.frozen
class Bind:
    """``session`` stays on ``slot``'s model: it answered this turn."""

    session: str
    slot: Slot
    now: float

    def __call__(self, state: router.RouterState) -> router.RouterState:
        return router.bind_session(state, self.session, self.slot, now=self.now)


@attrs.frozen
class Start:
    status: int
    headers: Headers


@attrs.frozen
class Send:
    data: bytes
    more: bool = True


Effect = Observe | Settle | Bind | Start | Send
_WRITES: Final = (Start, Send)


# --- one request --------------------------------------------------------------------------------


class Exchange:
    """One client request: its plan, its attempts, and the client's side of the answer.

    ``shape`` is the checked request and ``body`` the client's JSON as it came; ``session`` names
    its sticky session (``None``: none); ``id`` goes into ``X-Request-Id``. The plan is made from
    ``state`` at ``now``.
    """

    def __init__(
        self,
        state: router.RouterState,
        shape: ChatShape,
        body: Mapping[str, Any],
        *,
        id: str,
        session: str | None,
        now: float,
        bounds: Bounds = DEFAULT_BOUNDS,
        strategy: Strategy | None = None,
    ) -> None:
        self.shape = shape
        self.body = body
        self.id = id
        self.session = session
        self.bounds = bounds
        self.request = router.RouteRequest(
            model=shape.model,
            prompt_tokens=shape.prompt_tokens,
            max_tokens=shape.max_tokens,
            tools=shape.tools,
            vision=shape.vision,
            json=shape.json,
            session=session,
            kind=shape.kind,
            longest_input=shape.longest_input,
            strategy=strategy,
        )
        self.started = now
        self.plan = router.plan(state, self.request, now=now)
        self.attempts: list[Attempt] = []
        self.attempt: Attempt | None = None  # the one in progress (or the last one)
        self.client = ClientPhase.IDLE
        self.status: int | None = None  # what the client got
        self.routed_via: Slot | None = None
        self.usage: Usage | None = None
        self.error: str | None = None
        self.untranslatable: Untranslatable | None = None

    @property
    def answered(self) -> bool:
        """Whether the client's response is over (answered, or the client went away)."""
        return self.client is ClientPhase.DONE

    # -- admission ---------------------------------------------------------------------------

    def admit(self, slot: Slot, state: router.RouterState, *, now: float) -> router.RouterState:
        """``state`` with ``slot`` reserved for this request and :attr:`attempt` made; or the
        same state and no attempt, when the slot cannot take it: its key has left, its dialect
        cannot express the request (the plan drops that model), or it has no room now.

        A pure transition for the state holder: ``holder.apply(partial(ex.admit, slot, now=t))``.
        Raises :class:`~freellm.core.attempt.ProtocolError` while an attempt is in progress or
        after the response started.
        """
        if self.attempt is not None and self.attempt.phase not in FINAL:
            raise ProtocolError("a new attempt before the last one ended")
        if self.client is not ClientPhase.IDLE:
            raise ProtocolError("a new attempt after the client's response started")
        self.attempt = None
        key = state.topology.key(slot.provider, slot.key_id)
        if key is None:
            self.plan.refused(slot, Refusal("key removed", None))
            return state
        provider = state.catalog.providers[slot.provider]
        adapters = EMBEDDING_ADAPTERS if self.shape.kind is ModelKind.EMBEDDING else ADAPTERS
        adapter = adapters.get(provider.dialect)
        if adapter is None:
            self.plan.cannot_serve(slot, f"no {provider.dialect.value} embeddings")
            return state
        shape = self.shape
        body = self.body
        if "reasoning_effort" in body and not slot.model.reasoning:
            body = _without_reasoning(body)
        outgoing = adapter.request(provider, slot, key.secret, body, stream=shape.stream)
        if isinstance(outgoing, Untranslatable):
            self.plan.cannot_serve(slot, outgoing.message)
            self.untranslatable = outgoing
            return state
        admitted = self.plan.admit(state, slot, now=now)
        if isinstance(admitted, Refusal):
            self.plan.refused(slot, admitted)
            return state
        self.attempt = Attempt(
            admitted.ticket,
            provider,
            adapter,
            outgoing,
            stream=shape.stream,
            include_usage=shape.include_usage,
            prompt_tokens=shape.prompt_tokens,
            bounds=self.bounds,
        )
        self.attempts.append(self.attempt)
        return admitted.state

    # -- what happened to the attempt --------------------------------------------------------

    def head(self, status: int, headers: Mapping[str, str], *, now: float) -> list[Effect]:
        """The answer's head arrived; ``headers`` have lower-case names."""
        attempt = self._current()
        ceilings = attempt.head(status, headers, now=now)
        return [Observe(attempt.slot, ceilings, now)] if ceilings else []

    def data(self, data: bytes, *, now: float) -> list[Effect]:
        """Body bytes of the answer, as they came."""
        attempt = self._current()
        return self._progress(attempt, attempt.data(data, now=now), now)

    def end(self, *, now: float) -> list[Effect]:
        """The answer's body ended cleanly."""
        attempt = self._current()
        return self._progress(attempt, attempt.end(now=now), now)

    def fail(self, error: TransportError, *, now: float) -> list[Effect]:
        """The call failed below HTTP: a timeout, no connection, a cut or malformed response."""
        attempt = self._current()
        return self._progress(attempt, attempt.fail(error, now=now), now)

    def crash(self, note: str, *, now: float) -> list[Effect]:
        """An unexpected exception inside the attempt (the shell logged it): a broken answer."""
        attempt = self._current()
        return self._progress(attempt, attempt.crash(note), now)

    def cancel(self, *, now: float) -> list[Effect]:
        """The client went away: settle the attempt in progress, if any. Never raises."""
        attempt = self.attempt
        settled = []
        if attempt is not None and attempt.phase not in FINAL:
            settled = self._progress(attempt, attempt.cancel(), now)
        if self.client is not ClientPhase.DONE:
            self.client = ClientPhase.DONE
            self.status = self.status or 499  # nginx's "client closed request", for the log
            self.error = self.error or "the client went away"
        return settled

    # -- nothing answered --------------------------------------------------------------------

    def exhausted(self, state: router.RouterState, *, now: float) -> list[Effect]:
        """The client's answer when the plan ran dry and nothing answered."""
        if self.client is not ClientPhase.IDLE:
            raise ProtocolError("the plan ran dry after the response started")
        verdict = self.plan.no_capacity()
        if self.attempts:
            # The attempts changed the state (cooldowns): ask it again when something frees up.
            fresh = router.plan(state, self.request, now=now)
            if next(fresh, None) is None:
                verdict = fresh.no_capacity()
        blames = {RULES[a.outcome.kind].blame for a in self.attempts if a.outcome is not None}
        if verdict.unknown_model:
            message = f"The model `{self.shape.model}` does not exist or no provider serves it."
            return self._error(
                404, message, "invalid_request_error", "model_not_found", "model", now=now
            )
        if not state.topology.keys:
            message = (
                "No provider key is configured yet. Add one with `freellm keys add PROVIDER KEY`"
                " or on the dashboard's Keys page, then send the request again."
            )
            return self._error(503, message, "service_unavailable", "no_keys", now=now)
        if Blame.UPSTREAM in blames:
            tried = ", ".join(f"{a.slot.name}: {_trail_outcome(a)}" for a in self.attempts)
            message = f"Every provider tried failed ({tried})."
            return self._error(502, message, "upstream_error", "upstream_failed", now=now)
        if verdict.retry_at is not None or Blame.CAPACITY in blames:
            wait = DEFAULT_RETRY_AFTER_S
            if verdict.retry_at is not None:
                wait = max(1, math.ceil(verdict.retry_at - now))
            message = f"Every provider is at its free-tier limit; the first frees up in {wait} s."
            retry_after = ((b"retry-after", str(wait).encode()),)
            return self._error(
                429, message, "rate_limit_error", "no_capacity", now=now, extra=retry_after
            )
        if Blame.CLIENT in blames:
            message = "The request is longer than the context window of every model tried."
            code = "context_length_exceeded"
            return self._error(400, message, "invalid_request_error", code, "messages", now=now)
        reasons = "; ".join(sorted({reason for _, reason in verdict.refusals}))
        message = f"No configured model can serve this request ({reasons or 'no keys for it'})."
        # A field no dialect could translate is what the client can change: name it.
        missing = self.untranslatable
        code, param = (
            ("no_suitable_model", None) if missing is None else (missing.code, missing.param)
        )
        return self._error(400, message, "invalid_request_error", code, param, now=now)

    def trail(self) -> str:
        """``X-Fallback-Trail``: ``provider/model=outcome`` per candidate tried, in order."""
        return ",".join(f"{a.slot.name}={_trail_outcome(a)}" for a in self.attempts)

    # -- internals ---------------------------------------------------------------------------

    def _current(self) -> Attempt:
        if self.attempt is None:
            raise ProtocolError("an event with no attempt admitted")
        return self.attempt

    def _progress(self, attempt: Attempt, progress: Progress, now: float) -> list[Effect]:
        """The effects of what an event gave: chunks for the client, and the attempt's end."""
        outcome = progress.outcome
        if outcome is None:  # the common case: a chunk of a stream, or of a body, and no end
            if not progress.data:
                return []
            if self.client is ClientPhase.STARTED:
                return [Send(progress.data)]
        effects: list[Effect] = []
        if progress.data:
            last = outcome is not None and outcome.kind is Kind.SUCCESS
            if self.client is ClientPhase.IDLE:
                headers = self._headers(attempt.slot, stream=attempt.stream)
                if not attempt.stream:
                    headers.append((b"content-length", str(len(progress.data)).encode()))
                effects += self._start(200, headers, progress.data, more=not last, now=now)
            else:
                effects.append(self._send(progress.data, more=not last))
        if outcome is not None:
            effects += self._ended(attempt, outcome, now)
        # The state changes first, then the writes (see the module docstring).
        return [e for e in effects if not isinstance(e, _WRITES)] + [
            e for e in effects if isinstance(e, _WRITES)
        ]

    def _ended(self, attempt: Attempt, outcome: Outcome, now: float) -> list[Effect]:
        """Settle the attempt; then end the response, fail over, or answer the client."""
        tokens = attempt.tokens()
        effects: list[Effect] = [Settle(attempt.ticket, outcome, tokens, now)]
        kind = outcome.kind
        if kind is Kind.SUCCESS:
            self.usage = attempt.usage or _usage_of(tokens, self.shape.prompt_tokens)
            if self.client is ClientPhase.STARTED:
                effects.append(self._send(b"", more=False))
            return effects
        if kind is Kind.CANCELLED:
            return effects
        self.error = outcome.message or kind.value
        if self.client is ClientPhase.STARTED:
            # Mid-stream: the client has chunks already; end them with an error event.
            self.usage = _usage_of(tokens, self.shape.prompt_tokens)
            error = wire.error_body(self.error, "upstream_error", code=kind.value).decode()
            tail = encode(error, event="error") + b"data: [DONE]\n\n"
            return [*effects, self._send(tail, more=False)]
        self.plan.after(attempt.slot, outcome)
        if outcome.rule.failover is Failover.CLIENT:
            status = outcome.status or 400
            message = outcome.message or "The provider refused the request."
            code = "upstream_rejected"
            effects += self._error(status, message, "invalid_request_error", code, now=now)
        return effects

    def _start(
        self, status: int, headers: Headers, data: bytes, *, more: bool, now: float
    ) -> list[Effect]:
        """Start the client's response (once), with its first bytes."""
        if self.client is not ClientPhase.IDLE:
            raise ProtocolError(f"the response started twice ({self.client.value})")
        self.client = ClientPhase.STARTED if more else ClientPhase.DONE
        self.status = status
        effects: list[Effect] = []
        attempt = self.attempt
        if status == 200 and attempt is not None:
            self.routed_via = attempt.slot
            if self.session is not None:
                effects.append(Bind(self.session, attempt.slot, now))
        return [*effects, Start(status, headers), Send(data, more=more)]

    def _send(self, data: bytes, *, more: bool) -> Send:
        if self.client is not ClientPhase.STARTED:
            raise ProtocolError(f"a write to a response that is {self.client.value}")
        if not more:
            self.client = ClientPhase.DONE
        return Send(data, more=more)

    def _error(
        self,
        status: int,
        message: str,
        type_: str,
        code: str,
        param: str | None = None,
        *,
        now: float,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> list[Effect]:
        self.error = message
        body = wire.error_body(message, type_, param=param, code=code)
        headers = [*self._headers(None), *extra]
        headers.append((b"content-length", str(len(body)).encode()))
        return self._start(status, headers, body, more=False, now=now)

    def _headers(self, slot: Slot | None, *, stream: bool = False) -> Headers:
        content_type = b"text/event-stream" if stream else b"application/json"
        headers = [(b"content-type", content_type), (b"x-request-id", self.id.encode())]
        if stream:
            headers.append((b"cache-control", b"no-cache"))
        if slot is not None:
            headers.append((b"x-routed-via", slot.name.encode()))
        failed = len(self.attempts) - (1 if slot is not None else 0)
        if failed > 0:
            headers.append((b"x-fallback-attempts", str(failed).encode()))
        if self.attempts:
            headers.append((b"x-fallback-trail", self.trail().encode()))
        return headers


def _without_reasoning(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` for a model that does not think: without ``reasoning_effort``, which such a
    model's provider refuses (Groq's Llama: a 400) where the client meant "think if you can"
    (Anthropic's ``thinking`` comes through this field too). A model thinks when the catalog
    or the config marks it ``reasoning = true``."""
    return {name: value for name, value in body.items() if name != "reasoning_effort"}


def _trail_outcome(attempt: Attempt) -> str:
    """How an attempt ended, for the trail: ``ok``, the HTTP status of a refusal, or the kind of a
    failure that had none (``timeout``, ``connection_error``, ``broken_response``)."""
    outcome = attempt.outcome
    if outcome is None or outcome.kind is Kind.SUCCESS:
        return "ok"  # a stream in progress is the one answering
    if outcome.status is not None and not 200 <= outcome.status < 300:
        return str(outcome.status)
    return str(outcome.kind.value)


def _usage_of(tokens: int | None, prompt_tokens: int) -> Usage | None:
    if tokens is None:
        return None
    return Usage(prompt_tokens, max(0, tokens - prompt_tokens))
