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
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from _load import (
    Endpoint,
    Generator,
    Measured,
    PythonLoad,
    Wrk,
    first_byte,
    wrk_script,
)
from _procs import (
    FLAVORS,
    Children,
    PeakRss,
    config_text,
    cpu_seconds,
    freellm_command,
    http_request,
    mib,
    own_cpu_seconds,
    proc_status_kib,
    run_cli,
    serve_fake,
    taskset,
    wait_for_output,
)
from _report import Row, table

ENCRYPTION_KEY: Final = "b3" * 32
UPSTREAM_SECRET: Final = "sk-bench-upstream"
STARTUP_TIMEOUT_S: Final = 20.0
IDLE_SETTLE_S: Final = 1.5  # after /readyz, before reading the idle RSS: start-up work settles
PROXY_CPU: Final = 0
UPSTREAM_CPU: Final = 1  # the fake and the load generator

# Issue 3's targets (and DESIGN.md's measured prototypes, for scale).
TARGET_ADDED_P50_MS: Final = 1.0
TARGET_RPS: Final = 600.0
TARGET_IDLE_RSS_MB: Final = 45.0


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
