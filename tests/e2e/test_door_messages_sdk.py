"""The Anthropic Messages door end to end: the official ``anthropic`` SDK, pointed at a running
freellm, in front of an OpenAI-dialect fake (Groq) and the Gemini fake.

Every answer is checked against the SDK's own types twice: the SDK parses it (its models accept
unknown fields silently, so the raw JSON is also validated strictly, without extras), and every
stream event the SDK yields is one of its ``RawMessageStreamEvent`` types.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import attrs
import httpx
import pydantic
import pytest
import trio
from anthropic.types import Message, MessageParam, RawMessageStreamEvent, ToolParam
from anthropic.types.shared import ErrorResponse
from harness import CLIENT_GENERATORS, Proxy, config_text, running_proxy

from freellm.core.doors import Translated
from freellm.core.doors.messages import count_tokens, translate
from freellm.sim.fakes import FakeCaps, FakeProvider, FaultKind, open_fake_provider
from sdk_checks import assert_no_extras, check_gemini_request

pytestmark = CLIENT_GENERATORS  # the SDK's generators: see harness.py

CLAUDE = "claude-sonnet-4-5"  # a Claude name: the router's alias sends it to `auto`
QUESTION: list[MessageParam] = [{"role": "user", "content": "hello from the anthropic sdk"}]
WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@attrs.frozen
class Upstream:
    """A provider as the catalog names it, and its fake."""

    flavor: str  # the fake's
    provider: str  # the catalog's
    model: str
    key: str

    @property
    def target(self) -> str:
        return f"{self.provider}/{self.model}"

    reasoning: bool = False  # the catalog's: the model thinks on request

    def table(self, *, rpm: int = 100) -> str:
        return (
            f'[[providers.{self.provider}.models]]\nid = "{self.model}"\nrpm = {rpm}\n'
            "context = 128000\ntools = true\nvision = true\n"
            f"reasoning = {str(self.reasoning).lower()}\n"
        )


GROQ = Upstream("groq", "groq", "llama-3.3-70b-versatile", "gsk-fake-1")
GEMINI = Upstream("gemini", "google", "gemini-2.5-flash", "AIza-fake-key-1", reasoning=True)
UPSTREAMS = [pytest.param(GROQ, id="openai-dialect"), pytest.param(GEMINI, id="gemini")]


@asynccontextmanager
async def serving(
    data_dir: Path, upstreams: Sequence[Upstream], *, rpm: int = 100, caps: FakeCaps | None = None
) -> AsyncIterator[tuple[list[FakeProvider], Proxy]]:
    """freellm with one key for each upstream, chained in the order given."""
    async with _fakes(upstreams, caps or FakeCaps()) as fakes:
        config = config_text(
            {u.provider: fake for u, fake in zip(upstreams, fakes, strict=True)},
            {u.provider: u.table(rpm=rpm) for u in upstreams},
            [u.target for u in upstreams],
        )
        keys = {u.provider: [u.key] for u in upstreams}
        async with running_proxy(data_dir, config, keys) as proxy:
            yield fakes, proxy
    for upstream, fake in zip(upstreams, fakes, strict=True):
        if upstream.flavor == "gemini":  # what freellm sent is what Google's SDK would send
            for request in fake.requests:
                if request.method == "POST":
                    check_gemini_request(request.body)


@asynccontextmanager
async def _fakes(
    upstreams: Sequence[Upstream], caps: FakeCaps
) -> AsyncIterator[list[FakeProvider]]:
    if not upstreams:
        yield []
        return
    first, *rest = upstreams
    models = {first.model: caps}
    async with (
        open_fake_provider(first.flavor, keys=[first.key], models=models) as fake,
        _fakes(rest, caps) as others,
    ):
        yield [fake, *others]


def async_client(proxy: Proxy, **options: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=proxy.url, api_key=proxy.key, max_retries=0, **options)


def sync_client(proxy: Proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=proxy.key, max_retries=0)


def strict_message(raw: bytes | str) -> Message:
    """The raw JSON of an answer as a ``Message``, with no field the SDK does not know."""
    message = Message.model_validate_json(raw)
    assert_no_extras(message)
    return message


def text_of(message: Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


# --- answers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_messages_create_answers_sync_and_async(tmp_path: Path, upstream: Upstream) -> None:
    async with serving(tmp_path / "data", [upstream]) as (fakes, proxy):
        client = async_client(proxy)
        raw = await client.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=256, messages=QUESTION, system="Be brief."
        )
        message = await raw.parse()
        assert strict_message(await raw.read()) == message
        assert message.id == "msg_" + raw.headers["x-request-id"].removeprefix("req_")
        assert raw.headers["x-routed-via"] == upstream.target
        assert message.role == "assistant"
        assert text_of(message).startswith(f"fake-{upstream.flavor} says: ")
        assert message.stop_reason == "end_turn"
        assert message.usage.input_tokens > 0
        assert message.usage.output_tokens > 0

        def sync_call() -> Message:
            with sync_client(proxy) as sync:
                return sync.messages.create(
                    model=upstream.target, max_tokens=256, messages=QUESTION, system="Be brief."
                )

        again = await trio.to_thread.run_sync(sync_call)
        assert text_of(again) == text_of(message)
        assert again.id != message.id
        await client.close()
        assert fakes[0].served == 2


@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_a_stream_gives_anthropics_events_and_the_helpers_final_message(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with serving(tmp_path / "data", [upstream]) as (_, proxy):
        client = async_client(proxy)
        whole = await client.messages.create(model=CLAUDE, max_tokens=256, messages=QUESTION)
        async with client.messages.stream(
            model=CLAUDE, max_tokens=256, messages=QUESTION
        ) as stream:
            pieces = [piece async for piece in stream.text_stream]
            final = await stream.get_final_message()
        assert len(pieces) > 1
        assert "".join(pieces) == text_of(final) == text_of(whole)
        assert final.stop_reason == whole.stop_reason == "end_turn"
        assert final.usage.output_tokens == whole.usage.output_tokens
        assert final.usage.input_tokens == whole.usage.input_tokens

        events = []
        raw_stream = await client.messages.create(
            model=CLAUDE, max_tokens=256, messages=QUESTION, stream=True
        )
        async with raw_stream:
            async for event in raw_stream:
                events.append(event)
        kinds = [event.type for event in events]
        assert kinds[0] == "message_start"
        assert kinds[1:3] == ["content_block_start", "content_block_delta"]
        assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        for event in events:
            assert_no_extras(stream_event_adapter().validate_python(event.to_dict()))
        await client.close()


@functools.cache
def stream_event_adapter() -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(RawMessageStreamEvent)


@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_tool_use_in_two_steps_whole_and_streamed(tmp_path: Path, upstream: Upstream) -> None:
    async with serving(tmp_path / "data", [upstream]) as (_, proxy):
        client = async_client(proxy)
        messages: list[MessageParam] = [
            {"role": "user", "content": "What is the weather in Paris?"}
        ]
        first = await client.messages.create(
            model=CLAUDE,
            max_tokens=256,
            messages=messages,
            tools=[WEATHER],
            tool_choice={"type": "any"},
        )
        assert first.stop_reason == "tool_use"
        calls = [block for block in first.content if block.type == "tool_use"]
        assert len(calls) == 1
        call = calls[0]
        assert call.name == "get_weather"
        assert "city" in call.input

        async with client.messages.stream(
            model=CLAUDE,
            max_tokens=256,
            messages=messages,
            tools=[WEATHER],
            tool_choice={"type": "tool", "name": "get_weather"},
        ) as stream:
            streamed = await stream.get_final_message()
        streamed_calls = [block for block in streamed.content if block.type == "tool_use"]
        assert [(c.name, c.input) for c in streamed_calls] == [(call.name, call.input)]
        assert streamed.stop_reason == "tool_use"

        messages.append(first.to_param())
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": '{"temp_c": 18}'}
                ],
            }
        )
        final = await client.messages.create(
            model=CLAUDE, max_tokens=256, messages=messages, tools=[WEATHER]
        )
        assert final.stop_reason == "end_turn"
        assert text_of(final)
        await client.close()


@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_count_tokens_is_the_estimate_routing_uses(
    tmp_path: Path, upstream: Upstream
) -> None:
    request: dict[str, Any] = {
        "model": CLAUDE,
        "messages": QUESTION,
        "system": "Be brief.",
        "tools": [WEATHER],
    }
    async with serving(tmp_path / "data", [upstream]) as (fakes, proxy):
        client = async_client(proxy)
        counted = await client.messages.count_tokens(**request)
        translated = translate({**request, "max_tokens": 64})
        assert isinstance(translated, Translated)
        assert counted.input_tokens == count_tokens(request) == translated.shape.prompt_tokens
        assert counted.input_tokens > 0
        # The same request, answered, starts its stream with the same estimate.
        async with client.messages.stream(max_tokens=64, **request) as stream:
            events = [event async for event in stream]
        first = events[0]
        assert first.type == "message_start"
        assert first.message.usage.input_tokens == counted.input_tokens
        await client.close()
        assert fakes[0].served == 1  # counting asks no provider


async def test_thinking_and_images_reach_the_providers_in_their_own_terms(tmp_path: Path) -> None:
    picture = (  # one white pixel
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5E"
        "rkJggg=="
    )
    content: list[Any] = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": picture}},
    ]
    thinking: Any = {"type": "enabled", "budget_tokens": 8000}
    for upstream in (GROQ, GEMINI):
        async with serving(tmp_path / upstream.flavor, [upstream]) as (fakes, proxy):
            client = async_client(proxy)
            message = await client.messages.create(
                model=CLAUDE,
                max_tokens=16000,
                messages=[{"role": "user", "content": content}],
                thinking=thinking,
            )
            assert text_of(message)
            await client.close()
            sent = fakes[0].requests[-1].body
        if upstream is GEMINI:  # a model that thinks: the budget's effort, as Gemini's budget
            config = sent["generationConfig"]
            assert config["thinkingConfig"]["thinkingBudget"] > 0
            parts = sent["contents"][0]["parts"]
            assert {"inlineData": {"mimeType": "image/png", "data": picture}} in parts
        else:  # a model that does not: nothing about thinking is sent
            assert "reasoning_effort" not in sent
            assert sent["messages"][0]["content"][1] == {
                "type": "image_url",
                "image_url": {"url": f"data:image/png;base64,{picture}"},
            }


# --- errors ---------------------------------------------------------------------------------------


async def test_errors_come_in_anthropics_shape_with_its_exceptions(tmp_path: Path) -> None:
    async with serving(tmp_path / "data", [GROQ]) as (fakes, proxy):
        wrong = anthropic.AsyncAnthropic(base_url=proxy.url, api_key="freellm-wrong", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as denied:
            await wrong.messages.create(model=CLAUDE, max_tokens=16, messages=QUESTION)
        assert denied.value.status_code == 401
        assert error_of(denied.value)["type"] == "authentication_error"
        await wrong.close()

        client = async_client(proxy)
        with pytest.raises(anthropic.NotFoundError) as missing:
            await client.messages.create(model="no-such-model", max_tokens=16, messages=QUESTION)
        assert error_of(missing.value)["type"] == "not_found_error"
        assert "no-such-model" in error_of(missing.value)["message"]

        with pytest.raises(anthropic.BadRequestError) as refused:
            await client.messages.create(
                model=CLAUDE,
                max_tokens=16,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Read this"},
                            {
                                "type": "document",
                                "source": {"type": "text", "media_type": "text/plain", "data": "x"},
                            },
                        ],
                    }
                ],
            )
        error = error_of(refused.value)
        assert error["type"] == "invalid_request_error"
        assert error["message"].startswith("messages.0.content.1.type: ")

        with pytest.raises(anthropic.BadRequestError) as unlimited:
            await client.post(
                "/v1/messages",
                cast_to=httpx.Response,
                body={"model": CLAUDE, "messages": QUESTION},
            )
        assert error_of(unlimited.value)["message"].startswith("max_tokens: ")
        await client.close()
        assert fakes[0].served == 0


def error_of(exc: anthropic.APIStatusError) -> dict[str, Any]:
    body = exc.response.json()
    assert set(body) == {"type", "error"}
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    ErrorResponse.model_validate(body)
    return dict(body["error"])


@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_spent_caps_are_a_rate_limit_error_with_retry_after(
    tmp_path: Path, upstream: Upstream
) -> None:
    # The config's caps equal the fake's: freellm refuses before the provider would.
    async with serving(tmp_path / "data", [upstream], rpm=2, caps=FakeCaps(rpm=2)) as (
        fakes,
        proxy,
    ):
        client = async_client(proxy)
        for _ in range(2):
            await client.messages.create(model=CLAUDE, max_tokens=16, messages=QUESTION)
        for stream in (False, True):
            with pytest.raises(anthropic.RateLimitError) as limited:
                await client.messages.create(
                    model=CLAUDE, max_tokens=16, messages=QUESTION, stream=stream
                )
            assert error_of(limited.value)["type"] == "rate_limit_error"
            assert 1 <= int(limited.value.response.headers["retry-after"]) <= 61
        await client.close()
        assert fakes[0].rate_limited == 0
        assert fakes[0].served == 2


# --- failover -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(
    ("fault", "outcome"), [(FaultKind.STATUS, "503"), (FaultKind.RATE_LIMIT, "429")]
)
async def test_failover_on_the_door_keeps_the_chat_paths_headers(
    tmp_path: Path, fault: FaultKind, outcome: str, stream: bool
) -> None:
    async with serving(tmp_path / "data", [GROQ, GEMINI]) as (fakes, proxy):
        groq, gemini = fakes
        client = async_client(proxy)
        groq.faults.next(1, fault, status=503, retry_after=30)
        raw = await client.messages.with_raw_response.create(
            model=CLAUDE, max_tokens=64, messages=QUESTION, stream=stream
        )
        headers = raw.headers
        assert headers["x-routed-via"] == GEMINI.target
        assert headers["x-fallback-attempts"] == "1"
        trail = f"{GROQ.target}={outcome},{GEMINI.target}=ok"
        assert headers["x-fallback-trail"] == trail
        assert headers["x-request-id"].startswith("req_")
        message_id = "msg_" + headers["x-request-id"].removeprefix("req_")
        if stream:
            assert headers["content-type"].startswith("text/event-stream")
            text = (await raw.read()).decode()
            assert text.startswith("event: message_start\n")
            assert f'"id":"{message_id}"' in text
            assert text.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')
        else:
            message = strict_message(await raw.read())
            assert message.id == message_id
            assert text_of(message).startswith("fake-gemini says: ")
        await client.close()
        assert [r.status for r in groq.requests] == [int(outcome)]
        assert gemini.served == 1


# --- the wire -------------------------------------------------------------------------------------


async def test_a_bearer_key_and_any_anthropic_version_are_accepted(tmp_path: Path) -> None:
    async with serving(tmp_path / "data", [GROQ]) as (_, proxy):
        bearer = anthropic.AsyncAnthropic(
            base_url=proxy.url,
            auth_token=proxy.key,
            max_retries=0,
            default_headers={"anthropic-version": "2023-01-01"},
        )
        message = await bearer.messages.create(model=CLAUDE, max_tokens=16, messages=QUESTION)
        assert text_of(message)
        await bearer.close()


async def test_a_coding_agents_request_streams_through(tmp_path: Path) -> None:
    """What a coding agent sends: cached system blocks and tools, beta headers, a session in
    ``metadata.user_id``, earlier turns with thinking and tool results, and a stream."""
    cached: Any = {"type": "ephemeral"}
    async with serving(tmp_path / "data", [GROQ]) as (fakes, proxy):
        client = async_client(
            proxy, default_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"}
        )
        async with client.messages.stream(
            model="claude-opus-4-1",
            max_tokens=32000,
            system=[
                {"type": "text", "text": "You are a coding agent.", "cache_control": cached},
                {"type": "text", "text": "Work in /repo."},
            ],
            tools=[{**WEATHER, "cache_control": cached}],
            metadata={"user_id": "user_abc_account__session_42"},
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Check Paris."}]},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Use the tool.", "signature": "s1"},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "18 C"}],
                        },
                        {"type": "text", "text": "Summarise.", "cache_control": cached},
                    ],
                },
            ],
        ) as stream:
            final = await stream.get_final_message()
        assert final.stop_reason == "end_turn"
        assert text_of(final) == "fake-groq says: Summarise."
        await client.close()
        sent = fakes[0].requests[-1].body
        assert sent["user"] == "user_abc_account__session_42"
        assert [m["role"] for m in sent["messages"]] == [
            "system",
            "user",
            "assistant",
            "tool",
            "user",
        ]
        assert sent["messages"][0]["content"] == "You are a coding agent.\n\nWork in /repo."
        assert sent["messages"][3] == {
            "role": "tool",
            "tool_call_id": "toolu_1",
            "content": "18 C",
        }


async def test_a_mid_stream_failure_is_an_error_event_the_sdk_raises(tmp_path: Path) -> None:
    async with serving(tmp_path / "data", [GROQ]) as (fakes, proxy):
        fakes[0].faults.next(1, FaultKind.MIDSTREAM_ERROR, chunks=2)
        client = async_client(proxy)
        seen: list[str] = []

        async def read_all() -> None:
            async with client.messages.stream(
                model=CLAUDE, max_tokens=64, messages=QUESTION
            ) as stream:
                async for event in stream:
                    seen.append(event.type)

        with pytest.raises(anthropic.APIStatusError) as broken:
            await read_all()
        assert seen[0] == "message_start"
        assert "message_stop" not in seen
        body = broken.value.body
        assert isinstance(body, Mapping)
        assert body["type"] == "error"
        assert body["error"]["type"] == "api_error"
        await client.close()
