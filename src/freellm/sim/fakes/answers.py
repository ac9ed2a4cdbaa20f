"""Sending what a fake answers in any dialect: refusals, admitted answers, and their faults.

A dialect builds the values (:class:`ErrorAnswer`, :class:`Answer`); the functions here write
them, so the timing of faults (``gap``, ``chunks``, a cut, a client leaving) is the same in every
dialect.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

import attrs
import trio

from freellm.sim.fakes.exchange import Exchange, Headers, json_headers
from freellm.sim.fakes.faults import Fault, FaultKind

DONE: Final = b"data: [DONE]\n\n"
NOT_JSON: Final = b"<html><body>upstream hiccup</body></html>"
EVENT_STREAM: Final = b"text/event-stream"
APPLICATION_JSON: Final = b"application/json"


def sse(payload: Any, event: str | None = None) -> bytes:
    """One SSE event: `payload` as compact JSON, after an ``event:`` line when `event` is given."""
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return f"event: {event}\n".encode() + data if event is not None else data


@attrs.frozen
class ErrorAnswer:
    """A refusal as the dialect words it: HTTP `status`, JSON `body` and extra `headers`."""

    status: int
    body: Any
    headers: Headers = ()


@attrs.frozen
class Answer:
    """An admitted answer in a dialect's wire format, and what a MIDSTREAM_ERROR makes of it.

    `cap_tokens` is what the answer counts against token caps. A JSON answer is `body`
    (`events` empty); a streamed one is `opening`, then `events`, then `ending`. A
    MIDSTREAM_ERROR fault sends `broken` instead of a JSON answer, and for a stream sends the
    fault's first ``chunks`` events followed by `broken_ending`.
    """

    cap_tokens: int
    body: Any = None
    events: tuple[bytes, ...] = ()
    opening: bytes = b""
    ending: bytes = b""
    broken: ErrorAnswer | None = None
    broken_ending: bytes = b""

    @property
    def streamed(self) -> bool:
        return bool(self.events)


Settle = Callable[[str], None]


async def send_error(exchange: Exchange, error: ErrorAnswer) -> None:
    await exchange.json(error.status, error.body, error.headers)


async def send_answer(
    exchange: Exchange, answer: Answer, headers: Headers, fault: Fault | None, settle: Settle
) -> None:
    """Send `answer` (JSON or SSE), broken as `fault` says.

    ``settle(outcome)`` is called once, before the client can have read the end of the answer,
    so that the fake's counters are up to date for a client that just got its answer.
    """
    if answer.streamed:
        await _send_stream(exchange, answer, headers, fault, settle)
    else:
        await _send_json(exchange, answer, headers, fault, settle)


async def _send_json(
    exchange: Exchange, answer: Answer, headers: Headers, fault: Fault | None, settle: Settle
) -> None:
    kind = fault.kind if fault is not None else None
    if kind is FaultKind.CUT or kind is FaultKind.RESET_AFTER_HEAD:
        data = json.dumps(answer.body).encode()
        await exchange.start(200, json_headers(len(data), headers))
        settle(kind.value)
        # hypercorn sends the head with the first body message, so the reset sends an empty one.
        await exchange.body(data[: len(data) // 2] if kind is FaultKind.CUT else b"", more=True)
        return  # returning mid-body makes hypercorn drop the connection
    if kind is FaultKind.MIDSTREAM_ERROR and answer.broken is not None:
        settle(kind.value)
        broken = answer.broken
        await exchange.json(broken.status, broken.body, [*broken.headers, *headers])
        return
    settle("ok")
    await exchange.json(200, answer.body, headers)


async def _send_stream(
    exchange: Exchange, answer: Answer, headers: Headers, fault: Fault | None, settle: Settle
) -> None:
    """Stream as SSE; ``fault.gap`` spaces the events; ``cancelled`` if the client leaves."""
    kind = fault.kind if fault is not None else None
    gap = fault.gap if fault is not None else 0.0
    events, ending = answer.events, answer.ending
    if fault is not None and kind in (FaultKind.CUT, FaultKind.MIDSTREAM_ERROR):
        events, ending = events[: fault.chunks], answer.broken_ending
    start = [(b"content-type", EVENT_STREAM), (b"cache-control", b"no-cache"), *headers]

    async def run() -> None:
        await exchange.start(200, start)
        if kind is FaultKind.RESET_AFTER_HEAD:
            await exchange.body(b"", more=True)  # the head goes out with a body message
            settle(kind.value)
            return  # returning mid-body makes hypercorn drop the connection
        if answer.opening:
            await exchange.body(answer.opening, more=True)
        for index, event in enumerate(events):
            if gap and index:
                await trio.sleep(gap)
            await exchange.body(event, more=True)
        if kind is FaultKind.CUT:
            settle(kind.value)
            return  # returning mid-body makes hypercorn drop the connection
        if gap:
            await trio.sleep(gap)
        settle(kind.value if kind is FaultKind.MIDSTREAM_ERROR else "ok")
        await exchange.body(ending)

    if not await exchange.guard(run):
        settle("cancelled")


async def send_malformed(exchange: Exchange, content_type: bytes, data: bytes) -> None:
    """A 200 whose body (or one of whose events) is not the JSON it claims to be."""
    await exchange.start(200, [(b"content-type", content_type)])
    await exchange.body(data)
