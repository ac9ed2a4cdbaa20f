"""A fast fake OpenAI-compatible upstream: a raw asyncio ``Protocol`` server, no framework.

The benchmarks put it behind freellm so that what they measure is freellm and not the upstream:
the upstream must be at least ten times faster than what is measured (see DEVELOPERS.md). It
does as little as an HTTP/1.1 server can and still be one: every answer is built once, at
start-up, and each request costs a header search and one ``transport.write``.

HTTP/1.1, as much as its clients need (wrk, bench/_load.py and freellm's h11 transport):

- keep-alive; pipelined requests are answered in order. A request's body is framed by its
  ``Content-Length`` (none means no body). ``Transfer-Encoding`` on a request is not read: the
  answer is 501 and the connection closes. ``Connection: close`` and HTTP/1.0 close after the
  answer. A head larger than 64 KiB gets 431 and a close. ``Expect: 100-continue`` is not sent.
- when the client stops reading, the server stops reading too (asyncio's write flow control),
  so a client that pipelines without reading cannot make it buffer without bound.

It answers, under ``--prefix`` (``/openai/v1``, where Groq serves, by default):

- ``POST <prefix>/chat/completions``: a canned ``chat.completion`` with ``usage``; or, if the
  body holds ``"stream":true`` or ``"stream": true`` (a byte search, no JSON parsing), an SSE
  stream in chunked transfer encoding, one HTTP chunk per event: ``--chunks`` content chunks
  (20; the first also carries the ``assistant`` role, the last ``finish_reason: "stop"``), a
  usage-only chunk (``choices: []``) and ``data: [DONE]``, all in one write; or, with a chunk
  delay, the head and first chunk at once, then each next chunk that delay after the one before
  (the usage chunk and ``[DONE]`` come with the last), the connection's next request read only
  once the stream is over: 20 chunks at 0.5 s make a stream of 9.5 s, as a slow model's;
- ``POST /bench/chunk-delay`` with the delay in seconds as its body (``0.5``): the chunk delay
  of every stream that starts from then on (``0``: one write again). The benchmarks switch one
  upstream between fast and slow streams with it, so that no proxy needs a second provider;
- ``GET <prefix>/models``: a list of the one ``--model`` (freellm's key checks call it);
- anything else: 404 with an OpenAI error body. Keys are never checked.

With ``--ratelimit-headers`` (proxy_bench passes it for the ``groq`` flavor) every chat answer
also carries Groq's rate-limit headers, with remaining counts so large that freellm never holds
back, so that freellm's header parsing is on the measured path::

    x-ratelimit-limit-requests: 1000000000        x-ratelimit-limit-tokens: 1000000000
    x-ratelimit-remaining-requests: 999999999     x-ratelimit-remaining-tokens: 999999999
    x-ratelimit-reset-requests: 2m59.56s          x-ratelimit-reset-tokens: 7.66s

The event loop is uvloop's when ``uvloop`` can be imported, else asyncio's own; the start-up line
says which ran (``--loop asyncio`` forces asyncio's)::

    python bench/_upstream.py --port 0 [--prefix /openai/v1] [--model M] [--chunks 20]
        [--chunk-delay S] [--ratelimit-headers] [--loop auto|asyncio]
    upstream at http://127.0.0.1:40123/openai/v1 pid 4242 loop asyncio

It runs until SIGINT or SIGTERM, then prints how many requests it answered. Only the standard
library is imported (uvloop aside), so that it starts fast and shares nothing with freellm.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, Final

MAX_HEAD: Final = 65536
DEFAULT_PREFIX: Final = "/openai/v1"
DEFAULT_MODEL: Final = "llama-3.3-70b-versatile"
DEFAULT_CHUNKS: Final = 20
CREATED: Final = 1_780_000_000
URL_PATTERN: Final = r"^upstream at (http://\S+) pid (\d+) loop (\S+)$"

RATELIMIT_HEADERS: Final = (
    ("x-ratelimit-limit-requests", "1000000000"),
    ("x-ratelimit-remaining-requests", "999999999"),
    ("x-ratelimit-reset-requests", "2m59.56s"),
    ("x-ratelimit-limit-tokens", "1000000000"),
    ("x-ratelimit-remaining-tokens", "999999999"),
    ("x-ratelimit-reset-tokens", "7.66s"),
)
STREAM_MARKERS: Final = (b'"stream":true', b'"stream": true')
DELAY_PATH: Final = b"/bench/chunk-delay"
REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
}


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _response(
    status: int,
    body: bytes,
    content_type: str = "application/json",
    extra: Sequence[tuple[str, str]] = (),
    close: bool = False,
) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {REASONS[status]}",
        "server: bench-upstream",
        f"content-type: {content_type}",
        f"content-length: {len(body)}",
        *(f"{name}: {value}" for name, value in extra),
    ]
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _error(status: int, message: str, *, close: bool = False) -> bytes:
    body = _json({"error": {"message": message, "type": "invalid_request_error", "code": None}})
    return _response(status, body, close=close)


class Answers:
    """Every answer, as the bytes written to the socket, built once; and the chunk delay."""

    def __init__(
        self,
        prefix: str,
        model: str,
        chunks: int,
        ratelimit_headers: bool,
        chunk_delay: float = 0.0,
    ) -> None:
        self.chunk_delay = chunk_delay
        extra = RATELIMIT_HEADERS if ratelimit_headers else ()
        self.chat_path = f"{prefix}/chat/completions".encode()
        self.models_path = f"{prefix}/models".encode()
        words = [f"word{i} " for i in range(chunks)]
        usage = {
            "prompt_tokens": 24,
            "completion_tokens": chunks,
            "total_tokens": 24 + chunks,
        }
        message = {"role": "assistant", "content": "".join(words)}
        completion = {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": usage,
        }
        self.chat = _response(200, _json(completion), extra=extra)

        head = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
        }
        events: list[bytes] = []
        for index, word in enumerate(words):
            delta = {"role": "assistant", "content": word} if index == 0 else {"content": word}
            finish = "stop" if index == len(words) - 1 else None
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            events.append(_json({**head, "choices": [choice]}))
        events.append(_json({**head, "choices": [], "usage": usage}))
        events.append(b"[DONE]")
        stream_head = [
            "HTTP/1.1 200 OK",
            "server: bench-upstream",
            "content-type: text/event-stream",
            "cache-control: no-cache",
            "transfer-encoding: chunked",
            *(f"{name}: {value}" for name, value in extra),
        ]
        frames = []
        for event in events:
            frame = b"data: " + event + b"\n\n"
            frames.append(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
        frames.append(b"0\r\n\r\n")
        # What a delayed stream writes after its head: one part per content chunk, the last
        # with the usage chunk, [DONE] and the end of the body.
        self.stream_parts = (*frames[: chunks - 1], b"".join(frames[chunks - 1 :]))
        self.stream = ("\r\n".join(stream_head) + "\r\n\r\n").encode() + b"".join(frames)

        models = {
            "object": "list",
            "data": [{"id": model, "object": "model", "created": CREATED, "owned_by": "bench"}],
        }
        self.models = _response(200, _json(models))
        self.not_found = _error(404, "no such route on the bench upstream")
        self.not_found_close = _error(404, "no such route on the bench upstream", close=True)

    def answer(self, method: bytes, target: bytes, body: bytes, close: bool) -> tuple[bytes, bool]:
        """The answer to one request, and whether it is a stream."""
        path = target.split(b"?", 1)[0]
        streamed = False
        if method == b"POST" and path == self.chat_path:
            streamed = STREAM_MARKERS[0] in body or STREAM_MARKERS[1] in body
            answer = self.stream if streamed else self.chat
        elif method == b"GET" and path == self.models_path:
            answer = self.models
        elif method == b"POST" and path == DELAY_PATH:
            answer = self._set_delay(body)
        else:
            return (self.not_found_close if close else self.not_found), False
        if close:  # rare (HTTP/1.0, Connection: close): say so in the head
            head, _, rest = answer.partition(b"\r\n\r\n")
            answer = head + b"\r\nconnection: close\r\n\r\n" + rest
        return answer, streamed

    def _set_delay(self, body: bytes) -> bytes:
        try:
            delay = float(body)
        except ValueError:
            delay = -1.0
        if not 0 <= delay <= 60:
            return _error(400, "the body must be a chunk delay in seconds, from 0 to 60")
        self.chunk_delay = delay
        return _response(200, _json({"chunk_delay": delay}))

    def delayed(self, answer: bytes) -> list[bytes]:
        """A stream's answer as the parts a chunk delay apart: its head with the first chunk,
        then one part per chunk."""
        head_end = answer.index(b"\r\n\r\n") + 4
        first, *rest = self.stream_parts
        return [answer[:head_end] + first, *rest]


def _header(lower_head: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (lower-case, with its colon) in a lower-cased head."""
    start = lower_head.find(b"\r\n" + name)
    if start < 0:
        return None
    start += 2 + len(name)
    end = lower_head.find(b"\r\n", start)
    return lower_head[start : end if end >= 0 else len(lower_head)].strip()


