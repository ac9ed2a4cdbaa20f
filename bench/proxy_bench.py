"""What freellm adds to a request: latency, throughput, time to first token, memory and CPU.

One run sets freellm up as a user would, in front of an upstream, and measures, in the same run,
the direct path (straight to the upstream: the baseline) and the path through freellm. With
``--baseline-ref REF`` it also measures a second freellm built from the git ref ``REF`` (see
``_freellm.py``), alternating the two, and prints both side by side with the change in percent.

The upstream runs in a process of its own, so that it never shares freellm's CPU in-process:

- ``--upstream fast`` (the default): ``bench/_upstream.py``, a raw asyncio protocol server whose
  answers are built once; with the ``groq`` flavor it sends Groq's rate-limit headers;
- ``--upstream fake``: ``freellm.sim.fakes`` under hypercorn (``openai`` or ``groq`` flavor, no
  caps, ``record=False``). It saturates at a few hundred req/s, about what freellm does, so the
  figures then measure the fake: it is here to show that, not to measure freellm.

The upstream must be at least 10x faster than freellm, or the figures measure the upstream: the
run checks the direct baseline's req/s at ``--concurrency`` against each freellm's and prints a
WARNING, with what limited the direct phase, when it is less than 10x.

Each freellm server runs ``freellm serve`` (``python -m freellm.cli``) with its own temporary
``--data-dir``, ``ENCRYPTION_KEY`` set, a config file pointing the provider's ``base_url`` at the
upstream, a key added with ``freellm keys add`` and the unified key read with ``freellm token``.

The phases, each on the direct path once and on each freellm ``--rounds`` times (1; 2 with a
baseline, in A B B A order so that drift over the run falls on both alike):

1. non-streamed chat completions of a small prompt: latency p50/p99 at concurrency 1 and at
   ``--concurrency`` (32), requests/s at 32;
2. streamed: time to the first SSE ``data:`` event (the first token a client sees), p50;
3. each freellm's RSS (``VmRSS``) idle after start-up and its peak under the concurrency-32 load;
4. the latency freellm adds (through minus direct) at p50, concurrency 1.

It also reads the CPU time of each freellm, the upstream (``/proc/<pid>/stat``) and the generator
around every phase: freellm's CPU milliseconds per request (the steadier figure on a shared
machine), and which party was saturated, i.e. what limited the phase.

The load generator is ``wrk`` when it is on PATH (C, one thread, keep-alive; a Lua script sets the
POST body and prints the percentiles); else a load generator of our own on trio's raw sockets,
with keep-alive connections. Time to first byte is always measured with our own client (wrk only
sees whole responses). With ``taskset`` and 2+ CPUs, freellm runs on CPU 0 and the upstream and
the generator share CPU 1. The output says which generator and which pinning were used.

Run::

    .venv/bin/python bench/proxy_bench.py [--duration 10] [--concurrency 32] [--flavor groq]
        [--upstream fast|fake] [--baseline-ref REF] [--rounds N]
        [--generator auto|wrk|python] [--no-pin] [--json]
    .venv/bin/python bench/proxy_bench.py --hold   # start the servers, print how to reach them,
                                                   # wait for Ctrl-C (for py-spy and friends)

Everything it starts is stopped, and its temporary directory and git worktree removed, on the way
out, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import contextlib
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
from typing import Any, Final, TypeVar

import attrs
import trio

import _upstream
from _freellm import Instance, baseline_worktree, clean_environ, start_freellm, working_tree
from _load import Endpoint, Generator, Measured, PythonLoad, Wrk, first_byte, wrk_script
from _procs import (
    FLAVORS,
    Children,
    PeakRss,
    cpu_seconds,
    http_request,
    mib,
    own_cpu_seconds,
    proc_status_kib,
    run_stopping_everything,
    serve_fake,
    taskset,
    wait_for_output,
)
from _report import Row, check_lines, comparison, summarize, table, targets, upstream_check

ENCRYPTION_KEY: Final = "b3" * 32
UPSTREAM_SECRET: Final = "sk-bench-upstream"
STARTUP_TIMEOUT_S: Final = 20.0
IDLE_SETTLE_S: Final = 1.5  # after /readyz, before reading the idle RSS: start-up work settles
PROXY_CPU: Final = 0
UPSTREAM_CPU: Final = 1  # the upstream and the load generator

T = TypeVar("T")


@attrs.frozen
class Upstream:
    kind: str  # "fast" or "fake"
    description: str
    base_url: str
    pid: int


def start_upstream(
    kind: str, flavor_name: str, tmp: Path, children: Children, env: dict[str, str], pin: bool
) -> Upstream:
    """The upstream of ``kind`` in a process of its own, serving as ``flavor_name``."""
    flavor = FLAVORS[flavor_name]
    out = tmp / "upstream.log"
    if kind == "fast":
        argv = _upstream.command(
            prefix=flavor.prefix, model=flavor.model, ratelimit_headers=flavor.ratelimit_headers
        )
        process = children.spawn([*taskset(pin, UPSTREAM_CPU), *argv], output=out, env=env)
        found = wait_for_output(process, out, _upstream.URL_PATTERN, STARTUP_TIMEOUT_S)
        headers = (
            "Groq's rate-limit headers" if flavor.ratelimit_headers else "no rate-limit headers"
        )
        description = f"fast upstream (bench/_upstream.py, {found[3]} event loop, {headers})"
    else:
        argv = [sys.executable, __file__, "--serve-fake", flavor_name]
        process = children.spawn([*taskset(pin, UPSTREAM_CPU), *argv], output=out, env=env)
        found = wait_for_output(process, out, r"^fake \S+ at (\S+) pid", STARTUP_TIMEOUT_S)
        description = "slow fake upstream (freellm.sim.fakes under hypercorn)"
    return Upstream(kind, description, found[1], process.pid)


def check_paths(endpoints: Sequence[Endpoint]) -> str:
    """One request of each kind down each path must succeed; freellm's ``x-routed-via``."""
    routed_via = ""
    for endpoint in endpoints:
        for stream in (False, True):
            body = endpoint.body(stream=stream)
            status, headers, answer = http_request(
                endpoint.url, method="POST", token=endpoint.token, body=body
            )
            if status != 200 or (stream and b"data: [DONE]" not in answer):
                raise RuntimeError(f"{endpoint.name}: HTTP {status}: {answer[:500]!r}")
            routed_via = headers.get("x-routed-via", routed_via)
    return routed_via


