"""The h11 transport against real servers on 127.0.0.1: the fake providers, and small raw
servers that each misbehave in one way (close, hang, chunk, refuse)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from freellm.core.outcome import TransportError
from freellm.shell.transport import H11Transport
from freellm.shell.upstream import transport_error
from freellm.sim.fakes import FakeCaps, open_fake_provider

KEY = "sk-transport"
MODEL = "m"
Handler = Callable[[trio.abc.Stream, int], Awaitable[None]]


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], **extra}


@asynccontextmanager
async def fake_client(
    transport: H11Transport,
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    fake_cm = open_fake_provider("openai", keys=[KEY], models={MODEL: FakeCaps()})
    async with (
        fake_cm as fake,
        httpx.AsyncClient(
            base_url=fake.base_url,
            headers={"authorization": f"Bearer {KEY}"},
            transport=transport,
            timeout=5,
        ) as client,
    ):
        yield fake, client


class Raw:
    """A raw HTTP server: ``handler(stream, n)`` serves the n-th connection (from 0)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.url = ""

    async def _serve(self, stream: trio.abc.Stream) -> None:
        n, self.connections = self.connections, self.connections + 1
        try:
            await self.handler(stream, n)
        except trio.BrokenResourceError:
            pass  # the client closed first (as some tests mean it to)
        finally:
            await stream.aclose()


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[Raw]:
    server = Raw(handler)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server._serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        server.url = f"http://127.0.0.1:{port}"
        yield server
        nursery.cancel_scope.cancel()


async def read_request(stream: trio.abc.Stream, buffer: bytearray) -> bool:
    """Read one request (head and content-length body) off ``buffer``; False at EOF."""
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            return False
        buffer += data
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        rest += await stream.receive_some(65536)
    buffer[:] = rest[length:]
    return True


def answer(body: bytes, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", f"content-length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def keep_alive(body: bytes = b"ok") -> Handler:
    async def handler(stream: trio.abc.Stream, n: int) -> None:
        buffer = bytearray()
        while await read_request(stream, buffer):
            await stream.send_all(answer(body))

    return handler


async def test_a_json_answer_and_keep_alive_reuse_against_the_fake() -> None:
    transport = H11Transport()
    async with fake_client(transport) as (fake, client):
        for _ in range(3):
            response = await client.post("/chat/completions", json=chat())
            assert response.status_code == 200
            assert response.json()["object"] == "chat.completion"
            assert response.headers["content-type"] == "application/json"
            assert transport.idle_connections() == 1
        assert len(fake.requests) == 3


async def test_one_connection_serves_every_sequential_request() -> None:
    async with raw_server(keep_alive()) as server:
        async with httpx.AsyncClient(transport=H11Transport()) as client:
            for _ in range(5):
                assert (await client.get(server.url + "/x")).content == b"ok"
        assert server.connections == 1


async def test_a_streamed_answer_against_the_fake_is_read_chunk_by_chunk() -> None:
    transport = H11Transport()
    async with fake_client(transport) as (_, client):
        request = client.build_request("POST", "/chat/completions", json=chat(stream=True))
        response = await client.send(request, stream=True)
        assert response.headers["content-type"].startswith("text/event-stream")
        assert transport.idle_connections() == 0  # still busy with the body
        pieces = [piece async for piece in response.aiter_raw()]
        await response.aclose()
        assert len(pieces) > 1
        assert b"".join(pieces).endswith(b"data: [DONE]\n\n")
        assert transport.idle_connections() == 1


async def test_a_chunked_body_is_decoded_and_the_connection_kept() -> None:
    async def handler(stream: trio.abc.Stream, n: int) -> None:
        buffer = bytearray()
        while await read_request(stream, buffer):
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )

    async with raw_server(handler) as server:
        transport = H11Transport()
        async with httpx.AsyncClient(transport=transport) as client:
            assert (await client.get(server.url)).content == b"hello world"
            assert (await client.get(server.url)).content == b"hello world"
        assert server.connections == 1


async def test_chunks_that_arrive_together_are_one_piece_and_later_ones_their_own() -> None:
    # A stream sends one HTTP chunk per event; what one read brings is one piece for the
    # caller (one write to its client), and what comes later is another. The first chunk goes
    # on alone, at once (the client's first token).
    later = trio.Event()

    async def handler(stream: trio.abc.Stream, n: int) -> None:
        buffer = bytearray()
        while await read_request(stream, buffer):
            head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            await stream.send_all(head + b"".join(b"2\r\nE%d\r\n" % i for i in range(5)))
            await later.wait()
            await stream.send_all(b"2\r\nF5\r\n0\r\n\r\n")

    async with raw_server(handler) as server:
        transport = H11Transport()
        waits = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}
        answer_ = await transport.send(b"GET", server.url + "/", [], b"", waits)
        pieces = [await answer_.__anext__(), await answer_.__anext__()]
        later.set()
        pieces += [piece async for piece in answer_]
        assert pieces == [b"E0", b"E1E2E3E4", b"F5"]
        assert transport.idle_connections() == 1  # read to its end: back in the pool
        await transport.aclose()


