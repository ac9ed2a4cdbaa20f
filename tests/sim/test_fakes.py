"""The fake providers, as a real HTTP client sees them over loopback.

Time: tests that read exact reset times use ``mock_clock`` (virtual time stands still unless the
test jumps it); tests that need time to pass while requests sleep use ``autojump_clock`` with a
threshold, so that waiting on a loopback socket does not count as idle.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from freellm.sim.fakes import (
    FLAVORS,
    FakeCaps,
    FakeProvider,
    FaultKind,
    FaultPlan,
    key_id,
    open_fake_provider,
)
from freellm.sim.fakes.caps import UsageLog
from freellm.sim.fakes.flavors import go_duration

KEY = "sk-fake-secret-one"
OTHER_KEY = "sk-fake-secret-two"
EPOCH = 1_700_000_000.0
PREFIXES = {"openai": "/v1", "groq": "/openai/v1", "cerebras": "/v1", "openrouter": "/api/v1"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "units": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "detailed": {"type": "boolean"},
            },
            "required": ["city"],
        },
    },
}
WEATHER_ARGS = {"city": "fake", "days": 1, "units": "celsius", "detailed": True}
OTHER_TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {}}}


def frozen_epoch() -> float:
    return EPOCH


def client_for(fake: FakeProvider, key: str | None = KEY, **kwargs: Any) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    kwargs.setdefault("timeout", None)
    return httpx.AsyncClient(base_url=fake.base_url, headers=headers, **kwargs)


@asynccontextmanager
async def fake_and_client(
    flavor: str, **options: Any
) -> AsyncIterator[tuple[FakeProvider, httpx.AsyncClient]]:
    options.setdefault("keys", [KEY, OTHER_KEY])
    options.setdefault("epoch", frozen_epoch)
    async with open_fake_provider(flavor, **options) as fake, client_for(fake) as client:
        yield fake, client


def chat(model: str, text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def first_model(fake: FakeProvider) -> str:
    return next(iter(fake.models))


class Stream:
    """A streamed answer as read off the wire."""

    def __init__(self) -> None:
        self.comments: list[str] = []
        self.data: list[str] = []

    @property
    def done(self) -> bool:
        return bool(self.data) and self.data[-1] == "[DONE]"

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [json.loads(d) for d in self.data if d != "[DONE]"]


async def read_stream(response: httpx.Response, stream: Stream | None = None) -> Stream:
    stream = stream if stream is not None else Stream()
    async for line in response.aiter_lines():
        if line.startswith(":"):
            stream.comments.append(line)
        elif line.startswith("data: "):
            stream.data.append(line.removeprefix("data: "))
    return stream


async def post_stream(client: httpx.AsyncClient, body: dict[str, Any]) -> Stream:
    async with client.stream("POST", "/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        return await read_stream(r)


def content_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


# -- answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("flavor", sorted(FLAVORS))
async def test_json_reply_is_a_valid_chat_completion(flavor: str) -> None:
    async with fake_and_client(flavor) as (fake, client):
        assert fake.base_url.endswith(PREFIXES[flavor])
        response = await client.post("/chat/completions", json=chat(first_model(fake)))
        assert response.status_code == 200
        completion = ChatCompletion.model_validate(response.json())
    assert completion.object == "chat.completion"
    assert completion.model == first_model(fake)
    assert completion.choices[0].message.content == f"fake-{flavor} says: hello there"
    assert completion.choices[0].finish_reason == "stop"
    # "hello there" is 11 characters: 3 prompt tokens; the reply is 4 words.
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (3, 4)
    assert completion.usage.total_tokens == 7
    assert fake.served == 1


@pytest.mark.parametrize("flavor", sorted(FLAVORS))
async def test_streamed_reply_comes_word_by_word_and_ends_with_done(flavor: str) -> None:
    async with fake_and_client(flavor) as (fake, client):
        stream = await post_stream(client, chat(first_model(fake), "one two three"))
    assert stream.done
    chunks = [ChatCompletionChunk.model_validate(c) for c in stream.chunks]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    deltas = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert deltas == [f"fake-{flavor}", " says:", " one", " two", " three"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks] == [None] * 6 + ["stop"]
    assert all(c.usage is None for c in chunks)
    expected_comments = [": OPENROUTER PROCESSING"] if flavor == "openrouter" else []
    assert stream.comments == expected_comments
    assert fake.served == 1


async def test_include_usage_adds_a_last_chunk_with_usage_and_no_choices() -> None:
    async with fake_and_client("groq") as (fake, client):
        body = chat(first_model(fake), stream_options={"include_usage": True})
        stream = await post_stream(client, body)
    chunks = [ChatCompletionChunk.model_validate(c) for c in stream.chunks]
    *rest, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (3, 4)
    assert all(c.usage is None for c in rest)
    assert all("usage" in raw for raw in stream.chunks)
    assert stream.done


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_cuts_the_reply_with_finish_reason_length(field: str) -> None:
    body = {**chat("fake-model"), field: 2}
    async with fake_and_client("openai") as (_, client):
        response = await client.post("/chat/completions", json=body)
        completion = ChatCompletion.model_validate(response.json())
        stream = await post_stream(client, body)
    assert completion.choices[0].message.content == "fake-openai says:"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 2
    assert content_of(stream.chunks) == "fake-openai says:"
    assert stream.chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("tool_choice", "text"),
    [
        ("required", "hi"),
        ({"type": "function", "function": {"name": "get_weather"}}, "hi"),
        (None, "please call get_weather for Paris"),
        ("auto", "please call get_weather for Paris"),
    ],
)
async def test_tool_call_answer(tool_choice: Any, text: str) -> None:
    body = chat("fake-model", text, tools=[WEATHER_TOOL, OTHER_TOOL])
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    async with fake_and_client("openai") as (_, client):
        response = await client.post("/chat/completions", json=body)
    completion = ChatCompletion.model_validate(response.json())
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER_ARGS


@pytest.mark.parametrize(
    ("tool_choice", "text"),
    [("auto", "what is the weather?"), ("none", "please call get_weather"), (None, "hi")],
)
async def test_no_tool_call_without_a_reason(tool_choice: str | None, text: str) -> None:
    body = chat("fake-model", text, tools=[WEATHER_TOOL])
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    async with fake_and_client("openai") as (_, client):
        response = await client.post("/chat/completions", json=body)
    choice = ChatCompletion.model_validate(response.json()).choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    assert choice.message.content == f"fake-openai says: {text}"


async def test_streamed_tool_call_has_an_index_on_every_delta_and_split_arguments() -> None:
    body = chat("fake-model", "hi", tools=[OTHER_TOOL, WEATHER_TOOL], tool_choice="required")
    body["messages"][0]["content"] = "now call get_weather"
    async with fake_and_client("openrouter", models={"fake-model": FakeCaps()}) as (_, client):
        stream = await post_stream(client, body)
    chunks = [ChatCompletionChunk.model_validate(c) for c in stream.chunks]
    calls = [call for c in chunks for call in (c.choices[0].delta.tool_calls or [])]
    raw_calls = [
        call for c in stream.chunks for call in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert all(call.get("index") == 0 for call in raw_calls)
    assert len(calls) >= 3
    assert calls[0].id is not None
    assert calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    pieces = [c.function.arguments for c in calls if c.function and c.function.arguments]
    assert len(pieces) >= 2
    assert json.loads("".join(pieces)) == WEATHER_ARGS
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert stream.done


# -- refusals ------------------------------------------------------------------------------


async def test_a_wrong_or_missing_key_gets_401() -> None:
    expected = {
        "error": {
            "message": "Invalid API Key",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }
    async with fake_and_client("groq") as (fake, client):
        async with client_for(fake, "sk-wrong") as wrong, client_for(fake, None) as anonymous:
            bad = await wrong.post("/chat/completions", json=chat(first_model(fake)))
            missing = await anonymous.get("/models")
        good = await client.get("/models")
    assert (bad.status_code, bad.json()) == (401, expected)
    assert (missing.status_code, missing.json()) == (401, expected)
    assert good.status_code == 200
    assert [m["id"] for m in good.json()["data"]] == list(fake.models)
    assert good.json()["object"] == "list"
    assert fake.served == 0


async def test_without_keys_any_key_is_accepted() -> None:
    async with fake_and_client("openai", keys=None) as (fake, client):
        async with client_for(fake, None) as anonymous:
            response = await anonymous.post("/chat/completions", json=chat("fake-model"))
        other = await client.post("/chat/completions", json=chat("fake-model"))
    assert (response.status_code, other.status_code) == (200, 200)
    assert [r.key_id for r in fake.requests] == ["anonymous", key_id(KEY)]


async def test_unknown_model_gets_404() -> None:
    async with fake_and_client("cerebras", models={"m": FakeCaps()}) as (fake, client):
        response = await client.post("/chat/completions", json=chat("no-such-model"))
        listed = await client.get("/models/m")
        missing = await client.get("/models/no-such-model")
        path = await client.get("/nowhere")
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["code"], error["param"], error["type"]) == (
        "model_not_found",
        "model",
        "invalid_request_error",
    )
    assert "no-such-model" in error["message"]
    assert (listed.status_code, listed.json()["id"]) == (200, "m")
    assert missing.status_code == 404
    assert path.status_code == 404
    assert fake.served == 0


async def test_bad_bodies_get_400_naming_the_field() -> None:
    async with fake_and_client("openai") as (_, client):
        two = await client.post("/chat/completions", json=chat("fake-model", n=2))
        empty = await client.post("/chat/completions", json={"model": "fake-model", "messages": []})
        garbage = await client.post("/chat/completions", content=b"{nope")
    assert (two.status_code, two.json()["error"]["param"]) == (400, "n")
    assert (empty.status_code, empty.json()["error"]["param"]) == (400, "messages")
    assert garbage.status_code == 400


# -- caps and rate-limit signals -------------------------------------------------------------


async def test_groq_headers_on_every_answer_and_its_429(mock_clock: trio.testing.MockClock) -> None:
    models = {"m": FakeCaps(rpm=2, rpd=5, tpm=1000)}
    async with fake_and_client("groq", models=models) as (fake, client):
        first = await client.post("/chat/completions", json=chat("m"))
        mock_clock.jump(0.5)
        await client.post("/chat/completions", json=chat("m"))
        refused = await client.post("/chat/completions", json=chat("m"))
    assert first.status_code == 200
    assert {k: v for k, v in first.headers.items() if k.startswith("x-ratelimit")} == {
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "24h0m0s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "993",
        "x-ratelimit-reset-tokens": "1m0s",
    }
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "60"
    assert refused.headers["x-ratelimit-remaining-requests"] == "3"
    assert refused.headers["x-ratelimit-reset-tokens"] == "59.5s"
    assert refused.json() == {
        "error": {
            "message": "Rate limit reached for model `m` in organization `org_fake` service tier "
            "`on_demand` on requests per minute (RPM): Limit 2, Used 2, Requested 1. "
            "Please try again in 59.5s.",
            "type": "requests",
            "code": "rate_limit_exceeded",
        }
    }
    assert (fake.served, fake.rate_limited) == (2, 1)


async def test_groq_names_the_token_cap_it_hit(mock_clock: trio.testing.MockClock) -> None:
    async with fake_and_client("groq", models={"m": FakeCaps(tpd=10)}) as (_, client):
        await client.post("/chat/completions", json=chat("m"))
        refused = await client.post("/chat/completions", json=chat("m"))
    error = refused.json()["error"]
    assert error["type"] == "tokens"
    assert "on tokens per day (TPD): Limit 10, Used 7, Requested 7." in error["message"]
    assert refused.headers["retry-after"] == "86400"


async def test_cerebras_headers_and_its_429(mock_clock: trio.testing.MockClock) -> None:
    models = {"m": FakeCaps(rpd=10, tpm=20)}
    async with fake_and_client("cerebras", models=models) as (fake, client):
        first = await client.post("/chat/completions", json=chat("m"))
        mock_clock.jump(1.25)
        await client.post("/chat/completions", json=chat("m"))
        refused = await client.post("/chat/completions", json=chat("m"))
    assert {k: v for k, v in first.headers.items() if k.startswith("x-ratelimit")} == {
        "x-ratelimit-limit-requests-day": "10",
        "x-ratelimit-remaining-requests-day": "9",
        "x-ratelimit-reset-requests-day": "86400.00",
        "x-ratelimit-limit-tokens-minute": "20",
        "x-ratelimit-remaining-tokens-minute": "13",
        "x-ratelimit-reset-tokens-minute": "60.00",
    }
    assert refused.status_code == 429
    assert refused.json() == {
        "message": "Tokens per minute limit exceeded - too many tokens processed.",
        "type": "too_many_requests_error",
        "param": "quota",
        "code": "token_quota_exceeded",
    }
    # The refused request counted nothing: 14 of 20 tokens used, 2 of 10 requests.
    assert refused.headers["x-ratelimit-remaining-tokens-minute"] == "6"
    assert refused.headers["x-ratelimit-remaining-requests-day"] == "8"
    assert refused.headers["x-ratelimit-reset-tokens-minute"] == "58.75"
    assert fake.usage(key_id(KEY), "m").tokens_minute == 14


async def test_openrouter_caps_count_across_models(mock_clock: trio.testing.MockClock) -> None:
    models = {"a:free": FakeCaps(), "b:free": FakeCaps()}
    options = {"models": models, "account_caps": FakeCaps(rpm=2)}
    async with fake_and_client("openrouter", **options) as (fake, client):
        first = await client.post("/chat/completions", json=chat("a:free"))
        await client.post("/chat/completions", json=chat("b:free"))
        refused = await client.post("/chat/completions", json=chat("a:free"))
        async with client_for(fake, OTHER_KEY) as other:
            other_key = await other.post("/chat/completions", json=chat("a:free"))
    assert not [k for k in first.headers if k.startswith("x-ratelimit")]
    assert refused.status_code == 429
    reported = {
        "X-RateLimit-Limit": "2",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(int((EPOCH + 60) * 1000)),
    }
    assert {k: refused.headers[k] for k in reported} == reported
    error = refused.json()["error"]
    assert error["code"] == 429
    assert error["message"] == "Rate limit exceeded: free-models-per-min. "
    assert error["metadata"]["headers"] == reported
    assert other_key.status_code == 200
    assert fake.usage(key_id(KEY)).requests_minute == 2


async def test_model_caps_count_per_key_and_model(mock_clock: trio.testing.MockClock) -> None:
    models = {"a": FakeCaps(rpm=1), "b": FakeCaps(rpm=1)}
    async with fake_and_client("groq", models=models) as (fake, client):
        statuses = [
            (await client.post("/chat/completions", json=chat(m))).status_code
            for m in ("a", "a", "b")
        ]
        async with client_for(fake, OTHER_KEY) as other:
            other_status = (await other.post("/chat/completions", json=chat("a"))).status_code
    assert statuses == [200, 429, 200]
    assert other_status == 200
    assert fake.usage(key_id(KEY), "a").requests_minute == 1
    assert fake.usage(key_id(KEY)).requests_minute == 2


async def test_a_minute_window_frees_after_sixty_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    autojump_clock.autojump_threshold = 0.02
    async with fake_and_client("groq", models={"m": FakeCaps(rpm=1)}) as (fake, client):
        assert (await client.post("/chat/completions", json=chat("m"))).status_code == 200
        await trio.sleep(59)
        refused = await client.post("/chat/completions", json=chat("m"))
        await trio.sleep(1)
        freed = await client.post("/chat/completions", json=chat("m"))
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert freed.status_code == 200
    assert (fake.served, fake.rate_limited) == (2, 1)


def test_usage_log_windows_are_rolling_and_exact() -> None:
    log = UsageLog()
    log.add(0.0, 10)
    log.add(30.0, 5)
    assert log.used(59.999, "requests", "minute") == 2
    assert log.used(60.0, "requests", "minute") == 1
    assert log.used(60.0, "tokens", "minute") == 5
    assert log.used(86_399.0, "requests", "day") == 2
    assert log.used(86_400.0, "requests", "day") == 1


def test_a_violation_says_when_the_request_fits() -> None:
    log = UsageLog()
    log.add(0.0, 10)
    log.add(30.0, 5)
    # 12 tokens against a cap of 15 with 15 used: it fits once both entries have left.
    tokens = log.violation(10.0, "tokens", "minute", 15, 12)
    assert tokens is not None
    assert (tokens.used, tokens.requested, tokens.retry_after) == (15, 12, 80.0)
    # 4 tokens fit once the first entry (10 tokens) leaves, at 60.
    small = log.violation(10.0, "tokens", "minute", 15, 4)
    assert small is not None
    assert small.retry_after == 50.0
    too_big = log.violation(10.0, "tokens", "minute", 15, 16)
    assert too_big is not None
    assert math.isinf(too_big.retry_after)
    assert log.violation(10.0, "tokens", "minute", 27, 12) is None
    requests = log.violation(10.0, "requests", "minute", 2, 1)
    assert requests is not None
    assert (requests.limit, requests.used, requests.retry_after) == (2, 2, 50.0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.5, "500ms"),
        (7.66, "7.66s"),
        (60, "1m0s"),
        (179.56, "2m59.56s"),
        (3600, "1h0m0s"),
        (86_399.5, "23h59m59.5s"),
    ],
)
def test_go_durations(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


# -- faults --------------------------------------------------------------------------------


async def test_latency_fault_delays_the_answer_by_exactly_its_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    autojump_clock.autojump_threshold = 0.02
    async with fake_and_client("openai") as (fake, client):
        fake.faults.next(1, FaultKind.LATENCY, seconds=2)
        start = trio.current_time()
        slow = await client.post("/chat/completions", json=chat("fake-model"))
        middle = trio.current_time()
        fast = await client.post("/chat/completions", json=chat("fake-model"))
        end = trio.current_time()
    assert (slow.status_code, fast.status_code) == (200, 200)
    assert middle - start == pytest.approx(2.0, abs=1e-9)
    assert end - middle == 0
    assert fake.served == 2


async def test_status_fault_answers_the_next_requests_with_an_error() -> None:
    async with fake_and_client("groq") as (fake, client):
        fake.faults.next(2, FaultKind.STATUS, status=503)
        model = first_model(fake)
        statuses = [
            (await client.post("/chat/completions", json=chat(model))).status_code for _ in range(3)
        ]
        models = await client.get("/models")
    assert statuses == [503, 503, 200]
    assert models.status_code == 200
    assert [r.outcome for r in fake.requests] == ["status", "status", "ok", "ok"]
    assert fake.served == 1


async def test_reset_fault_closes_the_connection_without_a_response() -> None:
    async with fake_and_client("cerebras") as (fake, client):
        fake.faults.next(1, FaultKind.RESET)
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client.post("/chat/completions", json=chat(first_model(fake)))
        after = await client.post("/chat/completions", json=chat(first_model(fake)))
    assert after.status_code == 200
    assert (fake.requests[0].status, fake.requests[0].outcome) == (None, "reset")


async def test_hang_fault_holds_until_the_client_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    autojump_clock.autojump_threshold = 0.02
    async with fake_and_client("openai") as (fake, _):
        fake.faults.next(1, FaultKind.HANG)
        async with client_for(fake, timeout=5) as client:
            start = trio.current_time()
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/chat/completions", json=chat("fake-model"))
            assert trio.current_time() - start == pytest.approx(5.0, abs=1e-9)
        await fake.wait_idle()
    assert fake.cancelled == 1
    assert (fake.requests[0].status, fake.requests[0].outcome) == (None, "cancelled")


async def test_malformed_fault_sends_200_with_a_body_that_is_not_json() -> None:
    async with fake_and_client("openai") as (fake, client):
        fake.faults.next(2, FaultKind.MALFORMED)
        response = await client.post("/chat/completions", json=chat("fake-model"))
        stream = await post_stream(client, chat("fake-model"))
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    with pytest.raises(json.JSONDecodeError):
        _ = stream.chunks
    assert fake.served == 0


async def test_cut_fault_drops_a_stream_without_done() -> None:
    async with fake_and_client("groq") as (fake, client):
        fake.faults.next(2, FaultKind.CUT, chunks=2)
        stream = Stream()
        body = chat(first_model(fake), "one two three", stream=True)
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", "/chat/completions", json=body) as response:
                await read_stream(response, stream)
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/chat/completions", json=chat(first_model(fake)))
    assert len(stream.data) == 2
    assert not stream.done
    assert [r.outcome for r in fake.requests] == ["cut", "cut"]
    assert fake.served == 0


async def test_openrouter_midstream_error_event() -> None:
    async with fake_and_client("openrouter") as (fake, client):
        fake.faults.next(2, FaultKind.MIDSTREAM_ERROR, chunks=2)
        stream = await post_stream(client, chat(first_model(fake)))
        response = await client.post("/chat/completions", json=chat(first_model(fake)))
    assert stream.comments == [": OPENROUTER PROCESSING"]
    assert not stream.done
    *content, error = stream.chunks
    assert len(content) == 2
    assert error["error"]["code"] == "server_error"
    assert error["error"]["message"] == "Provider disconnected unexpectedly"
    assert error["choices"][0]["finish_reason"] == "error"
    assert response.status_code == 200
    assert response.json()["choices"][0]["finish_reason"] == "error"
    assert "error" in response.json()
    assert fake.served == 0


async def test_invalid_key_fault_refuses_a_good_key() -> None:
    async with fake_and_client("groq") as (fake, client):
        fake.faults.next(1, FaultKind.INVALID_KEY)
        refused = await client.post("/chat/completions", json=chat(first_model(fake)))
        accepted = await client.post("/chat/completions", json=chat(first_model(fake)))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert accepted.status_code == 200


async def test_rate_limit_fault_sends_the_flavors_429_and_counts_nothing() -> None:
    async with fake_and_client("groq", models={"m": FakeCaps(rpm=30)}) as (fake, client):
        fake.faults.next(1, FaultKind.RATE_LIMIT, retry_after=7)
        refused = await client.post("/chat/completions", json=chat("m"))
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "7"
    assert "requests per minute (RPM): Limit 30, Used 30" in refused.json()["error"]["message"]
    assert fake.rate_limited == 1
    assert fake.usage(key_id(KEY), "m").requests_minute == 0


async def test_always_applies_until_cleared() -> None:
    async with fake_and_client("openai") as (fake, client):
        fake.faults.always(FaultKind.STATUS, status=502)
        before = [
            (await client.post("/chat/completions", json=chat("fake-model"))).status_code
            for _ in range(3)
        ]
        fake.faults.clear()
        after = await client.post("/chat/completions", json=chat("fake-model"))
    assert before == [502, 502, 502]
    assert after.status_code == 200


def test_probable_faults_follow_the_seed() -> None:
    def pattern(seed: int) -> list[bool]:
        plan = FaultPlan(seed=seed)
        plan.always(FaultKind.STATUS, probability=0.5)
        return [plan.draw("/chat/completions") is not None for _ in range(40)]

    assert pattern(7) == pattern(7)
    assert pattern(7) != pattern(8)
    assert 5 < sum(pattern(7)) < 35


def test_queued_faults_wait_for_their_path() -> None:
    plan = FaultPlan()
    plan.next(1, FaultKind.HANG)
    plan.next(1, FaultKind.INVALID_KEY, path="/models")
    assert plan.draw("/models") is not None
    assert plan.pending == 1
    fault = plan.draw("/chat/completions")
    assert fault is not None
    assert fault.kind is FaultKind.HANG
    assert plan.draw("/chat/completions") is None
    with pytest.raises(ValueError, match="n must be"):
        plan.next(0, FaultKind.HANG)


# -- counting clients that leave, secrets, lifecycle -----------------------------------------


async def test_a_client_leaving_mid_stream_is_counted_as_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    autojump_clock.autojump_threshold = 0.02
    async with fake_and_client("groq") as (fake, client):
        fake.faults.always(FaultKind.LATENCY, gap=1)
        body = chat(first_model(fake), "one two three", stream=True)
        async with client.stream("POST", "/chat/completions", json=body) as response:
            # Leave by cancellation rather than `break`: the exception then unwinds httpx's
            # nested async generators, which a `break` would leave for the GC to finalize.
            with trio.CancelScope() as reading:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        reading.cancel()
        await fake.wait_idle()
        assert (fake.cancelled, fake.served) == (1, 0)
        full = await post_stream(client, body)
    assert full.done
    assert (fake.cancelled, fake.served) == (1, 1)
    assert [r.outcome for r in fake.requests] == ["cancelled", "ok"]


async def test_a_client_leaving_during_latency_is_counted_as_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    autojump_clock.autojump_threshold = 0.02
    async with fake_and_client("openai") as (fake, _):
        fake.faults.next(1, FaultKind.LATENCY, seconds=10)
        async with client_for(fake, timeout=3) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/chat/completions", json=chat("fake-model"))
        await fake.wait_idle()
    assert fake.cancelled == 1
    assert fake.usage(key_id(KEY), "fake-model").requests_minute == 0


async def test_requests_never_hold_a_raw_key() -> None:
    async with fake_and_client("openrouter") as (fake, client):
        async with client_for(fake, "sk-not-a-known-key") as wrong:
            await wrong.post("/chat/completions", json=chat(first_model(fake)))
        await client.post(
            "/chat/completions", json=chat(first_model(fake)), headers={"x-api-key": KEY}
        )
    rejected, accepted = fake.requests
    assert rejected.headers["authorization"] == "<rejected>"
    assert rejected.key_id is None
    assert accepted.headers["authorization"] == key_id(KEY)
    assert accepted.headers["x-api-key"] == "<redacted>"
    assert accepted.key_id == key_id(KEY)
    everything = repr(fake.requests) + repr(vars(fake))
    for secret in (KEY, OTHER_KEY, "sk-not-a-known-key"):
        assert secret not in everything


async def test_requests_record_what_was_asked() -> None:
    async with fake_and_client("groq") as (fake, client):
        await client.post("/chat/completions", json=chat(first_model(fake), "hey"))
    [record] = fake.requests
    assert (record.method, record.path, record.status, record.outcome) == (
        "POST",
        "/chat/completions",
        200,
        "ok",
    )
    assert record.body == chat(first_model(fake), "hey")
    assert record.model == first_model(fake)


async def test_leaving_the_context_stops_the_server() -> None:
    async with open_fake_provider("openai") as fake:
        base_url = fake.base_url
    async with httpx.AsyncClient(base_url=base_url) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/models")


async def test_leaving_the_context_cuts_short_a_request_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    autojump_clock.autojump_threshold = 0.02
    seen: list[BaseException] = []
    async with (
        httpx.AsyncClient(timeout=None) as client,
        trio.open_nursery() as nursery,
        open_fake_provider("openai") as fake,
    ):
        fake.faults.always(FaultKind.HANG)

        async def ask() -> None:
            try:
                await client.post(fake.base_url + "/chat/completions", json=chat("fake-model"))
            except httpx.HTTPError as error:
                seen.append(error)

        nursery.start_soon(ask)
        await trio.sleep(1)
        assert fake.in_flight == 1
    assert [type(e) for e in seen] == [httpx.RemoteProtocolError]
    assert [r.outcome for r in fake.requests] == ["aborted"]
    assert fake.in_flight == 0


async def test_an_error_in_the_block_is_not_wrapped() -> None:
    with pytest.raises(KeyError):
        async with open_fake_provider("openai"):
            raise KeyError("boom")


def test_unknown_flavor_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown flavor"):
        FakeProvider("nope")