# --- the run -------------------------------------------------------------------------------------


def in_order(items: Sequence[T], round_no: int) -> Sequence[T]:
    """A B in even rounds, B A in odd ones: A B B A over two rounds."""
    return items if round_no % 2 == 0 else items[::-1]


def pick_generator(args: argparse.Namespace, tmp: Path, pin: bool) -> Generator:
    wrk = shutil.which("wrk")
    if args.generator == "wrk" and wrk is None:
        raise RuntimeError("--generator wrk: wrk is not on PATH")
    if wrk is not None and args.generator != "python":
        return Wrk(wrk, tmp, taskset(pin, UPSTREAM_CPU))
    return PythonLoad()


def run_phases(
    args: argparse.Namespace,
    generator: Generator,
    upstream: Upstream,
    paths: Sequence[tuple[Endpoint, int | None]],
    peaks: dict[str, PeakRss],
    pin: bool,
    log: Callable[[str], None],
) -> list[Row]:
    """Every phase: on the direct path (pid None) once, then on each freellm ``--rounds`` times
    (A B, then B A)."""
    c, duration, rounds = args.concurrency, args.duration, args.rounds
    stream_duration = max(2.0, duration / 2)
    rows: list[Row] = []

    def phase(endpoint: Endpoint, pid: int | None, kind: str, round_no: int) -> None:
        concurrency = c if kind == "cN" else 1
        case = f"{endpoint.name}{' stream' if kind == 'stream' else ''} c={concurrency}"
        if rounds > 1 and pid is not None:
            case += f" #{round_no + 1}"
        log(f"{case} ...")
        run: Callable[[], Measured]
        notes = ""
        if kind == "stream":
            run, notes = partial(first_byte, endpoint, stream_duration), "time to first token"
        else:
            run = partial(generator.run, endpoint, concurrency, duration)
        server = cpu_seconds(pid) if pid is not None else 0.0
        other, own = cpu_seconds(upstream.pid), own_cpu_seconds()
        sampling = peaks[endpoint.name].sampling() if kind == "cN" and pid is not None else None
        began = time.perf_counter()
        with sampling or contextlib.nullcontext():
            measured = run()
        wall = time.perf_counter() - began
        row = Row(
            case=case,
            target=endpoint.name,
            phase=kind,
            concurrency=concurrency,
            measured=measured,
            wall_s=wall,
            server_cpu_s=None if pid is None else cpu_seconds(pid) - server,
            upstream_cpu_s=cpu_seconds(upstream.pid) - other,
            generator_cpu_s=own_cpu_seconds() - own,
            pinned=pin,
            notes=notes,
        )
        rows.append(row)

    direct, *servers = paths
    for kind in ("c1", "cN", "stream"):
        phase(*direct, kind, 0)
        for round_no in range(rounds):
            for endpoint, pid in in_order(servers, round_no):
                phase(endpoint, pid, kind, round_no)
    return rows


