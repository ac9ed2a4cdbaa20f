"""The Responses door end to end: the openai SDK's ``responses`` API through a running freellm, in
front of a fake OpenAI-dialect provider (Groq's) and a fake Gemini; every answer and event read
back as the SDK's own pydantic types, and failover with the same headers as chat completions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import openai
import pydantic
import pytest
from harness import CLIENT_GENERATORS, Proxy, config_text, running_proxy
from openai.types.responses import (
    FunctionToolParam,
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseInputParam,
    ResponseStreamEvent,
)

from freellm.core.sse import Decoder
from freellm.sim.fakes import FakeCaps, FakeProvider, FaultKind, open_fake_provider
from sdk_checks import check_gemini_request

pytestmark = CLIENT_GENERATORS  # the SDK's generators: see harness.py

EVENT = pydantic.TypeAdapter[Any](ResponseStreamEvent)
WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


@attrs.frozen
class Door:
    """One provider behind the door, as the catalog names it, and its fake."""

    flavor: str  # the fake's
    provider: str  # the catalog's
    model: str
    keys: tuple[str, ...]
    check_request: Callable[[Mapping[str, Any]], None] | None = None

    def models_table(self) -> str:
        return (
            f'[[providers.{self.provider}.models]]\nid = "{self.model}"\nrpm = 100\n'
            "context = 128000\ntools = true\njson = true\n"
        )

    @property
    def target(self) -> str:
        return f"{self.provider}/{self.model}"


GROQ = Door("groq", "groq", "llama-3.3-70b-versatile", ("gsk-1", "gsk-2"))
GEMINI = Door("gemini", "google", "gemini-2.5-flash", ("AIza-1", "AIza-2"), check_gemini_request)
DOORS = [pytest.param(GROQ, id="openai-dialect"), pytest.param(GEMINI, id="gemini")]


@pytest.fixture
def door_proxy(tmp_path: Path) -> Callable[..., Any]:
    """freellm in front of one fake provider with its keys."""

    @asynccontextmanager
    async def start(door: Door) -> AsyncIterator[tuple[FakeProvider, Proxy]]:
        caps = {door.model: FakeCaps()}
        async with open_fake_provider(door.flavor, keys=list(door.keys), models=caps) as fake:
            config = config_text(
                {door.provider: fake}, {door.provider: door.models_table()}, [door.target]
            )
            keys: Mapping[str, Sequence[str]] = {door.provider: list(door.keys)}
            async with running_proxy(tmp_path / "data", config, keys) as proxy:
                yield fake, proxy
            if door.check_request is not None:
                for request in fake.requests:  # what freellm sent is what the SDK would send
                    if request.method == "POST" and request.status == 200:
                        door.check_request(request.body)

    return start


def client_of(proxy: Proxy) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.base_url, api_key=proxy.key, max_retries=0)


async def create(client: openai.AsyncOpenAI, **fields: Any) -> Response:
    """``responses.create``, with the raw body read back as the SDK's ``Response`` (the SDK
    itself builds its objects without validating them)."""
    raw = await client.responses.with_raw_response.create(model="auto", **fields)
    checked = Response.model_validate_json(raw.http_response.text)
    assert checked.object == "response"
    return checked


def last_body(fake: FakeProvider) -> str:
    """What freellm last sent the provider, as text to search."""
    return json.dumps([r.body for r in fake.requests if r.method == "POST"][-1])


async def raw_events(client: openai.AsyncOpenAI, **fields: Any) -> list[Any]:
    """A streamed response's events as they came on the wire, each read as the SDK's type."""
    decoder = Decoder()
    events: list[Any] = []
    async with client.responses.with_streaming_response.create(
        model="auto", stream=True, **fields
    ) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        async for data in raw.iter_bytes():
            for event in decoder.feed(data):
                parsed = EVENT.validate_json(event.data)
                assert event.event == parsed.type
                events.append(parsed)
    assert [event.sequence_number for event in events] == list(range(len(events)))
    return events


@pytest.mark.parametrize("door", DOORS)
async def test_a_text_answer(door_proxy: Callable[[Door], Any], door: Door) -> None:
    async with door_proxy(door) as (_, proxy):
        client = client_of(proxy)
        response = await create(client, input="Say hello", temperature=0.3, max_output_tokens=200)
        assert response.status == "completed"
        assert response.output_text
        assert response.id.startswith("resp_")
        assert response.output[0].type == "message"
        assert response.usage is not None
        assert response.usage.total_tokens == (
            response.usage.input_tokens + response.usage.output_tokens
        )
        assert (response.temperature, response.max_output_tokens) == (0.3, 200)
        await client.close()


@pytest.mark.parametrize("door", DOORS)
async def test_instructions_go_first_and_are_not_carried_over(
    door_proxy: Callable[[Door], Any], door: Door
) -> None:
    async with door_proxy(door) as (fake, proxy):
        client = client_of(proxy)
        first = await create(client, instructions="Answer like a pirate.", input="Hi")
        assert first.instructions == "Answer like a pirate."
        assert "Answer like a pirate." in last_body(fake)
        await create(client, previous_response_id=first.id, input="And again")
        assert "Answer like a pirate." not in last_body(fake)
        await client.close()


@pytest.mark.parametrize("door", DOORS)
async def test_a_function_call_in_two_steps(door_proxy: Callable[[Door], Any], door: Door) -> None:
    async with door_proxy(door) as (_, proxy):
        client = client_of(proxy)
        question: ResponseInputParam = [
            {"role": "user", "content": "What is the weather in Paris?"}
        ]
        first = await create(client, input=question, tools=[WEATHER], tool_choice="required")
        calls = [item for item in first.output if isinstance(item, ResponseFunctionToolCall)]
        assert len(calls) == 1
        call = calls[0]
        assert call.name == "get_weather"
        assert "city" in json.loads(call.arguments)
        assert first.tools[0].type == "function"
        follow_up: list[Any] = [
            *question,
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 18}'},
        ]
        final = await create(client, input=follow_up, tools=[WEATHER], store=False)
        assert final.status == "completed"
        assert final.output_text
        await client.close()


@pytest.mark.parametrize("door", DOORS)
async def test_previous_response_id_continues_a_stored_conversation(
    door_proxy: Callable[[Door], Any], door: Door
) -> None:
    async with door_proxy(door) as (fake, proxy):
        client = client_of(proxy)
        first = await create(client, input="My name is Ada. Call get_weather for Oslo.",
                             tools=[WEATHER], tool_choice="required")  # fmt: skip
        call = first.output[-1]
        assert isinstance(call, ResponseFunctionToolCall)
        # Only the tool's output is sent: the question and the call come from the stored turn.
        second = await create(
            client,
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
            tools=[WEATHER],
        )
        assert second.previous_response_id == first.id
        assert second.output_text
        sent = last_body(fake)
        assert "My name is Ada" in sent
        assert "sunny" in sent
        third = await create(client, previous_response_id=second.id, input="What is my name?")
        sent = last_body(fake)
        assert all(text in sent for text in ("My name is Ada", "sunny", second.output_text))
        assert third.output_text
        await client.close()


@pytest.mark.parametrize("door", DOORS)
async def test_a_json_schema_text_format(door_proxy: Callable[[Door], Any], door: Door) -> None:
    text_format = {"type": "json_schema", "name": "city", "schema": CITY_SCHEMA, "strict": True}
    async with door_proxy(door) as (fake, proxy):
        client = client_of(proxy)
        response = await create(client, input="A city, as JSON", text={"format": text_format})
        assert response.text is not None
        assert response.text.format is not None
        assert response.text.format.type == "json_schema"
        if door is GROQ:  # the OpenAI-dialect fake does not answer in JSON: what did it get?
            sent = [r.body for r in fake.requests if r.method == "POST"][-1]
            assert sent["response_format"] == {
                "type": "json_schema",
                "json_schema": {"name": "city", "schema": CITY_SCHEMA, "strict": True},
            }
        else:  # the Gemini fake answers with the schema's placeholders
            assert set(json.loads(response.output_text)) == {"city", "population"}

            class City(pydantic.BaseModel):
                city: str
                population: int

            parsed = await client.responses.parse(model="auto", input="A city", text_format=City)
            assert isinstance(parsed.output_parsed, City)
        await client.close()


@pytest.mark.parametrize("door", DOORS)
async def test_a_stream_of_text_deltas_and_its_final_response(
    door_proxy: Callable[[Door], Any], door: Door
) -> None:
    async with door_proxy(door) as (_, proxy):
        client = client_of(proxy)
        events = await raw_events(client, input="Tell me a story")
        kinds = [event.type for event in events]
        assert kinds[:4] == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
        ]
        assert kinds[-4:] == [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        final = events[-1].response
        assert deltas == final.output_text != ""
        assert final.usage is not None
        # Stored before the bytes that finish it went out: retrievable at once.
        assert (await client.responses.retrieve(final.id)).output_text == deltas

        async with client.responses.stream(model="auto", input="A story") as stream:
            streamed = "".join(
                [
                    event.delta
                    async for event in stream
                    if event.type == "response.output_text.delta"
                ]
            )
            response = await stream.get_final_response()
        assert response.status == "completed"
        assert response.output_text == streamed
        await client.close()


@pytest.mark.parametrize("door", DOORS)
async def test_a_streamed_function_call(door_proxy: Callable[[Door], Any], door: Door) -> None:
    async with door_proxy(door) as (_, proxy):
        client = client_of(proxy)
        async with client.responses.stream(
            model="auto", input="Weather in Rome?", tools=[WEATHER], tool_choice="required"
        ) as stream:
            arguments = "".join(
                [
                    event.delta
                    async for event in stream
                    if event.type == "response.function_call_arguments.delta"
                ]
            )
            response = await stream.get_final_response()
        call = response.output[-1]
        assert isinstance(call, ResponseFunctionToolCall)
        assert call.arguments == arguments
        assert "city" in json.loads(arguments)
        # At once, as an agent does: the streamed turn is stored by the time it is read.
        after = await create(
            client,
            previous_response_id=response.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "rain"}],
            tools=[WEATHER],
        )
        assert after.output_text
        await client.close()


@pytest.mark.parametrize("door", DOORS)
async def test_retrieve_then_delete(door_proxy: Callable[[Door], Any], door: Door) -> None:
    async with door_proxy(door) as (_, proxy):
        client = client_of(proxy)
        response = await create(client, input="Remember this")
        raw = await client.responses.with_raw_response.retrieve(response.id)
        assert Response.model_validate_json(raw.http_response.text) == response
        deleted = await client.responses.with_raw_response.delete(response.id)
        assert deleted.status_code == 200
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(response.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.delete(response.id)
        with pytest.raises(openai.NotFoundError) as caught:
            await create(client, previous_response_id=response.id, input="Go on")
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["param"] == "previous_response_id"
        await client.close()


@pytest.mark.parametrize("door", DOORS)
async def test_store_false_is_not_retrievable(
    door_proxy: Callable[[Door], Any], door: Door
) -> None:
    async with door_proxy(door) as (_, proxy):
        client = client_of(proxy)
        response = await create(client, input="Forget this", store=False)
        assert response.output_text
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(response.id)
        await client.close()


@pytest.mark.parametrize("door", DOORS)
async def test_a_built_in_tool_is_refused_by_name(
    door_proxy: Callable[[Door], Any], door: Door
) -> None:
    async with door_proxy(door) as (fake, proxy):
        client = client_of(proxy)
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(
                model="auto", input="Search", tools=[WEATHER, {"type": "web_search"}]
            )
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["param"] == "tools[1].type"
        assert "web_search" in caught.value.body["message"]
        assert not [r for r in fake.requests if r.method == "POST"]  # refused before routing
        await client.close()


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_429_fails_over_to_the_next_key_with_the_chat_headers(
    door_proxy: Callable[[Door], Any], door: Door, stream: bool
) -> None:
    async with door_proxy(door) as (fake, proxy):
        fake.faults.next(1, FaultKind.RATE_LIMIT, retry_after=20)
        client = client_of(proxy)
        raw = await client.responses.with_raw_response.create(
            model="auto", input="Hello", stream=stream
        )
        headers = raw.headers
        assert headers["x-routed-via"] == door.target
        assert headers["x-fallback-attempts"] == "1"
        assert headers["x-fallback-trail"] == f"{door.target}=429,{door.target}=ok"
        assert headers["x-request-id"].startswith("req_")
        if stream:
            body = await raw.http_response.aread()
            events = [EVENT.validate_json(event.data) for event in Decoder().feed(body)]
            final = events[-1]
            assert isinstance(final, ResponseCompletedEvent)
            response = final.response
        else:
            response = Response.model_validate_json(raw.http_response.text)
        assert response.id == "resp_" + headers["x-request-id"].removeprefix("req_")
        assert response.output_text
        used = [r.key_id for r in fake.requests if r.method == "POST"]
        assert len(used) == 2
        assert used[0] != used[1]
        await client.close()


@pytest.mark.parametrize("door", DOORS)
async def test_no_capacity_is_a_json_429_even_for_a_stream(
    door_proxy: Callable[[Door], Any], door: Door
) -> None:
    async with door_proxy(door) as (fake, proxy):
        fake.faults.always(FaultKind.RATE_LIMIT, retry_after=30)
        client = client_of(proxy)
        with pytest.raises(openai.RateLimitError) as caught:
            await client.responses.create(model="auto", input="Hello", stream=True)
        assert caught.value.response.headers["retry-after"]
        assert caught.value.response.headers["x-fallback-attempts"] == "2"
        await client.close()


@pytest.mark.parametrize("door", DOORS)
async def test_a_failure_mid_stream_is_response_failed_then_error(
    door_proxy: Callable[[Door], Any], door: Door
) -> None:
    async with door_proxy(door) as (fake, proxy):
        fake.faults.next(1, FaultKind.MIDSTREAM_ERROR, chunks=2)
        client = client_of(proxy)
        events = await raw_events(client, input="Tell me a long story")
        assert [event.type for event in events[-2:]] == ["response.failed", "error"]
        failed = events[-2].response
        assert failed.status == "failed"
        assert failed.error is not None
        assert events[-1].message == failed.error.message
        with pytest.raises(openai.NotFoundError):  # a failed response is not stored
            await client.responses.retrieve(failed.id)
        await client.close()
