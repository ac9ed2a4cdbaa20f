"""Many requests at once: no silent waits for a connection, and every stream completes.

The sizes here are what CI can carry (hundreds); ``bench/peers.py`` runs thousands.
"""

from __future__ import annotations

import json
import resource
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from harness import CLIENT_GENERATORS, Proxy, config_text, running_proxy

from freellm.core import ledger
from freellm.sim.fakes import FakeCaps, FaultKind, open_fake_provider
from freellm.web.server import raise_open_files_limit

pytestmark = CLIENT_GENERATORS

GROQ_MODEL = "llama-3.3-70b-versatile"
CEREBRAS_MODEL = "qwen-3-235b-a22b-instruct-2507"
BODY = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}


def models(provider: str, model: str) -> str:
    return f'[[providers.{provider}.models]]\nid = "{model}"\ncontext = 131072\n'


@pytest.fixture
def two_providers(tmp_path: Path) -> Callable[..., Any]:
    """groq first in the chain, cerebras second, each a fake with one key, and extra config."""

    def start(extra: str = "", **options: Any) -> Any:
        return _TwoProviders(tmp_path / "data", extra, options)

    return start


class _TwoProviders:
    def __init__(self, data_dir: Path, extra: str, options: dict[str, Any]) -> None:
        self._data_dir, self._extra, self._options = data_dir, extra, options
        self._stack: Any = None

    async def __aenter__(self) -> tuple[Any, Any, Proxy]:
        from contextlib import AsyncExitStack

        self._stack = stack = AsyncExitStack()
        await stack.__aenter__()
        groq = await stack.enter_async_context(
            open_fake_provider("groq", keys=["gsk-1"], models={GROQ_MODEL: FakeCaps()})
        )
        cerebras = await stack.enter_async_context(
            open_fake_provider("cerebras", keys=["csk-1"], models={CEREBRAS_MODEL: FakeCaps()})
        )
        config = config_text(
            {"groq": groq, "cerebras": cerebras},
            {"groq": models("groq", GROQ_MODEL), "cerebras": models("cerebras", CEREBRAS_MODEL)},
            [f"groq/{GROQ_MODEL}", f"cerebras/{CEREBRAS_MODEL}"],
        )
        proxy = await stack.enter_async_context(
            running_proxy(
                self._data_dir,
                config + self._extra,
                {"groq": ["gsk-1"], "cerebras": ["csk-1"]},
                **self._options,
            )
        )
        return groq, cerebras, proxy

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.__aexit__(*exc)


def _inflight(proxy: Proxy) -> int:
    usage = proxy.runtime.holder.state.ledger.usage
    return sum(u.inflight for u in usage.values() if isinstance(u, ledger.Usage))


async def test_a_full_pool_fails_over_after_the_pool_wait_instead_of_hanging(
    two_providers: Callable[..., Any],
) -> None:
    extra = "[pool]\nmax_connections = 1\n[timeouts]\npool_s = 0.3\n"
    async with two_providers(extra) as (groq, _, proxy):
        groq.faults.next(1, FaultKind.LATENCY, seconds=1.5)  # holds groq's only connection
        headers = {"authorization": f"Bearer {proxy.key}"}
        url = f"{proxy.base_url}/chat/completions"
        async with httpx.AsyncClient(timeout=10) as client, trio.open_nursery() as nursery:
            held: list[httpx.Response] = []

            async def hold() -> None:
                held.append(await client.post(url, headers=headers, json=BODY))

            nursery.start_soon(hold)
            with trio.fail_after(2):
                while not groq.requests:  # noqa: ASYNC110 - the fake's counter, another server
                    await trio.sleep(0.01)
            during = await _metrics(proxy)
            assert during["freellm_requests_in_progress"] == 1
            assert during['freellm_upstream_connections{state="open"}'] == 1
            started = trio.current_time()
            response = await client.post(url, headers=headers, json=BODY)
            waited = trio.current_time() - started
        assert response.status_code == 200
        assert response.headers["x-routed-via"] == f"cerebras/{CEREBRAS_MODEL}"
        assert response.headers["x-fallback-trail"].startswith(
            f"groq/{GROQ_MODEL}=connection_error,"
        )
        assert 0.3 <= waited < 1.2  # the pool wait, not the held call's 1.5 s
        assert held[0].headers["x-routed-via"] == f"groq/{GROQ_MODEL}"
        assert _inflight(proxy) == 0


