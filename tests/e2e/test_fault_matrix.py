"""The fault matrix: every fault a provider can have, for a JSON answer and a stream, on the
first candidate of the plan and on the last one.

Each case runs a real freellm on loopback in front of two fake providers, ``groq`` first in the
chain and ``cerebras`` second, each with one key, and sends one request with httpx. The faults
each dialect words its own way run again with Gemini's and Cohere's native APIs first.

- *first*: the fault hits the first candidate only. The client gets the second one's answer,
  200, with ``X-Fallback-Attempts: 1`` and the trail ``groq/...=<fault>,cerebras/...=ok``.
- *last*: every candidate has the fault. The client gets a clear OpenAI-shaped error: 429 with
  ``Retry-After`` when the free tiers are spent (a 429 upstream), 502 when the providers
  failed (everything else).

A fault that strikes a stream after its first chunk reached the client (a cut, an error event,
a stall) cannot fail over: the client's stream ends with an SSE ``error`` event, then
``data: [DONE]``. On *first* it is the first candidate's stream; on *last* the first candidate
answers 503 and the fault hits the second, the last of the plan.

Whatever happens, the client never waits past its own deadline (a hang fails the case), never
sees a 500 or a traceback or a provider key, and once it has its answer the server is back
where it started: no ticket in flight in the ledger, no request in flight at a fake, every
connection to a provider idle in its pool or closed (counted in the pool and, independently,
as this process's sockets in ``/proc``), no task left over in the server, and nothing logged
at ERROR.

The connect faults cannot be acted by a running fake: the provider's ``base_url`` points at a
port of :mod:`freellm.sim.fakes.unreachable` instead: a full accept queue (connects time out) or
a bound port that does not listen (connects are refused). The pool fault uses ``[pool]
max_connections = 1``: a request hanging upstream holds the provider's only connection while
the case's request waits ``[timeouts] pool_s`` for it, then fails over.
"""

from __future__ import annotations

import enum
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import httpx
import pytest
import trio
from harness import CLIENT_GENERATORS, Proxy, running_proxy, vault_in_process

from freellm.shell.upstream import Timeouts
from freellm.sim.fakes import (
    FakeCaps,
    FakeProvider,
    FaultKind,
    open_closed_port,
    open_fake_provider,
    open_silent_port,
)

pytestmark = CLIENT_GENERATORS


@pytest.fixture(autouse=True)
def _vault_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server per case: its vault helper runs in this process (see the harness)."""
    vault_in_process(monkeypatch)


@attrs.frozen
class Upstream:
    """A provider as the catalog names it (`provider`), and its fake (`flavor`)."""

    provider: str
    flavor: str
    model: str
    secret: str

    @property
    def target(self) -> str:
        return f"{self.provider}/{self.model}"


GROQ: Final = Upstream("groq", "groq", "llama-3.3-70b-versatile", "gsk-matrix-first-key-01234567")
GEMINI: Final = Upstream("google", "gemini", "gemini-2.5-flash", "AIza-matrix-gemini-key-0123456")
COHERE: Final = Upstream("cohere", "cohere", "command-a-03-2025", "co-matrix-cohere-key-012345678")
SECOND: Final = Upstream(
    "cerebras", "cerebras", "qwen-3-235b-a22b-instruct-2507", "csk-matrix-second-key-9876543"
)
SECRETS: Final = tuple(upstream.secret for upstream in (GROQ, GEMINI, COHERE, SECOND))
PROMPT: Final = "hello from the fault matrix, tell me a few words back"

# Deadlines for the faults that need one to pass (a hang, a spike, a connect that never
# completes), and roomy ones for the rest, so that a busy machine cannot turn a fake's prompt
# answer into a timeout.
TIGHT: Final = Timeouts(connect=0.3, first_byte=0.6, idle=0.6, total=3.0, drain=0.3, pool=0.3)
ROOMY: Final = Timeouts(connect=5.0, first_byte=5.0, idle=5.0, total=10.0, drain=0.5, pool=0.3)
SPIKE_S: Final = 5 * TIGHT.idle  # a latency spike, well past the deadlines
CLIENT_BUDGET_S: Final = 2 * ROOMY.total  # past every server deadline: a longer wait is a hang
SETTLE_S: Final = 5.0  # for the server to be back where it started, once the client has its answer
DEFAULT_COOLDOWN_S: Final = 60  # a 429 with no hint cools its key down a whole minute
NO_HINT: Final = (DEFAULT_COOLDOWN_S - 5, DEFAULT_COOLDOWN_S)  # the client's Retry-After then

# /proc/net/tcp states: a socket of ours still open to a port.
ESTABLISHED, SYN_SENT, CLOSE_WAIT = "01", "02", "08"


class Where(enum.Enum):
    FIRST = "first"  # the first candidate of the plan
    LAST = "last"  # every candidate (for a fault past the first chunk: the last one)


class Mode(enum.Enum):
    JSON = "json"
    STREAM = "stream"


Arm = Callable[[FakeProvider], object]


def always(kind: FaultKind, **parameters: Any) -> Arm:
    """The fake has the fault on every chat request."""
    return lambda fake: fake.faults.always(kind, **parameters)


def _healthy(fake: FakeProvider) -> None:
    """A provider whose fault is not the fake's (its address, its pool)."""


