"""The fake Gemini, as Google's own SDK and a plain HTTP client see it over loopback.

Every answer and stream event is parsed with ``google.genai.types`` (whose models forbid unknown
fields), and the success paths also go through the real ``genai.Client`` (its async client runs
under trio when it is handed an httpx client). Fault paths use httpx alone: the SDK retries
connection errors with ``asyncio.sleep``.
"""

from __future__ import annotations

import base64
import gc
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio.testing
from google import genai
from google.genai import errors, types

from freellm.core.signals import parse_gemini_error
from freellm.sim.fakes import FakeCaps, FakeProvider, FaultKind, key_id, open_fake_provider
from freellm.sim.fakes.gemini import THOUGHTS_TOKENS

KEY = "AIza-fake-key-one"
THINKING = "gemini-2.5-flash"
PLAIN = "gemini-2.0-flash"
WEATHER = {
    "name": "get_weather",
    "parameters": {
        "type": "OBJECT",
        "properties": {"city": {"type": "STRING"}, "days": {"type": "INTEGER"}},
        "required": ["city"],
    },
}
LOOKUP = {"name": "lookup", "parametersJsonSchema": {"type": "object", "properties": {}}}
WEATHER_ARGS = {"city": "fake", "days": 1}
SCHEMA_WITH_DRAFT = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}
SCHEMA_WITH_CONST = {
    "type": "object",
    "properties": {"a": {"type": "string"}, "b": {"type": "string", "const": "x"}},
}
MISSING_SIGNATURE = (
    "Function call is missing a thought_signature in functionCall parts. This is required for "
    "tools to work correctly, and missing thought_signature may lead to degraded model "
    "performance. Additional data, function call `default_api:get_weather` , position 2. "
    "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
)


# One TLS context for every client (the fakes speak plain HTTP): each new one loads the CA
# bundle, which would otherwise cost most of a test's time.
TLS = ssl.create_default_context()


