"""Writing an admitted chat answer, as JSON or an SSE stream, and the faults that break one."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

import trio

from freellm.sim.fakes.exchange import Exchange, Headers, json_headers
from freellm.sim.fakes.faults import Fault, FaultKind
from freellm.sim.fakes.replies import DONE, JSON, sse

PROCESSING: Final = b": OPENROUTER PROCESSING\n\n"
NOT_JSON: Final = b"<html><body>upstream hiccup</body></html>"


def midstream_error(flavor: str) -> JSON:
    """The error object of an answer that fails once generation has started."""
    if flavor == "openrouter":
        return {"code": "server_error", "message": "Provider disconnected unexpectedly"}
    return {
        "message": "The server had an error while processing your request.",
        "type": "server_error",
        "param": None,
        "code": None,
    }


Settle = Callable[[str], None]


async def send_completion(
    exchange: Exchange,
    flavor: str,
    payload: JSON,
    headers: Headers,
    fault: Fault | None,
    settle: Settle,
) -> None:
    """Send a ``chat.completion``, broken as `fault` says.

    ``settle(outcome)`` is called once, before the client can have read the end of the answer,
    so that the fake's counters are up to date for a client that just got its answer.
    """
    kind = fault.kind if fault is not None else None
    if kind is FaultKind.CUT:
        data = json.dumps(payload).encode()
        await exchange.start(200, json_headers(len(data), headers))
        settle(kind.value)
        await exchange.body(data[: len(data) // 2], more=True)
        return  # returning mid-body makes hypercorn drop the connection
    outcome = "ok"
    if kind is FaultKind.MIDSTREAM_ERROR:
        choice = payload["choices"][0]
        choice["message"]["content"] = ""
        choice["finish_reason"] = "error"
        payload["error"] = midstream_error(flavor)
        outcome = kind.value
    settle(outcome)
    await exchange.json(200, payload, headers)


async def send_stream(
    exchange: Exchange,
    flavor: str,
    chunks: list[JSON],
    headers: Headers,
    fault: Fault | None,
    settle: Settle,
) -> None:
    """Stream `chunks` as SSE, broken as `fault` says; ``settle(outcome)`` as above.

    OpenRouter streams open with a ``: OPENROUTER PROCESSING`` comment. ``fault.gap`` spaces the
    ``data:`` events. The outcome is ``cancelled`` when the client goes away before the end.
    """
    kind = fault.kind if fault is not None else None
    gap = fault.gap if fault is not None else 0.0
    events = [sse(chunk) for chunk in chunks]
    ending = DONE
    if fault is not None and kind in (FaultKind.CUT, FaultKind.MIDSTREAM_ERROR):
        events = events[: fault.chunks]
        head: dict[str, Any] = {key: chunks[0][key] for key in ("id", "object", "created", "model")}
        # OpenRouter's shape, used for every flavor: OpenAI's SDK raises on any event that
        # carries an "error", so the extra fields change nothing for the other dialects.
        ending = sse(
            {
                **head,
                "error": midstream_error(flavor),
                "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
            }
        )
    start = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), *headers]

    async def run() -> None:
        await exchange.start(200, start)
        if flavor == "openrouter":
            await exchange.body(PROCESSING, more=True)
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


async def send_malformed(exchange: Exchange, stream: bool) -> None:
    """A 200 whose body is not JSON (for a stream: one ``data:`` event that is not JSON)."""
    if stream:
        await exchange.start(200, [(b"content-type", b"text/event-stream")])
        await exchange.body(b"data: {not json\n\n" + DONE)
    else:
        await exchange.start(200, [(b"content-type", b"application/json")])
        await exchange.body(NOT_JSON)
