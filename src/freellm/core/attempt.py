"""One upstream attempt as a sans-IO machine: from its reservation to the outcome it settles.

Theory of operation
-------------------
An :class:`Attempt` is made when a candidate is admitted (its ticket is reserved) and does no
I/O: the shell sends :attr:`Attempt.outgoing`, then feeds back what happened, one event at a
time: the answer's :meth:`~Attempt.head`, its body bytes (:meth:`~Attempt.data`), its
:meth:`~Attempt.end`, a transport failure (:meth:`~Attempt.fail`), an unexpected exception
(:meth:`~Attempt.crash`) or a cancellation (:meth:`~Attempt.cancel`). Each returns a
:class:`Progress`: the bytes it gives the client (stream chunks, or the whole JSON answer) and,
once the attempt has ended, its :class:`~freellm.core.outcome.Outcome`::

    RESERVED --head--> HEAD --a chunk for the client--> STREAMING --end of answer--> DONE
       |                 +-------------- end of answer --------------------------> DONE
       +-- (from any phase before the end) failure, exception, unusable answer --> BROKEN
       +-- (from any phase before the end) the client went away ----------------> CANCELLED

A JSON answer goes RESERVED, HEAD, DONE. DONE means the answer is complete: a success, or a
refusal such as a 429, classified by :func:`~freellm.core.outcome.classify`. BROKEN means it was
unusable: a transport failure or a timeout, a 2xx that is no answer, a chunk no fold can read, a
body over its :class:`Bounds`, an exception. CANCELLED means the client went away, and nothing
else does. An outcome comes out exactly once, when the attempt enters one of the three: after
that it takes no event (:class:`ProtocolError`), so its ticket cannot be settled twice.
:data:`TRANSITIONS` is the table; the machine never leaves it.

A stream's chunks pass through the dialect's fold as they come; a 2xx whose stream ends before
its ``[DONE]`` (or, for a dialect without one, its finish) is broken. Of an error answer only the
first :attr:`Bounds.max_error_bytes` are read: enough to classify it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

from freellm.core import wire
from freellm.core.catalog import ProviderSpec
from freellm.core.dialects.adapters import Adapter, Fold, Outgoing
from freellm.core.dialects.openai import StreamError, Usage
from freellm.core.ledger import Slot, Ticket
from freellm.core.outcome import Kind, Outcome, TransportError, classify, redact
from freellm.core.signals import Ceiling, parse_ratelimit_headers
from freellm.core.sse import Decoder, EventTooLarge

__all__ = [
    "DEFAULT_BOUNDS",
    "FINAL",
    "TRANSITIONS",
    "Attempt",
    "Bounds",
    "Phase",
    "Progress",
    "ProtocolError",
]


class Phase(enum.Enum):
    RESERVED = "reserved"  # admitted and counted; the request is on its way
    HEAD = "head"  # the answer's head arrived; its body is being read
    STREAMING = "streaming"  # a stream whose chunks are reaching the client
    DONE = "done"  # the answer is complete (a success or a refusal)
    BROKEN = "broken"  # the answer was unusable
    CANCELLED = "cancelled"  # the client went away


FINAL: Final = frozenset({Phase.DONE, Phase.BROKEN, Phase.CANCELLED})

_R, _H, _S, _D, _B, _C = (
    Phase.RESERVED,
    Phase.HEAD,
    Phase.STREAMING,
    Phase.DONE,
    Phase.BROKEN,
    Phase.CANCELLED,
)
# fmt: off
TRANSITIONS: Final[Mapping[tuple[Phase, str], frozenset[Phase]]] = MappingProxyType({
    # phase, event          where it may lead
    (_R, "head"):           frozenset({_H}),
    (_R, "fail"):           frozenset({_B}),
    (_R, "crash"):          frozenset({_B}),
    (_R, "cancel"):         frozenset({_C}),
    (_H, "data"):           frozenset({_H, _S, _D, _B}),
    (_H, "end"):            frozenset({_S, _D, _B}),
    (_H, "fail"):           frozenset({_B}),
    (_H, "crash"):          frozenset({_B}),
    (_H, "cancel"):         frozenset({_C}),
    (_S, "data"):           frozenset({_S, _D, _B}),
    (_S, "end"):            frozenset({_D, _B}),
    (_S, "fail"):           frozenset({_B}),
    (_S, "crash"):          frozenset({_B}),
    (_S, "cancel"):         frozenset({_C}),
})
# fmt: on
"""Every event an attempt takes in each phase, and where it may lead (one event may pass through
STREAMING on its way to the end); anything else is a :class:`ProtocolError`."""


class ProtocolError(Exception):
    """The driver fed an event that the machine's state does not take (a bug in the shell): an
    event after the attempt ended, a body before its head, a write after the response ended."""


@attrs.frozen
class Bounds:
    """What an answer may weigh. A 2xx JSON body over ``max_answer_bytes`` is a broken answer;
    of an error body, the first ``max_error_bytes`` are enough to classify it; an SSE event over
    ``max_event_bytes`` breaks its stream."""

    max_answer_bytes: int = 32 * 1024 * 1024
    max_error_bytes: int = 64 * 1024
    max_event_bytes: int = 16 * 1024 * 1024


@attrs.frozen
class Progress:
    """What one event gave: bytes for the client (stream chunks, or a whole JSON answer), and
    the attempt's outcome once it has ended (settle it)."""

    data: bytes = b""
    outcome: Outcome | None = None