class Gemini:
    """A fake Gemini and the two clients pointed at it: httpx, and the SDK over the same pool."""

    def __init__(self, fake: FakeProvider, http: httpx.AsyncClient, sync: httpx.Client) -> None:
        self.fake = fake
        self.http = http
        options = types.HttpOptions(
            base_url=fake.origin,
            api_version="v1beta",
            httpx_async_client=http,
            httpx_client=sync,
            async_client_args={"ssl": TLS},
        )
        self.sdk = genai.Client(api_key=KEY, http_options=options).aio

    async def post(self, model: str, body: Any, verb: str = "generateContent") -> httpx.Response:
        return await self.http.post(f"{self.fake.base_url}/models/{model}:{verb}", json=body)

    async def stream(self, model: str, body: Any) -> list[dict[str, Any]]:
        """The ``data:`` payloads of a streamed answer, each checked as a response."""
        url = f"{self.fake.base_url}/models/{model}:streamGenerateContent"
        async with self.http.stream("POST", url, params={"alt": "sse"}, json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            lines = [line async for line in response.aiter_lines() if line]
        assert all(line.startswith("data: ") for line in lines)
        events = [json.loads(line.removeprefix("data: ")) for line in lines]
        for event in events:
            types.GenerateContentResponse.model_validate(event)
        return events


@asynccontextmanager
async def gemini(**options: Any) -> AsyncIterator[Gemini]:
    options.setdefault("keys", [KEY])
    headers = {"x-goog-api-key": KEY}
    async with (
        open_fake_provider("gemini", **options) as fake,
        httpx.AsyncClient(headers=headers, timeout=None, verify=TLS) as http,
    ):
        with httpx.Client(verify=TLS) as sync:
            yield Gemini(fake, http, sync)


def ask(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


def with_tools(text: str, mode: str | None = None, allowed: list[str] | None = None) -> Any:
    body = ask(text, tools=[{"functionDeclarations": [WEATHER, LOOKUP]}])
    if mode is not None:
        calling: dict[str, Any] = {"mode": mode}
        if allowed is not None:
            calling["allowedFunctionNames"] = allowed
        body["toolConfig"] = {"functionCallingConfig": calling}
    return body


def checked(response: httpx.Response) -> types.GenerateContentResponse:
    assert response.status_code == 200, response.text
    return types.GenerateContentResponse.model_validate(response.json())


def config(**fields: Any) -> types.GenerateContentConfig:
    afc = types.AutomaticFunctionCallingConfig(disable=True)
    return types.GenerateContentConfig(automatic_function_calling=afc, **fields)


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == response.status_code
    return error


# -- answers --------------------------------------------------------------------------------


async def test_sdk_gets_text_with_thought_tokens_from_a_thinking_model() -> None:
    async with gemini() as g:
        response = await g.sdk.models.generate_content(model=THINKING, contents="hello there")
        raw = checked(await g.post(THINKING, ask()))
    assert response.text == "fake-gemini says: hello there"
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.model_version == THINKING
    usage = response.usage_metadata
    assert usage is not None
    # "hello there" is 11 characters: 3 prompt tokens; the reply is 4 words.
    assert (usage.prompt_token_count, usage.candidates_token_count) == (3, 4)
    assert usage.thoughts_token_count == THOUGHTS_TOKENS
    assert usage.total_token_count == 3 + 4 + THOUGHTS_TOKENS
    assert raw.text == response.text
    assert g.fake.served == 2
    assert [r.model for r in g.fake.requests] == [THINKING, THINKING]


async def test_a_plain_model_reports_no_thoughts() -> None:
    async with gemini() as g:
        response = checked(await g.post(PLAIN, ask()))
    assert response.usage_metadata is not None
    assert response.usage_metadata.thoughts_token_count is None
    assert response.usage_metadata.total_token_count == 7


async def test_stream_sends_a_word_per_event_and_ends_without_done() -> None:
    async with gemini() as g:
        events = await g.stream(THINKING, ask("one two three"))
        chunks = [
            chunk
            async for chunk in await g.sdk.models.generate_content_stream(
                model=THINKING, contents="one two three"
            )
        ]
    texts = [event["candidates"][0]["content"]["parts"][0]["text"] for event in events]
    assert texts == ["fake-gemini", " says:", " one", " two", " three"]
    finishes = [event["candidates"][0].get("finishReason") for event in events]
    assert finishes == [None] * 4 + ["STOP"]
    assert [("candidatesTokenCount" in e["usageMetadata"]) for e in events] == [False] * 4 + [True]
    assert events[-1]["usageMetadata"]["candidatesTokenCount"] == 5
    assert "".join(chunk.text or "" for chunk in chunks) == "fake-gemini says: one two three"


async def test_stream_without_alt_sse_is_one_json_array() -> None:
    async with gemini() as g:
        response = await g.post(PLAIN, ask("one two"), verb="streamGenerateContent")
    assert response.headers["content-type"] == "application/json"
    answers = [types.GenerateContentResponse.model_validate(item) for item in response.json()]
    assert "".join(answer.text or "" for answer in answers) == "fake-gemini says: one two"


async def test_max_output_tokens_cuts_with_max_tokens() -> None:
    async with gemini() as g:
        response = await g.sdk.models.generate_content(
            model=PLAIN, contents="hello there", config=config(max_output_tokens=2)
        )
    assert response.text == "fake-gemini says:"
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


async def test_a_stop_sequence_ends_the_text_before_it() -> None:
    async with gemini() as g:
        response = checked(
            await g.post(PLAIN, ask(generationConfig={"stopSequences": ["hello", "x"]}))
        )
    assert response.text == "fake-gemini says: "
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.STOP


@pytest.mark.parametrize(
    ("mode", "allowed", "text", "name"),
    [
        ("ANY", None, "hi", "get_weather"),
        ("ANY", ["lookup"], "please call get_weather", "lookup"),
        (None, None, "please call get_weather for Paris", "get_weather"),
        ("AUTO", None, "please call lookup", "lookup"),
    ],
    ids=["any", "named", "implicit-auto", "auto"],
)
async def test_a_function_call_comes_as_a_signed_part(
    mode: str | None, allowed: list[str] | None, text: str, name: str
) -> None:
    async with gemini() as g:
        response = checked(await g.post(THINKING, with_tools(text, mode, allowed)))
    assert response.function_calls is not None
    [call] = response.function_calls
    assert call.name == name
    assert call.args == (WEATHER_ARGS if name == "get_weather" else {})
    assert call.id is None
    assert response.candidates is not None
    candidate = response.candidates[0]
    assert candidate.finish_reason == types.FinishReason.STOP
    assert candidate.content is not None
    assert candidate.content.parts is not None
    assert candidate.content.parts[0].thought_signature


@pytest.mark.parametrize(
    ("mode", "text"), [("NONE", "please call get_weather"), ("AUTO", "what is the weather?")]
)
async def test_no_function_call_without_a_reason(mode: str, text: str) -> None:
    async with gemini() as g:
        response = checked(await g.post(THINKING, with_tools(text, mode)))
    assert response.function_calls is None
    assert response.text == f"fake-gemini says: {text}"


async def test_a_streamed_function_call_comes_whole_in_one_event() -> None:
    async with gemini() as g:
        [event] = await g.stream(THINKING, with_tools("hi", "ANY"))
    [part] = event["candidates"][0]["content"]["parts"]
    assert part["functionCall"] == {"name": "get_weather", "args": WEATHER_ARGS}
    assert part["thoughtSignature"]
    assert event["candidates"][0]["finishReason"] == "STOP"


async def test_json_mode_fills_the_response_schema() -> None:
    schema = {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING"},
            "rain": {"type": "BOOLEAN"},
            "temp": {"type": "NUMBER"},
        },
    }
    async with gemini() as g:
        typed = await g.sdk.models.generate_content(
            model=PLAIN,
            contents="weather?",
            config=config(response_mime_type="application/json", response_schema=schema),
        )
        json_schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
        generation = {"responseMimeType": "application/json", "responseJsonSchema": json_schema}
        plain_json = checked(await g.post(PLAIN, ask(generationConfig=generation)))
        free = checked(
            await g.post(PLAIN, ask(generationConfig={"responseMimeType": "application/json"}))
        )
    assert json.loads(typed.text or "") == {"city": "fake", "rain": True, "temp": 1.5}
    assert json.loads(plain_json.text or "") == {"n": 1}
    assert json.loads(free.text or "") == {"reply": "fake-gemini says: hello there"}


async def test_include_thoughts_opens_with_a_thought_part() -> None:
    async with gemini() as g:
        response = await g.sdk.models.generate_content(
            model=THINKING,
            contents="hello there",
            config=config(thinking_config=types.ThinkingConfig(include_thoughts=True)),
        )
    assert response.candidates is not None
    assert response.candidates[0].content is not None
    parts = response.candidates[0].content.parts or []
    assert [part.thought for part in parts] == [True, None]
    assert response.text == "fake-gemini says: hello there"


async def test_snake_case_field_names_are_accepted() -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "system_instruction": {"parts": [{"text": "be brief"}]},
        "generation_config": {"max_output_tokens": 1},
    }
    async with gemini() as g:
        response = checked(await g.post(PLAIN, body))
    assert response.text == "fake-gemini"


