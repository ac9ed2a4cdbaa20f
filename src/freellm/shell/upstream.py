"""Calling providers: one pooled ``httpx.AsyncClient`` per provider, and a dialect adapter each.

The dispatch loop never knows which dialect it talks to: it asks an :class:`Adapter` for the
request to send, for the OpenAI-shaped answer of a JSON response, and for a stream fold that turns
upstream events into OpenAI chunks. :data:`ADAPTERS` maps each ``Dialect`` to its adapter; the
native Gemini and Cohere dialects plug in there.

httpx's exceptions become :class:`~freellm.core.outcome.TransportError` values here and nowhere
else (:func:`transport_error`).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol

import attrs
import httpx

from freellm.core.catalog import AuthStyle, Catalog, Dialect, ProviderSpec
from freellm.core.dialects import openai as openai_dialect
from freellm.core.dialects.openai import StreamFold, Usage
from freellm.core.ledger import Slot
from freellm.core.outcome import TransportError
from freellm.shell.transport import H11Transport

__all__ = [
    "ADAPTERS",
    "Adapter",
    "Answer",
    "HttpxAnswer",
    "Outgoing",
    "Timeouts",
    "Upstreams",
    "open_upstreams",
    "transport_error",
]


@attrs.frozen
class Timeouts:
    """Deadlines of one upstream call, in seconds."""

    connect: float = 10.0
    first_byte: float = 60.0  # from sending the request to the first chunk of the answer
    idle: float = 60.0  # between two chunks of a stream
    total: float = 600.0


@attrs.frozen
class Outgoing:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


class Adapter(Protocol):
    def request(
        self,
        provider: ProviderSpec,
        slot: Slot,
        secret: str,
        body: Mapping[str, Any],
        *,
        stream: bool,
    ) -> Outgoing: ...

    def answer(self, data: bytes) -> tuple[dict[str, Any], Usage | None]:
        """The OpenAI ``chat.completion`` of a 200 response. Raises ``ValueError`` if broken."""
        ...

    def stream(self, *, client_wants_usage: bool) -> StreamFold: ...


class OpenAIAdapter:
    """OpenAI-compatible providers, with their quirks."""

    def request(
        self,
        provider: ProviderSpec,
        slot: Slot,
        secret: str,
        body: Mapping[str, Any],
        *,
        stream: bool,
    ) -> Outgoing:
        base_url, token = provider.base_url, secret
        if provider.auth is AuthStyle.CLOUDFLARE:
            account, _, token = secret.partition(":")
            base_url = base_url.replace("{account_id}", account)
        headers = {"content-type": "application/json", **provider.headers}
        if provider.auth is AuthStyle.GOOG_API_KEY:
            headers["x-goog-api-key"] = token
        else:
            headers["authorization"] = f"Bearer {token}"
        upstream = openai_dialect.prepare_body(
            body, slot.model.id, stream=stream, stream_options=provider.id != "cohere"
        )
        payload = json.dumps(upstream, separators=(",", ":"), ensure_ascii=False).encode()
        return Outgoing("POST", f"{base_url}/chat/completions", headers, payload)

    def answer(self, data: bytes) -> tuple[dict[str, Any], Usage | None]:
        parsed = json.loads(data)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("choices"), list):
            raise ValueError("not a chat.completion")
        return openai_dialect.normalize_response(parsed), openai_dialect.usage_of(parsed)

    def stream(self, *, client_wants_usage: bool) -> StreamFold:
        return StreamFold(client_wants_usage=client_wants_usage)


ADAPTERS: Mapping[Dialect, Adapter] = {Dialect.OPENAI: OpenAIAdapter()}


class Answer(Protocol):
    """An upstream response whose head has arrived (:class:`~freellm.shell.transport.Answer`,
    or :class:`HttpxAnswer` over an injected httpx transport)."""

    status: int

    @property
    def headers(self) -> dict[str, str]:
        """Lower-case names."""
        ...

    async def read(self) -> bytes: ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None: ...


class HttpxAnswer:
    """An ``httpx.Response`` (opened with ``stream=True``) as an :class:`Answer`."""

    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        self._response = response
        self._chunks: Any = None  # aiter_raw(), made on first use

    @property
    def headers(self) -> dict[str, str]:
        return dict(self._response.headers.items())

    async def read(self) -> bytes:
        return await self._response.aread()

    def __aiter__(self) -> HttpxAnswer:
        return self

    async def __anext__(self) -> bytes:
        if self._chunks is None:
            self._chunks = self._response.aiter_raw()
        data: bytes = await self._chunks.__anext__()
        return data

    async def aclose(self) -> None:
        if self._chunks is not None:
            await self._chunks.aclose()
        await self._response.aclose()


class Upstreams:
    """One keep-alive pool per provider (:class:`~freellm.shell.transport.H11Transport`).

    The dispatch loop calls :meth:`send`, which goes straight to the pool, below httpx's
    Request and Response objects (about a sixth of a proxied request's CPU); the health probes
    use :meth:`client`, an ``httpx.AsyncClient`` on the same pool. Tests inject an httpx
    transport (``httpx.MockTransport``): then :meth:`send` goes through httpx to it.
    """

    def __init__(
        self,
        catalog: Catalog,
        timeouts: Timeouts,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeouts = timeouts
        self._waits: Mapping[str, float | None] = {
            "connect": timeouts.connect,
            "read": timeouts.idle,
            "write": timeouts.first_byte,
            "pool": timeouts.first_byte,
        }
        self._pools: dict[str, H11Transport] = {}
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._catalog = catalog
        self._transport = transport  # tests: an httpx.MockTransport
        # One TLS context for every pool (each would load the CA bundle again), made on first use.
        self._tls: ssl.SSLContext | None = None

    def _pool(self, provider: str) -> H11Transport:
        pool = self._pools.get(provider)
        if pool is None:
            if self._tls is None:
                self._tls = httpx.create_ssl_context()
            pool = self._pools[provider] = H11Transport(ssl_context=self._tls)
        return pool

    def client(self, provider: str) -> httpx.AsyncClient:
        """An httpx client for ``provider``, on its pool, made on first use."""
        client = self._clients.get(provider)
        if client is None:
            t = self.timeouts
            client = self._clients[provider] = httpx.AsyncClient(
                timeout=httpx.Timeout(t.first_byte, connect=t.connect, read=t.idle),
                trust_env=False,
                transport=self._transport or self._pool(provider),
            )
        return client

    async def send(self, provider: str, outgoing: Outgoing) -> Answer:
        """Send ``outgoing`` to ``provider`` and wait for the response head.

        Raises httpx's exceptions (:func:`transport_error` maps them).
        """
        if self._transport is not None:
            client = self.client(provider)
            request = client.build_request(
                outgoing.method, outgoing.url, headers=outgoing.headers, content=outgoing.body
            )
            return HttpxAnswer(await client.send(request, stream=True))
        headers = [(name.encode(), value.encode()) for name, value in outgoing.headers.items()]
        return await self._pool(provider).send(
            outgoing.method.encode(), outgoing.url, headers, outgoing.body, self._waits
        )

    def adapter(self, provider: ProviderSpec) -> Adapter | None:
        return ADAPTERS.get(provider.dialect)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        pools, self._pools = list(self._pools.values()), {}
        for client in clients:
            await client.aclose()
        for pool in pools:
            await pool.aclose()


@asynccontextmanager
async def open_upstreams(
    catalog: Catalog,
    timeouts: Timeouts | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[Upstreams]:
    upstreams = Upstreams(catalog, timeouts or Timeouts(), transport=transport)
    try:
        yield upstreams
    finally:
        await upstreams.aclose()


def transport_error(exc: httpx.HTTPError) -> TransportError:
    """The one place httpx's exception tree meets the core's outcome kinds."""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return TransportError.TIMEOUT
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return TransportError.CONNECT
    return TransportError.PROTOCOL
