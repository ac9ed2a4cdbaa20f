"""The fake Cohere (native v2), as Cohere's own SDK and a plain HTTP client see it over loopback.

Every answer and stream event is parsed with the SDK's types (``V2ChatResponse``, the
``V2ChatStreamResponse`` union through a pydantic ``TypeAdapter``) and then walked for fields
the types do not name, which the SDK would otherwise keep silently. The success paths also go
through the real ``cohere.AsyncClientV2`` (its async client runs under trio when handed an
httpx client; ``max_retries=0`` keeps it away from ``asyncio.sleep``).
"""

from __future__ import annotations

import gc
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import cohere
import httpx
import pydantic
import pytest
import trio.testing
from cohere.v2 import V2ChatResponse, V2ChatStreamResponse

from freellm.core.outcome import Kind, classify
from freellm.sim.fakes import FakeCaps, FakeProvider, FaultKind, key_id, open_fake_provider
from freellm.sim.fakes.cohere import PREAMBLE_TOKENS

KEY = "co-fake-key-one"
MODEL = "command-a-03-2025"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
LOOKUP = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
WEATHER_ARGS = {"city": "fake", "days": 1}
FINISH_REASONS: Final = {"COMPLETE", "STOP_SEQUENCE", "MAX_TOKENS", "TOOL_CALL", "ERROR"}
TRIAL = (
    "You are using a Trial key, which is limited to {} API calls / {}. You can continue to "
    "use the Trial key for free or upgrade to a Production key with higher rate limits at "
    "'https://dashboard.cohere.com/api-keys'. Contact us on 'https://discord.gg/XW44jPfYJu' or "
    "email us at support@cohere.com with any questions"
)
# Seen on Cohere's wire but not named by the SDK's type: message-start's empty message fields.
WIRE_ONLY: Final = {
    "ChatMessageStartEventDeltaMessage": {"content", "tool_plan", "tool_calls", "citations"}
}
STREAM_EVENT: Final = pydantic.TypeAdapter(V2ChatStreamResponse)
# One TLS context for every client (the fakes speak plain HTTP): each new one loads the CA bundle.
TLS = ssl.create_default_context()


def strict(value: Any) -> None:
    """Fail on any field the SDK's types do not name, anywhere in a parsed `value`."""
    if isinstance(value, pydantic.BaseModel):
        kind = type(value).__name__
        unknown = set(value.model_extra or {}) - WIRE_ONLY.get(kind, set())
        assert not unknown, f"{kind} has fields the SDK does not know: {unknown}"
        for name in type(value).model_fields:
            strict(getattr(value, name))
    elif isinstance(value, list):
        for item in value:
            strict(item)


def said(text: str) -> list[cohere.ChatMessageV2]:
    return [cohere.UserChatMessageV2(content=text)]


def sdk_tool(tool: dict[str, Any]) -> cohere.ToolV2:
    return cohere.ToolV2(function=cohere.ToolV2Function(**tool["function"]))


def text_of(answer: V2ChatResponse) -> str:
    """The text of an answer's only content item."""
    assert answer.message.content is not None
    [item] = answer.message.content
    assert isinstance(item, cohere.TextAssistantMessageResponseContentItem)
    return item.text


def parse_answer(data: Any) -> V2ChatResponse:
    answer = V2ChatResponse.model_validate(data)
    strict(answer)
    assert answer.finish_reason in FINISH_REASONS
    return answer


def parse_event(data: Any) -> Any:
    event = STREAM_EVENT.validate_python(data)
    strict(event)
    assert event.type == data["type"]
    return event