# -- thought signatures --------------------------------------------------------------------


def next_turn(model_turn: Any) -> dict[str, Any]:
    """The conversation after a call of get_weather: the question, `model_turn`, the answer."""
    answer = {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}}
    contents = [
        {"role": "user", "parts": [{"text": "weather?"}]},
        model_turn,
        {"role": "user", "parts": [answer]},
    ]
    return {"contents": contents, "tools": [{"functionDeclarations": [WEATHER]}]}


async def test_the_sdk_sends_the_signature_back_and_is_answered() -> None:
    tools = [types.Tool(function_declarations=[types.FunctionDeclaration.model_validate(WEATHER)])]
    calling = types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.ANY)
    any_mode = types.ToolConfig(function_calling_config=calling)
    async with gemini() as g:
        first = await g.sdk.models.generate_content(
            model=THINKING, contents="weather?", config=config(tools=tools, tool_config=any_mode)
        )
        assert first.candidates is not None
        assert first.candidates[0].content is not None
        answer = types.Part.from_function_response(name="get_weather", response={"temp_c": 21})
        contents = [
            types.Content(role="user", parts=[types.Part(text="weather?")]),
            first.candidates[0].content,
            types.Content(role="user", parts=[answer]),
        ]
        second = await g.sdk.models.generate_content(
            model=THINKING, contents=contents, config=config(tools=tools)
        )
    assert second.text == "fake-gemini says: weather?"
    assert [r.status for r in g.fake.requests] == [200, 200]
    assert g.fake.requests[1].body["contents"][1]["parts"][0]["thoughtSignature"]


