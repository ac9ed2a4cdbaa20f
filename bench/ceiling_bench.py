"""The ceilings under freellm: what hypercorn alone, and hypercorn plus one upstream call, cost.

Every case runs a trivial raw ASGI app under hypercorn with freellm's own server settings
(``freellm.web.server.server_config``), pinned to CPU 0, in front of the upstream of
``proxy_bench.py`` (``--upstream fast``, bench/_upstream.py, by default; its own process, pinned
with the load generator to CPU 1):

- ``fixed``: the app answers a fixed JSON body (the inbound server alone);
- ``httpx``: the app reads the body and makes one ``httpx.AsyncClient`` call to the upstream
  (stock httpcore pool), then answers with the upstream's bytes;
- ``h11``: the same with freellm's own transport (:mod:`freellm.shell.transport`) under httpx.

For each case and concurrency it prints req/s, p50 and the server's CPU milliseconds per request
(``/proc/<pid>/stat`` around the load), the figure that least depends on other load; first the
same for the upstream alone (``direct``, its CPU), and last whether the direct baseline was at
least 10x the fastest case. The load generator is wrk if it is on PATH, else bench/_load.py's.

Run::

    .venv/bin/python bench/ceiling_bench.py [--duration 5] [--cases fixed,httpx,h11]
        [--upstream fast|fake] [--generator auto|wrk|python]
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
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).parent))

import proxy_bench as pb
from _load import Endpoint
from _procs import FLAVORS, Children, cpu_seconds, taskset, wait_for_output
from _report import RULE_FACTOR

FIXED = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
).encode()


def serve(case: str, upstream: str) -> None:
    """Serve the trivial app of ``case`` on 127.0.0.1, print its URL, until SIGTERM."""
    import httpx
    import hypercorn.trio

    from freellm.web.server import server_config

    client: httpx.AsyncClient | None = None
    if case == "httpx":
        client = httpx.AsyncClient(trust_env=False)
    elif case == "h11":
        from freellm.shell.transport import H11Transport

        client = httpx.AsyncClient(trust_env=False, transport=H11Transport())

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if client is None:
            answer = FIXED
        else:
            response = await client.post(
                upstream,
                content=body,
                headers={"content-type": "application/json", "authorization": "Bearer x"},
            )
            answer = response.content
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(answer)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    async def main() -> None:
        config = server_config("127.0.0.1", 0)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(
                    lambda task_status: hypercorn.trio.serve(app, config, task_status=task_status)
                )
                print(f"serving {binds[0]} pid {os.getpid()}", flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

    trio.run(main)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--cases", default="fixed,httpx,h11")
    parser.add_argument("--upstream", choices=("fast", "fake"), default="fast")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--serve", nargs=2, metavar=("CASE", "UPSTREAM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    tmp = Path(tempfile.mkdtemp(prefix="freellm-ceiling-"))
    children = Children()
    try:
        upstream = pb.start_upstream(args.upstream, "groq", tmp, children, env, pin)
        url = f"{upstream.base_url}/chat/completions"
        model = FLAVORS["groq"].model
        generator = pb.pick_generator(args, tmp, pin)
        if pin:
            os.sched_setaffinity(0, {pb.UPSTREAM_CPU})  # the python generator, with the upstream
        print(f"upstream: {upstream.description}; load generator: {generator.name}")
        print(f"{'case':8} {'c':>3} {'req/s':>8} {'p50 ms':>8} {'CPU ms/req':>11} {'CPU %':>6}")

        def run(endpoint: Endpoint, pid: int, concurrency: int) -> float:
            before, began = cpu_seconds(pid), time.perf_counter()
            measured = generator.run(endpoint, concurrency, args.duration)
            cpu = cpu_seconds(pid) - before
            wall = time.perf_counter() - began
            per = cpu / measured.requests * 1000 if measured.requests else 0.0
            print(
                f"{endpoint.name:8} {concurrency:>3} {measured.rps:>8.0f} {measured.p50_ms:>8.2f} "
                f"{per:>11.3f} {100 * cpu / wall:>6.0f}"
                + (f"  errors {measured.errors}" if measured.errors else ""),
                flush=True,
            )
            return measured.rps

        direct = Endpoint("direct", url, pb.UPSTREAM_SECRET, model)
        generator.run(direct, 8, 1.0)  # warm-up
        direct_rps = max(run(direct, upstream.pid, concurrency) for concurrency in (1, 32))
        fastest = 0.0
        for case in args.cases.split(","):
            out = tmp / f"{case}.log"
            argv = [*taskset(pin, pb.PROXY_CPU), sys.executable, __file__]
            server = children.spawn([*argv, "--serve", case, url], output=out, env=env)
            base = wait_for_output(server, out, r"serving (http://\S+) pid", 20)[1]
            endpoint = Endpoint(case, f"{base}/v1/chat/completions", pb.UPSTREAM_SECRET, model)
            generator.run(endpoint, 8, 1.0)  # warm-up
            for concurrency in (1, 32):
                fastest = max(fastest, run(endpoint, server.pid, concurrency))
            server.send_signal(signal.SIGTERM)
            server.wait(5)
        ratio = direct_rps / fastest if fastest else float("inf")
        verdict = "OK" if ratio >= RULE_FACTOR else "WARNING: these figures measure the upstream"
        print(
            f"upstream check: direct {direct_rps:,.0f} req/s is {ratio:.1f}x the fastest case's "
            f"{fastest:,.0f} req/s (rule: >= {RULE_FACTOR:g}x): {verdict}"
        )
        return 0
    finally:
        children.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