_NOTHING: Final = Progress()
# The headers a key travels in (the adapters' and, in a provider's config, any of these).
_KEY_HEADERS: Final = frozenset({"authorization", "x-goog-api-key", "x-api-key", "api-key"})
_REDACTED: Final = "[redacted]"
_SHORTEST_CUT: Final = 4  # a message ending in fewer of a key's first characters is left as is
DEFAULT_BOUNDS: Final = Bounds()


class Attempt:
    """One upstream attempt: its reserved ticket, the request to send, and where its answer is.

    ``include_usage``: the client asked for a stream's usage chunk; ``prompt_tokens``: the prompt
    estimate, which a stream cut short is charged with what it streamed.
    """

    def __init__(
        self,
        ticket: Ticket,
        provider: ProviderSpec,
        adapter: Adapter,
        outgoing: Outgoing,
        *,
        stream: bool,
        include_usage: bool = False,
        prompt_tokens: int = 0,
        bounds: Bounds = DEFAULT_BOUNDS,
    ) -> None:
        self.ticket = ticket
        self.provider = provider
        self.outgoing = outgoing
        self.stream = stream
        self.phase = Phase.RESERVED
        self.status: int | None = None
        self.outcome: Outcome | None = None
        self.usage: Usage | None = None  # what the answer reported
        self._adapter = adapter
        self._include_usage = include_usage
        self._prompt_tokens = prompt_tokens
        self._bounds = bounds
        self._headers: Mapping[str, str] = {}
        self._body: bytearray | None = None  # a whole body being gathered (JSON, or an error)
        self._decoder: Decoder | None = None  # a 2xx stream being folded
        self._fold: Fold | None = None

    @property
    def slot(self) -> Slot:
        return self.ticket.slot

    @property
    def reading(self) -> bool:
        """Whether the answer's body is still wanted."""
        return self.phase is Phase.HEAD or self.phase is Phase.STREAMING

    # -- events ------------------------------------------------------------------------------

    def head(self, status: int, headers: Mapping[str, str], *, now: float) -> tuple[Ceiling, ...]:
        """The answer's head arrived (``headers`` with lower-case names): what its rate-limit
        headers say is left, to be observed now, before a long stream makes it stale."""
        self._check("head")
        self.status, self._headers = status, headers
        if self.stream and 200 <= status < 300:
            self._decoder = Decoder(max_event_bytes=self._bounds.max_event_bytes)
            self._fold = self._adapter.stream(
                client_wants_usage=self._include_usage, model=self.slot.model.id, created=int(now)
            )
        else:
            self._body = bytearray()
        self._move("head", _H)
        return parse_ratelimit_headers(headers, now=now)

    def data(self, data: bytes, *, now: float) -> Progress:
        """Body bytes of the answer, as they came."""
        self._check("data")
        body = self._body
        if body is not None:
            return self._gather(body, data, now)
        return self._fold_events("data", data, now)

    def end(self, *, now: float) -> Progress:
        """The answer's body ended cleanly (a cut is :meth:`fail`)."""
        self._check("end")
        body = self._body
        if body is not None:
            return self._answered("end", bytes(body), now)
        progress = self._fold_events("end", None, now)
        if self.phase in FINAL:
            return progress
        ended = "without [DONE]" if self.phase is _S else "before its first chunk"
        return Progress(progress.data, self._broken("end", f"the stream ended {ended}").outcome)

    def fail(self, error: TransportError, *, now: float) -> Progress:
        """The call failed below HTTP: a timeout, no connection, a cut or malformed response."""
        self._check("fail")
        return self._ended("fail", _B, classify(self.status, {}, error=error, now=now))

    def crash(self, note: str) -> Progress:
        """An unexpected exception inside the attempt (the shell logged it): a broken answer."""
        self._check("crash")
        return self._broken("crash", note)

    def cancel(self) -> Progress:
        """The client went away."""
        self._check("cancel")
        return self._ended("cancel", _C, Outcome(Kind.CANCELLED, self.status))

    def tokens(self) -> int | None:
        """What the answer is known to have cost: its reported usage, else the prompt estimate
        plus what was streamed; ``None`` when nothing is known (the estimate stands)."""
        if self.usage is not None:
            return self.usage.total
        fold = self._fold
        if fold is not None and fold.completion_tokens:
            return self._prompt_tokens + fold.completion_tokens
        return None

    # -- internals ---------------------------------------------------------------------------

    def _check(self, event: str) -> None:
        if (self.phase, event) not in TRANSITIONS:
            raise ProtocolError(f"an attempt in phase {self.phase.value} cannot take {event}")

    def _move(self, event: str, phase: Phase) -> None:
        if phase not in TRANSITIONS[self.phase, event]:
            raise AssertionError(f"{self.phase.value} --{event}--> {phase.value} is not a move")
        self.phase = phase

    def _gather(self, body: bytearray, data: bytes, now: float) -> Progress:
        """A JSON answer or an error body grows by ``data``, within its bound."""
        assert self.status is not None
        if 200 <= self.status < 300:
            limit = self._bounds.max_answer_bytes
            if len(body) + len(data) > limit:
                return self._broken("data", f"the answer is larger than {limit} bytes")
            body += data
            return _NOTHING
        room = self._bounds.max_error_bytes - len(body)
        body += data[:room]
        if len(data) < room:
            return _NOTHING
        return self._answered("data", bytes(body), now)  # enough of it to classify

    def _answered(self, event: str, body: bytes, now: float) -> Progress:
        """A whole body is in: a JSON answer to translate, or an error to classify."""
        status = self.status
        assert status is not None
        if not 200 <= status < 300:
            return self._ended(event, _D, classify(status, self._headers, body, now=now))
        model = self.slot.model.id
        try:
            answer, self.usage = self._adapter.answer(body, model=model, created=int(now))
        except (ValueError, RecursionError):
            return self._broken(event, "the provider's answer was not a chat completion")
        payload = wire.dumps(answer)
        return Progress(payload, self._ended(event, _D, Outcome(Kind.SUCCESS, status)).outcome)

    def _fold_events(self, event: str, data: bytes | None, now: float) -> Progress:
        """The stream's bytes ``data`` (None: its end) folded into chunks for the client, and
        the end if they hold it. The events at the start of a read that the fold passes on as
        they are go in one step (:meth:`Fold.passthrough`); the decoder reads the rest."""
        decoder, fold = self._decoder, self._fold
        assert decoder is not None
        assert fold is not None
        pieces: list[bytes] = []
        try:
            if data is None:
                events = decoder.close()
            else:
                if decoder.between_events and len(data) <= self._bounds.max_event_bytes:
                    data = data[fold.passthrough(data, pieces) :]
                events = decoder.feed(data) if data else []
            for item in events:
                pieces += fold.step(item)
        except EventTooLarge as exc:
            return self._broken(event, str(exc))
        except StreamError as exc:
            self._streaming(event, pieces)
            if self.phase is _S:
                return Progress(b"".join(pieces), self._broken(event, exc.message).outcome)
            # Nothing reached the client: the provider failed, and the next one is tried.
            return self._ended(event, _B, classify(502, {}, exc.body, now=now))
        except (ValueError, RecursionError) as exc:
            self._streaming(event, pieces)
            note = f"a chunk of the stream could not be read ({exc})"
            return Progress(b"".join(pieces), self._broken(event, note).outcome)
        self._streaming(event, pieces)
        data = b"".join(pieces)
        if not fold.done:
            return Progress(data)
        self.usage = fold.usage
        return Progress(data, self._ended(event, _D, Outcome(Kind.SUCCESS, self.status)).outcome)

    def _streaming(self, event: str, pieces: list[bytes]) -> None:
        if pieces and self.phase is _H:
            self._move(event, _S)

    def _without_key(self, message: str) -> str:
        """``message`` (what the provider said) without the key this attempt sent, nor anything
        shaped like a key: a provider may quote it ("Incorrect API key provided: ..."), and the
        message goes on to the client, the request log and the key's health note."""
        for name, value in self.outgoing.headers.items():
            if name.lower() in _KEY_HEADERS:
                scheme, _, token = value.partition(" ")
                message = _scrub(message, token if scheme.lower() == "bearer" else value)
        return redact(message)

    def _broken(self, event: str, note: str) -> Progress:
        return self._ended(event, _B, Outcome(Kind.BROKEN_RESPONSE, self.status, note))

    def _ended(self, event: str, phase: Phase, outcome: Outcome) -> Progress:
        self._move(event, phase)
        if outcome.message:
            outcome = attrs.evolve(outcome, message=self._without_key(outcome.message))
        self.outcome = outcome
        self._body = None  # what was gathered is no longer needed
        return Progress(outcome=outcome)


def _scrub(message: str, sent: str) -> str:
    """``message`` with every copy of ``sent`` replaced, and the start of one cut off at the
    message's end (a provider's message is kept to its first few hundred characters, which may
    end inside the key it quotes)."""
    if not sent:
        return message
    message = message.replace(sent, _REDACTED)
    for size in range(len(sent) - 1, _SHORTEST_CUT - 1, -1):
        if message.endswith(sent[:size]):
            return message[:-size] + _REDACTED
    return message
