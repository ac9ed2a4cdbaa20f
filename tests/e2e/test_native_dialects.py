"""Gemini and Cohere end to end: the openai SDK and LangChain through freellm, in front of fake
Gemini and Cohere servers that speak the native wire formats (and refuse what the real ones
refuse, a tool call's missing thought signature included)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import openai
import pytest
import trio
from harness import CLIENT_GENERATORS, Proxy, config_text, run_llm_comply, running_proxy
from langchain_openai import ChatOpenAI
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
)

from freellm.sim.fakes import FakeCaps, FakeProvider, open_fake_provider
from sdk_checks import check_cohere_request, check_gemini_request

pytestmark = CLIENT_GENERATORS  # the SDK's generators: see harness.py

WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@attrs.frozen
class Dialect:
    """One native provider as the catalog names it, and its fake."""

    flavor: str  # the fake's
    provider: str  # the catalog's
    model: str
    key: str
    check_request: Callable[[Mapping[str, Any]], None]

    def models_table(self, *, vision: bool = False) -> str:
        return (
            f'[[providers.{self.provider}.models]]\nid = "{self.model}"\nrpm = 100\n'
            f"context = 128000\ntools = true\njson = true\nvision = {str(vision).lower()}\n"
        )


GEMINI = Dialect("gemini", "google", "gemini-2.5-flash", "AIza-fake-key-1", check_gemini_request)
COHERE = Dialect("cohere", "cohere", "command-a-03-2025", "co-fake-key-1", check_cohere_request)
DIALECTS = [pytest.param(GEMINI, id="gemini"), pytest.param(COHERE, id="cohere")]


@pytest.fixture
def native_proxy(tmp_path: Path) -> Callable[..., Any]:
    """freellm in front of one fake native provider with one key."""

    @asynccontextmanager
    async def start(
        dialect: Dialect, *, vision: bool = False
    ) -> AsyncIterator[tuple[FakeProvider, Proxy]]:
        caps = {dialect.model: FakeCaps()}
        async with open_fake_provider(dialect.flavor, keys=[dialect.key], models=caps) as fake:
            config = config_text(
                {dialect.provider: fake},
                {dialect.provider: dialect.models_table(vision=vision)},
                [f"{dialect.provider}/{dialect.model}"],
            )
            keys: Mapping[str, Sequence[str]] = {dialect.provider: [dialect.key]}
            async with running_proxy(tmp_path / "data", config, keys) as proxy:
                yield fake, proxy
            for request in fake.requests:  # everything freellm sent is what the SDKs would send
                if request.method == "POST":
                    dialect.check_request(request.body)

    return start


def client_of(proxy: Proxy) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.base_url, api_key=proxy.key, max_retries=0)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_the_readme_two_step_tool_call_works(
    native_proxy: Callable[[Dialect], Any], dialect: Dialect
) -> None:
    async with native_proxy(dialect) as (fake, proxy):
        client = client_of(proxy)
        messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
        first = await client.chat.completions.create(
            model="auto", messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
        )
        assert first.choices[0].finish_reason == "tool_calls"
        calls = first.choices[0].message.tool_calls
        assert calls is not None
        call = calls[0]
        assert call.type == "function"
        assert call.function.name == "get_weather"
        assert "city" in json.loads(call.function.arguments)
        messages.append(first.choices[0].message)
        messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'})
        final = await client.chat.completions.create(
            model="auto", messages=messages, tools=[WEATHER_TOOL]
        )
        assert final.choices[0].finish_reason == "stop"
        assert final.choices[0].message.content
        await client.close()
        assert [r.status for r in fake.requests] == [200, 200]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_streamed_tool_calls_assemble_with_the_sdk_stream_helpers(
    native_proxy: Callable[[Dialect], Any], dialect: Dialect
) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "call get_weather for Oslo"}
    ]
    async with native_proxy(dialect) as (_, proxy):
        client = client_of(proxy)
        plain = await client.chat.completions.create(
            model="auto", messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
        )
        async with client.chat.completions.stream(
            model="auto", messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
        ) as stream:
            arguments_events = [
                event
                async for event in stream
                if event.type == "tool_calls.function.arguments.done"
            ]
            final = await stream.get_final_completion()
        await client.close()
    calls = final.choices[0].message.tool_calls
    assert calls is not None
    assert final.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in calls] == ["get_weather"]
    plain_calls = plain.choices[0].message.tool_calls
    assert plain_calls is not None
    plain_call = plain_calls[0]
    assert isinstance(plain_call, ChatCompletionMessageFunctionToolCall)
    assert json.loads(calls[0].function.arguments) == json.loads(plain_call.function.arguments)
    assert len(arguments_events) == 1


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_json_mode_answers_json(
    native_proxy: Callable[[Dialect], Any], dialect: Dialect
) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "temp_c": {"type": "number"}},
        "required": ["city", "temp_c"],
        "additionalProperties": False,
    }
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Oslo weather"}]
    async with native_proxy(dialect) as (_, proxy):
        client = client_of(proxy)
        loose = await client.chat.completions.create(
            model="auto", messages=messages, response_format={"type": "json_object"}
        )
        strict = await client.chat.completions.create(
            model="auto",
            messages=messages,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "weather", "schema": schema, "strict": True},
            },
        )
        await client.close()
    assert isinstance(json.loads(loose.choices[0].message.content or ""), dict)
    answer = json.loads(strict.choices[0].message.content or "")
    assert set(answer) == {"city", "temp_c"}
    assert isinstance(answer["city"], str)
    assert isinstance(answer["temp_c"], int | float)


@pytest.mark.parametrize("stream_first_turn", [False, True], ids=["json", "streamed"])
async def test_a_thinking_models_signature_round_trips(
    native_proxy: Callable[[Dialect], Any], stream_first_turn: bool
) -> None:
    """Gemini 2.5 signs its function calls and refuses the next turn without the signature:
    it rides in the tool call's id, through a client that knows nothing of it."""
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    async with native_proxy(GEMINI) as (fake, proxy):
        client = client_of(proxy)
        first: ChatCompletion
        if stream_first_turn:
            async with client.chat.completions.stream(
                model="auto", messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
            ) as stream:
                first = await stream.get_final_completion()
        else:
            first = await client.chat.completions.create(
                model="auto", messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
            )
        calls = first.choices[0].message.tool_calls
        assert calls is not None
        messages.append(first.choices[0].message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"})
        final = await client.chat.completions.create(
            model="auto", messages=messages, tools=[WEATHER_TOOL]
        )
        assert final.choices[0].message.content
        await client.close()
    issued = fake.requests[0]
    sent_back = fake.requests[1].body["contents"][1]
    assert sent_back["role"] == "model"
    call_part = next(part for part in sent_back["parts"] if "functionCall" in part)
    assert call_part["thoughtSignature"]
    assert call_part["thoughtSignature"] != "skip_thought_signature_validator"
    assert (issued.status, fake.requests[1].status) == (200, 200)


async def test_a_tool_call_turn_the_client_wrote_gets_geminis_placeholder_signature(
    native_proxy: Callable[[Dialect], Any],
) -> None:
    """A tool call freellm never issued has no signature to give back: Gemini's documented
    placeholder goes in its place, and the fake (which refuses a call without a signature, see
    tests/sim/test_fake_gemini.py) accepts it."""
    async with native_proxy(GEMINI) as (fake, proxy):
        client = client_of(proxy)
        # A model turn written as if by the client: an id freellm never issued carries no
        # signature, so freellm sends Gemini's documented placeholder, which the fake accepts.
        messages: list[Any] = [
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_client_made",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_client_made", "content": "sunny"},
        ]
        answer = await client.chat.completions.create(
            model="auto", messages=messages, tools=[WEATHER_TOOL]
        )
        assert answer.choices[0].message.content
        sent = fake.requests[-1].body["contents"][1]["parts"][0]
        assert sent["thoughtSignature"] == "skip_thought_signature_validator"
        await client.close()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_langchain_binds_tools_end_to_end(
    native_proxy: Callable[[Dialect], Any], dialect: Dialect
) -> None:
    async with native_proxy(dialect) as (_, proxy):

        def chat() -> tuple[str, list[Any], str]:
            llm = ChatOpenAI(
                model="auto", base_url=proxy.base_url, api_key=proxy.key, max_retries=0
            )
            text = llm.invoke("hello from langchain").content
            tools = llm.bind_tools([dict(WEATHER_TOOL)], tool_choice="required")
            message: Any = tools.invoke("weather in Paris?")
            history = [
                ("human", "weather in Paris?"),
                message,
                {"role": "tool", "tool_call_id": message.tool_calls[0]["id"], "content": "sunny"},
            ]
            reply = llm.bind_tools([dict(WEATHER_TOOL)]).invoke(history)
            return str(text), list(message.tool_calls), str(reply.content)

        text, tool_calls, reply = await trio.to_thread.run_sync(chat)
    assert "hello from langchain" in text
    assert tool_calls[0]["name"] == "get_weather"
    assert "city" in tool_calls[0]["args"]
    assert reply


