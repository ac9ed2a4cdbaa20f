"""Injectable faults: what a fake does wrong, to which requests.

A :class:`FaultPlan` holds two things, consulted in this order for every request:

1. a queue of one-shot faults (``plan.next(3, FaultKind.STATUS, status=503)`` queues three), each
   taken by the first request whose path it matches;
2. standing rules (``plan.always(FaultKind.LATENCY, seconds=2, probability=0.5)``), tried in the
   order they were added; a rule with a probability below 1 draws from the plan's seeded
   ``random.Random``, so a run is repeatable for a given seed.

A request gets at most one fault. ``path`` limits a fault to one endpoint, named the OpenAI way
whatever the dialect (see :mod:`.dialect`): ``/chat/completions`` (the default: every dialect's
chat endpoint), ``/models``, ``/models/{id}``; None matches every endpoint. Each dialect acts
the faults out in its own shapes (its error JSON, its stream events); see its module.
"""

from __future__ import annotations

import enum
import random
from typing import Any

import attrs

CHAT_PATH = "/chat/completions"
_NOT_NEGATIVE = attrs.validators.ge(0.0)
_NOT_NEGATIVE_INT = attrs.validators.ge(0)


def _no_negative_wait(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"'{attribute.name}' must be >= 0 or None: {value}")


class FaultKind(enum.StrEnum):
    """What goes wrong. Every kind first waits ``Fault.seconds`` (0 by default).

    - LATENCY: then answers normally (``gap`` also spaces stream chunks).
    - STATUS: answers ``status`` with the dialect's error JSON.
    - RESET: drops the connection without a response (the client sees
      ``httpx.RemoteProtocolError: Server disconnected without sending a response``).
    - RESET_AFTER_HEAD: sends the answer's status line and headers (200, the dialect's content
      type; a JSON answer's ``content-length``), then drops the connection before the first
      byte of the body: a JSON answer gets none of its body, a stream none of its events.
      Unlike CUT, nothing of the answer arrives; unlike RESET, the head does.
    - HANG: never answers; waits until the client goes away (counted in ``cancelled``).
    - MALFORMED: 200 with a body that is not JSON (for a stream: a ``data:`` event that is not
      JSON, then the dialect's end of stream, if it has one).
    - CUT: a stream sends its first ``chunks`` events, then the connection drops before the
      stream's end (``[DONE]``, Gemini's ``finishReason``, Cohere's message-end); a JSON answer
      sends half its body, then drops.
    - MIDSTREAM_ERROR: a stream sends ``chunks`` events, then the dialect's mid-stream error
      (OpenAI: an event with an ``error`` object and ``finish_reason: "error"``, OpenRouter's
      shape, and no ``[DONE]``); a JSON answer becomes the dialect's failed answer.
    - INVALID_KEY: the dialect's refusal of a wrong key (401; Gemini: 400 API_KEY_INVALID).
    - RATE_LIMIT: the flavor's own 429, as if a per-minute request cap were hit, retry after
      ``retry_after`` seconds. ``retry_after=None`` sends the same 429 with no hint at all of
      when to retry: no ``retry-after``, no ``x-ratelimit-reset*`` header, no delay in the body
      (Gemini's ``RetryInfo`` and "Please retry in", Groq's "Please try again in").

    LATENCY, CUT, MIDSTREAM_ERROR and RESET_AFTER_HEAD requests are admitted (counted against
    caps, when they fit); the others are refused before admission and count against nothing.

    A connect timeout is not a fault of a running fake (its listener accepts every
    connection): point a client at :func:`~freellm.sim.fakes.unreachable.open_unreachable`
    instead.
    """

    LATENCY = "latency"
    STATUS = "status"
    RESET = "reset"
    RESET_AFTER_HEAD = "reset_after_head"
    HANG = "hang"
    MALFORMED = "malformed"
    CUT = "cut"
    MIDSTREAM_ERROR = "midstream_error"
    INVALID_KEY = "invalid_key"
    RATE_LIMIT = "rate_limit"


@attrs.frozen
class Fault:
    """One fault and its parameters; the ones its kind does not use are ignored.

    ``retry_after`` None (RATE_LIMIT only): the 429 gives no retry hint.
    Raises ``ValueError`` for negative times or counts, or a status outside 100-599.
    """

    kind: FaultKind
    seconds: float = attrs.field(default=0.0, validator=_NOT_NEGATIVE)
    gap: float = attrs.field(default=0.0, validator=_NOT_NEGATIVE)
    status: int = attrs.field(
        default=500, validator=[attrs.validators.ge(100), attrs.validators.le(599)]
    )
    chunks: int = attrs.field(default=1, validator=_NOT_NEGATIVE_INT)
    retry_after: float | None = attrs.field(default=1.0, validator=_no_negative_wait)
    path: str | None = CHAT_PATH

    def matches(self, path: str) -> bool:
        return self.path is None or self.path == path


@attrs.define
class FaultPlan:
    """The mutable plan of faults of one fake provider (see the module docstring)."""

    seed: int = 0
    _queue: list[Fault] = attrs.field(factory=list, init=False)
    _rules: list[tuple[Fault, float]] = attrs.field(factory=list, init=False)
    _random: random.Random = attrs.field(init=False)

    @_random.default
    def _seeded(self) -> random.Random:
        return random.Random(self.seed)

    def next(
        self,
        n: int,
        kind: FaultKind,
        *,
        seconds: float = 0.0,
        gap: float = 0.0,
        status: int = 500,
        chunks: int = 1,
        retry_after: float | None = 1.0,
        path: str | None = CHAT_PATH,
    ) -> Fault:
        """Queue `kind` for the next `n` requests on `path`; returns the fault queued.

        Raises ``ValueError`` when `n` < 1 or a parameter is invalid (see :class:`Fault`).
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, not {n}")
        fault = Fault(kind, seconds, gap, status, chunks, retry_after, path)
        self._queue.extend([fault] * n)
        return fault

    def always(
        self,
        kind: FaultKind,
        *,
        probability: float = 1.0,
        seconds: float = 0.0,
        gap: float = 0.0,
        status: int = 500,
        chunks: int = 1,
        retry_after: float | None = 1.0,
        path: str | None = CHAT_PATH,
    ) -> Fault:
        """Apply `kind` to every later request on `path` (each with `probability`) until cleared.

        Raises ``ValueError`` for a probability outside [0, 1] or an invalid parameter.
        """
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be within [0, 1], not {probability}")
        fault = Fault(kind, seconds, gap, status, chunks, retry_after, path)
        self._rules.append((fault, probability))
        return fault

    def clear(self) -> None:
        """Forget every queued fault and every rule (the random stream carries on)."""
        self._queue.clear()
        self._rules.clear()

    @property
    def pending(self) -> int:
        """How many one-shot faults are still queued."""
        return len(self._queue)

    def draw(self, path: str) -> Fault | None:
        """The fault for the request on `path` now arriving, consuming a queued one if any."""
        for index, fault in enumerate(self._queue):
            if fault.matches(path):
                del self._queue[index]
                return fault
        for fault, probability in self._rules:
            if not fault.matches(path):
                continue
            if probability >= 1.0 or self._random.random() < probability:
                return fault
        return None