class UpstreamProtocol(asyncio.Protocol):
    """One client connection: parse whole requests from the buffer, answer each in order."""

    answers: Answers
    served = 0  # requests answered, over every connection

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.writable = True
        self.closing = False
        self.streaming: asyncio.TimerHandle | None = None  # the next part of a delayed stream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.transport = None
        if self.streaming is not None:
            self.streaming.cancel()
            self.streaming = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.writable and not self.closing and self.streaming is None:
            self._answer_all()

    def pause_writing(self) -> None:
        # The client is not reading: read no more requests until it does.
        self.writable = False
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writable = True
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()
            if self.streaming is None:
                self._answer_all()

    def _answer_all(self) -> None:
        transport = self.transport
        assert transport is not None
        buffer = self.buffer
        start = 0
        while self.writable and not self.closing:
            end = buffer.find(b"\r\n\r\n", start)
            if end < 0:
                if len(buffer) - start > MAX_HEAD:
                    self._finish(_error(431, "request head too large", close=True))
                break
            head = bytes(buffer[start:end])
            line, _, _ = head.partition(b"\r\n")
            parts = line.split(b" ")
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
                self._finish(_error(400, "not an HTTP/1.x request line", close=True))
                break
            method, target, version = parts
            lower = head.lower()
            if _header(lower, b"transfer-encoding:") is not None:
                self._finish(_error(501, "request bodies must have a Content-Length", close=True))
                break
            length_text = _header(lower, b"content-length:")
            try:
                length = int(length_text) if length_text is not None else 0
            except ValueError:
                length = -1
            if length < 0:
                self._finish(_error(400, "bad Content-Length", close=True))
                break
            body_start = end + 4
            body_end = body_start + length
            if len(buffer) < body_end:
                break  # the rest of the body is still on its way
            connection = _header(lower, b"connection:")
            close = version == b"HTTP/1.0" or connection == b"close"
            answers = self.answers
            answer, streamed = answers.answer(
                method, target, bytes(buffer[body_start:body_end]), close
            )
            UpstreamProtocol.served += 1
            start = body_end
            if streamed and answers.chunk_delay > 0:
                self._write_slowly(answers.delayed(answer), answers.chunk_delay, close)
                break
            if close:
                self._finish(answer)
                break
            transport.write(answer)
        del buffer[:start]

    def _write_slowly(self, parts: list[bytes], delay: float, close: bool) -> None:
        """Write ``parts`` one by one, ``delay`` apart; then close, or answer what came since."""
        transport = self.transport
        if transport is None:
            return
        transport.write(parts[0])
        if len(parts) > 1:
            loop = asyncio.get_running_loop()
            self.streaming = loop.call_later(delay, self._write_slowly, parts[1:], delay, close)
            return
        self.streaming = None
        if close:
            self.closing = True
            transport.close()
        elif self.writable:
            self._answer_all()

    def _finish(self, answer: bytes) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.write(answer)
            self.transport.close()