async def test_a_gemini_quota_429_fails_over_to_cohere_and_keeps_the_key_out(
    tmp_path: Path,
) -> None:
    """Gemini's free tier is tighter than the config believes: its RESOURCE_EXHAUSTED 429 moves
    the request on to Cohere, and the next request does not try Gemini's spent key again."""
    gemini_caps = {GEMINI.model: FakeCaps(rpd=1)}
    async with (
        open_fake_provider("gemini", keys=[GEMINI.key], models=gemini_caps) as gemini,
        open_fake_provider("cohere", keys=[COHERE.key]) as cohere,
    ):
        config = config_text(
            {"google": gemini, "cohere": cohere},
            {"google": GEMINI.models_table(), "cohere": COHERE.models_table()},
            [f"google/{GEMINI.model}", f"cohere/{COHERE.model}"],
        )
        keys = {"google": [GEMINI.key], "cohere": [COHERE.key]}
        async with running_proxy(tmp_path / "data", config, keys) as proxy:
            client = client_of(proxy)
            routes = []
            for turn in range(3):
                messages: list[ChatCompletionMessageParam] = [
                    {"role": "user", "content": f"question {turn}"}
                ]
                raw = await client.chat.completions.with_raw_response.create(
                    model="auto", messages=messages
                )
                routes.append((raw.headers["x-routed-via"], raw.headers.get("x-fallback-attempts")))
            await client.close()
    assert routes == [
        (f"google/{GEMINI.model}", None),
        (f"cohere/{COHERE.model}", "1"),  # Gemini's day was spent: one 429, then Cohere
        (f"cohere/{COHERE.model}", None),  # and the spent key is not tried again
    ]
    assert [r.status for r in gemini.requests] == [200, 429]
    assert gemini.rate_limited == 1


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_llm_comply_passes_through_the_translations(
    native_proxy: Callable[..., Any], dialect: Dialect
) -> None:
    """The outside conformance check, with every answer translated from a native dialect."""
    async with native_proxy(dialect, vision=True) as (_, proxy):
        report = await run_llm_comply(proxy)
    assert report.failed == {}
    assert report.skipped == ["chat-reasoning-summary"]  # needs an o-series model: not ours