async def test_signatures_are_compared_as_the_bytes_they_encode() -> None:
    async with gemini() as g:
        issued = (await g.post(THINKING, with_tools("hi", "ANY"))).json()
        part = issued["candidates"][0]["content"]["parts"][0]
        standard = part["thoughtSignature"]
        part["thoughtSignature"] = standard.replace("+", "-").replace("/", "_").rstrip("=")
        response = checked(await g.post(THINKING, next_turn({"role": "model", "parts": [part]})))
    assert standard.endswith("=")
    assert response.text == "fake-gemini says: weather?"


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        (None, MISSING_SIGNATURE),
        ("", MISSING_SIGNATURE),
        (base64.b64encode(b"made up").decode(), "Corrupted thought signature."),
    ],
    ids=["missing", "empty", "made-up"],
)
async def test_a_call_without_its_signature_is_refused(signature: str | None, message: str) -> None:
    async with gemini() as g:
        issued = checked(await g.post(THINKING, with_tools("hi", "ANY")))
        assert issued.candidates is not None
        assert issued.candidates[0].content is not None
        turn = issued.candidates[0].content.model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        if signature is None:
            del turn["parts"][0]["thoughtSignature"]
        else:
            turn["parts"][0]["thoughtSignature"] = signature
        refused = await g.post(THINKING, next_turn(turn))
        with pytest.raises(errors.ClientError) as raised:
            await g.sdk.models.generate_content(
                model=THINKING, contents=next_turn(turn)["contents"]
            )
    assert refused.status_code == 400
    assert error_of(refused) == {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}
    assert raised.value.code == 400
    assert [r.outcome for r in g.fake.requests] == ["ok", "bad_request", "bad_request"]


async def test_a_signature_issued_for_another_function_is_corrupted() -> None:
    async with gemini() as g:
        issued = (await g.post(THINKING, with_tools("hi", "ANY", ["lookup"]))).json()
        part = issued["candidates"][0]["content"]["parts"][0]
        turn = {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {}},
                    "thoughtSignature": part["thoughtSignature"],
                }
            ],
        }
        refused = await g.post(THINKING, next_turn(turn))
    assert error_of(refused)["message"] == "Corrupted thought signature."


@pytest.mark.parametrize(
    "dummy", ["skip_thought_signature_validator", "context_engineering_is_the_way_to_go"]
)
async def test_googles_documented_dummy_signatures_pass(dummy: str) -> None:
    turn = {
        "role": "model",
        "parts": [{"functionCall": {"name": "get_weather", "args": {}}, "thoughtSignature": dummy}],
    }
    async with gemini() as g:
        response = checked(await g.post(THINKING, next_turn(turn)))
    assert response.text == "fake-gemini says: weather?"


async def test_signatures_are_checked_in_the_current_turn_only_and_on_thinking_models() -> None:
    unsigned = {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]}
    earlier = next_turn(unsigned)
    earlier["contents"] += [
        {"role": "model", "parts": [{"text": "It is 21 C."}]},
        {"role": "user", "parts": [{"text": "thanks"}]},
    ]
    async with gemini() as g:
        old_turn = await g.post(THINKING, earlier)
        plain = checked(await g.post(PLAIN, next_turn(unsigned)))
    assert old_turn.status_code == 200
    assert plain.candidates is not None
    assert plain.candidates[0].content is not None
    assert plain.text == "fake-gemini says: weather?"


