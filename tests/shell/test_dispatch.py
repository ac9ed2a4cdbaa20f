"""The dispatch loop against scripted providers, through the real h11 transport over socket
pairs: failover, streams, cancellation and settlement. Every test takes trio's autojump clock
(pytest-trio only honours a clock the test asks for by name): no address, no network, and virtual
time is exact."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio
from scripted import (
    TIMEOUTS,
    Handler,
    Scenario,
    body,
    collect_stream,
    harnesses,
    headers,
    provider_of,
    streamed,
)

from freellm.core import ledger
from freellm.core.catalog import Catalog, apply_config
from freellm.core.outcome import Kind
from openai_wire import USAGE_CHUNK, chunk, completion

CONFIG = {
    "providers": {
        "alpha": {
            "dialect": "openai",
            "base_url": "http://127.0.0.1:9/alpha",
            "models": [{"id": "m", "rpm": 5, "tpm": 100_000, "context": 32_000, "tools": True}],
        },
        "beta": {
            "dialect": "openai",
            "base_url": "http://127.0.0.1:9/beta",
            "models": [{"id": "m", "rpm": 5, "context": 32_000}],
        },
    },
    "router": {"chain": ["alpha/m", "beta/m"]},
}
CATALOG: Catalog = apply_config(Catalog(), CONFIG)
SCENARIO = Scenario(
    CATALOG,
    keys={"alpha": ["a1", "a2"], "beta": ["b1"]},
    secrets={"a1": "sk-alpha-one", "a2": "sk-alpha-two", "b1": "sk-beta"},
)
key_of = SCENARIO.key_of


@pytest.fixture
async def harness_for() -> AsyncIterator[Callable[[Handler], Any]]:
    """Dispatchers over the scripted providers of :data:`SCENARIO`."""
    async with harnesses(SCENARIO) as make:
        yield make


async def test_a_success_says_where_it_went_and_settles_the_reported_usage(
    harness_for: Any,
) -> None:
    h = await harness_for(lambda request: httpx.Response(200, json=completion()))
    reply = await h.complete(body())
    assert reply.status == 200
    assert json.loads(reply.body)["choices"][0]["message"]["content"] == "hi"
    got = headers(reply.headers)
    assert got["x-routed-via"] == "alpha/m"
    assert "x-fallback-attempts" not in got
    assert got["x-request-id"].startswith("req_")
    usage = h.state.ledger.usage[("alpha", "a1", "m")]
    now = h.dispatcher.clock()
    assert usage.minute.totals(now) == (1, 10)  # the usage reported, not the estimate
    assert usage.inflight == 0
    assert h.logs[-1].status == 200
    assert h.logs[-1].routed_via == "alpha/m"


async def test_a_429_moves_to_the_next_key_and_cools_the_first_down(
    harness_for: Any, autojump_clock: Any
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if key_of(request) == "a1":
            return httpx.Response(
                429, headers={"retry-after": "17"}, json={"error": {"message": "slow"}}
            )
        return httpx.Response(200, json=completion())

    h = await harness_for(handler)
    sent_at = h.dispatcher.clock()
    reply = await h.complete(body())
    assert reply.status == 200
    assert h.seen == ["alpha#a1", "alpha#a2"]
    assert headers(reply.headers)["x-fallback-attempts"] == "1"
    cooldown = ledger.cooldown_of(h.state.ledger, ("alpha", "a1", "m"), sent_at)
    assert cooldown is not None
    assert cooldown.until == sent_at + 17  # the autojump clock stood still during the call
    # The next request goes straight to the key that works.
    h.seen.clear()
    await h.complete(body())
    assert h.seen == ["alpha#a2"]


async def test_everything_capped_gives_429_with_retry_after(
    harness_for: Any, autojump_clock: Any
) -> None:
    h = await harness_for(
        lambda r: httpx.Response(
            429, headers={"retry-after": "30"}, json={"error": {"message": "x"}}
        )
    )
    reply = await h.complete(body())
    assert reply.status == 429
    assert h.seen == ["alpha#a1", "alpha#a2", "beta#b1"]
    assert headers(reply.headers)["retry-after"] == "30"
    assert json.loads(reply.body)["error"]["type"] == "rate_limit_error"


async def test_a_5xx_skips_the_rest_of_that_provider(harness_for: Any, autojump_clock: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if provider_of(request) == "alpha":
            return httpx.Response(503, json={"error": {"message": "overloaded"}})
        return httpx.Response(200, json=completion())

    h = await harness_for(handler)
    reply = await h.complete(body())
    assert reply.status == 200
    assert h.seen == ["alpha#a1", "beta#b1"]
    assert headers(reply.headers)["x-routed-via"] == "beta/m"


async def test_every_attempt_failing_upstream_gives_502(
    harness_for: Any, autojump_clock: Any
) -> None:
    h = await harness_for(lambda r: httpx.Response(500, text="boom"))
    reply = await h.complete(body())
    assert reply.status == 502
    assert h.seen == ["alpha#a1", "beta#b1"]


async def test_a_plain_400_goes_back_to_the_client_without_failover(
    harness_for: Any, autojump_clock: Any
) -> None:
    h = await harness_for(
        lambda r: httpx.Response(400, json={"error": {"message": "temperature is odd"}})
    )
    reply = await h.complete(body())
    assert reply.status == 400
    assert h.seen == ["alpha#a1"]
    assert json.loads(reply.body)["error"]["message"] == "temperature is odd"


async def test_an_unknown_model_is_404_and_calls_nobody(
    harness_for: Any, autojump_clock: Any
) -> None:
    h = await harness_for(lambda r: httpx.Response(200, json=completion()))
    request = body(model="nope")
    reply = await h.complete(request)
    assert reply.status == 404
    assert json.loads(reply.body)["error"]["param"] == "model"
    assert h.seen == []


async def test_a_timeout_moves_to_another_provider(harness_for: Any, autojump_clock: Any) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if provider_of(request) == "alpha":
            await trio.sleep_forever()
        return httpx.Response(200, json=completion())

    h = await harness_for(handler)
    started = trio.current_time()
    reply = await h.complete(body())
    assert reply.status == 200
    assert h.seen == ["alpha#a1", "beta#b1"]
    # No byte of an answer for `idle` seconds is a timeout, in virtual time.
    assert trio.current_time() - started == TIMEOUTS.idle
    assert h.logs[-1].attempts[0].outcome is Kind.TIMEOUT


async def test_a_client_that_goes_away_cancels_the_call_and_settles_it(
    harness_for: Any, autojump_clock: Any
) -> None:
    cancelled = trio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    h = await harness_for(handler)
    with trio.move_on_after(1):
        await h.complete(body())
    # Settled at once, with no I/O; the provider sees its connection close and stops.
    usage = h.state.ledger.usage[("alpha", "a1", "m")]
    assert usage.inflight == 0
    with trio.fail_after(1):
        await cancelled.wait()
    assert h.logs[-1].attempts[0].outcome is Kind.CANCELLED


async def test_a_stream_fails_over_before_its_first_byte(
    harness_for: Any, autojump_clock: Any
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if provider_of(request) == "alpha":
            return httpx.Response(503, json={"error": {"message": "busy"}})
        sent = json.loads(request.content)
        assert sent["stream_options"] == {"include_usage": True}  # asked for, to settle
        return streamed(chunk("Hel"), chunk("lo"), USAGE_CHUNK, b"data: [DONE]\n\n")

    h = await harness_for(handler)
    status, got, data = await collect_stream(h, body(stream=True))
    assert status == 200
    assert got["x-routed-via"] == "beta/m"
    assert got["x-fallback-attempts"] == "1"
    assert got["content-type"] == "text/event-stream"
    assert b'"Hel"' in data
    assert b'"lo"' in data
    assert b'"usage"' not in data  # the client did not ask for it
    assert data.endswith(b"data: [DONE]\n\n")
    assert h.state.ledger.usage[("beta", "b1", "m")].minute.totals(h.dispatcher.clock()) == (1, 9)


async def test_a_stream_passes_usage_on_when_the_client_asks(
    harness_for: Any, autojump_clock: Any
) -> None:
    h = await harness_for(lambda r: streamed(chunk("x"), USAGE_CHUNK, b"data: [DONE]\n\n"))
    request = body(stream=True, stream_options={"include_usage": True})
    _, _, data = await collect_stream(h, request)
    assert b'"usage"' in data


async def test_a_stream_cut_mid_way_ends_with_an_error_event_and_done(
    harness_for: Any, autojump_clock: Any
) -> None:
    h = await harness_for(lambda r: streamed(chunk("partial answer"), chunk(" more")))
    status, _, data = await collect_stream(h, body(stream=True))
    assert status == 200
    assert b"partial answer" in data
    assert b"event: error\n" in data
    assert data.endswith(b"data: [DONE]\n\n")
    assert h.logs[-1].attempts[-1].outcome is Kind.BROKEN_RESPONSE
    # Settled with what was streamed: the prompt estimate plus the streamed text.
    usage = h.state.ledger.usage[("alpha", "a1", "m")]
    assert usage.inflight == 0
    logged = h.logs[-1].usage
    assert logged is not None
    assert usage.minute.totals(h.dispatcher.clock())[1] == logged.total


async def test_a_stream_that_never_starts_is_answered_with_a_json_error(
    harness_for: Any, autojump_clock: Any
) -> None:
    h = await harness_for(lambda r: httpx.Response(500, text="down"))
    status, got, data = await collect_stream(h, body(stream=True))
    assert status == 502
    assert got["content-type"] == "application/json"
    assert json.loads(data)["error"]["code"] == "upstream_failed"


async def test_a_lone_surrogate_in_a_request_goes_upstream_escaped(
    harness_for: Any, autojump_clock: Any
) -> None:
    half_emoji = json.loads('"hi \\ud83d"')  # JSON can spell half a surrogate pair

    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["messages"][0]["content"] == half_emoji
        answer = json.dumps(completion(half_emoji))  # escaped, as providers send it
        return httpx.Response(200, content=answer.encode())

    h = await harness_for(handler)
    request = body(messages=[{"role": "user", "content": half_emoji}])
    reply = await h.complete(request)
    assert reply.status == 200
    assert json.loads(reply.body)["choices"][0]["message"]["content"] == half_emoji


def test_request_ids_sort_in_the_order_of_time_and_keep_their_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import re
    import time

    from freellm.shell.dispatch import new_request_id

    clock = iter(range(1_780_000_000_000_000_000, 1_780_000_100_000_000_000, 7_000_000))
    monkeypatch.setattr(time, "time_ns", lambda: next(clock))
    ids = [new_request_id() for _ in range(200)]
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", request_id) for request_id in ids)
    assert sorted(ids) == ids  # one every 7 ms: each sorts after the one before
    assert len(set(ids)) == len(ids)
