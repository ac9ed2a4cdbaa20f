"""What freellm adds to a request: latency, throughput, time to first token and memory.

One run sets freellm up as a user would, in front of a fake upstream, and measures both paths:

- the fake (``freellm.sim.fakes``, ``openai`` or ``groq`` flavor, no caps, ``record=False``) runs
  in a process of its own, so that it never shares freellm's CPU in-process;
- ``freellm serve`` runs as another process, with ``--data-dir`` a temporary directory,
  ``ENCRYPTION_KEY`` set, a config file pointing the provider's ``base_url`` at the fake, a key
  added with ``freellm keys add`` and the unified key read with ``freellm token``.

Then, straight to the fake (the baseline) and through freellm:

1. non-streamed chat completions of a small prompt: latency p50/p99 at concurrency 1 and at
   ``--concurrency`` (32), requests/s at 32;
2. streamed: time to the first SSE ``data:`` event (the first token a client sees), p50;
3. freellm's RSS (``VmRSS``) idle after start-up and its peak under the concurrency-32 load;
4. the latency freellm adds (through minus direct) at p50, concurrency 1.

It also reads the CPU time of freellm, the fake (``/proc/<pid>/stat``) and the generator around
every phase: freellm's CPU milliseconds per request, and whether freellm or the upstream side
(the fake and the generator, on one CPU) was saturated, i.e. which of them limited the phase.

The load generator is ``wrk`` when it is on PATH (C, one thread, keep-alive; a Lua script sets the
POST body and prints the percentiles); else a load generator of our own on trio's raw sockets,
with keep-alive connections. Time to first byte is always measured with our own client (wrk only
sees whole responses). With ``taskset`` and 2+ CPUs, freellm runs on CPU 0 and the fake and the
generator share CPU 1. The output says which generator and which pinning were used.

Run::

    .venv/bin/python bench/proxy_bench.py [--duration 10] [--concurrency 32] [--flavor groq]
                                          [--generator auto|wrk|python] [--no-pin] [--json]
    .venv/bin/python bench/proxy_bench.py --hold   # start both servers, print how to reach them,
                                                   # wait for Ctrl-C (for py-spy and friends)

Everything it starts is stopped, and its temporary directory removed, on the way out, Ctrl-C and
SIGTERM included.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import attrs
import trio

ENCRYPTION_KEY: Final = "b3" * 32
UPSTREAM_SECRET: Final = "sk-bench-upstream"
SYSTEM_PROMPT: Final = "You are a terse assistant."
USER_PROMPT: Final = "Say hello to the benchmark in a few words."
MAX_TOKENS: Final = 16
STARTUP_TIMEOUT_S: Final = 20.0
IDLE_SETTLE_S: Final = 1.5  # after /readyz, before reading the idle RSS: start-up work settles
RSS_SAMPLE_S: Final = 0.05
SATURATED_PCT: Final = 90.0  # a CPU this busy over a phase limited it
PROXY_CPU: Final = 0
UPSTREAM_CPU: Final = 1  # the fake and the load generator

# Issue 3's targets (and DESIGN.md's measured prototypes, for scale).
TARGET_ADDED_P50_MS: Final = 1.0
TARGET_RPS: Final = 600.0
TARGET_IDLE_RSS_MB: Final = 45.0


@attrs.frozen
class Flavor:
    """How freellm is configured for one fake flavor: its provider id and the model both name."""

    provider: str
    model: str
    own: bool  # a provider of the user's own (not in the catalog): the config names its dialect


FLAVORS: Final = {
    "groq": Flavor("groq", "llama-3.3-70b-versatile", own=False),
    "openai": Flavor("benchfake", "fake-model", own=True),
}


# --- what is sent ------------------------------------------------------------------------------


@attrs.frozen
class Endpoint:
    """A chat completions URL, the key it takes, and the ``model`` to ask it for."""

    name: str
    url: str
    token: str
    model: str

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
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


# --- processes -----------------------------------------------------------------------------------


class Children:
    """Every process the bench starts, each in a session of its own (a Ctrl-C reaches only the
    bench, which then stops them in reverse order: SIGTERM, then SIGKILL after a grace period)."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def spawn(
        self, argv: Sequence[str], *, output: Path, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        with output.open("wb") as log:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.running.append(process)
        return process

    def stop_all(self, grace: float = 5.0) -> None:
        for process in reversed(self.running):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.running):
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.running.clear()


