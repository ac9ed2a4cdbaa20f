"""A raw HTTP/1.1 client on a plain socket, for what httpx will not send: two Content-Length
headers, a negative one, invalid UTF-8, a body trickled a byte at a time, a request that is
not HTTP at all. Blocking: the fuzz tests run it in a worker thread, beside the server's trio
loop (``trio.to_thread.run_sync``).

It parses just enough of the answer to check it: the status, the headers (every value of a
name, lower-cased names) and a body of ``content-length`` bytes (or whatever came before the
server closed). Everything goes to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

HEAD_END = b"\r\n\r\n"


@attrs.frozen
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    closed: bool  # the server closed the connection after this answer

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)

    def json(self) -> Any:
        return json.loads(self.body)


class NoAnswer(Exception):
    """The server closed the connection, or said nothing within the timeout, before a whole
    head arrived; ``received`` is what did."""

    def __init__(self, message: str, received: bytes) -> None:
        super().__init__(f"{message}; received {received[:200]!r}")
        self.received = received


def port_of(url: str) -> int:
    host, _, port = url.removeprefix("http://").rpartition(":")
    assert host == "127.0.0.1", url
    return int(port)


def connect(url: str, *, timeout: float = 10.0, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:  # before connecting, so the window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port_of(url)))
    return sock


def head(
    method: str, path: str, headers: Iterable[tuple[bytes, bytes]], *, body_length: int | None
) -> bytes:
    """A request head: ``host`` first, then ``headers`` as given (duplicates too), then a
    ``content-length`` of ``body_length`` unless it is None."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"host: 127.0.0.1"]
    lines += [name + b": " + value for name, value in headers]
    if body_length is not None:
        lines.append(b"content-length: " + str(body_length).encode())
    return b"\r\n".join(lines) + HEAD_END


def request(
    url: str,
    method: str,
    path: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    *,
    raw_head: bytes | None = None,
    timeout: float = 10.0,
) -> Answer:
    """One request on a new connection (``connection: close``); ``raw_head`` replaces the head
    that would be built, byte for byte."""
    data = raw_head
    if data is None:
        data = head(method, path, [(b"connection", b"close"), *headers], body_length=len(body))
    with connect(url, timeout=timeout) as sock:
        sock.sendall(data + body)
        return read_answer(sock)


def read_answer(sock: socket.socket) -> Answer:
    """The next answer on ``sock``, and whether the server then closed the connection (waited
    for up to the socket's timeout)."""
    received = b""
    while HEAD_END not in received:
        piece = _receive(sock)
        if not piece:
            why = "closed" if piece == b"" else f"nothing within {sock.gettimeout()} s"
            raise NoAnswer(f"no complete answer head: {why}", received)
        received += piece
    raw_head, _, body = received.partition(HEAD_END)
    status_line, *lines = raw_head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ")[1])
    headers = tuple(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(":") for line in lines)
    )
    length = next((int(v) for k, v in headers if k == "content-length"), None)
    closed = False
    while length is None or len(body) < length:
        piece = _receive(sock)
        if not piece:
            closed = piece == b""
            break
        body += piece
    else:
        closed = _receive(sock) == b""
    return Answer(status, headers, body if length is None else body[:length], closed)


def _receive(sock: socket.socket) -> bytes | None:
    """The next bytes; ``b""`` once the server closed (or reset) the connection; None when
    nothing came within the socket's timeout."""
    try:
        return sock.recv(65536)
    except TimeoutError:
        return None
    except ConnectionResetError:
        return b""


def trickle(sock: socket.socket, data: bytes, *, every: float, until: float) -> int:
    """Send ``data`` a byte at a time, one each ``every`` seconds, until it is all sent, the
    server answers (or closes), or ``until`` (a ``time.monotonic()``) passes; how many bytes
    went. (Writing on after the server closed would draw a reset that can drop its answer.)"""
    sent = 0
    for byte in data:
        if time.monotonic() >= until or select.select([sock], [], [], 0)[0]:
            break
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += 1
        time.sleep(every)
    return sent