@attrs.frozen
class Fault:
    """One row of the matrix.

    ``trail`` is how ``X-Fallback-Trail`` names an attempt that met the fault (``trails``:
    where a dialect makes it another, by flavor or ``flavor/mode``); ``arm`` gives a fake the
    fault; ``port`` (the connect faults) opens the address the provider is pointed at instead of
    its fake; ``tight``: the case needs short deadlines; ``capacity``: a spent free tier (429,
    the client's ``Retry-After`` within ``retry_after``, or ``retry_afters`` by flavor), not a
    failure (502); ``midstream``: in a stream it strikes after the first chunk reached the
    client; ``json``: a JSON answer can have it; ``pool``: the provider's one connection is held
    by another request; ``dialects``: each dialect acts it in its own shapes (see
    :func:`native_too`).
    """

    name: str
    trail: str
    arm: Arm = _healthy
    port: Callable[[], AbstractAsyncContextManager[str]] | None = None
    tight: bool = False
    capacity: bool = False
    midstream: bool = False
    json: bool = True
    pool: bool = False
    retry_after: tuple[int, int] = (1, 1)
    dialects: bool = False
    trails: Mapping[str, str] = attrs.field(factory=dict)
    retry_afters: Mapping[str, tuple[int, int]] = attrs.field(factory=dict)

    def trail_of(self, upstream: Upstream, mode: Mode) -> str:
        flavor = upstream.flavor
        return self.trails.get(f"{flavor}/{mode.value}", self.trails.get(flavor, self.trail))

    def retry_after_of(self, upstream: Upstream) -> tuple[int, int]:
        return self.retry_afters.get(upstream.flavor, self.retry_after)


FAULTS: Final = (
    Fault("latency_spike", "timeout", always(FaultKind.LATENCY, seconds=SPIKE_S), tight=True),
    Fault(
        "stall_mid_stream",
        "timeout",
        always(FaultKind.LATENCY, gap=SPIKE_S),
        tight=True,
        midstream=True,
        json=False,
    ),
    Fault("status_503", "503", always(FaultKind.STATUS, status=503), dialects=True),
    Fault("reset_before_head", "broken_response", always(FaultKind.RESET)),
    Fault("reset_after_head", "broken_response", always(FaultKind.RESET_AFTER_HEAD)),
    Fault("connect_timeout", "connection_error", port=open_silent_port, tight=True),
    Fault("connect_refused", "connection_error", port=open_closed_port),
    Fault("read_timeout", "timeout", always(FaultKind.HANG), tight=True),
    Fault(
        "malformed_json",
        "broken_response",
        always(FaultKind.MALFORMED),
        dialects=True,
        trails={"gemini/stream": "502", "cohere/stream": "502"},  # their folds say "error"
    ),
    Fault(
        "cut_mid_way",
        "broken_response",
        always(FaultKind.CUT, chunks=2),
        midstream=True,
        dialects=True,
    ),
    Fault(
        "midstream_error",
        "broken_response",
        always(FaultKind.MIDSTREAM_ERROR, chunks=2),
        midstream=True,
        dialects=True,
        trails={"gemini": "500"},  # Gemini's failed JSON answer is a 500 INTERNAL
    ),
    Fault(
        "rate_limit_retry_after",
        "429",
        always(FaultKind.RATE_LIMIT, retry_after=7),
        capacity=True,
        retry_after=(1, 7),
        dialects=True,
        retry_afters={"cohere": NO_HINT},  # Cohere's 429 never says when
    ),
    Fault(
        "rate_limit_no_retry_after",
        "429",
        always(FaultKind.RATE_LIMIT, retry_after=None),
        capacity=True,
        retry_after=NO_HINT,
        dialects=True,
    ),
    Fault(
        "invalid_key",
        "401",
        always(FaultKind.INVALID_KEY),
        dialects=True,
        trails={"gemini": "400"},  # Gemini's 400 API_KEY_INVALID
    ),
    Fault("pool_exhausted", "connection_error", pool=True),
)