class Cohere:
    """A fake Cohere and the two clients pointed at it: httpx, and the SDK over the same pool."""

    def __init__(self, fake: FakeProvider, http: httpx.AsyncClient) -> None:
        self.fake = fake
        self.http = http
        self.sdk = cohere.AsyncClientV2(
            api_key=KEY, base_url=fake.origin, httpx_client=http, max_retries=0
        )

    async def chat(self, body: Any) -> httpx.Response:
        return await self.http.post(f"{self.fake.base_url}/v2/chat", json=body)

    async def stream(self, body: Any) -> list[tuple[str | None, str]]:
        """The (``event:`` name, ``data:``) pairs of a streamed answer, ``[DONE]`` included."""
        url = f"{self.fake.base_url}/v2/chat"
        async with self.http.stream("POST", url, json={**body, "stream": True}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            return await read_sse(response)


async def read_sse(
    response: httpx.Response, events: list[tuple[str | None, str]] | None = None
) -> list[tuple[str | None, str]]:
    """The (``event:`` name, ``data:``) pairs of `response`, appended to `events` as they come."""
    events = events if events is not None else []
    name = None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, line.removeprefix("data: ")))
            name = None
    return events


def parsed_events(pairs: list[tuple[str | None, str]]) -> list[Any]:
    """The events before ``[DONE]``, each named by its ``event:`` line, parsed strictly."""
    *events, done = pairs
    assert done == (None, "[DONE]")
    parsed = []
    for name, data in events:
        payload = json.loads(data)
        assert name == payload["type"]
        parsed.append(parse_event(payload))
    return parsed


@asynccontextmanager
async def cohere_fake(**options: Any) -> AsyncIterator[Cohere]:
    options.setdefault("keys", [KEY])
    headers = {"Authorization": f"Bearer {KEY}"}
    async with (
        open_fake_provider("cohere", **options) as fake,
        httpx.AsyncClient(headers=headers, timeout=None, verify=TLS) as http,
    ):
        yield Cohere(fake, http)