async def test_a_body_broken_after_good_chunks_gives_the_chunks_then_the_error() -> None:
    async def handler(stream: trio.abc.Stream, n: int) -> None:
        buffer = bytearray()
        await read_request(stream, buffer)
        head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        await stream.send_all(head + b"2\r\nE0\r\n2\r\nE1\r\nnot a chunk size\r\n")

    async with raw_server(handler) as server:
        transport = H11Transport()
        waits = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}
        answer_ = await transport.send(b"GET", server.url + "/", [], b"", waits)
        assert await answer_.__anext__() == b"E0"
        assert await answer_.__anext__() == b"E1"
        with pytest.raises(httpx.RemoteProtocolError):
            await answer_.__anext__()
        assert transport.open_connections() == transport.idle_connections() == 0


async def test_a_request_body_arrives_whole_with_its_length() -> None:
    seen: list[bytes] = []

    async def handler(stream: trio.abc.Stream, n: int) -> None:
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer or not buffer.endswith(b"}"):
            buffer += await stream.receive_some(65536)
        seen.append(bytes(buffer))
        await stream.send_all(answer(b"{}"))

    async with raw_server(handler) as server:
        async with httpx.AsyncClient(transport=H11Transport()) as client:
            response = await client.post(server.url + "/p?q=1", json={"a": "é" * 3})
        assert response.json() == {}
    head, _, body = seen[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /p?q=1 HTTP/1.1\r\n")
    assert f"content-length: {len(body)}".encode() in head.lower()
    assert json.loads(body) == {"a": "é" * 3}


async def test_connection_close_from_the_server_is_not_reused() -> None:
    async def handler(stream: trio.abc.Stream, n: int) -> None:
        await read_request(stream, bytearray())
        await stream.send_all(answer(b"bye", "connection: close"))

    async with raw_server(handler) as server:
        transport = H11Transport()
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(3):
                assert (await client.get(server.url)).content == b"bye"
                assert transport.idle_connections() == 0
        assert server.connections == 3


async def test_a_kept_alive_connection_the_server_closed_is_replaced() -> None:
    async def handler(stream: trio.abc.Stream, n: int) -> None:
        await read_request(stream, bytearray())
        await stream.send_all(answer(b"once"))  # keep-alive promised, then closed anyway

    async with raw_server(handler) as server:
        transport = H11Transport()
        async with httpx.AsyncClient(transport=transport) as client:
            assert (await client.get(server.url)).content == b"once"
            await trio.sleep(0.05)  # the close reaches the client's idle socket
            assert (await client.get(server.url)).content == b"once"
        assert server.connections == 2


async def test_a_reused_connection_closed_before_any_answer_is_retried_once() -> None:
    async def handler(stream: trio.abc.Stream, n: int) -> None:
        buffer = bytearray()
        await read_request(stream, buffer)
        await stream.send_all(answer(b"first"))
        if n == 0:
            await read_request(stream, buffer)  # the second request: closed unanswered
        else:
            while await read_request(stream, buffer):
                await stream.send_all(answer(b"again"))

    async with raw_server(handler) as server:
        async with httpx.AsyncClient(transport=H11Transport()) as client:
            assert (await client.get(server.url)).content == b"first"
            assert (await client.get(server.url)).content == b"first"  # on a new connection
        assert server.connections == 2


async def test_a_new_connection_closed_before_any_answer_is_a_protocol_error() -> None:
    async def handler(stream: trio.abc.Stream, n: int) -> None:
        await read_request(stream, bytearray())

    async with raw_server(handler) as server:
        async with httpx.AsyncClient(transport=H11Transport()) as client:
            with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
                await client.get(server.url)
        assert server.connections == 1  # a fresh connection is never retried


async def test_a_body_cut_short_is_a_protocol_error_and_drops_the_connection() -> None:
    async def handler(stream: trio.abc.Stream, n: int) -> None:
        await read_request(stream, bytearray())
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")

    async with raw_server(handler) as server:
        transport = H11Transport()
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(server.url)
        assert transport.idle_connections() == 0


async def test_no_answer_within_the_read_timeout_is_a_read_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    autojump_clock.autojump_threshold = 0.01

    async def handler(stream: trio.abc.Stream, n: int) -> None:
        await read_request(stream, bytearray())
        await trio.sleep_forever()

    async with raw_server(handler) as server:
        transport = H11Transport()
        async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(7)) as client:
            began = trio.current_time()
            with pytest.raises(httpx.ReadTimeout):
                await client.get(server.url)
            assert trio.current_time() - began == pytest.approx(7, abs=0.1)
        assert transport.idle_connections() == 0


