"""An HTTP/1.1 transport for httpx on h11 and trio sockets, with a small keep-alive pool.

httpcore's pool walks and polls every connection on each request, and its layers cost about a
quarter of a proxied request's CPU (DESIGN.md's measured notes); freellm only ever needs plain
HTTP/1.1 to a few hosts. So :class:`H11Transport` keeps, per origin (scheme, host, port), a
deque of idle connections, and one request is: take the newest idle connection (or connect),
write the request in one ``send_all``, read the response head, hand httpx a body stream that
puts the connection back when the body has been read to its end.

Theory of operation
-------------------
- A connection is reused only when h11 says both sides finished the exchange cleanly (``DONE``
  and ``DONE``, then ``start_next_cycle``). A response that asks to close, a body that was not
  read to its end (the caller closed it early, or was cancelled), and any error discard it.
- An idle connection is checked before reuse: one that has expired (``keepalive_expiry``) or is
  readable (the server closed it, or sent something unasked) is discarded.
- A server may still close a kept-alive connection just as it is reused. If a reused connection
  fails before a single byte of the response arrived, the request is sent once more on a new
  connection (the body is in memory, so this is safe to do for any request the server never
  answered).
- Every wait has its own deadline from httpx's per-request timeouts (``connect``, ``read``,
  ``write``, ``pool``); ``None`` waits forever.
- At most ``max_connections`` connections per origin are open at once (``None``: as many as the
  open-files limit allows; past it, connecting fails with ``ConnectError``); a request beyond
  that waits for one to be released (``pool`` timeout), then fails with ``PoolTimeout``.

Errors are httpx's own, so callers handle this transport as any other::

    httpx.ConnectTimeout     connecting (TCP or TLS) took longer than the connect timeout
    httpx.ConnectError       the connection was refused, or TLS failed
    httpx.WriteTimeout       sending the request took longer than the write timeout
    httpx.WriteError         the connection broke while sending
    httpx.ReadTimeout        no byte of the response for the read timeout
    httpx.ReadError          the connection broke while reading
    httpx.RemoteProtocolError  the server broke HTTP/1.1 or closed before the response's end
    httpx.PoolTimeout        every connection to the origin stayed busy for the pool timeout
"""

from __future__ import annotations

import functools
import math
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import h11
import httpx
import trio

__all__ = ["Answer", "H11Transport"]

DEFAULT_HEADERS: Final = ((b"accept", b"*/*"), (b"user-agent", b"freellm"))

READ_SIZE: Final = 65536
MAX_IDLE: Final = 32  # per origin
KEEPALIVE_EXPIRY_S: Final = 15.0

Origin = tuple[str, str, int]
Connect = Callable[[str, int], Awaitable[trio.SocketStream]]
"""Opens a TCP stream to ``(host, port)``: :func:`trio.open_tcp_stream`, or a test's own."""


def _timeout(timeouts: Mapping[str, float | None], name: str) -> float:
    value = timeouts.get(name)
    return math.inf if value is None else float(value)


class _Connection:
    """One socket (plain or TLS) and the h11 state of its current exchange."""

    __slots__ = ("eof", "h11", "idle_since", "received", "sock", "stream")

    def __init__(self, stream: trio.abc.Stream, sock: trio.socket.SocketType) -> None:
        self.stream = stream
        self.sock = sock
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0
        self.received = 0  # bytes of the current response so far
        self.eof = False

    def close(self) -> None:
        """Drop the connection at once (no TLS close_notify: the peer sees the socket close)."""
        self.sock.close()

    async def next_event(self, read_s: float, request: httpx.Request | None) -> Any:
        """The next h11 event of the response, reading as needed (at most ``read_s`` a read)."""
        conn = self.h11
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc), request=request) from exc
            if event is not h11.NEED_DATA:
                return event
            with trio.move_on_after(read_s) as scope:
                try:
                    data = await self.stream.receive_some(READ_SIZE)
                except (OSError, trio.BrokenResourceError) as exc:
                    raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
            if scope.cancelled_caught:
                raise httpx.ReadTimeout("timed out reading the response", request=request)
            self.received += len(data)
            self.eof = not data
            conn.receive_data(bytes(data) if type(data) is not bytes else data)