def chat(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


# -- answers ---------------------------------------------------------------------------------


async def test_sdk_chat_gets_text_and_both_usages() -> None:
    async with cohere_fake() as c:
        answer = await c.sdk.chat(model=MODEL, messages=said("hello there"))
        raw = parse_answer((await c.chat(chat())).json())
    assert answer.finish_reason == "COMPLETE"
    assert text_of(answer) == "fake-cohere says: hello there"
    assert answer.usage is not None
    assert answer.usage.billed_units is not None
    assert answer.usage.tokens is not None
    # "hello there": 3 prompt tokens; 4 words out. Cohere's hidden preamble counts in `tokens`.
    billed, tokens = answer.usage.billed_units, answer.usage.tokens
    assert (billed.input_tokens, billed.output_tokens) == (3, 4)
    assert (tokens.input_tokens, tokens.output_tokens) == (3 + PREAMBLE_TOKENS, 4)
    assert answer.id == "00000000-0000-0000-0000-000000000001"
    assert raw.message.content == answer.message.content
    assert c.fake.served == 2


# The SDK stops at [DONE] from inside its nested SSE generators and leaves them open; trio warns
# when they are collected, which the gc.collect() below keeps in here.
@pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning")
async def test_stream_names_every_event_and_ends_with_done() -> None:
    async with cohere_fake() as c:
        events = parsed_events(await c.stream(chat("one two three")))
        sdk_events = [
            event async for event in c.sdk.chat_stream(model=MODEL, messages=said("one two three"))
        ]
    gc.collect()
    kinds = [event.type for event in events]
    deltas = ["content-delta"] * 5
    assert kinds == ["message-start", "content-start", *deltas, "content-end", "message-end"]
    deltas = [e.delta.message.content.text for e in events if e.type == "content-delta"]
    assert deltas == ["fake-cohere", " says:", " one", " two", " three"]
    end = events[-1].delta
    assert end.finish_reason == "COMPLETE"
    assert (end.usage.billed_units.input_tokens, end.usage.billed_units.output_tokens) == (4, 5)
    assert [event.type for event in sdk_events] == kinds


@pytest.mark.parametrize(
    ("extra", "text", "finish"),
    [
        ({"max_tokens": 2}, "fake-cohere says:", "MAX_TOKENS"),
        ({"stop_sequences": ["there"]}, "fake-cohere says: hello ", "STOP_SEQUENCE"),
    ],
)
async def test_limits_finish_the_text_early(extra: dict[str, Any], text: str, finish: str) -> None:
    async with cohere_fake() as c:
        answer = parse_answer((await c.chat(chat(**extra))).json())
    assert answer.finish_reason == finish
    assert text_of(answer) == text


@pytest.mark.parametrize(
    ("tool_choice", "text", "name"),
    [
        ("REQUIRED", "hi", "get_weather"),
        ("REQUIRED", "please call lookup", "lookup"),
        (None, "please call get_weather for Paris", "get_weather"),
    ],
)
async def test_a_tool_call_comes_with_its_plan(
    tool_choice: str | None, text: str, name: str
) -> None:
    body = chat(text, tools=[WEATHER, LOOKUP])
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    async with cohere_fake() as c:
        answer = parse_answer((await c.chat(body)).json())
    assert answer.finish_reason == "TOOL_CALL"
    assert answer.message.content is None
    assert answer.message.tool_plan == f"I will call {name}."
    assert answer.message.tool_calls is not None
    [call] = answer.message.tool_calls
    assert call.id == f"{name}_fake000001"
    assert call.function is not None
    assert call.function.name == name
    arguments = json.loads(call.function.arguments or "")
    assert arguments == (WEATHER_ARGS if name == "get_weather" else {})
    assert answer.usage is not None
    assert answer.usage.billed_units is not None
    cost = -(-(len(name) + len(json.dumps(arguments))) // 4)
    assert answer.usage.billed_units.output_tokens == cost + 4  # the plan's four words


async def test_no_tool_call_when_told_none() -> None:
    async with cohere_fake() as c:
        answer = parse_answer(
            (await c.chat(chat("call get_weather", tools=[WEATHER], tool_choice="NONE"))).json()
        )
    assert answer.finish_reason == "COMPLETE"
    assert answer.message.tool_calls is None


async def test_a_streamed_tool_call_plans_then_sends_its_arguments_in_pieces() -> None:
    body = chat("hi", tools=[WEATHER], tool_choice="REQUIRED")
    async with cohere_fake() as c:
        events = parsed_events(await c.stream(body))
    kinds = [event.type for event in events]
    assert kinds[:5] == ["message-start", *["tool-plan-delta"] * 4]
    assert kinds[5] == "tool-call-start"
    assert kinds[-2:] == ["tool-call-end", "message-end"]
    plan = "".join(e.delta.message.tool_plan for e in events if e.type == "tool-plan-delta")
    assert plan == "I will call get_weather."
    start = events[5].delta.message.tool_calls
    assert (start.id, start.function.name, start.function.arguments) == (
        "get_weather_fake000001",
        "get_weather",
        "",
    )
    pieces = [
        e.delta.message.tool_calls.function.arguments for e in events if e.type == "tool-call-delta"
    ]
    assert len(pieces) >= 2
    assert json.loads("".join(pieces)) == WEATHER_ARGS
    assert events[-1].delta.finish_reason == "TOOL_CALL"


async def test_the_sdk_sends_a_tool_result_back_and_is_answered() -> None:
    tools = [sdk_tool(WEATHER)]
    async with cohere_fake() as c:
        first = await c.sdk.chat(
            model=MODEL, messages=said("weather?"), tools=tools, tool_choice="REQUIRED"
        )
        calls = first.message.tool_calls
        assert calls is not None
        turn = cohere.AssistantChatMessageV2(tool_calls=calls, tool_plan=first.message.tool_plan)
        document = cohere.DocumentToolContent(document=cohere.Document(data={"temp_c": 21}))
        result = cohere.ToolChatMessageV2(tool_call_id=calls[0].id, content=[document])
        second = await c.sdk.chat(
            model=MODEL, messages=[*said("weather?"), turn, result], tools=tools
        )
    assert second.finish_reason == "COMPLETE"
    assert text_of(second) == "fake-cohere says: weather?"


async def test_json_mode_fills_the_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "n": {"type": "integer"}},
    }
    async with cohere_fake() as c:
        typed = await c.sdk.chat(
            model=MODEL,
            messages=said("weather?"),
            response_format=cohere.JsonObjectResponseFormatV2(json_schema=schema),
        )
        free = parse_answer((await c.chat(chat(response_format={"type": "json_object"}))).json())
    assert json.loads(text_of(typed)) == {"city": "fake", "n": 1}
    assert json.loads(text_of(free)) == {"reply": "fake-cohere says: hello there"}


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "status", "message"),
    [
        (
            {"stream_options": {"include_usage": True}},
            422,
            "unknown field: parameter stream_options is not a valid field. For proper usage, "
            "please refer to https://docs.cohere.com/reference/chat",
        ),
        (
            {"messages": [{"role": "developer", "content": "hi"}]},
            400,
            "invalid request: messages[0].role must be one of system, user, assistant, tool",
        ),
        (
            {"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]},
            400,
            "invalid request: messages[0].tool_call_id answers no earlier tool call",
        ),
        ({"tool_choice": "AUTO"}, 400, "invalid request: tool_choice must be REQUIRED or NONE"),
        ({"tool_choice": "REQUIRED"}, 400, "invalid request: tool_choice REQUIRED needs tools"),
        (
            {"response_format": {"type": "json_schema"}},
            400,
            "invalid request: response_format.type must be text or json_object",
        ),
    ],
    ids=["stream-options", "role", "orphan-tool", "auto", "required-no-tools", "format"],
)
async def test_bad_bodies_get_coheres_message(extra: Any, status: int, message: str) -> None:
    async with cohere_fake() as c:
        refused = await c.chat(chat(**extra))
    assert (refused.status_code, refused.json()) == (status, {"message": message})
    assert c.fake.requests[0].outcome == "bad_request"