def bench(
    args: argparse.Namespace,
    upstream: Upstream,
    direct: Endpoint,
    instances: Sequence[Instance],
    routed_via: str,
    tmp: Path,
    pin: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    generator = pick_generator(args, tmp, pin)
    if pin:
        os.sched_setaffinity(0, {UPSTREAM_CPU})  # our own client: with the upstream
    c = args.concurrency

    time.sleep(IDLE_SETTLE_S)
    idle_kib = {i.name: proc_status_kib(i.pid, "VmRSS") for i in instances}
    idle = ", ".join(f"{name} {mib(kib):.1f} MiB" for name, kib in idle_kib.items())
    log(f"generator: {generator.name}; idle RSS {idle}")
    paths = [(direct, None), *((i.endpoint, i.pid) for i in instances)]
    if args.warmup > 0:
        log(f"warm-up: {args.warmup:g} s at c={c} on each path")
        for endpoint, _ in paths:
            generator.run(endpoint, c, args.warmup)
            first_byte(endpoint, min(1.0, args.warmup))
    peaks = {i.name: PeakRss(i.pid) for i in instances}
    rows = run_phases(args, generator, upstream, paths, peaks, pin, log)

    time.sleep(IDLE_SETTLE_S)
    summaries = {"direct": summarize(rows, "direct", None, {})}
    for i in instances:
        rss = {
            "rss_idle_mib": mib(idle_kib[i.name]),
            "rss_peak_mib": mib(peaks[i.name].peak_kib),
            "rss_hwm_mib": mib(proc_status_kib(i.pid, "VmHWM")),
            "rss_after_mib": mib(proc_status_kib(i.pid, "VmRSS")),
        }
        summaries[i.name] = summarize(rows, i.name, summaries["direct"], rss)
    direct_loaded = next(row for row in rows if (row.target, row.phase) == ("direct", "cN"))
    check = upstream_check(summaries, [i.name for i in instances], direct_loaded)
    if args.json:  # else the table says it
        for line in check_lines(check, c, generator.name):
            log(line)

    order = "one round per server"
    if len(instances) > 1 or args.rounds > 1:
        sequence = [i.name for r in range(args.rounds) for i in in_order(instances, r)]
        rounds = f"{args.rounds} round{'s' if args.rounds > 1 else ''}"
        order = f"{rounds} per server ({', '.join(sequence)}), direct once, per phase"
    return {
        "flavor": args.flavor,
        "upstream": {
            "kind": upstream.kind,
            "description": upstream.description,
            "url": upstream.base_url,
        },
        "routed_via": routed_via,
        "generator": generator.name,
        "ttfb_client": PythonLoad.name,
        "pinning": (
            f"freellm on CPU {PROXY_CPU}; upstream and load generator on CPU {UPSTREAM_CPU}"
            " (taskset)"
            if pin
            else "none"
        ),
        "cpus": os.cpu_count(),
        "duration_s": args.duration,
        "stream_duration_s": max(2.0, args.duration / 2),
        "warmup_s": args.warmup,
        "concurrency": c,
        "rounds": args.rounds,
        "order": order,
        "servers": [
            {
                "name": i.name,
                "build": i.build.label,
                "package": i.package,
                "pid": i.pid,
                "pythonpath": i.pythonpath,
                "url": i.endpoint.url,
            }
            for i in instances
        ],
        "cases": [row.data() for row in rows],
        "summary": {
            name: {key: None if value is None else round(value, 3) for key, value in s.items()}
            for name, s in summaries.items()
        },
        "upstream_check": check,
        "comparison": comparison(summaries, c) if "baseline" in summaries else None,
        "targets": targets(summaries["freellm"], c),
    }


# --- the command line ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase (10)")
    parser.add_argument("--concurrency", type=int, default=32, help="the loaded case (32)")
    parser.add_argument("--flavor", choices=sorted(FLAVORS), default="groq")
    parser.add_argument(
        "--upstream",
        choices=("fast", "fake"),
        default="fast",
        help="fast: bench/_upstream.py (default); fake: freellm.sim.fakes, too slow for freellm",
    )
    parser.add_argument(
        "--baseline-ref", metavar="REF", help="also measure freellm as of this git ref"
    )
    parser.add_argument(
        "--rounds", type=int, help="phases per freellm (1; 2 with --baseline-ref, A B B A)"
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds per path (2)")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--hold", action="store_true", help="start the servers and wait")
    parser.add_argument("--serve-fake", metavar="FLAVOR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.baseline_ref else 1
    if args.duration <= 0 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--duration must be > 0, --concurrency and --rounds >= 1")
    return args


def hold(
    args: argparse.Namespace,
    upstream: Upstream,
    direct: Endpoint,
    instances: Sequence[Instance],
    tmp: Path,
    pin: bool,
) -> None:
    """Print how to reach every server (and load it with wrk), then wait for a signal."""
    wrk = " ".join([*taskset(pin, UPSTREAM_CPU), "wrk", "-t1", f"-c{args.concurrency}"])
    paths = [(direct, upstream.pid), *((i.endpoint, i.pid) for i in instances)]
    for endpoint, pid in paths:
        script = wrk_script(endpoint, tmp)
        print(f"{endpoint.name} (pid {pid}): {endpoint.url} model {endpoint.model}")
        print(f"  {wrk} -d{round(args.duration)}s -s {script} {endpoint.url}")
    for i in instances:
        print(f"{i.name} unified key: {i.endpoint.token}")
    print("Ctrl-C stops everything", flush=True)
    signal.pause()


def run(
    args: argparse.Namespace, stack: contextlib.ExitStack, *, log: Callable[[str], None]
) -> int:
    pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    tmp = Path(tempfile.mkdtemp(prefix="freellm-bench-"))
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    builds = [working_tree()]
    if args.baseline_ref:
        builds.append(stack.enter_context(baseline_worktree(args.baseline_ref, tmp, log)))
    children = Children()
    stack.callback(children.stop_all)  # before the worktree goes: the servers run from it
    env = dict(clean_environ(os.environ), ENCRYPTION_KEY=ENCRYPTION_KEY)

    upstream = start_upstream(args.upstream, args.flavor, tmp, children, env, pin)
    log(f"{upstream.description} at {upstream.base_url} (pid {upstream.pid})")
    flavor = FLAVORS[args.flavor]
    direct = Endpoint(
        "direct", f"{upstream.base_url}/chat/completions", UPSTREAM_SECRET, flavor.model
    )
    cpu = PROXY_CPU if pin else None
    instances = [
        start_freellm(build, flavor, upstream.base_url, tmp, children, env=env, cpu=cpu, log=log)
        for build in builds
    ]
    routed_via = check_paths([direct, *(i.endpoint for i in instances)])
    if args.hold:
        hold(args, upstream, direct, instances, tmp, pin)
        return 0
    result = bench(args, upstream, direct, instances, routed_via, tmp, pin, log)
    print(json.dumps(result, indent=2) if args.json else table(result), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_fake:
        trio.run(serve_fake, args.serve_fake)
        return 0

    def log(message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    return run_stopping_everything(partial(run, args, log=log), log)


if __name__ == "__main__":
    sys.exit(main())