def wait_for_output(
    process: subprocess.Popen[bytes], output: Path, pattern: str, timeout: float
) -> re.Match[str]:
    """The first match of ``pattern`` in what ``process`` writes to ``output``.

    Raises ``RuntimeError`` (with the output) if the process exits or the time runs out first.
    """
    deadline = time.monotonic() + timeout
    while True:
        text = output.read_text(errors="replace")
        found = re.search(pattern, text, re.MULTILINE)
        if found:
            return found
        if process.poll() is not None or time.monotonic() > deadline:
            why = f"exited with {process.returncode}" if process.poll() is not None else "timed out"
            raise RuntimeError(f"{process.args!r} {why} before printing {pattern!r}:\n{text}")
        time.sleep(0.05)


def proc_status_kib(pid: int, field: str) -> int:
    """A ``kB`` line of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``); 0 if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``, all its threads, so far."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PeakRss:
    """The largest ``VmRSS`` of a process, sampled by a thread while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()

    @contextlib.contextmanager
    def sampling(self) -> Iterator[PeakRss]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self._stop.clear()

    def _run(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, proc_status_kib(self.pid, "VmRSS"))
            if self._stop.wait(RSS_SAMPLE_S):
                return


def mib(kib: int) -> float:
    return kib / 1024


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

    def run(self, endpoint: Endpoint, concurrency: int, duration: float) -> Measured: ...


