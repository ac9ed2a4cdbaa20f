"""The load: the request sent, and the wrk and trio generators that time it."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import attrs
import trio

SYSTEM_PROMPT: Final = "You are a terse assistant."
USER_PROMPT: Final = "Say hello to the benchmark in a few words."
MAX_TOKENS: Final = 16


# --- what is sent ------------------------------------------------------------------------------


@attrs.frozen
class Endpoint:
    """A chat completions URL, the key it takes, the ``model`` to ask it for, and any other
    headers it needs (Portkey's gateway is told the provider and upstream in headers)."""

    name: str
    url: str
    token: str
    model: str
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    def body(self, *, stream: bool) -> bytes:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": USER_PROMPT},
            ],
            "max_tokens": MAX_TOKENS,
        }
        if stream:
            payload["stream"] = True
        return json.dumps(payload, separators=(",", ":")).encode()

    def request(self, *, stream: bool) -> bytes:
        """The whole HTTP/1.1 request, keep-alive."""
        body = self.body(stream=stream)
        head = (
            f"POST {self.path} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\n"
            "Content-Type: application/json\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in self.headers)
            + f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


# --- load generators -----------------------------------------------------------------------------


@attrs.frozen
class Measured:
    """One load phase: successful requests, their latency percentiles (ms), and failures."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


class Generator(Protocol):
    name: str

    def run(
        self, endpoint: Endpoint, concurrency: int, duration: float, *, stream: bool = False
    ) -> Measured: ...


WRK_SCRIPT: Final = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
{headers}wrk.body = [==[{body}]==]

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {{"requests": %.0f, "duration_us": %.0f, "p50_us": %.1f, "p99_us": %.1f, ' ..
    '"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk_script(endpoint: Endpoint, workdir: Path, *, stream: bool = False) -> Path:
    """The Lua script that makes wrk send ``endpoint``'s request (streamed or not): wrk reads a
    chunked SSE answer to its end, so a streamed request's latency is the whole stream's."""
    script = workdir / f"{endpoint.name}{'-stream' if stream else ''}.lua"
    body = endpoint.body(stream=stream).decode()
    headers = "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in endpoint.headers)
    script.write_text(WRK_SCRIPT.format(token=endpoint.token, headers=headers, body=body))
    return script


class Wrk:
    """``wrk -t1``: one cheap C thread drives every connection, with keep-alive."""

    def __init__(self, executable: str, workdir: Path, prefix: Sequence[str]) -> None:
        self.executable = executable
        self.workdir = workdir
        self.prefix = list(prefix)
        version = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, check=False
        )
        words = (version.stdout + version.stderr).split()
        self.name = f"wrk {words[1]}" if len(words) > 1 else "wrk"

    def run(
        self, endpoint: Endpoint, concurrency: int, duration: float, *, stream: bool = False
    ) -> Measured:
        script = wrk_script(endpoint, self.workdir, stream=stream)
        seconds = max(1, round(duration))
        argv = [
            *self.prefix,
            self.executable,
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            endpoint.url,
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        found = re.search(r"^BENCH (\{.*\})$", done.stdout, re.MULTILINE)
        if done.returncode != 0 or found is None:
            raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        data = json.loads(found[1])
        errors = sum(int(data[k]) for k in ("connect", "read", "write", "status", "timeout"))
        # wrk counts a non-2xx/3xx answer in both `requests` and `status`.
        return Measured(
            requests=int(data["requests"]) - int(data["status"]),
            seconds=data["duration_us"] / 1e6,
            p50_ms=data["p50_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            errors=errors,
        )


class ProtocolError(Exception):
    """The server closed the connection or sent something this client does not read."""


class Connection:
    """One keep-alive HTTP/1.1 connection on a raw trio socket: just enough of the protocol to
    read ``content-length`` and chunked answers, as cheaply as Python allows."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.buffer = bytearray()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        sock = trio.socket.socket()
        try:
            await sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock)

    def close(self) -> None:
        self.sock.close()

    async def _fill(self) -> None:
        data = await self.sock.recv(65536)
        if not data:
            raise ProtocolError("the server closed the connection")
        self.buffer += data

    async def _until(self, marker: bytes) -> bytes:
        start = 0
        while (end := self.buffer.find(marker, start)) < 0:
            start = max(0, len(self.buffer) - len(marker) + 1)
            await self._fill()
        found = bytes(self.buffer[:end])
        del self.buffer[: end + len(marker)]
        return found

    async def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._fill()
        found = bytes(self.buffer[:size])
        del self.buffer[:size]
        return found

    async def exchange(self, request: bytes) -> tuple[int, float, float | None, bool]:
        """Send ``request``, read the whole answer: (status, seconds, seconds to the first SSE
        ``data:`` event or None, whether the server keeps the connection open)."""
        began = time.perf_counter()
        view = memoryview(request)
        while view:
            view = view[await self.sock.send(view) :]
        head = (await self._until(b"\r\n\r\n")).lower()
        try:
            status = int(head[9:12])
        except ValueError:
            raise ProtocolError(f"not an HTTP status line: {head[:40]!r}") from None
        first: float | None = None
        if b"transfer-encoding: chunked" in head:
            while True:
                size = int((await self._until(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self._until(b"\r\n")  # the end of the (empty) trailers
                    break
                chunk = await self._exactly(size + 2)
                if first is None and b"data:" in chunk:
                    first = time.perf_counter() - began
        else:
            length = re.search(rb"content-length:\s*(\d+)", head)
            await self._exactly(int(length[1]) if length else 0)
        return status, time.perf_counter() - began, first, b"connection: close" not in head

    async def fetch(self, request: bytes) -> tuple[int, bytes]:
        """Send ``request``, read the whole answer: its status and its body, de-chunked (framed
        by ``content-length``, chunked encoding, or the end of the connection)."""
        view = memoryview(request)
        while view:
            view = view[await self.sock.send(view) :]
        head = (await self._until(b"\r\n\r\n")).lower()
        try:
            status = int(head[9:12])
        except ValueError:
            raise ProtocolError(f"not an HTTP status line: {head[:40]!r}") from None
        body = bytearray()
        if b"transfer-encoding: chunked" in head:
            while size := int((await self._until(b"\r\n")).split(b";")[0], 16):
                body += (await self._exactly(size + 2))[:-2]
            await self._until(b"\r\n")  # the end of the (empty) trailers
        elif length := re.search(rb"content-length:\s*(\d+)", head):
            body += await self._exactly(int(length[1]))
        else:
            while data := await self.sock.recv(65536):
                self.buffer += data
            body += self.buffer
            self.buffer.clear()
        return status, bytes(body)


@attrs.frozen
class Samples:
    latencies: list[float]  # seconds, successful requests
    firsts: list[float]  # seconds to the first SSE data event, successful streams
    errors: int
    seconds: float


async def drive(endpoint: Endpoint, concurrency: int, duration: float, *, stream: bool) -> Samples:
    """``concurrency`` connections, each sending a request as soon as its last one is answered,
    until ``duration`` is over."""
    request = endpoint.request(stream=stream)
    latencies: list[float] = []
    firsts: list[float] = []
    errors = 0
    began = time.perf_counter()
    deadline = began + duration

    async def worker() -> None:
        nonlocal errors
        connection: Connection | None = None
        try:
            while time.perf_counter() < deadline:
                try:
                    if connection is None:
                        connection = await Connection.open(endpoint.host, endpoint.port)
                    status, seconds, first, keep = await connection.exchange(request)
                except (OSError, ProtocolError, ValueError):
                    errors += 1
                    if connection is not None:
                        connection.close()
                        connection = None
                    await trio.sleep(0.01)
                    continue
                if status == 200:
                    latencies.append(seconds)
                    if first is not None:
                        firsts.append(first)
                else:
                    errors += 1
                if not keep:
                    connection.close()
                    connection = None
        finally:
            if connection is not None:
                connection.close()

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return Samples(latencies, firsts, errors, time.perf_counter() - began)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolated between ranks; 0 if empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class PythonLoad:
    """Our own generator (:func:`drive`), for machines without wrk."""

    name = "python (trio raw sockets, keep-alive)"

    def run(
        self, endpoint: Endpoint, concurrency: int, duration: float, *, stream: bool = False
    ) -> Measured:
        samples = trio.run(partial(drive, stream=stream), endpoint, concurrency, duration)
        return Measured(
            requests=len(samples.latencies),
            seconds=samples.seconds,
            p50_ms=percentile(samples.latencies, 50) * 1000,
            p99_ms=percentile(samples.latencies, 99) * 1000,
            errors=samples.errors,
        )


def first_byte(endpoint: Endpoint, duration: float) -> Measured:
    """Streamed requests one at a time: percentiles of the time to the first SSE data event."""
    samples = trio.run(partial(drive, stream=True), endpoint, 1, duration)
    return Measured(
        requests=len(samples.latencies),
        seconds=samples.seconds,
        p50_ms=percentile(samples.firsts, 50) * 1000,
        p99_ms=percentile(samples.firsts, 99) * 1000,
        errors=samples.errors + len(samples.latencies) - len(samples.firsts),
    )
