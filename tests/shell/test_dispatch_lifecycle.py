"""The life of an attempt as the dispatch loop drives it, where the old loop went wrong: 2xx answers
that are no answer, keys that leave mid-request, unexpected exceptions, concurrency caps, stream
deadlines, what happens after ``[DONE]``, bounds, and rate-limit headers on streams. The real h11
transport against scripted providers, on trio's autojump clock."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import attrs
import httpx
import pytest
import trio
from scripted import (
    TIMEOUTS,
    Handler,
    Recorder,
    Scenario,
    body,
    collect_stream,
    harnesses,
    headers,
    provider_of,
    shape_of,
    streamed,
)

from freellm.core import router
from freellm.core.attempt import Bounds
from freellm.core.catalog import Catalog, apply_config
from freellm.core.dialects.adapters import OpenAIAdapter
from freellm.core.outcome import Kind
from freellm.core.router import Topology
from openai_wire import DONE, chunk, completion

CONFIG = {
    "providers": {
        "alpha": {
            "dialect": "openai",
            "base_url": "http://127.0.0.1:9/alpha",
            "models": [{"id": "m", "rpm": 50, "concurrency": 1, "context": 32_000}],
        },
        "beta": {
            "dialect": "openai",
            "base_url": "http://127.0.0.1:9/beta",
            "models": [{"id": "m", "rpm": 50, "context": 32_000}],
        },
    },
    "router": {"chain": ["alpha/m", "beta/m"]},
}
SCENARIO = Scenario(
    apply_config(Catalog(), CONFIG),
    keys={"alpha": ["a1", "a2"], "beta": ["b1"]},
    secrets={"a1": "sk-alpha-one", "a2": "sk-alpha-two", "b1": "sk-beta"},
)
key_of = SCENARIO.key_of


@pytest.fixture
async def harness_for() -> AsyncIterator[Callable[[Handler], Any]]:
    async with harnesses(SCENARIO) as make:
        yield make


def inflight(h: Any) -> int:
    return sum(usage.inflight for usage in h.state.ledger.usage.values())


# --- 2xx answers that are no answer ------------------------------------------------------------


async def test_a_stream_answered_201_is_relayed_and_settled(
    harness_for: Any, autojump_clock: Any
) -> None:
    h = await harness_for(
        lambda r: httpx.Response(
            201, headers={"content-type": "text/event-stream"}, content=chunk("ok") + DONE
        )
    )
    status, _, data = await collect_stream(h, body(stream=True, model="alpha/m"))
    assert status == 200
    assert b'"ok"' in data
    assert inflight(h) == 0


async def test_a_stream_answered_204_fails_over_and_leaks_no_reservation(
    harness_for: Any, autojump_clock: Any
) -> None:
    """alpha/m allows one request in flight: a reservation that leaked would refuse every later
    request to it until a restart."""

    def handler(request: httpx.Request) -> httpx.Response:
        if provider_of(request) == "alpha" and len(h.seen) == 1:
            return httpx.Response(204)
        return streamed(chunk("fine"), DONE)

    h = await harness_for(handler)
    status, got, _ = await collect_stream(h, body(stream=True))
    assert (status, got["x-routed-via"]) == (200, "beta/m")
    assert h.logs[-1].attempts[0].outcome is Kind.BROKEN_RESPONSE
    assert inflight(h) == 0
    # alpha/m takes requests again (the failing slot cools down; its other key is free).
    status, got, _ = await collect_stream(h, body(stream=True, model="alpha/m"))
    assert (status, got["x-routed-via"]) == (200, "alpha/m")


async def test_a_json_answer_over_its_bound_is_broken_and_fails_over(
    harness_for: Any, autojump_clock: Any
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        text = "x" * 5000 if provider_of(request) == "alpha" else "small"
        return httpx.Response(200, json=completion(text))

    h = await harness_for(handler)
    h.dispatcher.bounds = Bounds(max_answer_bytes=2000)
    reply = await h.complete(body())
    assert reply.status == 200
    assert json.loads(reply.body)["choices"][0]["message"]["content"] == "small"
    first = h.logs[-1].attempts[0]
    assert (first.provider, first.outcome) == ("alpha", Kind.BROKEN_RESPONSE)


async def test_an_sse_event_over_its_bound_breaks_the_stream_before_it_starts(
    harness_for: Any, autojump_clock: Any
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if provider_of(request) == "alpha":
            return streamed(chunk("y" * 400), DONE)
        return streamed(chunk("short"), DONE)

    h = await harness_for(handler)
    h.dispatcher.bounds = Bounds(max_event_bytes=300)
    status, got, data = await collect_stream(h, body(stream=True))
    assert (status, got["x-routed-via"]) == (200, "beta/m")
    assert b'"short"' in data


# --- keys that leave, exceptions nobody expected -----------------------------------------------


async def test_a_key_removed_while_a_request_is_in_flight_is_skipped_not_an_error(
    harness_for: Any, autojump_clock: Any
) -> None:
    removed = trio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if key_of(request) == "a1":
            await removed.wait()
            return httpx.Response(429, json={"error": {"message": "slow down"}})
        return httpx.Response(200, json=completion())

    h = await harness_for(handler)
    async with trio.open_nursery() as nursery:
        replies: list[Any] = []

        async def ask() -> None:
            replies.append(await h.complete(body(model="alpha/m")))

        nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        # a2 leaves (removed, or disabled) while the request waits on a1.
        keys = [k for k in h.state.topology.keys if k.id != "a2"]
        h.holder.apply(partial(router.reconfigure, topology=Topology(SCENARIO.catalog, keys)))
        removed.set()
    (reply,) = replies
    assert reply.status == 429  # a1 was rate limited, a2 is gone: nothing else serves alpha/m
    assert h.seen == ["alpha#a1"]
    assert inflight(h) == 0


async def test_an_unexpected_exception_is_a_broken_answer_logged_once_and_fails_over(
    harness_for: Any,
    autojump_clock: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    original = OpenAIAdapter.answer
    calls: list[int] = []

    def answer_once_broken(self: Any, data: bytes, *, model: str, created: int) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("a bug in a translation")
        return original(self, data, model=model, created=created)

    monkeypatch.setattr(OpenAIAdapter, "answer", answer_once_broken)
    h = await harness_for(lambda r: httpx.Response(200, json=completion()))
    with caplog.at_level(logging.ERROR, logger="freellm.dispatch"):
        reply = await h.complete(body())
    assert reply.status == 200
    assert h.seen == ["alpha#a1", "beta#b1"]  # the next provider, as for any broken answer
    assert [a.outcome for a in h.logs[-1].attempts] == [Kind.BROKEN_RESPONSE, Kind.SUCCESS]
    (record,) = caplog.records
    assert record.exc_info is not None
    assert record.exc_info[0] is KeyError
    cooldown = h.state.ledger.cooldowns[("alpha", "a1", "m")]
    assert cooldown.strikes == 1  # a backoff, as for a broken answer; not "cancelled"
    assert inflight(h) == 0


async def test_only_a_cancellation_is_booked_as_cancelled(
    harness_for: Any, autojump_clock: Any
) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await trio.sleep(3)
        return httpx.Response(200, json=completion())

    h = await harness_for(slow)
    with trio.move_on_after(1):
        await h.complete(body())
    assert [a.outcome for a in h.logs[-1].attempts] == [Kind.CANCELLED]
    assert dict(h.state.ledger.cooldowns) == {}  # the key did nothing wrong


# --- a model at its concurrency cap ------------------------------------------------------------


async def test_a_model_at_its_concurrency_cap_is_a_429_with_retry_after(
    harness_for: Any, autojump_clock: Any
) -> None:
    release = trio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json=completion())

    h = await harness_for(handler)
    # One key on alpha: its one slot is taken by the first request.
    keys = [k for k in h.state.topology.keys if k.id != "a2"]
    h.holder.apply(partial(router.reconfigure, topology=Topology(SCENARIO.catalog, keys)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(h.complete, body(model="alpha/m"))
        await trio.testing.wait_all_tasks_blocked()
        refused = await h.complete(body(model="alpha/m"))
        release.set()
    assert refused.status == 429
    assert headers(refused.headers)["retry-after"] == "1"
    assert json.loads(refused.body)["error"]["code"] == "no_capacity"


# --- streams: the overall deadline, and after [DONE] -------------------------------------------


async def test_a_stream_that_never_ends_meets_its_total_deadline(
    harness_for: Any, autojump_clock: Any
) -> None:
    pieces = [chunk(f"{n} ") for n in range(1000)]  # one a second: never idle, never done
    h = await harness_for(lambda r: streamed(*pieces, pause=1.0))
    started = trio.current_time()
    status, _, data = await collect_stream(h, body(stream=True))
    assert status == 200
    assert trio.current_time() - started == pytest.approx(TIMEOUTS.total)
    assert b"event: error\n" in data
    assert data.endswith(DONE)
    assert h.logs[-1].attempts[0].outcome is Kind.TIMEOUT
    assert inflight(h) == 0


async def test_after_done_the_client_is_answered_at_once_and_a_body_that_never_ends_is_dropped(
    harness_for: Any, autojump_clock: Any
) -> None:
    """A provider that sends [DONE] and keeps the body open: the client's response ends with
    [DONE], not an idle timeout later; the connection, whose body never ended, is not reused."""

    async def handler(request: httpx.Request) -> httpx.Response:
        async def parts() -> AsyncIterator[bytes]:
            yield chunk("hello")
            yield DONE
            await trio.sleep_forever()

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=parts())

    h = await harness_for(handler)
    recorder = TimedRecorder()
    started = trio.current_time()
    request = body(stream=True, model="beta/m")
    await h.dispatcher.serve(shape_of(request), request, recorder)
    assert recorder.ended_at == started  # at once, in virtual time
    assert recorder.reply().body.endswith(DONE)
    assert trio.current_time() - started == TIMEOUTS.drain  # then the body had `drain` to end
    await h.complete(body(stream=True, model="beta/m"))
    assert len(h.connections) == 2  # the first connection was closed, not pooled


async def test_a_stream_whose_body_ends_after_done_goes_back_to_the_pool(
    harness_for: Any, autojump_clock: Any
) -> None:
    h = await harness_for(lambda r: streamed(chunk("a"), DONE))
    for _ in range(3):
        status, _, _ = await collect_stream(h, body(stream=True, model="beta/m"))
        assert status == 200
    assert len(h.connections) == 1


@attrs.define
class TimedRecorder(Recorder):
    ended_at: float | None = None

    async def send(self, data: bytes, *, more: bool) -> None:
        await super().send(data, more=more)
        if not more:
            self.ended_at = trio.current_time()


# --- rate-limit headers ------------------------------------------------------------------------

GROQ_LIKE = {
    "x-ratelimit-limit-requests": "1000",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "2m0s",
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_the_rate_limit_headers_of_an_answer_reach_the_ledger(
    harness_for: Any, autojump_clock: Any, stream: bool
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if stream:
            answer = streamed(chunk("x"), DONE)
            answer.headers.update(GROQ_LIKE)
            return answer
        return httpx.Response(200, headers=GROQ_LIKE, json=completion())

    h = await harness_for(handler)
    await h.complete(body(stream=stream, model="beta/m"))
    (limit,) = h.state.ledger.usage[("beta", "b1", "m")].limits
    assert attrs.astuple(limit)[:4] == ("requests", "day", 0, 1000)
    # So the next request is refused by freellm itself, with when it frees up.
    refused = await h.complete(body(stream=stream, model="beta/m"))
    assert refused.status == 429
    assert headers(refused.headers)["retry-after"] == "120"
    assert h.seen == ["beta#b1"]
