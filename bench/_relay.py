"""The bare relay: the floor under freellm for answers and streams alike.

A raw ASGI app under hypercorn, with freellm's own server settings
(``freellm.web.server.server_config``) and freellm's own upstream transport
(``freellm.shell.transport.H11Transport`` under httpx), and nothing else: no routing, no
ledger, no log. Whatever freellm costs above this relay is freellm's own; whatever the relay
costs is the stack's (hypercorn, httpx, h11, trio) and would be paid by anything built on it.

Every POST is relayed to the one upstream URL it was started with, its body and
``authorization`` header as they came. An answer is read whole and sent on with its status; a
request whose body holds ``"stream":true`` (a byte search, as the upstream does) gets the
upstream's body relayed piece by piece as it arrives, each piece sent on at once (chunked over
HTTP/1.1, DATA frames over h2c: hypercorn serves both on one port, h2c with prior knowledge).

Run (``peers.py`` does)::

    .venv/bin/python bench/_relay.py http://127.0.0.1:40123/v1/chat/completions
    relay at http://127.0.0.1:40555 pid 4242

It runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import httpx
import hypercorn.trio
import trio

from freellm.shell.transport import H11Transport
from freellm.web.server import server_config

URL_PATTERN: Final = r"^relay at (http://\S+) pid (\d+)$"
STREAM_MARKERS: Final = (b'"stream":true', b'"stream": true')
FDS_KEPT: Final = 64  # file descriptors left for everything but upstream connections

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def max_upstream_connections() -> int:
    """Half the open-files limit: one upstream connection for each inbound one."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(1, (soft - FDS_KEPT) // 2)


def relay_app(upstream: str, client: httpx.AsyncClient) -> Callable[..., Awaitable[None]]:
    """The ASGI app relaying every request to ``upstream`` through ``client``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {"content-type": "application/json"}
        for name, value in scope["headers"]:
            if name == b"authorization":
                headers["authorization"] = value.decode("latin-1")
        content = bytes(body)
        if STREAM_MARKERS[0] in content or STREAM_MARKERS[1] in content:
            await _relay_stream(client, upstream, content, headers, send)
            return
        response = await client.post(upstream, content=content, headers=headers)
        await _start(send, response, [(b"content-length", str(len(response.content)).encode())])
        await send({"type": "http.response.body", "body": response.content})

    return app


async def _start(send: Send, response: httpx.Response, extra: list[tuple[bytes, bytes]]) -> None:
    content_type = response.headers.get("content-type", "application/json").encode("latin-1")
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": [(b"content-type", content_type), *extra],
        }
    )


async def _relay_stream(
    client: httpx.AsyncClient, upstream: str, content: bytes, headers: dict[str, str], send: Send
) -> None:
    """The upstream's answer relayed piece by piece, each piece sent on as it arrives."""
    async with client.stream("POST", upstream, content=content, headers=headers) as response:
        await _start(send, response, [(b"cache-control", b"no-cache")])
        async for piece in response.aiter_raw():
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def serve(upstream: str) -> None:
    """Serve the relay on 127.0.0.1 (a free port) until SIGINT or SIGTERM; print its URL."""
    transport = H11Transport(max_connections=max_upstream_connections())
    timeout = httpx.Timeout(10.0, read=300.0, pool=300.0)
    config = server_config("127.0.0.1", 0)
    async with httpx.AsyncClient(transport=transport, timeout=timeout, trust_env=False) as client:
        app = relay_app(upstream, client)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(
                    lambda task_status: hypercorn.trio.serve(app, config, task_status=task_status)
                )
                print(f"relay at {binds[0]} pid {os.getpid()}", flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return


def command(upstream: str) -> list[str]:
    """The argv that starts the relay in front of ``upstream`` (wait for :data:`URL_PATTERN`)."""
    return [sys.executable, os.path.abspath(__file__), upstream]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("upstream", help="the upstream's chat completions URL")
    args = parser.parse_args(argv)
    trio.run(serve, args.upstream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