@attrs.frozen
class Case:
    fault: Fault
    mode: Mode
    where: Where
    first: Upstream = GROQ  # the first candidate; the second is always SECOND

    @property
    def stream(self) -> bool:
        return self.mode is Mode.STREAM

    @property
    def midstream(self) -> bool:
        """The fault strikes after the client's stream started: no failover is possible."""
        return self.fault.midstream and self.stream

    @property
    def upstreams(self) -> tuple[Upstream, Upstream]:
        return self.first, SECOND

    def faulty(self, upstream: Upstream) -> bool:
        """Whether `upstream` has the fault in this case."""
        if self.where is Where.FIRST:
            return upstream is self.first
        return upstream is SECOND or not self.midstream


def cases() -> Iterator[Any]:
    for fault in FAULTS:
        for mode in Mode:
            if mode is Mode.JSON and not fault.json:
                continue
            for where in Where:
                name = f"{fault.name}-{mode.value}-{where.value}"
                yield pytest.param(Case(fault, mode, where), id=name)
                if native_too(fault, mode, where):
                    for native in (GEMINI, COHERE):
                        case = Case(fault, mode, where, native)
                        yield pytest.param(case, id=f"{name}-{native.flavor}")


def native_too(fault: Fault, mode: Mode, where: Where) -> bool:
    """Whether the cell is tried with a Gemini and a Cohere first candidate too: for the faults
    each dialect words its own way, where its words matter. On *first*: how freellm reads them.
    On *last*, only a 429's (when the first frees up), and only JSON: a stream is refused with
    the same head. (Everything else on *last* is the second candidate's, or the same 502.)"""
    if not fault.dialects:
        return False
    if where is Where.FIRST:
        return True
    return fault.capacity and mode is Mode.JSON


# --- the world of one case ------------------------------------------------------------------


@attrs.frozen
class World:
    proxy: Proxy
    fakes: Mapping[str, FakeProvider]
    ports: tuple[int, ...]  # the fakes' ports
    unreachable: tuple[int, ...]  # the connect faults' ports


def config(urls: Mapping[Upstream, str], *, pool: bool) -> str:
    parts = []
    for upstream, url in urls.items():
        provider = upstream.provider
        parts.append(f'[providers.{provider}]\nbase_url = "{url}"\n')
        parts.append(
            f'[[providers.{provider}.models]]\nid = "{upstream.model}"\nrpm = 1000\n'
            "context = 131072\n"
        )
    chain = ", ".join(f'"{upstream.target}"' for upstream in urls)
    parts.append(f"[router]\nchain = [{chain}]\n")
    if pool:
        parts.append("[pool]\nmax_connections = 1\n")
    return "\n".join(parts)


def _port(url: str) -> int:
    return httpx.URL(url).port or 80


@asynccontextmanager
async def world_for(case: Case, data_dir: Path) -> AsyncIterator[World]:
    """The two fakes (with the case's faults armed), the unreachable ports, and freellm."""
    async with AsyncExitStack() as stack:
        fakes: dict[str, FakeProvider] = {}
        urls: dict[Upstream, str] = {}
        unreachable = []
        for upstream in case.upstreams:
            caps = {upstream.model: FakeCaps()}
            fake = await stack.enter_async_context(
                open_fake_provider(upstream.flavor, keys=[upstream.secret], models=caps)
            )
            fakes[upstream.provider] = fake
            urls[upstream] = fake.base_url
            if case.faulty(upstream):
                if case.fault.port is not None:
                    origin = await stack.enter_async_context(case.fault.port())
                    urls[upstream] = origin + fake.prefix
                    unreachable.append(_port(origin))
                else:
                    case.fault.arm(fake)
            elif case.where is Where.LAST:  # the fault is the last candidate's, past its start
                fake.faults.always(FaultKind.STATUS, status=503)
        timeouts = TIGHT if case.fault.tight else ROOMY
        keys = {upstream.provider: [upstream.secret] for upstream in urls}
        proxy = await stack.enter_async_context(
            running_proxy(data_dir, config(urls, pool=case.fault.pool), keys, timeouts=timeouts)
        )
        ports = tuple(_port(fake.origin) for fake in fakes.values())
        yield World(proxy, fakes, ports, tuple(unreachable))


