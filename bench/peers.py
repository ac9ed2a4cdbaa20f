"""freellm side by side with LiteLLM's proxy and Portkey's gateway, in one run, on one upstream.

Five systems, in turn, in front of the same fast upstream (``bench/_upstream.py``, a raw asyncio
protocol server; the OpenAI flavor, under ``/v1``):

- ``direct``: straight to the upstream, the baseline every proxy's added latency is taken from;
- ``relay``: the bare relay (``bench/_relay.py``): hypercorn with freellm's server settings, a raw
  ASGI app and freellm's own upstream transport, nothing else: the floor under freellm;
- ``freellm``: this working tree, set up as a user would (``bench/_freellm.py``);
- ``litellm``: LiteLLM's proxy (``litellm[proxy]``, pinned below), one uvicorn worker, one
  deployment ``openai/<model>`` whose ``api_base`` is the upstream, no retries;
- ``portkey``: Portkey's gateway (``@portkey-ai/gateway``, pinned below) under node, told the
  provider and the upstream in headers (``x-portkey-provider: openai``,
  ``x-portkey-custom-host``). Its 1.15.2 answers streams with 500 ("TypeError: immutable" in
  ``updateHeaders``) unless ``@hono/node-server`` is pinned to 1.13.8: the install pins it with
  an npm ``overrides`` entry. node runs it with a preload (``bench-loopback.cjs``) that binds it
  to 127.0.0.1 (it would listen on every address) and refuses connections outside loopback.

The peers are installed outside the project, only when missing, under ``--peers-dir``
(``~/.cache/freellm-bench``): LiteLLM in a virtualenv of its own (``litellm-venv``), Portkey
with npm (``portkey``). Never in the project's venv, never in its dependencies.

For each system: one answer and one stream checked through it; its idle RSS; then non-streamed
chat completions at concurrency 1 and 32 (p50, p99, req/s, CPU ms per request), streams of 20
chunks at concurrency 32 (streams/s, p50 of the whole stream), the peak RSS over those phases;
then ``--slow-streams`` N streams at once (1,000), made slow by the upstream's chunk delay
(``--slow-delay``, 0.5 s: 9.5 s a stream): how many completed with every chunk and ``[DONE]``,
when the last ended, the most open at once, the peak RSS and the CPU spent. A stream not ended
within ``--slow-timeout`` (a stream's time, a minute and a second per 100 streams) fails. CPU
and RSS are the system's whole process tree's (``/proc``); ``direct``'s are the upstream's. How
much of CPU 0 other processes took is measured too (``/proc/stat``): the machine is shared, and
where they took a lot the req/s is low by that much, so each throughput target is also given by
CPU per request (the same ratio on a whole core each).

With ``--http2`` the slow streams go over h2c (hypercorn's prior knowledge) to the systems that
serve it (relay and freellm; the others get HTTP/1.1), many streams a connection: 10,000 streams
over HTTP/1.1 would need 20,000 descriptors in the proxy, the open-files limit here.

The benchmarks' rules hold (DEVELOPERS.md): the system measured runs alone on CPU 0, the upstream
and the load generator (wrk if on PATH, else bench/_load.py's) share CPU 1; the direct baseline
is measured in the same run and must be at least 10x the fastest proxy; every figure compared
comes from this run. At the end: the table, and the issue's targets as ratios of this run's
figures.

Run::

    .venv/bin/python bench/peers.py [--systems direct,relay,freellm,litellm,portkey]
        [--duration 5] [--slow-streams 1000] [--slow-delay 0.5] [--http2] [--skip-install]
        [--peers-dir DIR] [--no-pin] [--json]
    .venv/bin/python bench/peers.py --systems freellm --slow-streams 10000 --http2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
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
from typing import Any, Final

import attrs
import trio

import _relay
import proxy_bench as pb
from _freellm import clean_environ, start_freellm, working_tree
from _load import Connection, Endpoint, Generator, Measured, PythonLoad, Wrk
from _procs import (
    FLAVORS,
    Children,
    cpu_seconds,
    own_cpu_seconds,
    run_stopping_everything,
    taskset,
    wait_for_output,
)
from _procs import http_request as plain_request
from _report import RULE_FACTOR
from _streams import open_streams, verdict

LITELLM_VERSION: Final = "1.108.7"  # the latest whose [proxy] extra installs on Python 3.11 here
PORTKEY_VERSION: Final = "1.15.2"
HONO_NODE_SERVER_VERSION: Final = "1.13.8"  # 1.15.2 breaks streams with a newer one
SYSTEMS: Final = ("direct", "relay", "freellm", "litellm", "portkey")
H2C: Final = frozenset({"relay", "freellm"})  # the systems that serve h2c
CHUNKS: Final = 20
FLAVOR: Final = FLAVORS["openai"]
STARTUP_TIMEOUT_S: Final = 120.0  # LiteLLM takes 15-30 s on one core
IDLE_SETTLE_S: Final = 1.5
RSS_SAMPLE_S: Final = 0.1
SLOW_GRACE_S: Final = 60.0  # a slow phase ends this long after its streams should have,
STREAMS_PER_GRACE_S: Final = 100  # plus a second per this many streams (CPU: 10,000 take ~60 s)

LOOPBACK_PRELOAD: Final = """\
// Written by freellm's bench/peers.py: keep the gateway on loopback.
'use strict';
const net = require('net');
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1']);
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'object' && args[0] !== null) {
    args[0] = { ...args[0], host: '127.0.0.1' };
  } else {
    args = [args[0], '127.0.0.1', ...args.slice(1).filter((a) => typeof a !== 'string')];
  }
  return listen.apply(this, args);
};
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  const first = Array.isArray(args[0]) ? args[0][0] : args[0];
  const options = typeof first === 'object' && first !== null ? first : { host: args[1] };
  const host = options.host || 'localhost';
  if (!options.path && !LOOPBACK.has(host)) {
    const error = new Error(`bench: no connections outside loopback (${host})`);
    process.nextTick(() => this.destroy(error));
    return this;
  }
  return connect.apply(this, args);
};
"""


# --- installing the peers ------------------------------------------------------------------------


def _version(python: Path, package: str) -> str | None:
    if not python.exists():
        return None
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def _npm_version(root: Path, package: str) -> str | None:
    try:
        manifest = json.loads((root / "node_modules" / package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    return str(manifest.get("version"))


def _run(argv: Sequence[str], cwd: Path | None = None) -> None:
    done = subprocess.run(list(argv), cwd=cwd, stdout=sys.stderr, stderr=sys.stderr, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed with {done.returncode}")


def ensure_litellm(peers_dir: Path, install: bool, log: Callable[[str], None]) -> Path:
    """LiteLLM's ``litellm`` command, pinned, in a virtualenv of its own (installed if missing).

    Raises ``RuntimeError`` if it is missing and may not be installed, or the install fails.
    """
    venv = peers_dir / "litellm-venv"
    python = venv / "bin" / "python"
    if _version(python, "litellm") != LITELLM_VERSION:
        if not install:
            raise RuntimeError(f"litellm {LITELLM_VERSION} is not in {venv} (--skip-install)")
        log(f"installing litellm[proxy]=={LITELLM_VERSION} into its own virtualenv {venv}")
        _run([sys.executable, "-m", "venv", str(venv)])
        _run([str(python), "-m", "pip", "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"])
    return venv / "bin" / "litellm"


def ensure_portkey(peers_dir: Path, install: bool, log: Callable[[str], None]) -> Path:
    """Portkey's gateway's ``start-server.js``, pinned, installed with npm if missing.

    Raises ``RuntimeError`` if it is missing and may not be installed (no npm, or
    ``--skip-install``), or the install fails.
    """
    root = peers_dir / "portkey"
    wanted = {
        "@portkey-ai/gateway": PORTKEY_VERSION,
        "@hono/node-server": HONO_NODE_SERVER_VERSION,
    }
    if any(_npm_version(root, name) != version for name, version in wanted.items()):
        npm = shutil.which("npm")
        if not install or npm is None:
            why = "--skip-install" if not install else "no npm on PATH (apt-get install npm)"
            raise RuntimeError(f"@portkey-ai/gateway {PORTKEY_VERSION} is not in {root} ({why})")
        log(
            f"installing @portkey-ai/gateway@{PORTKEY_VERSION} with @hono/node-server pinned to "
            f"{HONO_NODE_SERVER_VERSION} (npm overrides) into {root}"
        )
        root.mkdir(parents=True, exist_ok=True)
        manifest = {
            "name": "freellm-bench-portkey",
            "private": True,
            "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
            "overrides": {"@hono/node-server": HONO_NODE_SERVER_VERSION},
        }
        (root / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _run([npm, "install", "--no-audit", "--no-fund"], cwd=root)
    (root / "bench-loopback.cjs").write_text(LOOPBACK_PRELOAD)
    return root / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"


# --- process trees -------------------------------------------------------------------------------


def tree(root: int) -> list[int]:
    """``root`` and every process descended from it, from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                parent = int(stat.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def cpu_busy_seconds(cpu: int) -> float:
    """Time CPU ``cpu`` has spent busy (anyone's work, interrupts included), from /proc/stat."""
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith(f"cpu{cpu} "):
                ticks = [int(field) for field in line.split()[1:]]
                busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # all but idle and iowait
                return busy / os.sysconf("SC_CLK_TCK")
    return 0.0


def tree_cpu_seconds(root: int) -> float:
    return sum(cpu_seconds(pid) for pid in tree(root))


def tree_rss_kib(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


class PeakTreeRss:
    """The largest RSS of a process tree (all its processes added up), sampled by a thread."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak_kib = 0
        self.processes = 1

    @contextlib.contextmanager
    def sampling(self) -> Iterator[PeakTreeRss]:
        stop = threading.Event()

        def sample() -> None:
            while True:
                pids = tree(self.root)
                self.processes = max(self.processes, len(pids))
                self.peak_kib = max(self.peak_kib, tree_rss_kib(pids))
                if stop.wait(RSS_SAMPLE_S):
                    return

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()


# --- the systems ---------------------------------------------------------------------------------


@attrs.frozen
class System:
    name: str
    description: str
    endpoint: Endpoint
    pid: int  # the root of its process tree
    process: subprocess.Popen[bytes] | None  # None: not ours to stop (the upstream)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(process: subprocess.Popen[bytes], url: str, name: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        with contextlib.suppress(OSError):
            if plain_request(url)[0] == 200:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} never became ready at {url}")
        time.sleep(0.25)


@attrs.frozen
class Context:
    """What starting a system needs."""

    upstream: pb.Upstream
    tmp: Path
    children: Children
    env: dict[str, str]
    pin: bool
    peers: dict[str, Path]  # the installed peers' entry points
    log: Callable[[str], None]

    @property
    def upstream_chat(self) -> str:
        return f"{self.upstream.base_url}/chat/completions"


def start_system(name: str, ctx: Context) -> System:
    """``name`` started on CPU 0 (if pinned) in front of the upstream, and ready.

    Raises ``RuntimeError`` if it fails to start.
    """
    on_cpu0 = taskset(ctx.pin, pb.PROXY_CPU)
    out = ctx.tmp / f"{name}.log"
    model = FLAVOR.model
    if name == "direct":
        endpoint = Endpoint(name, ctx.upstream_chat, pb.UPSTREAM_SECRET, model)
        return System(name, "the upstream itself", endpoint, ctx.upstream.pid, None)
    if name == "relay":
        argv = [*on_cpu0, *_relay.command(ctx.upstream_chat)]
        process = ctx.children.spawn(argv, output=out, env=ctx.env)
        url = wait_for_output(process, out, _relay.URL_PATTERN, STARTUP_TIMEOUT_S)[1]
        endpoint = Endpoint(name, f"{url}/v1/chat/completions", pb.UPSTREAM_SECRET, model)
        description = "bench/_relay.py: hypercorn + raw ASGI + freellm's H11Transport"
        return System(name, description, endpoint, process.pid, process)
    if name == "freellm":
        build = working_tree()
        cpu = pb.PROXY_CPU if ctx.pin else None
        instance = start_freellm(
            build, FLAVOR, ctx.upstream.base_url, ctx.tmp, ctx.children, env=ctx.env, cpu=cpu,
            log=ctx.log,
        )  # fmt: skip
        process = next(p for p in ctx.children.running if p.pid == instance.pid)
        return System(name, build.label, instance.endpoint, instance.pid, process)
    port = free_port()
    if name == "litellm":
        master_key = "sk-" + secrets.token_hex(32)  # never printed
        config = ctx.tmp / "litellm.yaml"
        config.write_text(
            "model_list:\n"
            f"  - model_name: {model}\n"
            "    litellm_params:\n"
            f"      model: openai/{model}\n"
            f"      api_base: {ctx.upstream.base_url}\n"
            f"      api_key: {pb.UPSTREAM_SECRET}\n"
            "litellm_settings:\n"
            "  num_retries: 0\n"
            "general_settings:\n"
            "  master_key: os.environ/LITELLM_MASTER_KEY\n"
        )
        env = dict(ctx.env, LITELLM_MASTER_KEY=master_key, LITELLM_LOCAL_MODEL_COST_MAP="True")
        argv = [*on_cpu0, str(ctx.peers["litellm"]), "--config", str(config)]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
        process = ctx.children.spawn(argv, output=out, env=env, cwd=ctx.tmp)
        _wait_ready(process, f"http://127.0.0.1:{port}/health/liveliness", name)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        description = f"LiteLLM {LITELLM_VERSION} proxy, 1 uvicorn worker, no retries"
        return System(
            name, description, Endpoint(name, url, master_key, model), process.pid, process
        )
    if name == "portkey":
        script = ctx.peers["portkey"]
        preload = script.parents[4] / "bench-loopback.cjs"
        node = shutil.which("node") or "node"
        argv = [*on_cpu0, node, "--require", str(preload), str(script), f"--port={port}"]
        process = ctx.children.spawn([*argv, "--headless"], output=out, env=ctx.env)
        wait_for_output(process, out, r"Ready for connections", STARTUP_TIMEOUT_S)
        headers = (
            ("x-portkey-provider", "openai"),
            ("x-portkey-custom-host", ctx.upstream.base_url),
        )
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        endpoint = Endpoint(name, url, pb.UPSTREAM_SECRET, model, headers)
        version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
        description = (
            f"Portkey gateway {PORTKEY_VERSION} (@hono/node-server {HONO_NODE_SERVER_VERSION}), "
            f"node {version.strip()}, --headless"
        )
        return System(name, description, endpoint, process.pid, process)
    raise ValueError(f"no such system: {name}")


def stop_system(system: System) -> None:
    """SIGTERM to the system's process group (each child runs in a session of its own), then
    SIGKILL if it is still there 10 s later."""
    process = system.process
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def check_system(endpoint: Endpoint) -> None:
    """One answer and one stream through ``endpoint``, both whole.

    Raises ``RuntimeError`` with what came back if either is not.
    """

    async def exchange(stream: bool) -> tuple[int, bytes]:
        connection = await Connection.open(endpoint.host, endpoint.port)
        try:
            return await connection.fetch(endpoint.request(stream=stream))
        finally:
            connection.close()

    status, body = trio.run(exchange, False)
    if status != 200 or b"word19" not in body:
        raise RuntimeError(f"{endpoint.name}: HTTP {status}: {body[:500]!r}")
    status, body = trio.run(exchange, True)
    if (problem := verdict(status, body, CHUNKS)) is not None:
        raise RuntimeError(f"{endpoint.name}: stream: {problem}: {body[:500]!r}")


def set_chunk_delay(upstream: pb.Upstream, seconds: float) -> None:
    base = upstream.base_url.removesuffix(FLAVOR.prefix)
    body = str(seconds).encode()
    status, _, answer = plain_request(f"{base}/bench/chunk-delay", method="POST", body=body)
    if status != 200:
        raise RuntimeError(f"the upstream refused the chunk delay: {answer!r}")


# --- measuring one system ------------------------------------------------------------------------


@attrs.frozen
class Run:
    """What every system is measured with."""

    ctx: Context
    generator: Generator
    concurrency: int
    duration: float
    warmup: float
    slow_streams: int
    slow_delay: float
    slow_timeout: float | None
    http2: bool


def load_phase(run: Run, system: System, concurrency: int, stream: bool) -> dict[str, Any]:
    """One load phase on ``system``, with the CPU time of each party over it."""
    upstream = run.ctx.upstream
    own, other = tree_cpu_seconds(system.pid), cpu_seconds(upstream.pid)
    generator, cpu0 = own_cpu_seconds(), cpu_busy_seconds(pb.PROXY_CPU)
    began = time.perf_counter()
    measured: Measured = run.generator.run(
        system.endpoint, concurrency, run.duration, stream=stream
    )
    wall = time.perf_counter() - began
    cpu = tree_cpu_seconds(system.pid) - own
    cpu0 = cpu_busy_seconds(pb.PROXY_CPU) - cpu0
    # What else ran on the system's CPU: the machine is shared (direct's system is on CPU 1).
    others_pct = 100 * (cpu0 - (cpu if system.name != "direct" else 0.0)) / wall
    upstream_pct = 100 * (cpu_seconds(upstream.pid) - other) / wall
    generator_pct = 100 * (own_cpu_seconds() - generator) / wall
    cpu_pct = 100 * cpu / wall
    limits = []
    if concurrency > 1 and cpu_pct >= SATURATED_PCT:
        limits.append("own CPU")
    if concurrency > 1 and run.ctx.pin and upstream_pct + generator_pct >= SATURATED_PCT:
        limits.append("up+gen CPU")
    return {
        "p50_ms": round(measured.p50_ms, 3),
        "p99_ms": round(measured.p99_ms, 3),
        "rps": round(measured.rps, 1),
        "requests": measured.requests,
        "errors": measured.errors,
        "cpu_ms_per_request": round(1000 * cpu / measured.requests, 3)
        if measured.requests
        else None,
        "cpu_pct": round(cpu_pct, 1),
        "upstream_cpu_pct": round(upstream_pct, 1),
        "generator_cpu_pct": round(generator_pct, 1),
        "others_on_cpu0_pct": round(max(0.0, others_pct), 1) if run.ctx.pin else None,
        "limited_by": ", ".join(limits),
    }


def slow_timeout(streams: int, delay: float) -> float:
    """The default time the slow streams have to end: a stream's time, a minute, and a second
    per :data:`STREAMS_PER_GRACE_S` streams (a proxy on one core takes a few ms of CPU for each
    slow stream, so 10,000 at once end late however good it is)."""
    return delay * (CHUNKS - 1) + SLOW_GRACE_S + streams / STREAMS_PER_GRACE_S


def slow_phase(run: Run, system: System) -> dict[str, Any]:
    """``slow_streams`` streams at once, slowed by the upstream's chunk delay."""
    http2 = run.http2 and system.name in H2C
    expected = run.slow_delay * (CHUNKS - 1)
    timeout = run.slow_timeout or slow_timeout(run.slow_streams, run.slow_delay)
    peak = PeakTreeRss(system.pid)
    set_chunk_delay(run.ctx.upstream, run.slow_delay)
    own, began = tree_cpu_seconds(system.pid), time.perf_counter()
    try:
        with peak.sampling():
            outcome = open_streams(
                system.endpoint, run.slow_streams, chunks=CHUNKS, timeout=timeout, http2=http2
            )
    finally:
        set_chunk_delay(run.ctx.upstream, 0)
    cpu, wall = tree_cpu_seconds(system.pid) - own, time.perf_counter() - began
    return {
        **outcome.data(),
        "stream_s": expected,
        "timeout_s": timeout,
        "peak_rss_mib": round(peak.peak_kib / 1024, 1),
        "cpu_pct": round(100 * cpu / wall, 1),
        "cpu_ms_per_stream": round(1000 * cpu / run.slow_streams, 3),
    }


def measure(run: Run, system: System) -> dict[str, Any]:
    """Every phase on ``system`` (checked first), and its RSS."""
    log, c = run.ctx.log, run.concurrency
    check_system(system.endpoint)
    time.sleep(IDLE_SETTLE_S)
    idle_kib = tree_rss_kib(tree(system.pid))
    peak = PeakTreeRss(system.pid)
    phases: dict[str, dict[str, Any]] = {}
    with peak.sampling():
        if run.warmup > 0:
            run.generator.run(system.endpoint, c, run.warmup)
            run.generator.run(system.endpoint, c, run.warmup, stream=True)
        for key, concurrency, stream in (("c1", 1, False), ("cN", c, False), ("stream", c, True)):
            log(f"{system.name}: {'streams' if stream else 'JSON'} at c={concurrency}")
            phases[key] = load_phase(run, system, concurrency, stream)
    result: dict[str, Any] = {
        "description": system.description,
        "pid": system.pid,
        **phases,
        "rss_idle_mib": round(idle_kib / 1024, 1),
        "rss_peak_mib": round(peak.peak_kib / 1024, 1),
        "processes": peak.processes,
        "slow": None,
    }
    if run.slow_streams > 0:
        log(f"{system.name}: {run.slow_streams} slow streams at once")
        result["slow"] = slow_phase(run, system)
    return result


# --- the report ----------------------------------------------------------------------------------

SATURATED_PCT: Final = 90.0
SHARED_PCT: Final = 10.0  # other processes on the system's CPU: worth a warning
RSS_TARGET_MIB: Final = 100.0  # "peak RSS <= 100 MB", read as MiB as the other benches do
RSS_TARGET_STREAMS: Final = 1000  # ... with 1,000 streams open


def _get(result: dict[str, Any] | None, *keys: str) -> Any:
    value: Any = result
    for key in keys:
        if value is None:
            return None
        value = value.get(key)
    return value


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def targets(results: dict[str, dict[str, Any]], c: int, slow_streams: int) -> list[dict[str, Any]]:
    """The issue's targets for freellm, each from this run's figures; ``met`` is None where a
    system it is compared with was not measured."""
    free = results.get("freellm")
    if free is None:
        return []
    found: list[dict[str, Any]] = []

    def add(label: str, target: str, measured: str, met: bool | None) -> None:
        found.append({"label": label, "target": target, "measured": measured, "met": met})

    def fmt(value: float | None, spec: str, unit: str = "") -> str:
        return "-" if value is None else format(value, spec) + unit

    for peer, factor in (("litellm", 10.0), ("portkey", 1.0)):
        ratio = _ratio(_get(free, "cN", "rps"), _get(results.get(peer), "cN", "rps"))
        met = None if ratio is None else ratio >= factor
        add(f"req/s at c={c}, freellm / {peer}", f">= {factor:g}x", fmt(ratio, ".2f", "x"), met)
        # The same on a whole core each: CPU per request, the steadier figure.
        key = ("cN", "cpu_ms_per_request")
        ratio = _ratio(_get(results.get(peer), *key), _get(free, *key))
        met = None if ratio is None else ratio >= factor
        add(
            f"  by CPU/request: {peer}'s / freellm's",
            f">= {factor:g}x",
            fmt(ratio, ".2f", "x"),
            met,
        )
    ours, theirs = free.get("added_p50_ms"), _get(results.get("portkey"), "added_p50_ms")
    add(
        "added p50 at c=1 (ms), freellm vs portkey",
        "<= portkey",
        f"{fmt(ours, '.2f')} vs {fmt(theirs, '.2f')}",
        None if ours is None or theirs is None else ours <= theirs,
    )
    ratio = _ratio(_get(free, "stream", "rps"), _get(results.get("relay"), "stream", "rps"))
    add(
        f"streams/s at c={c}, freellm / relay",
        ">= 0.90x",
        fmt(ratio, ".2f", "x"),
        None if ratio is None else ratio >= 0.9,
    )
    key = ("stream", "cpu_ms_per_request")
    ratio = _ratio(_get(results.get("relay"), *key), _get(free, *key))
    add(
        "  by CPU/stream: relay's / freellm's",
        ">= 0.90x",
        fmt(ratio, ".2f", "x"),
        None if ratio is None else ratio >= 0.9,
    )
    slow = free.get("slow")
    if slow is not None:
        add(
            f"{slow_streams:,} slow streams at once, completed",
            "all",
            f"{slow['completed']:,}/{slow['requested']:,}",
            slow["completed"] == slow["requested"],
        )
        if slow_streams <= RSS_TARGET_STREAMS:  # the issue sets no RSS target above
            add(
                f"{slow_streams:,} slow streams, peak RSS (MiB)",
                f"<= {RSS_TARGET_MIB:g}",
                f"{slow['peak_rss_mib']:.1f}",
                slow["peak_rss_mib"] <= RSS_TARGET_MIB,
            )
    return found


def upstream_check(results: dict[str, dict[str, Any]], c: int) -> dict[str, Any] | None:
    """Rule 1: the direct baseline's req/s at c must be 10x the fastest proxy's."""
    direct = _get(results.get("direct"), "cN", "rps")
    proxies = {name: r["cN"]["rps"] for name, r in results.items() if name != "direct"}
    if direct is None or not proxies:
        return None
    fastest = max(proxies, key=lambda name: proxies[name])
    ratio = _ratio(direct, proxies[fastest]) or 0.0
    return {
        "direct_rps": direct,
        "fastest": fastest,
        "fastest_rps": proxies[fastest],
        "ratio": round(ratio, 1),
        "ok": ratio >= RULE_FACTOR,
        "direct_limited_by": _get(results["direct"], "cN", "limited_by"),
    }


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}"


def table(result: dict[str, Any]) -> str:
    results: dict[str, dict[str, Any]] = result["systems"]
    c, slow_n = result["concurrency"], result["slow_streams"]
    names = list(results)
    rows: list[tuple[str, Callable[[dict[str, Any]], Any], int]] = [
        ("JSON c=1: p50 (ms)", lambda r: r["c1"]["p50_ms"], 2),
        ("JSON c=1: p99 (ms)", lambda r: r["c1"]["p99_ms"], 2),
        ("JSON c=1: added p50 (ms)", lambda r: r.get("added_p50_ms"), 2),
        (f"JSON c={c}: req/s", lambda r: r["cN"]["rps"], 0),
        (f"JSON c={c}: p50 (ms)", lambda r: r["cN"]["p50_ms"], 2),
        (f"JSON c={c}: p99 (ms)", lambda r: r["cN"]["p99_ms"], 2),
        (f"JSON c={c}: CPU ms/request", lambda r: r["cN"]["cpu_ms_per_request"], 3),
        (f"JSON c={c}: CPU % of a core", lambda r: r["cN"]["cpu_pct"], 0),
        (f"JSON c={c}: others on CPU 0 (%)", lambda r: r["cN"]["others_on_cpu0_pct"], 0),
        (f"streams c={c}: streams/s", lambda r: r["stream"]["rps"], 0),
        (f"streams c={c}: p50, whole (ms)", lambda r: r["stream"]["p50_ms"], 1),
        (f"streams c={c}: CPU ms/stream", lambda r: r["stream"]["cpu_ms_per_request"], 3),
        (
            "errors, all load phases",
            lambda r: sum(r[k]["errors"] for k in ("c1", "cN", "stream")),
            0,
        ),
        ("RSS idle (MiB)", lambda r: r["rss_idle_mib"], 1),
        ("RSS peak under load (MiB)", lambda r: r["rss_peak_mib"], 1),
        ("processes", lambda r: r["processes"], 0),
    ]
    if slow_n:
        rows += [
            (f"{slow_n:,} slow streams: completed", lambda r: _get(r, "slow", "completed"), 0),
            ("slow: most open at once", lambda r: _get(r, "slow", "peak_open"), 0),
            ("slow: last ended (s)", lambda r: _get(r, "slow", "last_s"), 1),
            ("slow: peak RSS (MiB)", lambda r: _get(r, "slow", "peak_rss_mib"), 1),
            ("slow: CPU % of a core", lambda r: _get(r, "slow", "cpu_pct"), 0),
            ("slow: CPU ms/stream", lambda r: _get(r, "slow", "cpu_ms_per_stream"), 2),
        ]
    setup = result["setup"]
    lines = [
        "freellm side by side (issue 11): every figure from this one run",
        f"upstream: {setup['upstream']}",
        f"load: {setup['generator']} for JSON and streams; slow streams: {setup['slow']}",
        f"pinning: {setup['pinning']}; {setup['cpus']} CPUs; phases of {setup['duration_s']:g} s "
        f"after {setup['warmup_s']:g} s of warm-up; CPU and RSS: each system's process tree",
        "",
    ]
    lines += [f"  {name:8} {r['description']} (pid {r['pid']})" for name, r in results.items()]
    lines += [f"  {name:8} NOT MEASURED: {why}" for name, why in result["not_measured"].items()]
    lines += ["", f"{'':34}" + "".join(f"{name:>11}" for name in names)]
    for label, pick, digits in rows:
        lines.append(
            f"{label:34}" + "".join(f"{_cell(pick(results[n]), digits):>11}" for n in names)
        )
    lines.append(
        f"{f'c={c} limited by':34}"
        + "".join(f"{results[n]['cN']['limited_by'] or '-':>11}" for n in names)
    )
    for name, r in results.items():
        for why, count in (_get(r, "slow", "failures") or {}).items():
            lines.append(f"slow streams failed on {name}: {count:,} x {why}")
        if r.get("slow"):
            lines.append(f"slow streams on {name}: {r['slow']['protocol']}")
    busy = {n: r["cN"]["others_on_cpu0_pct"] for n, r in results.items() if n != "direct"}
    busy = {n: pct for n, pct in busy.items() if pct is not None and pct >= SHARED_PCT}
    if busy:
        lines.append(
            f"WARNING: other processes took CPU 0 from the system measured at c={c} ("
            + ", ".join(f"{n} {pct:.0f}%" for n, pct in busy.items())
            + " of a core): its req/s is low by about that much; the CPU ratios hold."
        )
    check = result["upstream_check"]
    if check is not None:
        verdict = "OK" if check["ok"] else "WARNING: the proxied figures may measure the upstream"
        lines += [
            "",
            f"upstream check: direct {check['direct_rps']:,.0f} req/s at c={c} is "
            f"{check['ratio']:.1f}x {check['fastest']}'s {check['fastest_rps']:,.0f} "
            f"(rule: >= {RULE_FACTOR:g}x): {verdict}",
        ]
    if result["targets"]:
        lines += ["", f"{'target (issue 11), freellm':44} {'target':>12} {'measured':>16}"]
        lines.append("(by CPU: the same ratio on a whole core each, from CPU ms per request)")
        for t in result["targets"]:
            met = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
            lines.append(f"{t['label']:44} {t['target']:>12} {t['measured']:>16}  {met}")
    lines.append(
        "limited by: own CPU = the system's process tree used >= 90% of a core; up+gen CPU = the "
        "upstream and load generator >= 90% of theirs."
    )
    lines.append("The machine is shared: compare only within a run; CPU ms/request is steadier.")
    return "\n".join(lines)


# --- the run -------------------------------------------------------------------------------------


def _stop_strays(children: Children, keep: int) -> None:
    """Stop every system process still running but the upstream (a failed start leaves one)."""
    for process in children.running:
        if process.pid != keep and process.poll() is None:
            stop_system(System("", "", Endpoint("", "", "", ""), process.pid, process))


def run(
    args: argparse.Namespace, stack: contextlib.ExitStack, *, log: Callable[[str], None]
) -> int:
    pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    tmp = Path(tempfile.mkdtemp(prefix="freellm-peers-"))
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    not_measured: dict[str, str] = {}
    peers: dict[str, Path] = {}
    installers = {"litellm": ensure_litellm, "portkey": ensure_portkey}
    for name, ensure in installers.items():
        if name in args.systems:
            try:
                peers[name] = ensure(args.peers_dir, not args.skip_install, log)
            except RuntimeError as exc:
                not_measured[name] = str(exc)
                log(f"{name}: {exc}")
    children = Children()
    stack.callback(children.stop_all)
    env = dict(clean_environ(os.environ), ENCRYPTION_KEY=pb.ENCRYPTION_KEY)
    upstream = pb.start_upstream("fast", "openai", tmp, children, env, pin)
    log(f"{upstream.description} at {upstream.base_url} (pid {upstream.pid})")
    wrk = shutil.which("wrk")
    generator: Generator = (
        Wrk(wrk, tmp, taskset(pin, pb.UPSTREAM_CPU)) if wrk is not None else PythonLoad()
    )
    if pin:
        os.sched_setaffinity(0, {pb.UPSTREAM_CPU})  # our own clients: with the upstream
    ctx = Context(upstream, tmp, children, env, pin, peers, log)
    bench = Run(
        ctx,
        generator,
        args.concurrency,
        args.duration,
        args.warmup,
        args.slow_streams,
        args.slow_delay,
        args.slow_timeout,
        args.http2,
    )
    results: dict[str, dict[str, Any]] = {}
    for name in args.systems:
        if name in not_measured:
            continue
        system: System | None = None
        try:
            system = start_system(name, ctx)
            log(f"{name}: {system.description} (pid {system.pid})")
            results[name] = measure(bench, system)
        except RuntimeError as exc:
            not_measured[name] = f"failed: {exc}"
            log(f"{name} failed: {exc}")
        finally:
            if system is not None:
                stop_system(system)
            _stop_strays(children, upstream.pid)
    direct_p50 = _get(results.get("direct"), "c1", "p50_ms")
    for r in results.values():
        r["added_p50_ms"] = None if direct_p50 is None else round(r["c1"]["p50_ms"] - direct_p50, 3)
    stream_s = args.slow_delay * (CHUNKS - 1)
    slow = f"{args.slow_delay:g} s between {CHUNKS} chunks ({stream_s:g} s a stream), all sent at "
    timeout = args.slow_timeout or slow_timeout(args.slow_streams, args.slow_delay)
    slow += f"once, trio client, {timeout:g} s to end"
    if args.http2:
        slow += f" (h2c to {', '.join(sorted(H2C))}, HTTP/1.1 to the rest)"
    result = {
        "setup": {
            "upstream": f"{upstream.description}, {upstream.base_url}",
            "generator": generator.name,
            "slow": slow,
            "pinning": f"each system on CPU {pb.PROXY_CPU}; upstream and load generator on CPU "
            f"{pb.UPSTREAM_CPU} (taskset)"
            if pin
            else "none",
            "cpus": os.cpu_count(),
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "litellm": LITELLM_VERSION,
            "portkey": PORTKEY_VERSION,
            "hono_node_server": HONO_NODE_SERVER_VERSION,
        },
        "concurrency": args.concurrency,
        "slow_streams": args.slow_streams,
        "systems": results,
        "not_measured": not_measured,
        "upstream_check": upstream_check(results, args.concurrency),
        "targets": targets(results, args.concurrency, args.slow_streams),
    }
    print(json.dumps(result, indent=2) if args.json else table(result), flush=True)
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated, of {','.join(SYSTEMS)} (all; direct is always measured)",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per phase (5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds per system (1)")
    parser.add_argument("--concurrency", type=int, default=32, help="the loaded phases' (32)")
    parser.add_argument("--slow-streams", type=int, default=1000, metavar="N", help="(1000)")
    parser.add_argument("--slow-delay", type=float, default=0.5, metavar="S", help="(0.5)")
    parser.add_argument(
        "--slow-timeout",
        type=float,
        metavar="S",
        help="seconds before unfinished slow streams fail (a stream's time + 60 + N/100)",
    )
    parser.add_argument("--http2", action="store_true", help="slow streams over h2c if served")
    parser.add_argument("--skip-install", action="store_true", help="never install the peers")
    parser.add_argument(
        "--peers-dir",
        type=Path,
        default=Path.home() / ".cache" / "freellm-bench",
        help="where the peers are installed (~/.cache/freellm-bench)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SYSTEMS))
    if unknown:
        parser.error(f"--systems: no such system: {', '.join(unknown)}")
    args.systems = [name for name in SYSTEMS if name in {"direct", *names}]
    if args.duration <= 0 or args.concurrency < 1 or args.slow_streams < 0:
        parser.error("--duration must be > 0, --concurrency >= 1, --slow-streams >= 0")
    if not 0 <= args.slow_delay <= 60:
        parser.error("--slow-delay must be from 0 to 60")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def log(message: str) -> None:
        print(f"[peers] {message}", file=sys.stderr, flush=True)

    return run_stopping_everything(partial(run, args, log=log), log)


if __name__ == "__main__":
    sys.exit(main())