async def test_a_plain_model_signs_nothing() -> None:
    async with gemini() as g:
        response = checked(await g.post(PLAIN, with_tools("hi", "ANY")))
    assert response.candidates is not None
    assert response.candidates[0].content is not None
    assert response.candidates[0].content.parts is not None
    assert response.candidates[0].content.parts[0].thought_signature is None


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"contents": []}, "* GenerateContentRequest.contents: contents is not specified"),
        (
            {"contents": [{"role": "assistant", "parts": [{"text": "hi"}]}]},
            "Please use a valid role: user, model.",
        ),
        (
            {"contents": [{"role": "user", "parts": []}]},
            "* GenerateContentRequest.contents[0].parts: contents.parts must not be empty.",
        ),
        (
            {"contents": [{"role": "user", "parts": [{}]}]},
            "* GenerateContentRequest.contents[0].parts[0].data: required oneof field 'data' "
            "must have one initialized field",
        ),
        (
            ask(maxTokens=3),
            'Invalid JSON payload received. Unknown name "maxTokens": Cannot find field.',
        ),
        (
            ask(generationConfig={"max_tokens": 3}),
            "Invalid JSON payload received. Unknown name \"max_tokens\" at 'generation_config': "
            "Cannot find field.",
        ),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}
                ]
            },
            "Please ensure that function response turn comes immediately after a function call "
            "turn.",
        ),
        (
            next_turn(
                {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {}}}] * 2}
            ),
            "Please ensure that the number of function response parts is equal to the number "
            "of function call parts of the function call turn.",
        ),
        (
            next_turn(
                {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {}}}]}
            ),
            "Function response `get_weather` in contents[2] answers no function call of the "
            "function call turn.",
        ),
        (
            ask(tools=[{"functionDeclarations": [{**WEATHER, "parameters": SCHEMA_WITH_DRAFT}]}]),
            'Invalid JSON payload received. Unknown name "$schema" at '
            "'tools[0].function_declarations[0].parameters': Cannot find field.",
        ),
        (
            ask(generationConfig={"responseSchema": SCHEMA_WITH_CONST}),
            'Invalid JSON payload received. Unknown name "const" at '
            "'generation_config.response_schema.properties[1].value': Cannot find field.",
        ),
    ],
    ids=[
        "no-contents",
        "unknown-role",
        "no-parts",
        "empty-part",
        "unknown-field",
        "unknown-config-field",
        "response-without-call",
        "count-mismatch",
        "name-mismatch",
        "json-schema-in-parameters",
        "json-schema-in-response-schema",
    ],
)
async def test_bad_bodies_get_invalid_argument(body: Any, message: str) -> None:
    async with gemini() as g:
        refused = await g.post(PLAIN, body)
    error = error_of(refused)
    assert (refused.status_code, error["status"], error["message"]) == (
        400,
        "INVALID_ARGUMENT",
        message,
    )
    assert g.fake.requests[0].outcome == "bad_request"


