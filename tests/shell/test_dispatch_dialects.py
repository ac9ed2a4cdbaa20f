"""The dispatch loop with native dialects: Gemini's and Cohere's answers, streams, limit signals,
and requests a dialect cannot express (skipped to a provider that can, or a 400 naming the
field). Scripted providers, trio's autojump clock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from scripted import (
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
from freellm.core.sse import Decoder

MODEL = "gemini-2.5-flash"
CONFIG = {
    "providers": {
        "gem": {
            "dialect": "gemini",
            "auth": "x-goog-api-key",
            "base_url": "http://127.0.0.1:9/gem/v1beta",
            "daily_reset": "America/Los_Angeles",
            "models": [{"id": MODEL, "rpm": 10, "rpd": 20, "tools": True, "json": True}],
        },
        "co": {
            "dialect": "cohere",
            "base_url": "http://127.0.0.1:9/co",
            "models": [{"id": "command-a", "rpm": 20, "tools": True}],
        },
        "oa": {
            "dialect": "openai",
            "base_url": "http://127.0.0.1:9/oa",
            "models": [{"id": "m", "rpm": 5}],
        },
    },
    "router": {"chain": ["gem/" + MODEL, "co/command-a", "oa/m"]},
}
SCENARIO = Scenario(
    apply_config(Catalog(), CONFIG),
    keys={"gem": ["g1", "g2"], "co": ["c1"], "oa": ["o1"]},
    secrets={"g1": "AIza-one", "g2": "AIza-two", "c1": "co-key", "o1": "sk-oa"},
)


@pytest.fixture
async def harness_for() -> AsyncIterator[Callable[[Handler], Any]]:
    """Dispatchers over the scripted providers of :data:`SCENARIO`."""
    async with harnesses(SCENARIO) as make:
        yield make


def gemini_response(*parts: dict[str, Any], finish: str | None = "STOP") -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": 6, "candidatesTokenCount": 4, "totalTokenCount": 10},
        "modelVersion": MODEL,
        "responseId": "resp-1",
    }


def sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def chunks_of(data: bytes) -> list[dict[str, Any]]:
    events = Decoder().feed(data)
    return [json.loads(e.data) for e in events if not e.done and e.event is None]


def quota_429(quota_id: str, retry: str = "53s") -> httpx.Response:
    error = {
        "code": 429,
        "message": f"You exceeded your current quota. Please retry in {retry}.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{"quotaId": quota_id, "quotaValue": "20"}],
            },
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry},
        ],
    }
    return httpx.Response(429, json={"error": error})


async def test_a_gemini_answer_comes_back_as_an_openai_completion(
    harness_for: Any, autojump_clock: Any
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/gem/v1beta/models/{MODEL}:generateContent"
        assert "authorization" not in request.headers
        sent = json.loads(request.content)
        assert sent["contents"] == [{"role": "user", "parts": [{"text": "hello"}]}]
        assert sent["systemInstruction"] == {"parts": [{"text": "be brief"}]}
        return httpx.Response(200, json=gemini_response({"text": "Hi there"}))

    h = await harness_for(handler)
    request = body(
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"},
        ]
    )
    reply = await h.complete(request)
    assert reply.status == 200
    answer = json.loads(reply.body)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "Hi there"
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["total_tokens"] == 10
    assert headers(reply.headers)["x-routed-via"] == f"gem/{MODEL}"
    usage = h.state.ledger.usage[("gem", "g1", MODEL)]
    assert usage.minute.totals(h.dispatcher.clock()) == (1, 10)  # settled with Gemini's usage


async def test_a_gemini_stream_is_relayed_as_openai_chunks_and_done(
    harness_for: Any, autojump_clock: Any
) -> None:
    call = {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith(f"/models/{MODEL}:streamGenerateContent")
        assert request.url.params["alt"] == "sse"
        return streamed(  # Gemini ends its streams without [DONE]
            sse(gemini_response({"text": "Let me check. "}, finish=None)),
            sse(gemini_response(call, finish="STOP")),
        )

    h = await harness_for(handler)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    request = body(stream=True, tools=tools, stream_options={"include_usage": True})
    status, got, data = await collect_stream(h, request)
    assert (status, got["x-routed-via"]) == (200, f"gem/{MODEL}")
    assert data.endswith(b"data: [DONE]\n\n")
    chunks = chunks_of(data)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "Let me check. "
    calls = [tc for d in deltas for tc in d.get("tool_calls", ())]
    assert [c["index"] for c in calls] == [0] * len(calls)
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Oslo"}
    assert chunks[-1]["usage"]["total_tokens"] == 10
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls"
    assert h.logs[-1].attempts[-1].outcome is Kind.SUCCESS


async def test_a_field_gemini_cannot_express_skips_to_a_provider_that_can(
    harness_for: Any, autojump_clock: Any
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert provider_of(request) == "co"
        return httpx.Response(
            200,
            json={
                "id": "c-1",
                "finish_reason": "COMPLETE",
                "message": {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
                "usage": {"billed_units": {"input_tokens": 3, "output_tokens": 1}},
            },
        )

    h = await harness_for(handler)
    request = body(presence_penalty=0.5)  # Gemini 2.5 refuses penalties; Cohere takes them
    reply = await h.complete(request)
    assert reply.status == 200
    assert h.seen == ["co#c1"]
    assert json.loads(reply.body)["choices"][0]["message"]["content"] == "ok"
    assert "x-fallback-attempts" not in headers(reply.headers)  # nothing failed: it was skipped
    assert ("gem", "g1", MODEL) not in h.state.ledger.usage  # nothing reserved on Gemini


async def test_a_field_no_provider_can_express_is_a_400_naming_it(
    harness_for: Any, autojump_clock: Any
) -> None:
    h = await harness_for(lambda request: pytest.fail("nothing should be sent"))
    request = body(model=f"gem/{MODEL}", logit_bias={"50256": -100})
    reply = await h.complete(request)
    assert reply.status == 400
    error = json.loads(reply.body)["error"]
    assert error["param"] == "logit_bias"
    assert error["code"] == "unsupported_parameter"
    assert "token biases" in error["message"]
    assert h.seen == []


async def test_gemini_per_minute_and_per_day_429s_cool_the_key_down_as_they_say(
    harness_for: Any, autojump_clock: Any
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        key = SCENARIO.key_of(request)
        if key == "g1":
            return quota_429("GenerateRequestsPerDayPerProjectPerModel-FreeTier")
        if key == "g2":
            return quota_429("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "7s")
        return httpx.Response(500)

    h = await harness_for(handler)
    sent_at = h.dispatcher.clock()
    request = body(model=f"gem/{MODEL}")
    reply = await h.complete(request)
    assert reply.status == 429
    assert h.seen == ["gem#g1", "gem#g2"]
    assert headers(reply.headers)["retry-after"] == "7"  # the minute frees first
    state = h.state.ledger
    day = ledger.cooldown_of(state, ("gem", "g1", MODEL), sent_at)
    minute = ledger.cooldown_of(state, ("gem", "g2", MODEL), sent_at)
    assert day is not None
    assert minute is not None
    assert minute.until == sent_at + 7
    # The day is spent until midnight in California, whatever the 429 said about retrying.
    reset = datetime.fromtimestamp(day.until, ZoneInfo("America/Los_Angeles"))
    assert (reset.hour, reset.minute, reset.second) == (0, 0, 0)
    assert 0 < day.until - sent_at <= 25 * 3600


async def test_a_gemini_key_refused_with_a_400_is_marked_invalid_and_skipped(
    harness_for: Any, autojump_clock: Any
) -> None:
    bad_key = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
            ],
        }
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if SCENARIO.key_of(request) == "g1":
            return httpx.Response(400, json=bad_key)
        return httpx.Response(200, json=gemini_response({"text": "fine"}))

    h = await harness_for(handler)
    request = body(model=f"gem/{MODEL}")
    reply = await h.complete(request)
    assert reply.status == 200
    assert h.seen == ["gem#g1", "gem#g2"]
    assert ("gem", "g1") in h.state.health.invalid
    assert "AIza-one" not in reply.body.decode()


async def test_a_cohere_stream_with_a_tool_call_is_relayed_as_openai_chunks(
    harness_for: Any, autojump_clock: Any
) -> None:
    start = {"type": "message-start", "id": "abc", "delta": {"message": {"role": "assistant"}}}
    call_start = {
        "type": "tool-call-start",
        "index": 0,
        "delta": {
            "message": {
                "tool_calls": {
                    "id": "get_weather_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            }
        },
    }

    def piece(text: str) -> dict[str, Any]:
        arguments = {"tool_calls": {"function": {"arguments": text}}}
        return {"type": "tool-call-delta", "index": 0, "delta": {"message": arguments}}

    end = {
        "type": "message-end",
        "delta": {
            "finish_reason": "TOOL_CALL",
            "usage": {"billed_units": {"input_tokens": 9, "output_tokens": 5}},
        },
    }

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/co/v2/chat"
        assert json.loads(request.content)["stream"] is True
        events: list[dict[str, Any]] = [
            start,
            call_start,
            piece('{"city": '),
            piece('"Oslo"}'),
            end,
        ]
        return streamed(*(sse(e, e["type"]) for e in events), b"data: [DONE]\n\n")

    h = await harness_for(handler)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    request = body(model="co/command-a", stream=True, tools=tools)
    status, _, data = await collect_stream(h, request)
    assert status == 200
    assert data.endswith(b"data: [DONE]\n\n")
    deltas = [c["choices"][0]["delta"] for c in chunks_of(data) if c["choices"]]
    calls = [tc for d in deltas for tc in d.get("tool_calls", ())]
    assert calls[0]["function"]["name"] == "get_weather"
    assert all(c["index"] == 0 for c in calls)
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Oslo"}
    assert h.state.ledger.usage[("co", "c1", "command-a")].minute.totals(h.dispatcher.clock()) == (
        1,
        14,
    )


async def test_a_cohere_error_mid_stream_ends_with_an_error_event_and_done(
    harness_for: Any, autojump_clock: Any
) -> None:
    start = {"type": "message-start", "id": "abc", "delta": {"message": {"role": "assistant"}}}
    text = {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hi"}}}}
    end = {"type": "message-end", "delta": {"finish_reason": "ERROR"}}

    h = await harness_for(
        lambda request: streamed(sse(start, "message-start"), sse(text, "content-delta"), sse(end))
    )
    request = body(model="co/command-a", stream=True)
    status, _, data = await collect_stream(h, request)
    assert status == 200
    assert b'"Hi"' in data
    assert b"event: error\n" in data
    assert data.endswith(b"data: [DONE]\n\n")
    assert h.logs[-1].attempts[-1].outcome is Kind.BROKEN_RESPONSE