async def test_the_sdk_raises_its_own_errors_for_refusals() -> None:
    async with cohere_fake(models={MODEL: FakeCaps(rpm=1)}) as c:
        with pytest.raises(cohere.UnprocessableEntityError):
            await c.sdk.chat(
                model=MODEL,
                messages=said("hi"),
                request_options={"additional_body_parameters": {"nope": 1}},
            )
        with pytest.raises(cohere.NotFoundError):
            await c.sdk.chat(model="command-z", messages=said("hi"))
        await c.sdk.chat(model=MODEL, messages=said("hi"))
        with pytest.raises(cohere.TooManyRequestsError):
            await c.sdk.chat(model=MODEL, messages=said("hi"))


async def test_keys_a_wrong_one_and_a_missing_one_get_401() -> None:
    async with cohere_fake() as c, httpx.AsyncClient(base_url=c.fake.base_url, verify=TLS) as bare:
        wrong = await bare.post("/v2/chat", json=chat(), headers={"Authorization": "Bearer nope"})
        missing = await bare.post("/v2/chat", json=chat())
        good = await c.chat(chat())
    assert (wrong.status_code, wrong.json()) == (401, {"message": "invalid api token"})
    assert (missing.status_code, missing.json()) == (401, {"message": "no api key supplied"})
    assert good.status_code == 200
    assert [r.headers.get("authorization") for r in c.fake.requests] == [
        "<rejected>",
        None,
        key_id(KEY),
    ]


async def test_models_listed_under_v1_and_v2_and_unknown_ones_404() -> None:
    async with cohere_fake() as c:
        listed = await c.sdk.models.list()
        one = await c.sdk.models.get(MODEL)
        v2 = await c.http.get(f"{c.fake.base_url}/v2/models")
        missing = await c.chat({**chat(), "model": "command-z"})
        nowhere = await c.http.get(f"{c.fake.base_url}/v3/models")
    assert [model.name for model in listed.models] == [MODEL, "command-r-plus-08-2024"]
    assert (one.name, one.endpoints, one.context_length) == (MODEL, ["chat"], 128_000)
    assert v2.json() == listed.model_dump(mode="json", exclude_none=True)
    assert (missing.status_code, missing.json()["message"]) == (
        404,
        "model 'command-z' not found, make sure the correct model ID was used and that you have "
        "access to the model.",
    )
    assert nowhere.status_code == 404


