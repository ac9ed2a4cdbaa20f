"""Dispatchers over scripted providers (``httpx.MockTransport``), for the dispatch-loop tests.

A :class:`Scenario` is a catalog, its keys and their secrets; :func:`open_harness` puts a
:class:`~freellm.shell.dispatch.Dispatcher` over it whose every upstream call goes to a handler.
Each provider's ``base_url`` is ``http://127.0.0.1:9/<provider>...``, so the first path segment
of a request names its provider; its key is found from the secret it carries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import trio

from freellm.core.catalog import Catalog
from freellm.core.chat import ChatShape, inspect_request
from freellm.core.router import RouterState, Topology
from freellm.shell.dispatch import Dispatcher, RequestLog
from freellm.shell.upstream import Timeouts, open_upstreams

BASE = 1_780_000_000.0
TIMEOUTS = Timeouts(connect=1, first_byte=5, idle=5, total=20)

Handler = Callable[[httpx.Request], Any]  # returns a response, or an awaitable of one


@attrs.frozen
class Scenario:
    catalog: Catalog
    keys: Mapping[str, Sequence[str]]
    secrets: Mapping[str, str]

    def key_of(self, request: httpx.Request) -> str:
        secret = request.headers.get("x-goog-api-key") or request.headers["authorization"]
        secret = secret.removeprefix("Bearer ")
        return next(k for k, v in self.secrets.items() if v == secret)


def provider_of(request: httpx.Request) -> str:
    return request.url.path.split("/")[1]


@attrs.define
class Harness:
    dispatcher: Dispatcher
    logs: list[RequestLog]
    seen: list[str]  # "provider#key" of every upstream call, in order
    requests: list[httpx.Request]

    @property
    def state(self) -> RouterState:
        return self.dispatcher.state


@asynccontextmanager
async def open_harness(scenario: Scenario, handler: Handler) -> AsyncIterator[Harness]:
    seen: list[str] = []
    requests: list[httpx.Request] = []

    async def recording(request: httpx.Request) -> httpx.Response:
        seen.append(f"{provider_of(request)}#{scenario.key_of(request)}")
        requests.append(request)
        result = handler(request)
        if isinstance(result, httpx.Response):
            return result
        return await result  # type: ignore[no-any-return]

    transport = httpx.MockTransport(recording)
    async with open_upstreams(TIMEOUTS, transport=transport) as upstreams:
        logs: list[RequestLog] = []
        dispatcher = Dispatcher(
            RouterState(Topology(scenario.catalog, scenario.keys)),
            scenario.secrets,
            upstreams,
            clock=lambda: BASE + trio.current_time(),
            observers=(logs.append,),
        )
        yield Harness(dispatcher, logs, seen, requests)


def shape_of(body: dict[str, Any]) -> ChatShape:
    shape = inspect_request(body)
    assert isinstance(shape, ChatShape), shape
    return shape


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": "hello"}], **extra}


async def collect_stream(h: Harness, request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    started: list[tuple[int, list[tuple[bytes, bytes]]]] = []
    sent: list[bytes] = []

    async def start(status: int, hdrs: list[tuple[bytes, bytes]]) -> None:
        started.append((status, hdrs))

    async def send(data: bytes) -> None:
        assert started, "a chunk before the response started"
        sent.append(data)

    await h.dispatcher.stream(shape_of(request), request, start, send)
    assert len(started) == 1
    return started[0][0], headers(started[0][1]), b"".join(sent)


def streamed(*parts: bytes) -> httpx.Response:
    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


def headers(reply_headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in reply_headers}