async def test_unknown_names_are_also_field_violations() -> None:
    async with gemini() as g:
        refused = await g.post(PLAIN, ask(maxTokens=3))
    [detail] = error_of(refused)["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert detail["fieldViolations"][0]["description"].startswith("Invalid JSON payload")


async def test_keys_a_wrong_one_is_400_a_missing_one_403_the_query_one_works() -> None:
    async with gemini() as g, httpx.AsyncClient(base_url=g.fake.base_url, verify=TLS) as bare:
        url = f"/models/{PLAIN}:generateContent"
        wrong = await bare.post(url, json=ask(), headers={"x-goog-api-key": "AIza-wrong"})
        missing = await bare.post(url, json=ask())
        by_query = await bare.post(url, json=ask(), params={"key": KEY})
    invalid = error_of(wrong)
    assert (wrong.status_code, invalid["status"]) == (400, "INVALID_ARGUMENT")
    assert invalid["message"] == "API key not valid. Please pass a valid API key."
    assert invalid["details"][0]["reason"] == "API_KEY_INVALID"
    assert (missing.status_code, error_of(missing)["status"]) == (403, "PERMISSION_DENIED")
    assert checked(by_query).text == "fake-gemini says: hello there"
    first, _, last = g.fake.requests
    assert first.headers["x-goog-api-key"] == "<rejected>"
    assert [r.outcome for r in g.fake.requests] == ["unauthorized", "unauthorized", "ok"]
    assert last.key_id == key_id(KEY)
    assert KEY not in repr(g.fake.requests)


async def test_models_list_and_get_through_the_sdk() -> None:
    async with gemini() as g:
        listed = [model.name async for model in await g.sdk.models.list()]
        model = await g.sdk.models.get(model=THINKING)
        missing = await g.http.get(f"{g.fake.base_url}/models/gemini-9")
        chat = await g.post("gemini-9", ask())
    assert listed == [f"models/{THINKING}", f"models/{PLAIN}"]
    assert (model.name, model.thinking) == (f"models/{THINKING}", True)
    assert model.supported_actions == ["generateContent", "countTokens"]
    for response in (missing, chat):
        error = error_of(response)
        assert (response.status_code, error["status"]) == (404, "NOT_FOUND")
        assert error["message"].startswith("models/gemini-9 is not found for API version v1beta")


# -- quotas ----------------------------------------------------------------------------------


async def test_a_per_minute_cap_answers_resource_exhausted(
    mock_clock: trio.testing.MockClock,
) -> None:
    async with gemini(models={PLAIN: FakeCaps(rpm=1)}) as g:
        assert (await g.post(PLAIN, ask())).status_code == 200
        mock_clock.jump(20.5)
        refused = await g.post(PLAIN, ask())
        with pytest.raises(errors.ClientError) as raised:
            await g.sdk.models.generate_content(model=PLAIN, contents="hi")
    assert refused.status_code == 429
    assert not [name for name in refused.headers if "ratelimit" in name or name == "retry-after"]
    error = error_of(refused)
    assert error["status"] == "RESOURCE_EXHAUSTED"
    failure, help_, retry = error["details"]
    assert failure["violations"] == [
        {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "quotaDimensions": {"location": "global", "model": PLAIN},
            "quotaValue": "1",
        }
    ]
    assert help_["@type"] == "type.googleapis.com/google.rpc.Help"
    assert retry == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "39s"}
    assert error["message"].endswith("Please retry in 39.5s.")
    signal = parse_gemini_error(refused.content)
    assert signal is not None
    assert (signal.per_day, signal.retry_after) == (False, 39.5)
    assert signal.quota_id == "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    assert raised.value.code == 429
    assert (g.fake.served, g.fake.rate_limited) == (1, 2)


async def test_a_per_day_cap_is_read_as_per_day(mock_clock: trio.testing.MockClock) -> None:
    async with gemini(models={PLAIN: FakeCaps(rpm=10, rpd=2)}) as g:
        for _ in range(2):
            assert (await g.post(PLAIN, ask())).status_code == 200
        mock_clock.jump(3600)
        refused = await g.post(PLAIN, ask())
    signal = parse_gemini_error(refused.content)
    assert signal is not None
    assert signal.per_day
    assert signal.quota_id == "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    assert signal.retry_after == 86_400 - 3600


async def test_token_caps_count_input_tokens_only(mock_clock: trio.testing.MockClock) -> None:
    async with gemini(models={THINKING: FakeCaps(tpm=5)}) as g:
        first = await g.post(THINKING, ask())  # 3 prompt tokens; the 4 + 16 out do not count
        refused = await g.post(THINKING, ask())
    assert first.status_code == 200
    assert g.fake.usage(key_id(KEY), THINKING).tokens_minute == 3
    [violation] = error_of(refused)["details"][0]["violations"]
    assert violation["quotaId"] == "GenerateContentInputTokensPerModelPerMinute-FreeTier"
    assert violation["quotaMetric"].endswith("generate_content_free_tier_input_token_count")
    assert violation["quotaValue"] == "5"


# -- faults ----------------------------------------------------------------------------------


async def read_lines(http: httpx.AsyncClient, url: str, lines: list[str]) -> None:
    """POST a streamed request to `url`, keeping each non-empty line in `lines` as it comes."""
    async with http.stream("POST", url, json=ask("one two three")) as response:
        async for line in response.aiter_lines():
            if line:
                lines.append(line)


async def read_sdk_stream(g: Gemini, texts: list[str | None]) -> None:
    """Read a streamed answer with the SDK, keeping each chunk's text in `texts`."""
    async for chunk in await g.sdk.models.generate_content_stream(model=PLAIN, contents="a b"):
        texts.append(chunk.text)


