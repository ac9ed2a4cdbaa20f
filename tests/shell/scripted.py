"""Dispatchers over scripted providers, through the real upstream transport, in virtual time.

A :class:`Scenario` is a catalog, its keys and their secrets; :func:`open_harness` puts a
:class:`~freellm.shell.dispatch.Dispatcher` over it whose upstream pools connect, instead of over
TCP, to one end of a socket pair whose other end a small HTTP/1.1 server (h11) holds. That server
hands every request to a handler, written with httpx's request and response objects; a response
whose ``content`` is an async iterator is streamed chunk by chunk (``trio.sleep`` inside it is
virtual time), and an exception inside that iterator cuts the connection mid-body. So the
dispatch loop runs with freellm's own h11 transport, keep-alive pool and deadlines, on trio's
autojump clock, with no address at all.

Each provider's ``base_url`` is ``http://127.0.0.1:9/<provider>...``, so the first path segment
of a request names its provider; its key is found from the secret it carries.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import h11
import httpx
import trio

from freellm.core.catalog import Catalog, Timeouts
from freellm.core.chat import ChatShape, inspect_request
from freellm.core.router import Key, RouterState, Topology
from freellm.shell.dispatch import Dispatcher, RequestLog
from freellm.shell.state import StateHolder
from freellm.shell.upstream import open_upstreams

BASE = 1_780_000_000.0
TIMEOUTS = Timeouts(connect=1, first_byte=5, idle=5, total=20, drain=1)

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

    def topology(self) -> Topology:
        keys = [
            Key(provider, key_id, self.secrets[key_id])
            for provider, ids in self.keys.items()
            for key_id in ids
        ]
        return Topology(self.catalog, keys)


def provider_of(request: httpx.Request) -> str:
    return request.url.path.split("/")[1]


@attrs.frozen
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@attrs.define
class Recorder:
    """A client that keeps what it was sent, and checks the order: one start, then sends, and
    nothing after the last."""

    started: list[tuple[int, list[tuple[bytes, bytes]]]] = attrs.Factory(list)
    sent: list[bytes] = attrs.Factory(list)
    ended: bool = False

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        assert not self.started, "the response started twice"
        self.started.append((status, headers))

    async def send(self, data: bytes, *, more: bool) -> None:
        assert self.started, "a body before the response started"
        assert not self.ended, "a body after the response ended"
        self.sent.append(data)
        self.ended = not more

    def reply(self) -> Reply:
        assert len(self.started) == 1, self.started
        assert self.ended, "the response never ended"
        status, headers = self.started[0]
        return Reply(status, headers, b"".join(self.sent))


@attrs.define
class Harness:
    dispatcher: Dispatcher
    holder: StateHolder
    logs: list[RequestLog]
    seen: list[str]  # "provider#key" of every upstream call, in order
    requests: list[httpx.Request]
    connections: list[int]  # how many connections were opened, per provider call (a counter)

    @property
    def state(self) -> RouterState:
        return self.holder.state

    async def complete(self, request: dict[str, Any], **options: Any) -> Reply:
        recorder = Recorder()
        await self.dispatcher.serve(shape_of(request), request, recorder, **options)
        return recorder.reply()


async def _serve_connection(stream: trio.SocketStream, handler: Handler) -> None:
    """One HTTP/1.1 connection of the scripted server, request after request (keep-alive)."""
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            head: h11.Request | None = None
            body = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    head = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    return
            assert head is not None
            request = httpx.Request(
                head.method.decode(),
                "http://127.0.0.1:9" + head.target.decode(),
                headers=[(k, v) for k, v in head.headers],
                content=body,
            )
            async with trio.open_nursery() as answering:
                # Like a real server, notice the client going away while answering, and stop.
                answering.start_soon(_watch_for_close, stream, conn, answering.cancel_scope)
                await _answer(stream, conn, handler, request)
                answering.cancel_scope.cancel()
            if conn.our_state is not h11.DONE:
                return  # the client went away mid-answer
            conn.start_next_cycle()
    except* (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
        pass  # the client went away
    except* ConnectionError:
        pass  # the script cut the connection (see streamed)
    finally:
        stream.socket.close()  # a handler's exception cuts the connection here, mid-body


def scripted_connect(handler: Handler, nursery: trio.Nursery, opened: list[int]) -> Any:
    """A ``connect`` for the transport: each connection is a socket pair, its far end served by
    ``handler`` in ``nursery``; ``opened`` counts them."""

    async def connect(host: str, port: int) -> trio.SocketStream:
        ours, theirs = trio.socket.socketpair()
        opened.append(1)
        nursery.start_soon(_serve_connection, trio.SocketStream(theirs), handler)
        return trio.SocketStream(ours)

    return connect


async def _answer(
    stream: trio.SocketStream, conn: h11.Connection, handler: Handler, request: httpx.Request
) -> None:
    result = handler(request)
    response = await result if inspect.isawaitable(result) else result
    headers = [
        (k, v)
        for k, v in response.headers.raw
        if k.lower() not in (b"transfer-encoding", b"connection")
    ]
    await stream.send_all(
        conn.send(h11.Response(status_code=response.status_code, headers=headers))
    )
    # The handler's own async iterator (httpx keeps it as ``_stream``), closed if the client
    # goes away mid-body; a body given as bytes is sent whole.
    parts = getattr(response.stream, "_stream", None)
    if isinstance(parts, bytes | type(None)):
        await stream.send_all(conn.send(h11.Data(data=response.content)))
    else:
        try:
            async for part in parts:
                if part:
                    await stream.send_all(conn.send(h11.Data(data=part)))
        finally:
            await parts.aclose()
    await stream.send_all(conn.send(h11.EndOfMessage()))


async def _watch_for_close(
    stream: trio.SocketStream, conn: h11.Connection, answering: trio.CancelScope
) -> None:
    data = await stream.receive_some(65536)
    if data:
        conn.receive_data(data)  # the client sent more than its request: keep it for later
        await trio.sleep_forever()
    answering.cancel()


@asynccontextmanager
async def open_harness(
    scenario: Scenario, handler: Handler, nursery: trio.Nursery
) -> AsyncIterator[Harness]:
    """A harness whose scripted server runs its connections in ``nursery`` (a fixture's, so
    that the test's task never owns it)."""
    seen: list[str] = []
    requests: list[httpx.Request] = []
    opened: list[int] = []

    def recording(request: httpx.Request) -> Any:
        seen.append(f"{provider_of(request)}#{scenario.key_of(request)}")
        requests.append(request)
        return handler(request)

    connect = scripted_connect(recording, nursery, opened)
    async with open_upstreams(TIMEOUTS, connect=connect) as upstreams:
        logs: list[RequestLog] = []
        holder = StateHolder(RouterState(scenario.topology()))
        dispatcher = Dispatcher(
            holder,
            upstreams,
            clock=lambda: BASE + trio.current_time(),
            observers=(logs.append,),
        )
        yield Harness(dispatcher, holder, logs, seen, requests, opened)


@asynccontextmanager
async def harnesses(scenario: Scenario) -> AsyncIterator[Callable[[Handler], Any]]:
    """``make(handler)``: harnesses over ``scenario``, all closed on the way out. For a fixture."""
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:

        async def make(handler: Handler) -> Harness:
            return await stack.enter_async_context(open_harness(scenario, handler, nursery))

        yield make
        nursery.cancel_scope.cancel()


def shape_of(body: dict[str, Any]) -> ChatShape:
    shape = inspect_request(body)
    assert isinstance(shape, ChatShape), shape
    return shape


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": "hello"}], **extra}


async def collect_stream(h: Harness, request: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    reply = await h.complete(request)
    return reply.status, headers(reply.headers), reply.body


def streamed(*parts: bytes, pause: float = 0.0, cut: bool = False) -> httpx.Response:
    """A 200 SSE response of ``parts``, ``pause`` virtual seconds apart; ``cut``: the connection
    breaks after the last part instead of the body ending."""

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            if pause:
                await trio.sleep(pause)
            yield part
        if cut:
            raise ConnectionResetError("cut by the script")

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


def headers(reply_headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in reply_headers}