def _new_loop(choice: str) -> tuple[asyncio.AbstractEventLoop, str]:
    if choice != "asyncio":
        try:
            import uvloop  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return uvloop.new_event_loop(), f"uvloop-{uvloop.__version__}"
    return asyncio.new_event_loop(), "asyncio"


async def serve(host: str, port: int, answers: Answers, loop_name: str, prefix: str) -> None:
    """Serve ``answers`` on ``host:port`` until SIGINT or SIGTERM; print the URL first."""
    loop = asyncio.get_running_loop()
    UpstreamProtocol.answers = answers
    # A deep backlog: the benchmarks open a thousand streams at once (the kernel caps it at
    # net.core.somaxconn).
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=4096)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    bound = server.sockets[0].getsockname()
    print(f"upstream at http://{bound[0]}:{bound[1]}{prefix} pid {os.getpid()} loop {loop_name}")
    sys.stdout.flush()
    async with server:
        await stop.wait()
    print(f"upstream answered {UpstreamProtocol.served} requests", flush=True)


def command(
    *,
    prefix: str,
    model: str,
    ratelimit_headers: bool,
    chunks: int = DEFAULT_CHUNKS,
    chunk_delay: float = 0.0,
) -> list[str]:
    """The argv that starts this upstream on a free port (wait for :data:`URL_PATTERN`)."""
    argv = [sys.executable, os.path.abspath(__file__), "--port", "0", "--prefix", prefix]
    argv += ["--model", model, "--chunks", str(chunks), "--chunk-delay", str(chunk_delay)]
    return [*argv, "--ratelimit-headers"] if ratelimit_headers else argv


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (the default)")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"({DEFAULT_PREFIX})")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"({DEFAULT_MODEL})")
    parser.add_argument("--chunks", type=int, default=DEFAULT_CHUNKS, help="content chunks (20)")
    parser.add_argument(
        "--chunk-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds between a stream's chunks (0: the whole stream in one write)",
    )
    parser.add_argument("--ratelimit-headers", action="store_true", help="send Groq's")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    args = parser.parse_args(argv)
    if args.chunks < 1 or not 0 <= args.chunk_delay <= 60:
        parser.error("--chunks must be >= 1 and --chunk-delay from 0 to 60")
    prefix = "/" + args.prefix.strip("/") if args.prefix.strip("/") else ""
    answers = Answers(prefix, args.model, args.chunks, args.ratelimit_headers, args.chunk_delay)
    loop, loop_name = _new_loop(args.loop)
    try:
        loop.run_until_complete(serve(args.host, args.port, answers, loop_name, prefix))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