@pytest.mark.parametrize(("status", "name"), [(500, "INTERNAL"), (503, "UNAVAILABLE")])
async def test_status_fault_answers_geminis_error(status: int, name: str) -> None:
    async with gemini() as g:
        g.fake.faults.next(1, FaultKind.STATUS, status=status)
        with pytest.raises(errors.ServerError) as raised:
            await g.sdk.models.generate_content(model=PLAIN, contents="hi")
        g.fake.faults.next(1, FaultKind.STATUS, status=status)
        refused = await g.post(PLAIN, ask())
    assert raised.value.code == status
    assert (refused.status_code, error_of(refused)["status"]) == (status, name)


async def test_cut_stream_stops_before_the_finish_reason() -> None:
    async with gemini() as g:
        g.fake.faults.next(1, FaultKind.CUT, chunks=2)
        with pytest.raises(httpx.RemoteProtocolError):
            await g.stream(PLAIN, ask("one two three"))
        url = f"{g.fake.base_url}/models/{PLAIN}:streamGenerateContent?alt=sse"
        g.fake.faults.next(1, FaultKind.CUT, chunks=2)
        lines: list[str] = []
        with pytest.raises(httpx.RemoteProtocolError):
            await read_lines(g.http, url, lines)
    events = [json.loads(line.removeprefix("data: ")) for line in lines]
    assert len(events) == 2
    assert all("finishReason" not in event["candidates"][0] for event in events)
    assert [r.outcome for r in g.fake.requests] == ["cut", "cut"]


# The SDK raises on the error event from inside its own nested async generators and leaves
# them open; trio warns when they are collected, which the gc.collect() below keeps in here.
@pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning")
async def test_midstream_error_ends_the_stream_with_an_error_event() -> None:
    async with gemini() as g:
        g.fake.faults.next(1, FaultKind.MIDSTREAM_ERROR, chunks=1)
        url = f"{g.fake.base_url}/models/{PLAIN}:streamGenerateContent?alt=sse"
        async with g.http.stream("POST", url, json=ask("one two three")) as response:
            lines = [line async for line in response.aiter_lines() if line]
        g.fake.faults.next(1, FaultKind.MIDSTREAM_ERROR, chunks=1)
        seen: list[str | None] = []
        with pytest.raises(errors.ServerError):
            await read_sdk_stream(g, seen)
        g.fake.faults.next(1, FaultKind.MIDSTREAM_ERROR)
        whole = await g.post(PLAIN, ask())
    first, last = (json.loads(line.removeprefix("data: ")) for line in lines)
    types.GenerateContentResponse.model_validate(first)
    assert last == {
        "error": {
            "code": 500,
            "message": "An internal error has occurred. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting",
            "status": "INTERNAL",
        }
    }
    gc.collect()
    assert seen == ["fake-gemini"]
    assert (whole.status_code, error_of(whole)["status"]) == (500, "INTERNAL")
    assert g.fake.usage(key_id(KEY), PLAIN).requests_minute == 3


async def test_malformed_fault_sends_what_is_not_json() -> None:
    async with gemini() as g:
        g.fake.faults.next(2, FaultKind.MALFORMED)
        body = await g.post(PLAIN, ask())
        url = f"{g.fake.base_url}/models/{PLAIN}:streamGenerateContent?alt=sse"
        async with g.http.stream("POST", url, json=ask()) as response:
            [line] = [line async for line in response.aiter_lines() if line]
    assert body.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        body.json()
    with pytest.raises(json.JSONDecodeError):
        json.loads(line.removeprefix("data: "))


async def test_key_and_rate_limit_faults_speak_gemini() -> None:
    async with gemini(models={PLAIN: FakeCaps(rpm=15)}) as g:
        g.fake.faults.next(1, FaultKind.INVALID_KEY)
        g.fake.faults.next(1, FaultKind.RATE_LIMIT, retry_after=7)
        invalid = await g.post(PLAIN, ask())
        limited = await g.post(PLAIN, ask())
    assert (invalid.status_code, error_of(invalid)["details"][0]["reason"]) == (
        400,
        "API_KEY_INVALID",
    )
    signal = parse_gemini_error(limited.content)
    assert signal is not None
    assert (signal.per_day, signal.retry_after) == (False, 7.0)
    assert g.fake.usage(key_id(KEY), PLAIN).requests_minute == 0