# -- trial-key limits --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caps", "span", "per_day"),
    [(FakeCaps(rpm=1), "minute", False), (FakeCaps(rpm=10, rpd=1), "month", True)],
    ids=["per-minute", "per-month"],
)
async def test_trial_key_429s_are_classified(
    caps: FakeCaps, span: str, per_day: bool, mock_clock: trio.testing.MockClock
) -> None:
    async with cohere_fake(models={MODEL: caps}) as c:
        assert (await c.chat(chat())).status_code == 200
        refused = await c.chat(chat())
    assert refused.status_code == 429
    assert refused.json() == {"message": TRIAL.format(1, span)}
    assert not [name for name in refused.headers if "ratelimit" in name or name == "retry-after"]
    result = classify(429, dict(refused.headers), refused.content, now=0.0)
    assert result.kind is (Kind.QUOTA_EXHAUSTED if per_day else Kind.RATE_LIMITED)
    assert result.retry_after is None
    assert (c.fake.served, c.fake.rate_limited) == (1, 1)


# -- faults ----------------------------------------------------------------------------------


async def test_status_fault_answers_a_message() -> None:
    async with cohere_fake() as c:
        c.fake.faults.next(1, FaultKind.STATUS, status=500)
        with pytest.raises(cohere.InternalServerError):
            await c.sdk.chat(model=MODEL, messages=said("hi"))
        c.fake.faults.next(1, FaultKind.STATUS, status=503)
        refused = await c.chat(chat())
    assert (refused.status_code, refused.json()) == (503, {"message": "Injected fault: HTTP 503"})


async def test_cut_stream_drops_before_message_end() -> None:
    async with cohere_fake() as c:
        c.fake.faults.next(1, FaultKind.CUT, chunks=3)
        pairs: list[tuple[str | None, str]] = []
        with pytest.raises(httpx.RemoteProtocolError):
            await read_into(c, chat("one two three", stream=True), pairs)
    assert [name for name, _ in pairs] == ["message-start", "content-start", "content-delta"]
    assert c.fake.requests[0].outcome == "cut"


async def read_into(c: Cohere, body: Any, pairs: list[tuple[str | None, str]]) -> None:
    """Read a stream's (event, data) pairs into `pairs` as they come."""
    async with c.http.stream("POST", f"{c.fake.base_url}/v2/chat", json=body) as response:
        await read_sse(response, pairs)


async def test_midstream_error_ends_with_an_error_finish() -> None:
    async with cohere_fake() as c:
        c.fake.faults.next(1, FaultKind.MIDSTREAM_ERROR, chunks=3)
        events = parsed_events(await c.stream(chat("one two three")))
        c.fake.faults.next(1, FaultKind.MIDSTREAM_ERROR)
        whole = parse_answer((await c.chat(chat())).json())
    assert [event.type for event in events] == [
        "message-start",
        "content-start",
        "content-delta",
        "message-end",
    ]
    end = events[-1].delta
    assert (end.finish_reason, end.error) == (
        "ERROR",
        "internal server error, this has been reported to our developers",
    )
    assert (whole.finish_reason, whole.message.content) == ("ERROR", [])
    assert c.fake.usage(key_id(KEY), MODEL).requests_minute == 2


async def test_malformed_fault_sends_what_is_not_json() -> None:
    async with cohere_fake() as c:
        c.fake.faults.next(2, FaultKind.MALFORMED)
        body = await c.chat(chat())
        pairs = await c.stream(chat())
    with pytest.raises(json.JSONDecodeError):
        body.json()
    (name, data), done = pairs
    assert (name, done) == ("content-delta", (None, "[DONE]"))
    with pytest.raises(json.JSONDecodeError):
        json.loads(data)


async def test_key_and_rate_limit_faults_speak_cohere() -> None:
    async with cohere_fake(models={MODEL: FakeCaps(rpm=20)}) as c:
        c.fake.faults.next(1, FaultKind.INVALID_KEY)
        c.fake.faults.next(1, FaultKind.RATE_LIMIT)
        invalid = await c.chat(chat())
        limited = await c.chat(chat())
    assert (invalid.status_code, invalid.json()) == (401, {"message": "invalid api token"})
    assert limited.json() == {"message": TRIAL.format(20, "minute")}
