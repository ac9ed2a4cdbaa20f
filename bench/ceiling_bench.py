"""The ceilings under freellm: what hypercorn alone, and hypercorn plus one upstream call, cost.

Every case runs a trivial raw ASGI app under hypercorn with freellm's own server settings
(``freellm.web.server.server_config``), pinned to CPU 0, in front of the fake upstream of
``proxy_bench.py`` (its own process, pinned with wrk to CPU 1):

- ``fixed``: the app answers a fixed JSON body (the inbound server alone);
- ``httpx``: the app reads the body and makes one ``httpx.AsyncClient`` call to the fake
  (stock httpcore pool), then answers with the upstream's bytes;
- ``h11``: the same with freellm's own transport (:mod:`freellm.shell.transport`) under httpx.

For each case and concurrency it prints req/s, p50 and the server's CPU milliseconds per request
(``/proc/<pid>/stat`` around the wrk run), the figure that least depends on other load.

Run::

    .venv/bin/python bench/ceiling_bench.py [--duration 5] [--cases fixed,httpx,h11]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).parent))

import proxy_bench as pb
from _load import Endpoint, Wrk
from _procs import FLAVORS, Children, cpu_seconds, taskset, wait_for_output

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
    parser.add_argument("--serve", nargs=2, metavar=("CASE", "UPSTREAM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    tmp = Path(tempfile.mkdtemp(prefix="freellm-ceiling-"))
    children = Children()
    try:
        fake_out = tmp / "fake.log"
        argv = [*taskset(True, pb.UPSTREAM_CPU), sys.executable, __file__]
        fake = children.spawn(
            [
                *taskset(True, pb.UPSTREAM_CPU),
                sys.executable,
                pb.__file__,
                "--serve-fake",
                "groq",
            ],
            output=fake_out,
            env=env,
        )
        base = wait_for_output(fake, fake_out, r"at (http://\S+) pid", 20)[1]
        upstream = f"{base}/chat/completions"
        model = FLAVORS["groq"].model
        wrk = Wrk("wrk", tmp, taskset(True, pb.UPSTREAM_CPU))
        print(f"{'case':8} {'c':>3} {'req/s':>8} {'p50 ms':>8} {'CPU ms/req':>11} {'CPU %':>6}")
        for case in args.cases.split(","):
            out = tmp / f"{case}.log"
            argv = [*taskset(True, pb.PROXY_CPU), sys.executable, __file__]
            server = children.spawn([*argv, "--serve", case, upstream], output=out, env=env)
            url = wait_for_output(server, out, r"serving (http://\S+) pid", 20)[1]
            endpoint = Endpoint(case, f"{url}/v1/chat/completions", pb.UPSTREAM_SECRET, model)
            wrk.run(endpoint, 8, 1.0)  # warm-up
            for concurrency in (1, 32):
                before, began = cpu_seconds(server.pid), time.perf_counter()
                measured = wrk.run(endpoint, concurrency, args.duration)
                cpu = cpu_seconds(server.pid) - before
                wall = time.perf_counter() - began
                per = cpu / measured.requests * 1000 if measured.requests else 0.0
                print(
                    f"{case:8} {concurrency:>3} {measured.rps:>8.0f} {measured.p50_ms:>8.2f} "
                    f"{per:>11.3f} {100 * cpu / wall:>6.0f}"
                    + (f"  errors {measured.errors}" if measured.errors else ""),
                    flush=True,
                )
            server.send_signal(signal.SIGTERM)
            server.wait(5)
        return 0
    finally:
        children.stop_all()


if __name__ == "__main__":
    sys.exit(main())