class _Pool:
    """The connections to one origin: the idle ones, newest last, and a count of all open."""

    __slots__ = ("idle", "open", "waiting")

    def __init__(self) -> None:
        self.idle: deque[_Connection] = deque()
        self.open = 0
        self.waiting = trio.lowlevel.ParkingLot()  # requests waiting for a connection


class _Unanswered(Exception):
    """A reused connection closed before any byte of the response: worth one more try."""


class H11Transport(httpx.AsyncBaseTransport):
    """``httpx.AsyncClient(transport=H11Transport(ssl_context=...))``: HTTP/1.1 only.

    ``connect`` opens the TCP streams (default :func:`trio.open_tcp_stream`); tests give one that
    hands out one end of a socket pair whose other end a scripted server holds, so that the
    transport runs for real, in virtual time, with no address at all.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int | None = None,
        max_idle: int = MAX_IDLE,
        keepalive_expiry: float = KEEPALIVE_EXPIRY_S,
        connect: Connect | None = None,
    ) -> None:
        self._ssl_context = ssl_context
        self._open: Connect = connect or trio.open_tcp_stream
        self._max_connections: float = math.inf if max_connections is None else max_connections
        self._max_idle = max_idle
        self._keepalive_expiry = keepalive_expiry
        self._pools: dict[Origin, _Pool] = {}
        self._closed = False

    # -- the pool ----------------------------------------------------------------------------

    def idle_connections(self) -> int:
        """How many connections wait in the pool (for tests)."""
        return sum(len(pool.idle) for pool in self._pools.values())

    def open_connections(self) -> int:
        """How many connections are open, idle or busy (for tests and ``/metrics``)."""
        return sum(pool.open for pool in self._pools.values())

    def _take_idle(self, pool: _Pool) -> _Connection | None:
        now = trio.current_time()
        idle = pool.idle
        while idle:
            connection = idle.pop()
            if now - connection.idle_since < self._keepalive_expiry and not (
                connection.sock.is_readable()
            ):
                return connection
            self._discard(pool, connection)
        return None

    def _discard(self, pool: _Pool, connection: _Connection) -> None:
        connection.close()
        pool.open -= 1
        if pool.waiting:
            pool.waiting.unpark()

    def _release(self, pool: _Pool, connection: _Connection) -> None:
        """Back into the pool after a clean exchange, or closed."""
        conn = connection.h11
        if (
            self._closed
            or conn.our_state is not h11.DONE
            or conn.their_state is not h11.DONE
            or len(pool.idle) >= self._max_idle
        ):
            self._discard(pool, connection)
            return
        conn.start_next_cycle()
        connection.idle_since = trio.current_time()
        pool.idle.append(connection)
        if pool.waiting:
            pool.waiting.unpark()

    async def _acquire(
        self,
        pool: _Pool,
        origin: Origin,
        timeouts: Mapping[str, float | None],
        request: httpx.Request | None,
    ) -> tuple[_Connection, bool]:
        """An idle connection (and True), or a new one (and False)."""
        connection = self._take_idle(pool)
        if connection is not None:
            return connection, True
        if pool.open >= self._max_connections:
            with trio.move_on_after(_timeout(timeouts, "pool")) as scope:
                while pool.open >= self._max_connections and not pool.idle:
                    await pool.waiting.park()
            if scope.cancelled_caught:
                raise httpx.PoolTimeout("no connection came free in time", request=request)
            connection = self._take_idle(pool)
            if connection is not None:
                return connection, True
        pool.open += 1
        try:
            return await self._connect(origin, timeouts, request), False
        except BaseException:
            pool.open -= 1
            raise

    async def _connect(
        self,
        origin: Origin,
        timeouts: Mapping[str, float | None],
        request: httpx.Request | None,
    ) -> _Connection:
        scheme, host, port = origin
        with trio.move_on_after(_timeout(timeouts, "connect")):
            try:
                tcp = await self._open(host, port)
            except OSError as exc:
                raise httpx.ConnectError(str(exc), request=request) from exc
            stream: trio.abc.Stream = tcp
            if scheme == "https":
                context = self._ssl_context or ssl.create_default_context()
                tls = trio.SSLStream(tcp, context, server_hostname=host, https_compatible=True)
                try:
                    await tls.do_handshake()
                except (OSError, trio.BrokenResourceError) as exc:
                    tcp.socket.close()
                    raise httpx.ConnectError(str(exc) or "TLS failed", request=request) from exc
                except BaseException:
                    tcp.socket.close()
                    raise
                stream = tls
            return _Connection(stream, tcp.socket)
        raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}", request=request)

    async def aclose(self) -> None:
        self._closed = True
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            while pool.idle:
                self._discard(pool, pool.idle.pop())

    # -- one request -------------------------------------------------------------------------

    async def send(
        self,
        method: bytes,
        url: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeouts: Mapping[str, float | None],
    ) -> Answer:
        """Send one request and read its response head: the :class:`Answer`, body still unread.

        The dispatch loop calls this directly, below httpx's Request and Response objects;
        ``headers`` need not name ``host``, ``content-length`` or ``user-agent``.
        """
        scheme, host, port, target, host_header = _split(url)
        head = [(b"host", host_header), *DEFAULT_HEADERS, *headers]
        head.append((b"content-length", str(len(body)).encode()))
        return await self._send((scheme, host, port), method, target, head, [body], timeouts, None)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        origin = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        body = [chunk async for chunk in request.stream]  # type: ignore[union-attr]
        method = request.method.encode()
        answer = await self._send(
            origin, method, url.raw_path, request.headers.raw, body, timeouts, request
        )
        return httpx.Response(
            answer.status,
            headers=answer.raw_headers,
            stream=_HttpxBody(answer),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": answer.reason},
        )

    async def _send(
        self,
        origin: Origin,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: list[bytes],
        timeouts: Mapping[str, float | None],
        request: httpx.Request | None,
    ) -> Answer:
        if origin[0] not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {origin[0]!r}")
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool()
        head = h11.Request(method=method, target=target, headers=headers)
        retry = True
        while True:
            connection, reused = await self._acquire(pool, origin, timeouts, request)
            try:
                event = await self._exchange(
                    connection, head, body, timeouts, request, reused and retry
                )
            except _Unanswered:
                self._discard(pool, connection)
                retry = False
                continue
            except BaseException:
                self._discard(pool, connection)
                raise
            return Answer(self, pool, connection, event, _timeout(timeouts, "read"), request)

    async def _exchange(
        self,
        connection: _Connection,
        head: h11.Request,
        body: list[bytes],
        timeouts: Mapping[str, float | None],
        request: httpx.Request | None,
        reused: bool,
    ) -> Any:
        """Send the request and read the response head (skipping 1xx)."""
        conn = connection.h11
        connection.received = 0
        try:
            data = conn.send(head) or b""
            for chunk in body:
                if chunk:
                    data += conn.send(h11.Data(data=chunk)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc), request=request) from exc
        with trio.move_on_after(_timeout(timeouts, "write")) as scope:
            try:
                await connection.stream.send_all(data)
            except (OSError, trio.BrokenResourceError) as exc:
                if reused:
                    raise _Unanswered from exc
                raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc
        if scope.cancelled_caught:
            raise httpx.WriteTimeout("timed out sending the request", request=request)
        read = _timeout(timeouts, "read")
        while True:
            try:
                event = await connection.next_event(read, request)
            except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
                if connection.received:
                    raise
                if reused:  # closed (or reset) as it was reused: the request was never read
                    raise _Unanswered from exc
                if connection.eof:
                    raise httpx.RemoteProtocolError(
                        "Server disconnected without sending a response.", request=request
                    ) from exc
                raise
            if isinstance(event, h11.Response):
                return event
            # h11.InformationalResponse (100 Continue and friends): wait for the real one.


class Answer:
    """A response whose head has arrived: ``status``, ``headers`` (lower-case names, a dict),
    and the body, read with :meth:`read` or chunk by chunk (``async for``). The connection goes
    back to the pool at the body's clean end; :meth:`aclose` before that closes it."""

    __slots__ = (
        "_begun",
        "_connection",
        "_pending",
        "_pool",
        "_read_timeout",
        "_request",
        "_transport",
        "raw_headers",
        "reason",
        "status",
    )

    def __init__(
        self,
        transport: H11Transport,
        pool: _Pool,
        connection: _Connection,
        event: Any,
        read_timeout: float,
        request: httpx.Request | None,
    ) -> None:
        self._transport = transport
        self._pool = pool
        self._connection: _Connection | None = connection
        self._pending: Any = None  # an event read past the body bytes last returned
        self._begun = False  # whether body bytes were returned yet
        self._read_timeout = read_timeout
        self._request = request
        self.status: int = event.status_code
        self.reason: bytes = event.reason
        self.raw_headers: list[tuple[bytes, bytes]] = event.headers.raw_items()

    @property
    def headers(self) -> dict[str, str]:
        """Lower-case names; a repeated header keeps its last value."""
        return {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in self.raw_headers
        }

    async def read(self, limit: int = 32 * 1024 * 1024) -> bytes:
        """The whole body. Raises ``httpx.RemoteProtocolError`` past ``limit`` bytes (and drops
        the connection): a body is read into memory only within a bound."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in self:
            size += len(chunk)
            if size > limit:
                await self.aclose()
                raise httpx.RemoteProtocolError(
                    f"the response body is larger than {limit} bytes", request=self._request
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def __aiter__(self) -> Answer:
        return self

    async def __anext__(self) -> bytes:
        """The body bytes that came with the next read from the socket.

        A stream comes in many small HTTP chunks (one per event, most often), and one read
        often brings several: they are returned together, so that the bytes of one read are
        one step for the caller (one write to its client, not one per chunk). The body's first
        chunk is the exception: it goes on alone, at once, since a client waits for its first
        token (a stream that came in one read then costs two writes instead of one).
        """
        connection = self._connection
        if connection is None:
            raise StopAsyncIteration
        try:
            while True:
                event = self._pending
                if event is None:
                    event = await connection.next_event(self._read_timeout, self._request)
                else:
                    self._pending = None
                kind = type(event)
                if kind is h11.Data:
                    if not self._begun:  # the first bytes go on alone: a client's first token
                        self._begun = True
                        return bytes(event.data)
                    return self._gather(connection.h11, event.data)
                if kind is h11.EndOfMessage:
                    self._connection = None
                    self._transport._release(self._pool, connection)
                    raise StopAsyncIteration
                if kind is h11.ConnectionClosed:
                    raise httpx.RemoteProtocolError(
                        "Server disconnected before the end of the response.",
                        request=self._request,
                    )
        except StopAsyncIteration:
            raise
        except BaseException:
            self._connection = None
            self._transport._discard(self._pool, connection)
            raise

    def _gather(self, conn: h11.Connection, data: bytes | bytearray | memoryview) -> bytes:
        """``data`` and the body bytes after it that h11 already holds, with no more reading;
        the first other event waits in ``_pending`` for the next call."""
        pieces: list[bytes | bytearray | memoryview] | None = None
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                break  # the next call meets it again (h11 stays broken), after these bytes
            if event is h11.NEED_DATA:
                break
            if type(event) is not h11.Data:
                self._pending = event
                break
            if pieces is None:
                pieces = [data]
            pieces.append(event.data)
        return bytes(data) if pieces is None else b"".join(pieces)

    async def aclose(self) -> None:
        """Closing a body that was not read to its end closes its connection too."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._transport._discard(self._pool, connection)


class _HttpxBody(httpx.AsyncByteStream):
    """An :class:`Answer`'s body as httpx reads it."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._answer

    async def aclose(self) -> None:
        await self._answer.aclose()


@functools.lru_cache(maxsize=256)
def _split(url: str) -> tuple[str, str, int, bytes, bytes]:
    """(scheme, host, port, request target, Host header) of an absolute URL."""
    parts = urlsplit(url)
    scheme = parts.scheme
    host = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host_header = parts.netloc.rpartition("@")[2]
    return scheme, host, port, target.encode(), host_header.encode()
