"""Many streams at once: N streamed chat completions open together, each checked to its end.

The load of ``peers.py``'s slow phase: every stream is sent at once (slow streams from the
upstream's chunk delay keep them all open together), and a stream counts as completed only if
it was answered 200 with every content chunk, in order, and ``data: [DONE]`` last. The content
chunks are the bench upstream's (``word0 `` ... ``word19 ``): a proxy may rewrite each event's
JSON but must keep every token.

Two ways to open them:

- HTTP/1.1 (the default): one connection per stream, on trio's raw sockets
  (``_load.Connection``). N streams through a proxy then need 2N file descriptors in the proxy
  (N in, N to the upstream);
- ``--http2``: h2c with prior knowledge (the ``h2`` package on trio sockets), as many streams on
  each connection as the server allows (``SETTINGS_MAX_CONCURRENT_STREAMS``, 100 for hypercorn),
  over ``ceil(N / --per-connection)`` connections: N streams need about N + N/100 descriptors in
  the proxy, so that 10,000 fit under an open-files limit of 20,000.

Run alone::

    .venv/bin/python bench/_streams.py URL --streams 1000 [--http2] [--token T] [--model M]
        [--chunks 20] [--timeout 120]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from functools import partial
from typing import Any, Final

import attrs
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio

from _load import Connection, Endpoint, ProtocolError

CONTENT: Final = re.compile(rb'"content":\s*"(word\d+ )"')
CONNECTS_AT_ONCE: Final = 200  # connections being opened at a time (not streams open)
PER_CONNECTION: Final = 100  # h2 streams per connection (the server may allow fewer)
READ_SIZE: Final = 65536


def verdict(status: int, body: bytes, chunks: int) -> str | None:
    """None if ``body`` is a complete stream of ``chunks`` content chunks; else what is wrong."""
    if status != 200:
        return f"HTTP {status}"
    data = [line[5:].strip() for line in body.split(b"\n") if line.startswith(b"data:")]
    if not data or data[-1] != b"[DONE]":
        return "no [DONE] at the end"
    words = [word.decode() for word in CONTENT.findall(body)]
    if words != [f"word{i} " for i in range(chunks)]:
        return f"{len(words)} of {chunks} content chunks"
    return None


@attrs.frozen
class Outcome:
    """N streams: how many completed, what went wrong with the rest, and when."""

    requested: int
    completed: int
    failures: dict[str, int]  # what went wrong -> how many streams
    peak_open: int  # streams sent and not yet ended, at most, at one time
    last_s: float  # from the start until the last stream ended (or failed)
    longest_s: float  # the longest stream, sent to ended
    protocol: str

    def data(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "completed": self.completed,
            "failures": self.failures,
            "peak_open": self.peak_open,
            "last_s": round(self.last_s, 2),
            "longest_s": round(self.longest_s, 2),
            "protocol": self.protocol,
        }


class _Tally:
    """What the streams report as they end."""

    def __init__(self) -> None:
        self.began = time.perf_counter()
        self.open = 0
        self.peak_open = 0
        self.completed = 0
        self.failures: Counter[str] = Counter()
        self.last = 0.0
        self.longest = 0.0

    def opened(self) -> float:
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        return time.perf_counter()

    def ended(self, sent: float | None, failure: str | None) -> None:
        now = time.perf_counter()
        if sent is not None:
            self.open -= 1
            self.longest = max(self.longest, now - sent)
        self.last = now - self.began
        if failure is None:
            self.completed += 1
        else:
            self.failures[failure] += 1

    def outcome(self, requested: int, protocol: str) -> Outcome:
        return Outcome(
            requested,
            self.completed,
            dict(self.failures.most_common()),
            self.peak_open,
            self.last,
            self.longest,
            protocol,
        )


# --- HTTP/1.1: a connection per stream -----------------------------------------------------------


async def _one_stream(
    endpoint: Endpoint, chunks: int, connects: trio.CapacityLimiter, tally: _Tally
) -> None:
    request = endpoint.request(stream=True)
    sent: float | None = None
    connection: Connection | None = None
    failure: str | None = "cancelled"
    try:
        async with connects:
            connection = await Connection.open(endpoint.host, endpoint.port)
        sent = tally.opened()
        status, body = await connection.fetch(request)
        failure = verdict(status, body, chunks)
    except OSError as exc:
        failure = f"{'connect' if sent is None else 'socket'} error: {exc.strerror or exc}"
    except (ProtocolError, ValueError) as exc:
        failure = f"protocol error: {exc}"
    finally:
        if connection is not None:
            connection.close()
        tally.ended(sent, failure)


async def _streams_http1(endpoint: Endpoint, count: int, chunks: int, tally: _Tally) -> None:
    connects = trio.CapacityLimiter(CONNECTS_AT_ONCE)
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(_one_stream, endpoint, chunks, connects, tally)


# --- h2c: many streams per connection ------------------------------------------------------------


class _H2Client:
    """One h2c connection carrying ``count`` streams, as many at a time as the server allows."""

    def __init__(self, endpoint: Endpoint, count: int, chunks: int, tally: _Tally) -> None:
        self.endpoint = endpoint
        self.waiting = count
        self.chunks = chunks
        self.tally = tally
        self.body = endpoint.body(stream=True)
        self.headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", f"{endpoint.host}:{endpoint.port}"),
            (":path", endpoint.path),
            ("authorization", f"Bearer {endpoint.token}"),
            ("content-type", "application/json"),
            ("content-length", str(len(self.body))),
            *((name.lower(), value) for name, value in endpoint.headers),
        ]
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=config)
        self.open: dict[int, tuple[float, list[int], bytearray]] = {}  # id: sent, status, body

    def _send_more(self) -> None:
        """Open waiting streams while the server allows more at once."""
        limit = self.h2.remote_settings.max_concurrent_streams
        while self.waiting and self.h2.open_outbound_streams < limit:
            stream_id = self.h2.get_next_available_stream_id()
            self.h2.send_headers(stream_id, self.headers)
            self.h2.send_data(stream_id, self.body, end_stream=True)
            self.open[stream_id] = (self.tally.opened(), [0], bytearray())
            self.waiting -= 1

    def _end(self, stream_id: int, failure: str | None = None) -> None:
        sent, status, body = self.open.pop(stream_id)
        self.tally.ended(sent, failure or verdict(status[0], bytes(body), self.chunks))

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            for name, value in event.headers or ():
                if name in (b":status", ":status"):
                    self.open[event.stream_id][1][0] = int(value)
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None
            assert event.data is not None
            if event.stream_id in self.open:
                self.open[event.stream_id][2].extend(event.data)
            self.h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            assert event.stream_id is not None
            if event.stream_id in self.open:
                self._end(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            assert event.stream_id is not None
            if event.stream_id in self.open:
                self._end(event.stream_id, f"stream reset ({event.error_code!r})")
        elif isinstance(event, h2.events.ConnectionTerminated):
            raise ProtocolError(f"GOAWAY ({event.error_code!r})")

    async def run(self, connects: trio.CapacityLimiter) -> None:
        stream: trio.SocketStream | None = None
        try:
            async with connects:
                stream = await trio.open_tcp_stream(self.endpoint.host, self.endpoint.port)
            self.h2.initiate_connection()
            self._send_more()
            while self.open or self.waiting:
                await stream.send_all(self.h2.data_to_send())
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    raise ProtocolError("the server closed the connection")
                for event in self.h2.receive_data(data):
                    self._handle(event)
                self._send_more()
        except (OSError, ProtocolError, h2.exceptions.ProtocolError) as exc:
            failure = f"connection error: {exc}"
            for stream_id in list(self.open):
                self._end(stream_id, failure)
            for _ in range(self.waiting):
                self.tally.ended(None, failure)
            self.waiting = 0
        finally:
            for stream_id in list(self.open):  # cancelled: the time ran out
                self._end(stream_id, "cancelled")
            for _ in range(self.waiting):
                self.tally.ended(None, "cancelled")
            if stream is not None:
                await trio.aclose_forcefully(stream)


async def _streams_http2(
    endpoint: Endpoint, count: int, chunks: int, per_connection: int, tally: _Tally
) -> None:
    connects = trio.CapacityLimiter(CONNECTS_AT_ONCE)
    async with trio.open_nursery() as nursery:
        for start in range(0, count, per_connection):
            client = _H2Client(endpoint, min(per_connection, count - start), chunks, tally)
            nursery.start_soon(client.run, connects)


def open_streams(
    endpoint: Endpoint,
    count: int,
    *,
    chunks: int,
    timeout: float,
    http2: bool = False,
    per_connection: int = PER_CONNECTION,
) -> Outcome:
    """``count`` streams to ``endpoint``, all sent at once; a stream not ended within
    ``timeout`` seconds of the start fails as ``cancelled``."""
    tally = _Tally()
    if http2:
        connections = math.ceil(count / per_connection)
        protocol = f"h2c, {connections} connections of up to {per_connection} streams"
        run = partial(_streams_http2, endpoint, count, chunks, per_connection, tally)
    else:
        protocol = "HTTP/1.1, a connection per stream"
        run = partial(_streams_http1, endpoint, count, chunks, tally)

    async def within_time() -> None:
        with trio.move_on_after(timeout):
            await run()

    trio.run(within_time)
    return tally.outcome(count, protocol)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("url", help="a chat completions URL")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--http2", action="store_true", help="h2c with prior knowledge")
    parser.add_argument("--per-connection", type=int, default=PER_CONNECTION)
    parser.add_argument("--token", default="sk-bench")
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream (20)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds, in all (120)")
    args = parser.parse_args(argv)
    endpoint = Endpoint("streams", args.url, args.token, args.model)
    outcome = open_streams(
        endpoint,
        args.streams,
        chunks=args.chunks,
        timeout=args.timeout,
        http2=args.http2,
        per_connection=args.per_connection,
    )
    print(json.dumps(outcome.data(), indent=2))
    return 0 if outcome.completed == outcome.requested else 1


if __name__ == "__main__":
    sys.exit(main())