WRK_SCRIPT: Final = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.body = [==[{body}]==]

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {{"requests": %.0f, "duration_us": %.0f, "p50_us": %.1f, "p99_us": %.1f, ' ..
    '"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk_script(endpoint: Endpoint, workdir: Path) -> Path:
    """The Lua script that makes wrk send ``endpoint``'s non-streamed request."""
    script = workdir / f"{endpoint.name}.lua"
    body = endpoint.body(stream=False).decode()
    script.write_text(WRK_SCRIPT.format(token=endpoint.token, body=body))
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

    def run(self, endpoint: Endpoint, concurrency: int, duration: float) -> Measured:
        script = wrk_script(endpoint, self.workdir)
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

    def run(self, endpoint: Endpoint, concurrency: int, duration: float) -> Measured:
        samples = trio.run(partial(drive, stream=False), endpoint, concurrency, duration)
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


# --- the fake upstream, in its own process -------------------------------------------------------


async def serve_fake(flavor: str) -> None:
    """Serve an uncapped fake of ``flavor`` on 127.0.0.1 until SIGINT or SIGTERM; print its URL."""
    from freellm.sim.fakes import FakeCaps, open_fake_provider

    model = FLAVORS[flavor].model
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        fake_cm = open_fake_provider(flavor, models={model: FakeCaps()}, record=False)
        async with fake_cm as fake:
            print(f"fake {flavor} at {fake.base_url} pid {os.getpid()}", flush=True)
            async for _ in signals:
                return


# --- setting freellm up --------------------------------------------------------------------------


def config_text(flavor: Flavor, base_url: str) -> str:
    """The provider pointed at the fake, its one model with no caps, and a chain of that model."""
    lines = [f"[providers.{flavor.provider}]"]
    if flavor.own:
        lines.append('dialect = "openai"')
    lines += [
        f'base_url = "{base_url}"',
        "",
        f"[[providers.{flavor.provider}.models]]  # no caps: the ledger never refuses",
        f'id = "{flavor.model}"',
        "context = 131072",
        "",
        "[router]",
        f'chain = ["{flavor.provider}/{flavor.model}"]',
        "",
    ]
    return "\n".join(lines)


def freellm_command() -> list[str]:
    """The ``freellm`` console script beside this Python, else ``python -m freellm.cli``."""
    script = shutil.which("freellm", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "freellm.cli"]


def http_request(
    url: str, *, method: str = "GET", token: str | None = None, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request with http.client (which, unlike urllib, ignores proxy variables)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    try:
        connection.request(method, parts.path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def taskset(pin: bool, cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if pin else []


def run_cli(argv: Sequence[str], env: dict[str, str]) -> str:
    """Run a ``freellm`` command to completion; its output, or ``RuntimeError`` if it failed."""
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[-6:])} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


@attrs.frozen
class Servers:
    flavor: str
    pin: bool
    direct: Endpoint
    proxy: Endpoint
    fake_pid: int
    proxy_pid: int
    routed_via: str


def start_servers(
    flavor_name: str, tmp: Path, children: Children, pin: bool, log: Callable[[str], None]
) -> Servers:
    """The fake, then freellm set up in front of it the way a user would; checked end to end."""
    flavor = FLAVORS[flavor_name]
    env = dict(os.environ, ENCRYPTION_KEY=ENCRYPTION_KEY, PYTHONUNBUFFERED="1")
    for name in ("HOST", "PORT", "FREELLM_DATA_DIR"):
        env.pop(name, None)

    fake_out = tmp / "fake.log"
    argv = [*taskset(pin, UPSTREAM_CPU), sys.executable, __file__, "--serve-fake", flavor_name]
    fake = children.spawn(argv, output=fake_out, env=env)
    base_url = wait_for_output(fake, fake_out, r"^fake \S+ at (\S+) pid", STARTUP_TIMEOUT_S)[1]
    direct = Endpoint("direct", f"{base_url}/chat/completions", UPSTREAM_SECRET, flavor.model)
    log(f"fake {flavor_name} upstream at {base_url} (pid {fake.pid})")

    config = tmp / "freellm.toml"
    config.write_text(config_text(flavor, base_url))
    common = ["--data-dir", str(tmp / "data"), "--config", str(config)]
    freellm = freellm_command()
    run_cli([*freellm, "keys", "add", flavor.provider, UPSTREAM_SECRET, *common], env)
    unified_key = run_cli([*freellm, "token", *common], env).strip()

    # Compile whatever bytecode is stale first: compiling at start-up would inflate the idle RSS.
    run_cli([sys.executable, "-c", "import freellm.cli, freellm.web.server"], env)
    serve_out = tmp / "serve.log"
    argv = [*taskset(pin, PROXY_CPU), *freellm, "serve", *common, "--host", "127.0.0.1"]
    proxy = children.spawn([*argv, "--port", "0"], output=serve_out, env=env)
    url = wait_for_output(proxy, serve_out, r"serving (http://\S+)/v1\s*$", STARTUP_TIMEOUT_S)[1]
    through = Endpoint("freellm", f"{url}/v1/chat/completions", unified_key, "auto")
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while http_request(f"{url}/readyz")[0] != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("freellm never became ready")
        time.sleep(0.05)
    log(f"freellm serve at {url} (pid {proxy.pid}), model `auto`")

    routed_via = ""
    for endpoint in (direct, through):  # one request of each kind down each path must succeed
        for stream in (False, True):
            body = endpoint.body(stream=stream)
            status, headers, answer = http_request(
                endpoint.url, method="POST", token=endpoint.token, body=body
            )
            if status != 200 or (stream and b"data: [DONE]" not in answer):
                raise RuntimeError(f"{endpoint.name}: HTTP {status}: {answer[:500]!r}")
            routed_via = headers.get("x-routed-via", routed_via)
    return Servers(flavor_name, pin, direct, through, fake.pid, proxy.pid, routed_via)


# --- the run -------------------------------------------------------------------------------------


def own_cpu_seconds() -> float:
    """CPU time of this process and of its children waited for (wrk): the load generator."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


@attrs.frozen
class Row:
    """One phase, with the CPU seconds each party spent over its ``wall_s`` seconds."""

    case: str
    concurrency: int
    measured: Measured
    wall_s: float
    proxy_cpu_s: float | None  # None: freellm had no part in the phase
    fake_cpu_s: float
    generator_cpu_s: float
    pinned: bool  # the fake and the generator share one CPU
    notes: str = ""

    def data(self) -> dict[str, Any]:
        m = self.measured

        def pct(seconds: float) -> float:
            return round(100 * seconds / self.wall_s, 1)

        proxy = self.proxy_cpu_s
        notes = [self.notes] if self.notes else []
        if self.concurrency > 1:  # one client at a time keeps some CPU busy by definition
            if proxy is not None and pct(proxy) >= SATURATED_PCT:
                notes.append("freellm CPU-bound")
            if self.pinned and pct(self.fake_cpu_s + self.generator_cpu_s) >= SATURATED_PCT:
                notes.append("fake + generator CPU saturated")
        return {
            "case": self.case,
            "p50_ms": round(m.p50_ms, 3),
            "p99_ms": round(m.p99_ms, 3),
            "rps": round(m.rps, 1),
            "requests": m.requests,
            "errors": m.errors,
            "seconds": round(m.seconds, 2),
            "freellm_cpu_ms_per_request": (
                round(proxy / m.requests * 1000, 3) if proxy is not None and m.requests else None
            ),
            "freellm_cpu_pct": None if proxy is None else pct(proxy),
            "upstream_cpu_pct": pct(self.fake_cpu_s),
            "generator_cpu_pct": pct(self.generator_cpu_s),
            "notes": "; ".join(notes),
        }


def measure(
    setup: Servers,
    case: str,
    concurrency: int,
    through_proxy: bool,
    run: Callable[[], Measured],
    notes: str = "",
) -> Row:
    proxy, fake, own = cpu_seconds(setup.proxy_pid), cpu_seconds(setup.fake_pid), own_cpu_seconds()
    began = time.perf_counter()
    measured = run()
    wall = time.perf_counter() - began
    proxy = cpu_seconds(setup.proxy_pid) - proxy
    fake, own = cpu_seconds(setup.fake_pid) - fake, own_cpu_seconds() - own
    proxy_cpu = proxy if through_proxy else None
    return Row(case, concurrency, measured, wall, proxy_cpu, fake, own, setup.pin, notes)


def bench(
    args: argparse.Namespace, setup: Servers, tmp: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    direct, proxy = setup.direct, setup.proxy
    generator: Generator
    wrk = shutil.which("wrk")
    if args.generator == "wrk" and wrk is None:
        raise RuntimeError("--generator wrk: wrk is not on PATH")
    if wrk is not None and args.generator != "python":
        generator = Wrk(wrk, tmp, taskset(setup.pin, UPSTREAM_CPU))
    else:
        generator = PythonLoad()
    if setup.pin:
        os.sched_setaffinity(0, {UPSTREAM_CPU})  # our own client: with the fake, off freellm's CPU

    time.sleep(IDLE_SETTLE_S)
    idle_kib = proc_status_kib(setup.proxy_pid, "VmRSS")
    log(f"idle RSS {mib(idle_kib):.1f} MiB; generator: {generator.name}")

    c, duration = args.concurrency, args.duration
    stream_duration = max(2.0, duration / 2)
    if args.warmup > 0:
        log(f"warm-up: {args.warmup:g} s at c={c} on each path")
        generator.run(direct, c, args.warmup)
        generator.run(proxy, c, args.warmup)
        first_byte(direct, min(1.0, args.warmup))
        first_byte(proxy, min(1.0, args.warmup))

    peak = PeakRss(setup.proxy_pid)
    rows: list[Row] = []

    def phase(endpoint: Endpoint, concurrency: int, *, stream: bool = False) -> Row:
        case = f"{endpoint.name}{' stream' if stream else ''} c={concurrency}"
        log(f"{case} ...")
        if stream:
            run = partial(first_byte, endpoint, stream_duration)
            row = measure(setup, case, 1, endpoint is proxy, run, "time to first SSE data event")
        else:
            run = partial(generator.run, endpoint, concurrency, duration)
            row = measure(setup, case, concurrency, endpoint is proxy, run)
        rows.append(row)
        return row

    direct_1, proxy_1 = phase(direct, 1), phase(proxy, 1)
    phase(direct, c)
    with peak.sampling():
        proxy_c = phase(proxy, c)
    direct_s, proxy_s = phase(direct, 1, stream=True), phase(proxy, 1, stream=True)

    time.sleep(IDLE_SETTLE_S)
    after_kib = proc_status_kib(setup.proxy_pid, "VmRSS")
    hwm_kib = proc_status_kib(setup.proxy_pid, "VmHWM")
    added = proxy_1.measured.p50_ms - direct_1.measured.p50_ms
    rps = proxy_c.measured.rps
    idle_mb = mib(idle_kib)
    return {
        "flavor": setup.flavor,
        "routed_via": setup.routed_via,
        "generator": generator.name,
        "ttfb_client": PythonLoad.name,
        "pinning": (
            f"freellm on CPU {PROXY_CPU}; fake upstream and load generator on CPU {UPSTREAM_CPU}"
            " (taskset)"
            if setup.pin
            else "none"
        ),
        "cpus": os.cpu_count(),
        "duration_s": duration,
        "stream_duration_s": stream_duration,
        "warmup_s": args.warmup,
        "concurrency": c,
        "cases": [row.data() for row in rows],
        "added_latency_p50_ms": round(added, 3),
        "added_ttfb_p50_ms": round(proxy_s.measured.p50_ms - direct_s.measured.p50_ms, 3),
        "rss_mib": {
            "idle_after_start": round(idle_mb, 1),
            "peak_under_load": round(mib(peak.peak_kib), 1),
            "high_water_mark": round(mib(hwm_kib), 1),
            "idle_after_load": round(mib(after_kib), 1),
        },
        "targets": {
            "added_latency_p50_ms_c1": {
                "target": f"<= {TARGET_ADDED_P50_MS:g}",
                "measured": round(added, 3),
                "met": added <= TARGET_ADDED_P50_MS,
            },
            f"rps_c{c}": {
                "target": f">= {TARGET_RPS:g}",
                "measured": round(rps, 1),
                "met": rps >= TARGET_RPS,
            },
            "idle_rss_mb": {
                "target": f"<= {TARGET_IDLE_RSS_MB:g}",
                "measured": round(idle_mb, 1),
                "met": idle_mb <= TARGET_IDLE_RSS_MB,
            },
        },
    }


def table(result: dict[str, Any]) -> str:
    def num(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        f"freellm proxy benchmark: fake {result['flavor']} upstream, routed via "
        f"{result['routed_via']}",
        f"load generator: {result['generator']}; streaming TTFB: {result['ttfb_client']}",
        f"pinning: {result['pinning']}; {result['cpus']} CPUs",
        f"phases: {result['duration_s']:g} s each (streams {result['stream_duration_s']:g} s), "
        f"after {result['warmup_s']:g} s of warm-up per path",
        "",
        f"{'case':22} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>7}  notes",
    ]
    for case in result["cases"]:
        notes = []
        if case["freellm_cpu_ms_per_request"] is not None:
            notes.append(
                f"freellm CPU {case['freellm_cpu_ms_per_request']:.2f} ms/req "
                f"({case['freellm_cpu_pct']:.0f}% of a core)"
            )
        notes.append(
            f"fake CPU {case['upstream_cpu_pct']:.0f}%, generator {case['generator_cpu_pct']:.0f}%"
        )
        if case["notes"]:
            notes.append(case["notes"])
        lines.append(
            f"{case['case']:22} {num(case['p50_ms'], 2):>8} {num(case['p99_ms'], 2):>8} "
            f"{num(case['rps'], 0):>8} {case['errors']:>7}  {'; '.join(notes)}"
        )
    rss = result["rss_mib"]
    lines += [
        "",
        f"added latency, p50, c=1:      {result['added_latency_p50_ms']:.2f} ms",
        f"added time to first token:    {result['added_ttfb_p50_ms']:.2f} ms (p50, c=1)",
        f"freellm RSS idle after start: {rss['idle_after_start']:.1f} MiB",
        f"freellm RSS peak, c={result['concurrency']} load: {rss['peak_under_load']:.1f} MiB "
        f"(VmHWM {rss['high_water_mark']:.1f} MiB; idle after the load "
        f"{rss['idle_after_load']:.1f} MiB)",
        "",
        f"{'target (issue 3)':34} {'target':>8} {'measured':>10}",
    ]
    labels = {
        "added_latency_p50_ms_c1": "added latency p50, c=1 (ms)",
        "idle_rss_mb": "idle RSS (MiB)",
    }
    for key, target in result["targets"].items():
        label = labels.get(key, f"req/s at c={result['concurrency']}")
        verdict = "met" if target["met"] else "MISSED"
        lines.append(f"{label:34} {target['target']:>8} {target['measured']:>10}  {verdict}")
    lines.append(
        "for scale (DESIGN.md, bare prototypes): quart-trio + httpx 1.3 ms / ~570 req/s / 47 MB;"
        " raw ASGI + httpx 1.0 ms / ~700 req/s / 36 MB"
    )
    return "\n".join(lines)


# --- the command line ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase (10)")
    parser.add_argument("--concurrency", type=int, default=32, help="the loaded case (32)")
    parser.add_argument("--flavor", choices=sorted(FLAVORS), default="groq")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds per path (2)")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--hold", action="store_true", help="start the servers and wait")
    parser.add_argument("--serve-fake", metavar="FLAVOR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.concurrency < 1:
        parser.error("--duration must be > 0 and --concurrency >= 1")
    return args


def hold(args: argparse.Namespace, setup: Servers, tmp: Path) -> None:
    """Print how to reach both servers (and load them with wrk), then wait for a signal."""
    wrk = " ".join([*taskset(setup.pin, UPSTREAM_CPU), "wrk", "-t1", f"-c{args.concurrency}"])
    for endpoint, pid in ((setup.direct, setup.fake_pid), (setup.proxy, setup.proxy_pid)):
        script = wrk_script(endpoint, tmp)
        print(f"{endpoint.name} (pid {pid}): {endpoint.url} model {endpoint.model}")
        print(f"  {wrk} -d{round(args.duration)}s -s {script} {endpoint.url}")
    print(f"unified key: {setup.proxy.token}; Ctrl-C stops everything", flush=True)
    signal.pause()


def _terminate(signum: int, frame: object) -> None:
    # The same way out as Ctrl-C: inside trio.run, trio's own SIGINT handler raises
    # KeyboardInterrupt where it is safe; elsewhere Python's does.
    signal.raise_signal(signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_fake:
        trio.run(serve_fake, args.serve_fake)
        return 0

    def log(message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    # Ctrl-C and SIGTERM both leave through every `finally` (even where SIGINT was inherited
    # ignored, as in a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    tmp = Path(tempfile.mkdtemp(prefix="freellm-bench-"))
    children = Children()
    try:
        setup = start_servers(args.flavor, tmp, children, pin, log)
        if args.hold:
            hold(args, setup, tmp)
            return 0
        result = bench(args, setup, tmp, log)
        print(json.dumps(result, indent=2) if args.json else table(result), flush=True)
        return 0
    except RuntimeError as exc:
        log(f"failed: {exc}")
        return 1
    except BaseException as exc:
        # Ctrl-C arrives bare, or inside trio.run wrapped in the nursery's exception group.
        rest = exc.split(KeyboardInterrupt)[1] if isinstance(exc, BaseExceptionGroup) else exc
        if rest is not None and not isinstance(rest, KeyboardInterrupt):
            raise
        log("interrupted; stopping")
        return 130
    finally:
        children.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