async def test_hundreds_of_concurrent_streams_all_complete(
    two_providers: Callable[..., Any],
) -> None:
    # Each stream is held open ~1.5 s by its provider (chunks 0.1 s apart), so all of them are
    # open at once: more than the 64 connections per provider that once capped them silently.
    count = 300
    async with two_providers() as (groq, _, proxy):
        groq.faults.always(FaultKind.LATENCY, gap=0.1)
        headers = {"authorization": f"Bearer {proxy.key}"}
        url = f"{proxy.base_url}/chat/completions"
        done: list[int] = []
        peak = 0

        async def watch_connections() -> None:
            nonlocal peak
            while True:
                peak = max(peak, proxy.runtime.upstreams.connections()[0])
                await trio.sleep(0.05)

        limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:

            async def stream() -> None:
                body = {**BODY, "stream": True}
                async with client.stream("POST", url, headers=headers, json=body) as response:
                    assert response.status_code == 200
                    assert response.headers["x-routed-via"] == f"groq/{GROQ_MODEL}"
                    events = [line async for line in response.aiter_lines() if line]
                assert events[-1] == "data: [DONE]"
                assert json.loads(events[0].removeprefix("data: "))["object"] == (
                    "chat.completion.chunk"
                )
                done.append(1)

            with trio.fail_after(25):
                async with trio.open_nursery() as watching:
                    watching.start_soon(watch_connections)
                    async with trio.open_nursery() as nursery:
                        for _ in range(count):
                            nursery.start_soon(stream)
                    watching.cancel_scope.cancel()
        assert len(done) == count
        assert peak > 64  # they really were open upstream at once
        assert _inflight(proxy) == 0
        # A stream's body may still be ending after [DONE] reached its client (its drain).
        with trio.fail_after(2):
            while (connections := proxy.runtime.upstreams.connections())[0] != connections[1]:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert connections[1] <= 32  # nothing busy is left, and the pool kept only its idle cap
        metrics = await _metrics(proxy)
        assert metrics["freellm_requests_in_progress"] == 0
        assert metrics['freellm_upstream_connections{state="open"}'] == connections[0]
        assert metrics['freellm_upstream_connections{state="idle"}'] == connections[1]


async def test_a_connection_close_request_answered_502_after_the_pool_wait_is_closed(
    two_providers: Callable[..., Any],
) -> None:
    extra = "[pool]\nmax_connections = 1\n[timeouts]\npool_s = 0.2\n"
    async with two_providers(extra) as (groq, cerebras, proxy):
        groq.faults.next(1, FaultKind.LATENCY, seconds=1.5)
        cerebras.faults.next(1, FaultKind.LATENCY, seconds=1.5)
        headers = {"authorization": f"Bearer {proxy.key}"}
        url = f"{proxy.base_url}/chat/completions"
        async with httpx.AsyncClient(timeout=10) as client, trio.open_nursery() as nursery:
            for target in (f"groq/{GROQ_MODEL}", f"cerebras/{CEREBRAS_MODEL}"):
                nursery.start_soon(
                    partial(client.post, url, headers=headers, json={**BODY, "model": target})
                )
            with trio.fail_after(2):
                while not (groq.requests and cerebras.requests):  # noqa: ASYNC110
                    await trio.sleep(0.01)
            received = await _raw_post(proxy, json.dumps(BODY).encode(), b"Connection: close\r\n")
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 502 ")
        assert b"connection: close" in head.lower()
        assert json.loads(body)["error"]["message"]
        assert _inflight(proxy) == 0


async def _metrics(proxy: Proxy) -> dict[str, float]:
    """``/metrics`` as ``{"name{labels}": value}``."""
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{proxy.url}/metrics", headers={"authorization": f"Bearer {proxy.key}"}
        )
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def _raw_post(proxy: Proxy, body: bytes, extra_headers: bytes) -> bytes:
    """POST ``body`` on a socket of its own and read until the server closes it (within 5 s:
    a server that keeps the connection open fails the test)."""
    host, port = proxy.url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {proxy.key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
    ).encode()
    await stream.send_all(head + extra_headers + b"\r\n" + body)
    received = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            received += chunk
    await stream.aclose()
    return received


def test_serving_raises_the_open_files_limit_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        raised = raise_open_files_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == raised
        assert raised == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_kept_alive_connection_its_client_closes_ends_at_once_on_the_server(
    two_providers: Callable[..., Any],
) -> None:
    # Every pooled client closes its idle connections when it is done; the server must not
    # hold each one (its task and socket) until keep_alive_timeout.
    async with two_providers() as (_, _, proxy):
        port = int(proxy.url.rpartition(":")[2])
        headers = {"authorization": f"Bearer {proxy.key}"}
        async with httpx.AsyncClient(base_url=proxy.base_url, headers=headers) as client:
            for stream in (False, True):
                response = await client.post("/chat/completions", json={**BODY, "stream": stream})
                assert response.status_code == 200
            assert _server_sockets(port) == 1  # the one kept-alive connection, idle now
        with trio.fail_after(2):
            while _server_sockets(port):  # noqa: ASYNC110 - the kernel's table, not ours
                await trio.sleep(0.01)


def _server_sockets(port: int) -> int:
    """Connections the server holds on ``port``: established or waiting for it to close."""
    held = {"01", "08"}  # ESTABLISHED, CLOSE_WAIT (the client closed; the server has not)
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rpartition(":")[2], 16)
        if local_port == port and fields[3] in held:
            count += 1
    return count
