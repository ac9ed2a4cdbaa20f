"""freellm end to end: real clients (openai SDK, LangChain, httpx) against a real server on
loopback, in front of fake providers that enforce their own caps."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio
from harness import (
    CLIENT_GENERATORS,
    Proxy,
    SharedClock,
    config_text,
    run_llm_comply,
    running_proxy,
)
from langchain_openai import ChatOpenAI
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionMessageParam

from freellm.core import health, ledger
from freellm.shell.secrets import Vault
from freellm.shell.upstream import Timeouts
from freellm.sim.fakes import FakeCaps, FakeProvider, FaultKind, open_fake_provider

pytestmark = CLIENT_GENERATORS  # the SDK's generators: see harness.py

GROQ_MODEL = "llama-3.3-70b-versatile"
CEREBRAS_MODEL = "qwen-3-235b-a22b-instruct-2507"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello from the tests"}]
WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
def shared_clock() -> SharedClock:
    return SharedClock()


@pytest.fixture
def proxy_factory(tmp_path: Path) -> Callable[..., Any]:
    def make(config: str, keys: Mapping[str, Sequence[str]], **options: Any) -> Any:
        return running_proxy(tmp_path / "data", config, keys, **options)

    return make


@pytest.fixture
def groq_proxy(proxy_factory: Callable[..., Any]) -> Callable[..., Any]:
    """freellm in front of one fake Groq with one key: the setup most tests here share."""

    @asynccontextmanager
    async def start(*, models: str | None = None) -> AsyncIterator[tuple[FakeProvider, Proxy]]:
        caps = {GROQ_MODEL: FakeCaps()}
        async with open_fake_provider("groq", keys=["gsk-1"], models=caps) as groq:
            tables = {"groq": models or groq_models()}
            config = config_text({"groq": groq}, tables, [f"groq/{GROQ_MODEL}"])
            async with proxy_factory(config, {"groq": ["gsk-1"]}) as proxy:
                yield groq, proxy

    return start


def groq_models(rpm: int = 30, **extra: Any) -> str:
    lines = [f'id = "{GROQ_MODEL}"', f"rpm = {rpm}", "context = 131072", "tools = true"]
    lines += [f"{name} = {str(value).lower()}" for name, value in extra.items()]
    return "[[providers.groq.models]]\n" + "\n".join(lines) + "\n"


def cerebras_models(rpm: int = 30) -> str:
    return (
        f'[[providers.cerebras.models]]\nid = "{CEREBRAS_MODEL}"\nrpm = {rpm}\n'
        "context = 65536\ntools = true\n"
    )


def async_client(proxy: Proxy) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.base_url, api_key=proxy.key, max_retries=0)


async def test_the_openai_sdk_gets_answers_sync_async_streamed_and_not(
    groq_proxy: Callable[..., Any],
) -> None:
    async with groq_proxy() as (groq, proxy):
        client = async_client(proxy)
        raw = await client.chat.completions.with_raw_response.create(model="auto", messages=USER)
        answer = raw.parse()
        assert answer.choices[0].message.content
        assert raw.headers["x-routed-via"] == f"groq/{GROQ_MODEL}"
        assert raw.headers["x-request-id"].startswith("req_")
        assert answer.usage is not None
        assert answer.usage.total_tokens > 0

        stream = await client.chat.completions.create(model="auto", messages=USER, stream=True)
        async with stream:
            pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(pieces) == answer.choices[0].message.content

        def sync_call() -> str | None:
            with openai.OpenAI(base_url=proxy.base_url, api_key=proxy.key, max_retries=0) as c:
                reply = c.chat.completions.create(model=f"groq/{GROQ_MODEL}", messages=USER)
                with c.chat.completions.create(
                    model="auto", messages=USER, stream=True
                ) as streamed:
                    assert "".join(x.choices[0].delta.content or "" for x in streamed if x.choices)
                return reply.choices[0].message.content

        assert await trio.to_thread.run_sync(sync_call) == answer.choices[0].message.content
        await client.close()
        assert groq.served == 4


async def test_tool_calls_pass_through_streamed_and_not(groq_proxy: Callable[..., Any]) -> None:
    async with groq_proxy() as (_, proxy):
        client = async_client(proxy)
        answer = await client.chat.completions.create(
            model="auto", messages=USER, tools=[WEATHER_TOOL], tool_choice="required"
        )
        calls = answer.choices[0].message.tool_calls
        assert calls is not None
        call = calls[0]
        assert call.type == "function"
        assert call.function.name == "get_weather"
        assert "city" in json.loads(call.function.arguments)
        assert answer.choices[0].finish_reason == "tool_calls"

        async with client.chat.completions.stream(
            model="auto", messages=USER, tools=[WEATHER_TOOL], tool_choice="required"
        ) as stream:
            async for _ in stream:
                pass
            final = await stream.get_final_completion()
        streamed_calls = final.choices[0].message.tool_calls
        assert streamed_calls is not None
        streamed_call = streamed_calls[0]
        assert streamed_call.function.name == "get_weather"
        assert json.loads(streamed_call.function.arguments) == json.loads(call.function.arguments)
        await client.close()


async def test_langchain_invokes_and_binds_tools(groq_proxy: Callable[..., Any]) -> None:
    async with groq_proxy() as (_, proxy):

        def chat() -> tuple[str, list[Any]]:
            llm = ChatOpenAI(
                model="auto", base_url=proxy.base_url, api_key=proxy.key, max_retries=0
            )
            text = llm.invoke("hello from langchain").content
            tools = llm.bind_tools([dict(WEATHER_TOOL)], tool_choice="required")
            message: Any = tools.invoke("weather in Paris?")
            return str(text), list(message.tool_calls)

        text, tool_calls = await trio.to_thread.run_sync(chat)
        assert "hello from langchain"[:20] in text
        assert tool_calls[0]["name"] == "get_weather"


async def test_a_429_moves_to_the_next_key_with_the_right_headers(
    proxy_factory: Callable[..., Any],
) -> None:
    async with open_fake_provider(
        "groq", keys=["gsk-1", "gsk-2"], models={GROQ_MODEL: FakeCaps()}
    ) as groq:
        config = config_text({"groq": groq}, {"groq": groq_models()}, [f"groq/{GROQ_MODEL}"])
        async with proxy_factory(config, {"groq": ["gsk-1", "gsk-2"]}) as proxy:
            groq.faults.next(1, FaultKind.RATE_LIMIT, retry_after=20)
            client = async_client(proxy)
            raw = await client.chat.completions.with_raw_response.create(
                model="auto", messages=USER
            )
            assert raw.headers["x-fallback-attempts"] == "1"
            assert raw.headers["x-routed-via"] == f"groq/{GROQ_MODEL}"
            used = [r.key_id for r in groq.requests if r.path.endswith("completions")]
            assert len(used) == 2
            assert used[0] != used[1]
            await client.close()


async def test_everything_capped_is_429_with_retry_after_and_no_upstream_429(
    proxy_factory: Callable[..., Any],
) -> None:
    caps = {GROQ_MODEL: FakeCaps(rpm=4)}
    async with open_fake_provider("groq", keys=["gsk-1"], models=caps) as groq:
        # The config's caps equal the fake's: freellm must never send what the fake would refuse.
        config = config_text({"groq": groq}, {"groq": groq_models(rpm=4)}, [f"groq/{GROQ_MODEL}"])
        async with proxy_factory(config, {"groq": ["gsk-1"]}) as proxy:
            client = async_client(proxy)
            statuses = []
            async with trio.open_nursery() as nursery:

                async def one() -> None:
                    try:
                        await client.chat.completions.create(model="auto", messages=USER)
                        statuses.append(200)
                    except openai.RateLimitError as exc:
                        statuses.append(429)
                        retry_after = int(exc.response.headers["retry-after"])
                        assert 1 <= retry_after <= 61

                for _ in range(10):
                    nursery.start_soon(one)
            assert sorted(statuses) == [200] * 4 + [429] * 6
            assert groq.rate_limited == 0
            assert groq.served == 4
            await client.close()


async def test_an_invalid_key_is_skipped_and_marked(proxy_factory: Callable[..., Any]) -> None:
    async with open_fake_provider("groq", keys=["good"], models={GROQ_MODEL: FakeCaps()}) as groq:
        config = config_text({"groq": groq}, {"groq": groq_models()}, [f"groq/{GROQ_MODEL}"])
        async with proxy_factory(config, {"groq": ["bad", "good"]}) as proxy:
            client = async_client(proxy)
            for _ in range(3):
                answer = await client.chat.completions.create(model="auto", messages=USER)
                assert answer.choices[0].message.content
            state = proxy.runtime.holder.state
            states = {key.id: state.health.of("groq", key.id).state for key in state.topology.keys}
            assert sorted(s.value for s in states.values()) == ["healthy", "invalid"]
            # The invalid key was tried once, then left alone.
            assert sum(1 for r in groq.requests if r.key_id is None) == 1
            await client.close()


async def test_a_timeout_moves_to_another_provider(proxy_factory: Callable[..., Any]) -> None:
    async with (
        open_fake_provider("groq", keys=["gsk-1"], models={GROQ_MODEL: FakeCaps()}) as groq,
        open_fake_provider("cerebras", keys=["csk-1"], models={CEREBRAS_MODEL: FakeCaps()}) as cer,
    ):
        config = config_text(
            {"groq": groq, "cerebras": cer},
            {"groq": groq_models(), "cerebras": cerebras_models()},
            [f"groq/{GROQ_MODEL}", f"cerebras/{CEREBRAS_MODEL}"],
        )
        groq.faults.always(FaultKind.HANG)
        timeouts = Timeouts(connect=1, first_byte=1, idle=1, total=1)
        async with proxy_factory(
            config, {"groq": ["gsk-1"], "cerebras": ["csk-1"]}, timeouts=timeouts
        ) as proxy:
            client = async_client(proxy)
            raw = await client.chat.completions.with_raw_response.create(
                model="auto", messages=USER
            )
            assert raw.headers["x-routed-via"] == f"cerebras/{CEREBRAS_MODEL}"
            assert raw.headers["x-fallback-attempts"] == "1"
            await client.close()
        await _until(lambda: groq.cancelled >= 1)  # the proxy hung up on the hanging call


async def test_x_freellm_strategy_picks_the_routing_of_one_request(
    proxy_factory: Callable[..., Any],
) -> None:
    async with (
        open_fake_provider("groq", keys=["gsk-1"], models={GROQ_MODEL: FakeCaps()}) as groq,
        open_fake_provider("cerebras", keys=["csk-1"], models={CEREBRAS_MODEL: FakeCaps()}) as cer,
    ):
        # Groq first, capped at 20k tokens a day; Cerebras capped by the minute only. A request
        # of ~1,000 tokens takes 5% of Groq's day: the chain sends it there, capacity does not.
        config = config_text(
            {"groq": groq, "cerebras": cer},
            {"groq": groq_models(tpd=20_000), "cerebras": cerebras_models()},
            [f"groq/{GROQ_MODEL}", f"cerebras/{CEREBRAS_MODEL}"],
        )
        async with (
            proxy_factory(config, {"groq": ["gsk-1"], "cerebras": ["csk-1"]}) as proxy,
            httpx.AsyncClient() as http,
        ):
            body = {"model": "auto", "messages": USER, "max_tokens": 1000}
            routed = {}
            for strategy in ("chain", "capacity", None, "Capacity"):
                # A session of its own each: a conversation stays on its model, whatever strategy.
                headers = {"x-api-key": proxy.key, "x-session-id": f"s-{strategy}"}
                if strategy is not None:
                    headers["x-freellm-strategy"] = strategy
                answer = await http.post(
                    f"{proxy.base_url}/chat/completions", headers=headers, json=body
                )
                assert answer.status_code == 200, answer.text
                routed[strategy] = answer.headers["x-routed-via"]
            assert routed == {
                "chain": f"groq/{GROQ_MODEL}",
                "capacity": f"cerebras/{CEREBRAS_MODEL}",
                None: f"groq/{GROQ_MODEL}",  # the configured strategy: chain by default
                "Capacity": f"cerebras/{CEREBRAS_MODEL}",
            }
            bad = await http.post(
                f"{proxy.base_url}/chat/completions",
                headers={"x-api-key": proxy.key, "x-freellm-strategy": "cheapest"},
                json=body,
            )
            assert bad.status_code == 400
            error = bad.json()["error"]
            assert error["param"] == "X-Freellm-Strategy"
            assert error["type"] == "invalid_request_error"
            assert "'cheapest'" in error["message"]
        assert (groq.served, cer.served) == (2, 2)


async def test_a_client_disconnect_cancels_the_upstream_call(
    groq_proxy: Callable[..., Any],
) -> None:
    async with groq_proxy() as (groq, proxy):
        groq.faults.always(FaultKind.LATENCY, seconds=30)
        async with httpx.AsyncClient(timeout=0.5) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(
                    f"{proxy.base_url}/chat/completions",
                    headers={"authorization": f"Bearer {proxy.key}"},
                    json={"model": "auto", "messages": USER},
                )
        await _until(lambda: groq.cancelled >= 1)
        usage = proxy.runtime.holder.state.ledger.usage[("groq", _only_key(proxy), GROQ_MODEL)]
        assert usage.inflight == 0  # settled the moment it was cancelled


async def test_a_restart_keeps_usage_and_cooldowns(
    proxy_factory: Callable[..., Any], shared_clock: SharedClock
) -> None:
    async with open_fake_provider(
        "groq", keys=["gsk-1"], models={GROQ_MODEL: FakeCaps()}, epoch=shared_clock.now
    ) as groq:
        config = config_text({"groq": groq}, {"groq": groq_models(rpm=30)}, [f"groq/{GROQ_MODEL}"])
        async with proxy_factory(config, {"groq": ["gsk-1"]}, clock=shared_clock.now) as proxy:
            client = async_client(proxy)
            await client.chat.completions.create(model="auto", messages=USER)
            groq.faults.next(1, FaultKind.RATE_LIMIT, retry_after=600)
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(model="auto", messages=USER)
            await client.close()
            key = _only_key(proxy)
            before = proxy.runtime.holder.state.ledger
        async with proxy_factory(
            config, {"groq": ["gsk-1"]}, clock=shared_clock.now, add_keys=False
        ) as again:
            after = again.runtime.holder.state.ledger
            now = shared_clock.now()
            assert after.usage[("groq", key, GROQ_MODEL)].minute.totals(now) == (
                before.usage[("groq", key, GROQ_MODEL)].minute.totals(now)
            )
            cooldown = ledger.cooldown_of(after, ("groq", key, GROQ_MODEL), now)
            assert cooldown is not None
            assert cooldown.until > now + 500
            client = async_client(again)
            with pytest.raises(openai.RateLimitError):  # still cooling down: not even tried
                await client.chat.completions.create(model="auto", messages=USER)
            assert groq.served == 1
            shared_clock.advance(601)
            answer = await client.chat.completions.create(model="auto", messages=USER)
            assert answer.choices[0].message.content
            await client.close()


async def test_bad_input_gets_openai_shaped_errors_naming_the_field(
    groq_proxy: Callable[..., Any],
) -> None:
    async with groq_proxy() as (groq, proxy):
        client = async_client(proxy)
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(
                model="auto",
                messages=[{"role": "wizard", "content": "hi"}],  # type: ignore[misc,list-item]
            )
        assert bad.value.param == "messages[0].role"
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="no-such-model", messages=USER)
        wrong = openai.AsyncOpenAI(base_url=proxy.base_url, api_key="freellm-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await wrong.chat.completions.create(model="auto", messages=USER)
        async with httpx.AsyncClient() as http:
            too_big = await http.post(
                f"{proxy.base_url}/chat/completions",
                headers={"x-api-key": proxy.key},
                content=b"{" + b" " * (11 * 1024 * 1024) + b"}",
            )
            assert too_big.status_code == 413
            assert too_big.json()["error"]["code"] == "request_too_large"
            models = await http.get(
                f"{proxy.base_url}/models", headers={"authorization": f"Bearer {proxy.key}"}
            )
            ids = [m["id"] for m in models.json()["data"]]
            assert ids[0] == "auto"
            assert f"groq/{GROQ_MODEL}" in ids
        assert groq.served == 0
        await client.close()
        await wrong.close()


async def _until(condition: Callable[[], bool], *, within: float = 5.0) -> None:
    """Wait (real time: these tests use real sockets) until the server side caught up."""
    with trio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - polling another server's counters
            await trio.sleep(0.01)


def _only_key(proxy: Proxy) -> str:
    (key,) = proxy.runtime.holder.state.topology.keys
    assert key.provider == "groq"
    return key.id


async def test_llm_comply_openai_chat_suite_passes(groq_proxy: Callable[..., Any]) -> None:
    """The outside conformance check: every applicable openai-chat check passes."""
    # The suite sends an image: the model must take one.
    async with groq_proxy(models=groq_models(vision=True, json=True)) as (_, proxy):
        report = await run_llm_comply(proxy)
    assert report.failed == {}
    assert report.skipped == ["chat-reasoning-summary"]  # needs an o-series model: not ours
    assert report.passed == report.total - len(report.skipped)


async def test_the_api_lists_keys_without_secrets_and_needs_the_key(
    proxy_factory: Callable[..., Any],
) -> None:
    async with open_fake_provider(
        "groq", keys=["gsk-secret-1"], models={GROQ_MODEL: FakeCaps()}
    ) as g:
        config = config_text({"groq": g}, {"groq": groq_models()}, [f"groq/{GROQ_MODEL}"])
        async with (
            proxy_factory(config, {"groq": ["gsk-secret-1"]}) as proxy,
            httpx.AsyncClient(base_url=proxy.url) as http,
        ):
            assert (await http.get("/api/keys")).status_code == 401
            listed = await http.get("/api/keys", headers={"x-api-key": proxy.key})
            assert listed.status_code == 200
            (entry,) = listed.json()["data"]
            assert entry["provider"] == "groq"
            assert "gsk-secret-1" not in listed.text
            chain = await http.get("/api/chain", headers={"x-api-key": proxy.key})
            assert [(e["target"], e["enabled"]) for e in chain.json()["data"]] == [
                (f"groq/{GROQ_MODEL}", True)
            ]
            ready = (await http.get("/readyz")).json()
            assert ready["status"] == "ready"
            assert all(job["ok"] for job in ready["background"].values())
            assert (await http.get("/metrics")).status_code == 401
            metrics = await http.get("/metrics", headers={"x-api-key": proxy.key})
            assert "freellm_requests_total" in metrics.text


async def test_unknown_request_fields_reach_an_openai_dialect_provider_untouched(
    groq_proxy: Callable[..., Any],
) -> None:
    async with groq_proxy() as (groq, proxy):
        client = async_client(proxy)
        await client.chat.completions.create(
            model="auto",
            messages=USER,
            seed=7,
            extra_body={"x_vendor_option": {"depth": 2}, "top_k": 40},
        )
        await client.close()
        sent = groq.requests[-1].body
        assert sent["x_vendor_option"] == {"depth": 2}
        assert sent["top_k"] == 40
        assert sent["seed"] == 7
        assert sent["model"] == GROQ_MODEL  # the provider's id, not "auto"


async def test_keys_check_reports_each_key_from_the_command_line(
    tmp_path: Path,
) -> None:
    async with open_fake_provider("groq", keys=["good"], models={GROQ_MODEL: FakeCaps()}) as groq:
        data = tmp_path / "data"
        config = config_text({"groq": groq}, {"groq": groq_models()}, [f"groq/{GROQ_MODEL}"])
        env = {"FREELLM_DATA_DIR": str(data), "ENCRYPTION_KEY": "9f" * 32, "PATH": ""}
        freellm = [sys.executable, "-m", "freellm.cli"]
        await trio.to_thread.run_sync(partial(data.mkdir, parents=True))
        await trio.Path(data / "freellm.toml").write_text(config)
        for secret in ("good", "bad"):
            await trio.run_process([*freellm, "keys", "add", "groq", secret], env=env)
        done = await trio.run_process(
            [*freellm, "keys", "check"], env=env, capture_stdout=True, check=False
        )
        lines = done.stdout.decode().splitlines()
        assert done.returncode == 1  # one key is not healthy
        assert sorted(line.split()[2] for line in lines) == ["healthy", "invalid"]
        assert "bad" not in done.stdout.decode().replace("(401: the provider refused the key)", "")


async def test_a_key_sealed_with_another_encryption_key_stays_out_and_the_server_runs_on(
    groq_proxy: Callable[..., Any],
) -> None:
    async with groq_proxy() as (_, proxy):
        runtime = proxy.runtime
        foreign = Vault(bytes.fromhex("77" * 32))
        record = await runtime.store.add_key(
            "groq", "", lambda key_id: foreign.seal(key_id, "groq", "gsk-elsewhere")
        )
        await runtime.settings.load()
        await runtime.settings.load()  # not tried again (the warning is logged once)
        topology = runtime.holder.state.topology
        assert topology.key("groq", record.id) is None
        assert len(topology.keys) == 1
        client = async_client(proxy)
        answer = await client.chat.completions.create(model="auto", messages=USER)
        assert answer.choices[0].message.content
        await client.close()


async def test_a_removed_key_leaves_routing_and_its_health_goes(
    groq_proxy: Callable[..., Any],
) -> None:
    async with groq_proxy() as (_, proxy):
        client = async_client(proxy)
        await client.chat.completions.create(model="auto", messages=USER)
        await client.close()
        runtime = proxy.runtime
        key = _only_key(proxy)
        assert runtime.holder.state.health.of("groq", key).state is health.State.HEALTHY
        assert await runtime.store.remove_key(key)
        await runtime.settings.load()
        state = runtime.holder.state
        assert state.topology.keys == ()
        assert ("groq", key) not in state.health.keys
