"""A running server as a user meets it: what streams announce, settings changed while it runs,
and the answers a misconfigured instance gives. Real server, fakes, SDK and command line."""

from __future__ import annotations

import itertools
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio
from harness import CLIENT_GENERATORS, ENCRYPTION_KEY, Proxy, config_text, running_proxy
from openai.types.chat import ChatCompletionMessageParam

from freellm.shell.store import RequestRecord, Store
from freellm.sim.fakes import FakeCaps, FakeProvider, open_fake_provider
from freellm.web import server

pytestmark = CLIENT_GENERATORS  # the SDK's generators: see harness.py

GROQ_MODEL = "llama-3.3-70b-versatile"
CEREBRAS_MODEL = "qwen-3-235b-a22b-instruct-2507"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello from the tests"}]
LIVE_S = 2.0  # a change made while the server runs reaches it within this long
FREELLM = [sys.executable, "-m", "freellm.cli"]


def models(provider: str, model: str, caps: str = "") -> str:
    return f'[[providers.{provider}.models]]\nid = "{model}"\ncontext = 131072\n{caps}\n'


def client_of(proxy: Proxy, key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.base_url, api_key=key or proxy.key, max_retries=0)


async def cli(data_dir: Path, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """``freellm ARGS`` in a process of its own, on the server's data dir and encryption key."""
    env = {"ENCRYPTION_KEY": ENCRYPTION_KEY, "FREELLM_DATA_DIR": str(data_dir), "PATH": ""}
    done = await trio.run_process(
        [*FREELLM, *args],
        env=env,
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def within(seconds: float, condition: Callable[[], Any]) -> float:
    """Wait (real time: the server runs on real sockets) until ``await condition()`` is true;
    how long it took. Fails after ``seconds``."""
    started = trio.current_time()
    with trio.fail_after(seconds):
        while not await condition():  # noqa: ASYNC110 - polling another process's doing
            await trio.sleep(0.05)
    return trio.current_time() - started


@asynccontextmanager
async def two_providers(
    tmp_path: Path, *, groq_keys: tuple[str, ...] = ("gsk-1",)
) -> AsyncIterator[tuple[FakeProvider, FakeProvider, Proxy]]:
    async with (
        open_fake_provider("groq", keys=["gsk-1", "gsk-2"], models={GROQ_MODEL: FakeCaps()}) as g,
        open_fake_provider("cerebras", keys=["csk-1"], models={CEREBRAS_MODEL: FakeCaps()}) as c,
    ):
        config = config_text(
            {"groq": g, "cerebras": c},
            {"groq": models("groq", GROQ_MODEL), "cerebras": models("cerebras", CEREBRAS_MODEL)},
            [f"groq/{GROQ_MODEL}", f"cerebras/{CEREBRAS_MODEL}"],
        )
        keys = {"groq": list(groq_keys), "cerebras": ["csk-1"]}
        async with running_proxy(tmp_path / "data", config, keys) as proxy:
            yield g, c, proxy


_asked = itertools.count()


async def routed_via(proxy: Proxy, key: str | None = None) -> str:
    """Where an ``auto`` request goes (its status, if it fails): a new conversation each time,
    so that no sticky session keeps it where an earlier one went."""
    opening = f"question number {next(_asked)}"
    async with httpx.AsyncClient(base_url=proxy.base_url) as http:
        answer = await http.post(
            "/chat/completions",
            headers={"authorization": f"Bearer {key or proxy.key}"},
            json={"model": "auto", "messages": [{"role": "user", "content": opening}]},
        )
    return str(answer.headers.get("x-routed-via", answer.status_code))


# --- a stream's rate-limit headers -------------------------------------------------------------


async def test_a_streams_rate_limit_headers_keep_freellm_under_the_providers_cap(
    tmp_path: Path,
) -> None:
    """Groq announces its requests-per-day in headers only; the config knows no cap. Streams
    must respect what the headers said exactly as JSON calls do: no self-inflicted 429."""
    caps = {GROQ_MODEL: FakeCaps(rpd=3)}
    async with open_fake_provider("groq", keys=["gsk-1"], models=caps) as groq:
        config = config_text({"groq": groq}, {"groq": models("groq", GROQ_MODEL)}, [])
        async with running_proxy(tmp_path / "data", config, {"groq": ["gsk-1"]}) as proxy:
            client = client_of(proxy)
            for _ in range(3):
                stream = await client.chat.completions.create(
                    model=f"groq/{GROQ_MODEL}", messages=USER, stream=True
                )
                async with stream:
                    assert [chunk async for chunk in stream]
            with pytest.raises(openai.RateLimitError) as refused:
                stream = await client.chat.completions.create(
                    model=f"groq/{GROQ_MODEL}", messages=USER, stream=True
                )
            assert int(refused.value.response.headers["retry-after"]) >= 1
            await client.close()
    assert groq.served == 3
    assert groq.rate_limited == 0  # the 4th never went upstream


# --- settings changed while the server runs ----------------------------------------------------


async def test_chain_set_reaches_a_running_server_within_two_seconds(tmp_path: Path) -> None:
    async with two_providers(tmp_path) as (_, _, proxy):
        assert await routed_via(proxy) == f"groq/{GROQ_MODEL}"
        chain = [f"cerebras/{CEREBRAS_MODEL}", f"groq/{GROQ_MODEL}"]
        status, out, _ = await cli(tmp_path / "data", "chain", "set", *chain)
        assert status == 0
        assert "within 2 s" in out

        async def moved() -> bool:
            return await routed_via(proxy) == f"cerebras/{CEREBRAS_MODEL}"

        await within(LIVE_S, moved)


async def test_token_regenerate_ends_the_old_key_within_two_seconds(tmp_path: Path) -> None:
    async with two_providers(tmp_path) as (_, _, proxy):
        old = proxy.key
        status, out, err = await cli(tmp_path / "data", "token", "--regenerate")
        assert status == 0
        new = out.strip()
        assert new.startswith("freellm-")
        assert new != old
        assert "no longer works" in err

        async def switched() -> bool:
            return await routed_via(proxy, old) == "401"

        await within(LIVE_S, switched)
        assert await routed_via(proxy, new) == f"groq/{GROQ_MODEL}"


async def test_keys_disable_enable_and_edit_reach_a_running_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with two_providers(tmp_path, groq_keys=("gsk-wrong",)) as (groq, _, proxy):
        # The one Groq key is wrong: its 401 sends the request on to Cerebras.
        assert await routed_via(proxy) == f"cerebras/{CEREBRAS_MODEL}"
        _, listed, _ = await cli(data, "keys", "list")
        (groq_key,) = [line.split()[0] for line in listed.splitlines() if " groq " in line]

        status, out, _ = await cli(
            data, "keys", "edit", groq_key, "--secret", "-", stdin=b"gsk-2\n"
        )
        assert status == 0
        assert "gsk-2" not in out

        async def groq_again() -> bool:
            return await routed_via(proxy) == f"groq/{GROQ_MODEL}"

        await within(LIVE_S, groq_again)  # the new secret works, and its health starts over
        assert (await cli(data, "keys", "disable", groq_key))[0] == 0

        async def groq_gone() -> bool:
            return await routed_via(proxy) == f"cerebras/{CEREBRAS_MODEL}"

        await within(LIVE_S, groq_gone)
        assert (await cli(data, "keys", "enable", groq_key))[0] == 0
        await within(LIVE_S, groq_again)
        assert [r.key_id for r in groq.requests if r.key_id is not None]  # the new secret's calls


async def test_keys_added_and_removed_reach_a_running_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with two_providers(tmp_path, groq_keys=()) as (_, _, proxy):
        assert await routed_via(proxy) == f"cerebras/{CEREBRAS_MODEL}"  # Groq has no key
        status, out, _ = await cli(data, "keys", "add", "groq", "-", stdin=b"gsk-1\n")
        assert status == 0
        groq_key = out.split()[1]

        async def groq_used() -> bool:
            return await routed_via(proxy) == f"groq/{GROQ_MODEL}"

        await within(LIVE_S, groq_used)
        assert (await cli(data, "keys", "remove", groq_key))[0] == 0

        async def groq_gone() -> bool:
            return await routed_via(proxy) == f"cerebras/{CEREBRAS_MODEL}"

        await within(LIVE_S, groq_gone)


async def test_keys_list_shows_the_health_the_server_saw_in_traffic(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with two_providers(tmp_path, groq_keys=("gsk-wrong",)) as (_, _, proxy):
        assert await routed_via(proxy) == f"cerebras/{CEREBRAS_MODEL}"  # Groq said 401

        async def listed_invalid() -> bool:
            _, listed, _ = await cli(data, "keys", "list")
            line = next(line for line in listed.splitlines() if " groq " in line)
            return " invalid" in line and "401" in line

        await within(LIVE_S + 3, listed_invalid)  # + the command's own start-up
        _, listed, _ = await cli(data, "keys", "list")
        assert "gsk-wrong" not in listed


async def test_a_key_check_from_the_command_line_reaches_the_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with two_providers(tmp_path, groq_keys=("gsk-wrong",)) as (groq, _, proxy):
        assert await routed_via(proxy) == f"cerebras/{CEREBRAS_MODEL}"  # Groq's key: invalid
        _, listed, _ = await cli(data, "keys", "list")
        (groq_key,) = [line.split()[0] for line in listed.splitlines() if " groq " in line]
        # The key becomes valid at the provider; the command line's check finds it so.
        groq.accept_key("gsk-wrong")
        status, out, _ = await cli(data, "keys", "check", groq_key)
        assert (status, out.split()[2]) == (0, "healthy")

        async def back() -> bool:
            return await routed_via(proxy) == f"groq/{GROQ_MODEL}"

        await within(LIVE_S, back)


# --- what a misconfigured instance answers -----------------------------------------------------


async def test_no_key_at_all_is_a_503_that_says_how_to_add_one(tmp_path: Path) -> None:
    async with open_fake_provider("groq", keys=["gsk-1"]) as groq:
        config = config_text({"groq": groq}, {"groq": models("groq", GROQ_MODEL)}, [])
        async with (
            running_proxy(tmp_path / "data", config, {}) as proxy,
            httpx.AsyncClient(base_url=proxy.base_url) as http,
        ):
            answer = await http.post(
                "/chat/completions",
                headers={"authorization": f"Bearer {proxy.key}"},
                json={"model": "auto", "messages": USER},
            )
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "no_keys"
    assert "freellm keys add" in error["message"]
    assert "dashboard" in error["message"]


async def test_every_answer_with_attempts_carries_the_fallback_trail(tmp_path: Path) -> None:
    async with (
        two_providers(tmp_path, groq_keys=("gsk-wrong",)) as (_, _, proxy),
        httpx.AsyncClient(base_url=proxy.base_url) as http,
    ):
        answer = await http.post(
            "/chat/completions",
            headers={"authorization": f"Bearer {proxy.key}"},
            json={"model": "auto", "messages": USER},
        )
    assert answer.status_code == 200
    # Provider, model and outcome per candidate: no secret, no key id.
    trail = f"groq/{GROQ_MODEL}=401,cerebras/{CEREBRAS_MODEL}=ok"
    assert answer.headers["x-fallback-trail"] == trail


async def test_a_body_session_id_keeps_a_conversation_on_its_model(tmp_path: Path) -> None:
    async with (
        two_providers(tmp_path) as (_, cerebras, proxy),
        httpx.AsyncClient(base_url=proxy.base_url) as http,
    ):
        auth = {"authorization": f"Bearer {proxy.key}"}
        first = await http.post(
            "/chat/completions",
            headers=auth,
            json={
                "model": f"cerebras/{CEREBRAS_MODEL}",
                "messages": USER,
                "session_id": "conversation-1",
            },
        )
        assert first.headers["x-routed-via"] == f"cerebras/{CEREBRAS_MODEL}"
        # auto would pick Groq first; the session keeps the conversation on Cerebras.
        later = await http.post(
            "/chat/completions",
            headers=auth,
            json={
                "model": "auto",
                "messages": [{"role": "user", "content": "a different opening"}],
                "session_id": "conversation-1",
            },
        )
        other = await http.post(
            "/chat/completions",
            headers=auth,
            json={"model": "auto", "messages": [{"role": "user", "content": "another"}]},
        )
    assert later.headers["x-routed-via"] == f"cerebras/{CEREBRAS_MODEL}"
    assert other.headers["x-routed-via"] == f"groq/{GROQ_MODEL}"
    # freellm's own field goes no further than freellm.
    assert all("session_id" not in request.body for request in cerebras.requests)


# --- background work never takes the server down -----------------------------------------------


async def test_a_failing_background_job_shows_in_readyz_and_the_server_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with two_providers(tmp_path) as (_, _, proxy):
        broken = True
        data_version = Store.data_version

        async def flaky(self: Store) -> int:
            if broken:
                raise sqlite3.OperationalError("disk I/O error")
            return await data_version(self)

        monkeypatch.setattr(Store, "data_version", flaky)
        async with httpx.AsyncClient(base_url=proxy.url) as http:

            async def degraded() -> bool:
                ready = (await http.get("/readyz")).json()
                return bool(ready["status"] == "degraded")

            await within(LIVE_S, degraded)
            detail = (await http.get("/readyz")).json()["background"]
            assert detail["settings"]["last_error"] == "OperationalError: disk I/O error"
            assert detail["log writer"]["ok"]
            assert await routed_via(proxy) == f"groq/{GROQ_MODEL}"  # it still serves
            broken = False

            async def ready() -> bool:
                answer = await http.get("/readyz")
                return answer.status_code == 200 and answer.json()["status"] == "ready"

            await within(LIVE_S + 2, ready)  # the next try, after a backoff of 1 then 2 s


async def test_a_state_save_that_fails_shows_in_readyz_and_the_server_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def disk_full(self: Store, name: str, value: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Store, "save_state", disk_full)
    async with two_providers(tmp_path) as (_, _, proxy):
        async with httpx.AsyncClient(base_url=proxy.url) as http:
            ready = await http.get("/readyz")
            state = ready.json()["background"]["state"]
            assert (ready.status_code, ready.json()["status"]) == (200, "degraded")
            assert state["last_error"] == "OperationalError: database or disk is full"
        assert await routed_via(proxy) == f"groq/{GROQ_MODEL}"


async def test_the_request_log_keeps_keep_days_of_requests(tmp_path: Path) -> None:
    async with open_fake_provider("groq", keys=["gsk-1"]) as groq:
        config = config_text({"groq": groq}, {"groq": models("groq", GROQ_MODEL)}, [])
        config += "\n[store]\nkeep_days = 2\n"
        async with running_proxy(tmp_path / "data", config, {"groq": ["gsk-1"]}) as proxy:
            runtime = proxy.runtime
            now = runtime.clock()
            for n, age_days in enumerate((3.0, 1.0)):
                runtime.store.log_request(
                    RequestRecord(
                        id=f"req_{n}",
                        at=now - age_days * 86_400,
                        model="auto",
                        routed_via=None,
                        status=200,
                        latency_ms=1.0,
                        prompt_tokens=None,
                        completion_tokens=None,
                        attempts=0,
                        stream=False,
                        session=None,
                        error=None,
                    )
                )
            await runtime.store.flush()
            await runtime.prune_log()  # the hourly round, now
            kept = [record.id for record in await runtime.store.recent_requests()]
    assert kept == ["req_1"]


async def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a response, hypercorn starts the connection's keep-alive timer. The request must
    not be cancelled while hypercorn does so (the end of a response also says
    ``http.disconnect``), or a client that keeps its connection idle holds it open forever."""
    configured = server.server_config

    def short_keep_alive(host: str, port: int) -> Any:
        config = configured(host, port)
        config.keep_alive_timeout = 0.5
        return config

    monkeypatch.setattr(server, "server_config", short_keep_alive)
    async with two_providers(tmp_path) as (_, _, proxy):
        host, port = proxy.url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        body = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}]}'
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\n"
            f"authorization: Bearer {proxy.key}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        )
        async with stream:
            await stream.send_all(head.encode() + body)
            answer = b""
            with trio.fail_after(5):
                while b'"choices"' not in answer:
                    answer += await stream.receive_some(65536)
            assert answer.startswith(b"HTTP/1.1 200")
            with trio.fail_after(3):  # closed by the server after 0.5 s idle, not held open
                while data := await stream.receive_some(65536):
                    answer += data