# --- what the client gets ---------------------------------------------------------------------


@attrs.frozen
class Reply:
    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def events(self) -> list[tuple[str | None, str]]:
        """The SSE events of a stream: (event name or None, data)."""
        events = []
        for block in self.text.split("\n\n"):
            if not block.strip():
                continue
            name, data = None, []
            for line in block.split("\n"):
                if line.startswith("event:"):
                    name = line.removeprefix("event:").strip()
                elif line.startswith("data:"):
                    data.append(line.removeprefix("data:").strip())
            if data:
                events.append((name, "\n".join(data)))
        return events


async def ask(proxy: Proxy, *, stream: bool, model: str = "auto") -> Reply:
    """One chat request; fails the test when the answer takes longer than any deadline."""
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    headers = {"authorization": f"Bearer {proxy.key}"}
    async with httpx.AsyncClient(base_url=proxy.base_url, timeout=CLIENT_BUDGET_S) as client:
        with trio.fail_after(CLIENT_BUDGET_S):
            async with client.stream(
                "POST", "/chat/completions", json=body, headers=headers
            ) as response:
                data = await response.aread()
    return Reply(response.status_code, response.headers, data)


def check_error(reply: Reply, status: int, code: str) -> dict[str, Any]:
    """An OpenAI-shaped error with `status` and `code`; returns its ``error`` object."""
    assert reply.status == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = json.loads(reply.body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["code"] == code
    return error


def check_answer(reply: Reply, *, stream: bool) -> None:
    """A whole answer: a chat completion, or a stream of chunks with text ending in [DONE]."""
    if not stream:
        answer = json.loads(reply.body)
        assert answer["object"] == "chat.completion"
        assert answer["choices"][0]["message"]["content"]
        return
    events = reply.events()
    assert events[-1] == (None, "[DONE]")
    assert all(name is None for name, _ in events), "no error event in a whole answer"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text


def check_broken_stream(reply: Reply) -> None:
    """A stream that started, then broke: chunks, an ``error`` event, ``data: [DONE]``, no more."""
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = reply.events()
    *chunks, (error_name, error_data), done = events
    assert done == (None, "[DONE]")
    assert error_name == "error"
    error = json.loads(error_data)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert chunks, "the stream had started"
    assert all(name is None for name, _ in chunks)
    assert all(json.loads(data)["object"] == "chat.completion.chunk" for _, data in chunks)


def check_reply(case: Case, reply: Reply, fakes: Mapping[str, FakeProvider]) -> None:
    fault, first = case.fault, case.first
    headers = reply.headers
    trail = headers.get("x-fallback-trail")
    if case.midstream:
        check_broken_stream(reply)
        if case.where is Where.FIRST:
            # The first candidate's stream reached the client, then broke: nothing else tried.
            assert headers["x-routed-via"] == first.target
            assert "x-fallback-attempts" not in headers
            assert trail == f"{first.target}=ok"
            assert not fakes[SECOND.provider].requests
        else:
            assert headers["x-routed-via"] == SECOND.target
            assert headers["x-fallback-attempts"] == "1"
            assert trail == f"{first.target}=503,{SECOND.target}=ok"
        return
    if case.where is Where.FIRST:
        assert reply.status == 200, reply.text
        assert headers["x-routed-via"] == SECOND.target
        assert headers["x-fallback-attempts"] == "1"
        assert trail == f"{first.target}={fault.trail_of(first, case.mode)},{SECOND.target}=ok"
        check_answer(reply, stream=case.stream)
        assert fakes[SECOND.provider].served == 1
        return
    assert "x-routed-via" not in headers
    assert headers["x-fallback-attempts"] == "2"
    tried = [f"{u.target}={fault.trail_of(u, case.mode)}" for u in case.upstreams]
    assert trail == ",".join(tried)
    if fault.capacity:
        check_error(reply, 429, "no_capacity")
        low, high = fault.retry_after_of(first)
        assert low <= int(headers["retry-after"]) <= high
    else:
        check_error(reply, 502, "upstream_failed")
    assert fakes[first.provider].served == fakes[SECOND.provider].served == 0


def check_never(reply: Reply) -> None:
    """What no answer may be or hold, whatever the fault."""
    assert reply.status != 500
    assert "Traceback" not in reply.text
    for secret in SECRETS:
        assert secret not in reply.text
        assert all(secret not in value for value in reply.headers.values())


# --- back where it started --------------------------------------------------------------------


def _children(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    for nursery in task.child_nurseries:
        yield from nursery.child_tasks


def _count(tasks: Any) -> int:
    return sum(1 + _count(_children(task)) for task in tasks)


def server_task() -> trio.lowlevel.Task:
    """The task serving the proxy (one per case: the harness's ``serve_runtime``)."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    stack = [root]
    while stack:
        task = stack.pop()
        if task.name.endswith("serve_runtime"):
            return task
        stack.extend(_children(task))
    raise AssertionError("no serve_runtime task: the harness changed")


def task_names() -> list[str]:
    """The names of the server's tasks, its own included."""
    names, stack = [], [server_task()]
    while stack:
        task = stack.pop()
        names.append(task.name)
        stack.extend(_children(task))
    return names


def idle_connection() -> bool:
    """Whether the server holds a connection idle (hypercorn times it out in a task of its
    own) and runs no request (hypercorn runs each in an application task)."""
    names = task_names()
    return any(name.endswith("._idle_timeout") for name in names) and not any(
        name.endswith("task_group._handle") for name in names
    )


def server_tasks(world: World) -> int:
    """The tasks of the proxy: its server's (connections, requests) and the runtime's."""
    runtime_nursery = world.proxy.runtime.tasks
    assert runtime_nursery is not None
    return _count([server_task()]) + _count(runtime_nursery.child_tasks)


def _socket_inodes() -> set[int]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(int(link.removeprefix("socket:[").removesuffix("]")))
    return inodes


def open_sockets(ports: tuple[int, ...], states: frozenset[str], *, local: bool = False) -> int:
    """This process's TCP sockets in one of `states` whose peer's port (`local`: whose own
    port) is one of `ports`: by default the client ends of connections to those ports. A
    socket closed by its program has no file any more, whatever the kernel keeps of it."""
    if not ports:
        return 0
    inodes = _socket_inodes()
    column = 1 if local else 2
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table, encoding="ascii") as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                port = int(fields[column].rsplit(":", 1)[1], 16)
                if port in ports and fields[3] in states and int(fields[9]) in inodes:
                    count += 1
    return count


@attrs.frozen
class Leftovers:
    """What a case may leave behind: all zero, or equal where the pool keeps connections."""

    tickets: int
    requests: int  # the dispatcher's requests in progress
    fakes_in_flight: int
    busy_connections: int  # open in the pools, not idle
    sockets: int  # open to the fakes, per /proc
    idle_connections: int
    connecting: int  # sockets still connecting to an unreachable port
    tasks: int


def leftovers(world: World, baseline_tasks: int) -> Leftovers:
    runtime = world.proxy.runtime
    tickets = sum(usage.inflight for usage in runtime.holder.state.ledger.usage.values())
    open_, idle = runtime.upstreams.connections()
    return Leftovers(
        tickets=tickets,
        requests=runtime.dispatcher.active,
        fakes_in_flight=sum(fake.in_flight for fake in world.fakes.values()),
        busy_connections=open_ - idle,
        sockets=open_sockets(world.ports, frozenset({ESTABLISHED, CLOSE_WAIT, SYN_SENT})),
        idle_connections=idle,
        connecting=open_sockets(world.unreachable, frozenset({SYN_SENT})),
        tasks=server_tasks(world) - baseline_tasks,
    )


def clean(left: Leftovers) -> bool:
    return (
        left.tickets == left.requests == left.fakes_in_flight == 0
        and left.busy_connections == left.connecting == 0
        and left.sockets == left.idle_connections
        and left.tasks == 0
    )


async def settled(world: World, baseline_tasks: int) -> Leftovers:
    """Wait (real time: real sockets) until nothing is left over, or ``SETTLE_S``; the last look."""
    left = leftovers(world, baseline_tasks)
    with trio.move_on_after(SETTLE_S):
        while not clean(left):
            await trio.sleep(0.02)
            left = leftovers(world, baseline_tasks)
    return left


# --- the pool fault ---------------------------------------------------------------------------


async def hold_connection(world: World, upstream: Upstream, nursery: trio.Nursery) -> None:
    """A request pinned to `upstream` that hangs there, holding its only connection."""
    fake = world.fakes[upstream.provider]
    fake.faults.next(1, FaultKind.HANG)
    asked = len(fake.requests)

    async def hold() -> None:
        await ask(world.proxy, stream=False, model=upstream.target)

    nursery.start_soon(hold)
    with trio.fail_after(SETTLE_S):
        while len(fake.requests) == asked:  # noqa: ASYNC110 - another server's record
            await trio.sleep(0.01)


# --- the matrix -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(cases()))
async def test_a_fault_gets_a_failover_or_a_clear_error_and_leaves_nothing_behind(
    case: Case, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with world_for(case, tmp_path / "data") as world:
        baseline_tasks = server_tasks(world)
        async with trio.open_nursery() as holders:
            if case.fault.pool:
                for upstream in case.upstreams:
                    if case.faulty(upstream):
                        await hold_connection(world, upstream, holders)
            reply = await ask(world.proxy, stream=case.stream)
            holders.cancel_scope.cancel()  # the holders' clients go away
        check_never(reply)
        check_reply(case, reply, world.fakes)
        left = await settled(world, baseline_tasks)
        assert clean(left), left
        auth = {"authorization": f"Bearer {world.proxy.key}"}
        async with httpx.AsyncClient(headers=auth) as client:
            metrics = (await client.get(world.proxy.url + "/metrics")).text
        assert f'freellm_requests_total{{status="{reply.status}"}}' in metrics
        assert "\nfreellm_requests_in_progress 0.0\n" in metrics
        idle = f'freellm_upstream_connections{{state="idle"}} {left.idle_connections}.0'
        assert f'freellm_upstream_connections{{state="open"}} {left.idle_connections}.0' in metrics
        assert idle in metrics
    errors = [
        record
        for record in caplog.records
        if record.levelno >= logging.ERROR and not record.name.startswith("freellm.sim")
    ]
    assert not errors, [record.getMessage() for record in errors]


async def test_a_client_closing_an_idle_connection_frees_its_server_task(tmp_path: Path) -> None:
    """A keep-alive connection the client closes between requests (what every pooled client
    does when it is done) ends at once on the server: its task and its socket, rather than at
    ``keep_alive_timeout``."""
    case = Case(FAULTS[0], Mode.JSON, Where.FIRST)
    async with world_for(case, tmp_path / "data") as world:
        world.fakes[GROQ.provider].faults.clear()
        proxy = world.proxy
        baseline_tasks = server_tasks(world)
        proxy_port = (_port(proxy.url),)
        headers = {"authorization": f"Bearer {proxy.key}"}
        body = {"model": "auto", "messages": [{"role": "user", "content": PROMPT}]}
        async with httpx.AsyncClient(base_url=proxy.base_url, headers=headers) as client:
            for stream in (False, True):
                answer = await client.post("/chat/completions", json={**body, "stream": stream})
                assert answer.status_code == 200
            # The request is over on the server too: the connection waits, idle, for the next
            # (hypercorn runs the application in a task of its own, and times an idle
            # connection out in another).
            with trio.fail_after(SETTLE_S):
                while not idle_connection():  # noqa: ASYNC110 - polling hypercorn's tasks
                    await trio.sleep(0.01)
            assert open_sockets(proxy_port, frozenset({ESTABLISHED}), local=True) == 1
        left = await settled(world, baseline_tasks)
        assert left.tasks == 0
        assert open_sockets(proxy_port, frozenset({ESTABLISHED, CLOSE_WAIT}), local=True) == 0