async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with httpx.AsyncClient(transport=H11Transport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


async def test_a_connect_that_never_completes_is_a_connect_timeout(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never(*args: Any, **kwargs: Any) -> trio.abc.Stream:
        await trio.sleep_forever()
        raise AssertionError

    monkeypatch.setattr(trio, "open_tcp_stream", never)
    async with httpx.AsyncClient(
        transport=H11Transport(), timeout=httpx.Timeout(30, connect=3)
    ) as client:
        began = trio.current_time()
        with pytest.raises(httpx.ConnectTimeout):
            await client.get("http://127.0.0.1:9/")
        assert trio.current_time() - began == 3


async def test_cancelled_mid_body_the_connection_is_discarded_not_pooled() -> None:
    server_saw_close = trio.Event()

    async def handler(stream: trio.abc.Stream, n: int) -> None:
        await read_request(stream, bytearray())
        await stream.send_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n")
        if not await stream.receive_some(1024):  # nothing more comes: the client closed
            server_saw_close.set()

    async with raw_server(handler) as server:
        transport = H11Transport()
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.send(client.build_request("GET", server.url), stream=True)
            chunks: Any = response.aiter_raw()  # an async generator: it has aclose()
            assert await chunks.__anext__() == b"one"
            with trio.move_on_after(0.05):
                await chunks.__anext__()  # the server never sends the rest
            await chunks.aclose()
            await response.aclose()
            assert transport.idle_connections() == 0
            with trio.fail_after(5):
                await server_saw_close.wait()


async def test_a_body_closed_before_its_end_drops_the_connection() -> None:
    async with raw_server(keep_alive(b"x" * 200_000)) as server:
        transport = H11Transport()
        async with httpx.AsyncClient(transport=transport) as client:
            # The transport's own body stream (httpx's iterators would need closing one by one).
            response = await transport.handle_async_request(client.build_request("GET", server.url))
            body = response.stream
            assert isinstance(body, httpx.AsyncByteStream)
            assert await body.__aiter__().__anext__()
            await body.aclose()
            assert transport.idle_connections() == 0
            assert (await client.get(server.url)).content == b"x" * 200_000
        assert server.connections == 2


async def test_concurrent_requests_share_a_bounded_pool() -> None:
    async with raw_server(keep_alive()) as server:
        transport = H11Transport(max_connections=3, max_idle=3)
        results: list[bytes] = []
        async with httpx.AsyncClient(transport=transport) as client:

            async def one() -> None:
                results.append((await client.get(server.url)).content)

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(one)
            assert transport.idle_connections() == 3
        assert results == [b"ok"] * 20
        assert server.connections == 3


async def test_by_default_the_pool_opens_a_connection_for_every_concurrent_request() -> None:
    # Long streams hold their connections: a cap per origin (64, once) is a silent ceiling on
    # conversations. Every one of 300 requests held open at once gets its own connection.
    arrived = 0
    all_arrived, release = trio.Event(), trio.Event()

    async def held(stream: trio.abc.Stream, n: int) -> None:
        nonlocal arrived
        buffer = bytearray()
        while await read_request(stream, buffer):
            arrived += 1
            if arrived == 300:
                all_arrived.set()
            await release.wait()
            await stream.send_all(answer(b"ok"))

    async with raw_server(held) as server:
        transport = H11Transport(max_idle=8)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            statuses: list[int] = []

            async def one() -> None:
                statuses.append((await client.get(server.url)).status_code)

            async with trio.open_nursery() as nursery:
                for _ in range(300):
                    nursery.start_soon(one)
                with trio.fail_after(10):
                    await all_arrived.wait()
                release.set()
            assert statuses == [200] * 300
            assert transport.idle_connections() == 8
        assert server.connections == 300


async def test_a_full_pool_is_a_pool_timeout_after_the_pool_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    autojump_clock.autojump_threshold = 0.01  # real sockets: jump only when they are quiet
    release = trio.Event()

    async def held(stream: trio.abc.Stream, n: int) -> None:
        buffer = bytearray()
        while await read_request(stream, buffer):
            await release.wait()
            await stream.send_all(answer(b"ok"))

    async with raw_server(held) as server:
        transport = H11Transport(max_connections=2)
        timeout = httpx.Timeout(30, pool=1.5)
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(client.get, server.url)
                await trio.sleep(1)
                started = trio.current_time()
                with pytest.raises(httpx.PoolTimeout):
                    await client.get(server.url)
                assert trio.current_time() - started == pytest.approx(1.5)
                release.set()
            # Once the held requests are answered, the pool serves again.
            assert (await client.get(server.url)).content == b"ok"


async def test_concurrent_requests_against_the_fake() -> None:
    transport = H11Transport()
    async with fake_client(transport) as (fake, client):
        statuses: list[int] = []

        async def one(stream: bool) -> None:
            response = await client.post("/chat/completions", json=chat(stream=stream))
            statuses.append(response.status_code)
            if stream:
                assert response.content.endswith(b"data: [DONE]\n\n")

        async with trio.open_nursery() as nursery:
            for n in range(24):
                nursery.start_soon(one, n % 2 == 0)
        assert statuses == [200] * 24
        assert len(fake.requests) == 24


async def test_send_below_httpx_reads_a_json_answer_and_a_stream_on_one_connection() -> None:
    transport = H11Transport()
    async with fake_client(transport) as (fake, _):
        url = f"{fake.base_url}/chat/completions"
        headers = [(b"authorization", f"Bearer {KEY}".encode())]
        waits = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}
        answer = await transport.send(b"POST", url, headers, json.dumps(chat()).encode(), waits)
        assert answer.status == 200
        assert answer.headers["content-type"] == "application/json"
        assert json.loads(await answer.read())["object"] == "chat.completion"
        body = json.dumps(chat(stream=True)).encode()
        answer = await transport.send(b"POST", url, headers, body, waits)
        pieces = [piece async for piece in answer]
        assert b"".join(pieces).endswith(b"data: [DONE]\n\n")
        assert transport.idle_connections() == 1
        assert len(fake.requests) == 2


def _certificates(directory: Path) -> tuple[ssl.SSLContext, str]:
    """A server context for 127.0.0.1, signed by a throwaway CA, and that CA's PEM."""
    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            address = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
            builder = builder.add_extension(x509.SubjectAlternativeName([address]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("test CA", ca_key, "test CA", ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = certificate("127.0.0.1", server_key, "test CA", ca_key, ca=False)
    chain = directory / "server.pem"
    chain.write_bytes(
        server.public_bytes(serialization.Encoding.PEM)
        + server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain)
    return context, ca.public_bytes(serialization.Encoding.PEM).decode()


async def test_https_is_verified_and_kept_alive(tmp_path: Path) -> None:
    server_context, ca_pem = _certificates(tmp_path)
    served = Raw(keep_alive(b"secret ok"))
    async with trio.open_nursery() as nursery:
        serve = partial(trio.serve_ssl_over_tcp, served._serve, 0, server_context, host="127.0.0.1")
        listeners = await nursery.start(serve)
        port = listeners[0].transport_listener.socket.getsockname()[1]
        url = f"https://127.0.0.1:{port}/"

        trusted = H11Transport(ssl_context=ssl.create_default_context(cadata=ca_pem))
        async with httpx.AsyncClient(transport=trusted, timeout=5) as client:
            for _ in range(3):
                response = await client.get(url)
                assert (response.status_code, response.content) == (200, b"secret ok")
        assert served.connections == 1  # one TLS handshake, then keep-alive

        untrusting = H11Transport(ssl_context=ssl.create_default_context())
        async with httpx.AsyncClient(transport=untrusting, timeout=5) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(url)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (httpx.PoolTimeout("full"), TransportError.CONNECT),  # never reached the provider
        (httpx.ConnectTimeout("slow"), TransportError.CONNECT),
        (httpx.ConnectError("refused"), TransportError.CONNECT),
        (httpx.ReadTimeout("quiet"), TransportError.TIMEOUT),
        (httpx.WriteTimeout("stuck"), TransportError.TIMEOUT),
        (httpx.RemoteProtocolError("cut"), TransportError.PROTOCOL),
        (httpx.ReadError("reset"), TransportError.PROTOCOL),
    ],
)
def test_each_transport_failure_is_one_outcome_kind(
    exc: httpx.HTTPError, error: TransportError
) -> None:
    assert transport_error(exc) is error
