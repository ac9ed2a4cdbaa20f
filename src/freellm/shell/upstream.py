"""Calling providers: a keep-alive pool per provider, and a dialect adapter each.

The dispatch loop never knows which dialect it talks to: it asks an :class:`Adapter` for the
request to send (or why the request cannot be translated), for the OpenAI-shaped answer of a JSON
response, and for a :class:`Fold` that turns upstream events into OpenAI chunks. :data:`ADAPTERS`
maps each ``Dialect`` to its adapter: OpenAI-compatible, native Gemini and native Cohere.

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

from freellm.core import wire
from freellm.core.catalog import AuthStyle, Dialect, ProviderSpec
from freellm.core.dialects import Untranslatable, cohere, gemini
from freellm.core.dialects import openai as openai_dialect
from freellm.core.dialects.openai import Usage
from freellm.core.ledger import Slot
from freellm.core.outcome import TransportError
from freellm.core.sse import Event
from freellm.shell.transport import H11Transport

__all__ = [
    "ADAPTERS",
    "Adapter",
    "Answer",
    "Fold",
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


class Fold(Protocol):
    """One upstream stream turned into OpenAI ``chat.completion.chunk`` events, event by event.

    :meth:`step` returns the SSE bytes for the client (possibly none) and raises
    :class:`~freellm.core.dialects.openai.StreamError` when the provider reports a failure
    mid-stream. ``done`` once the stream ended well (the client has had ``data: [DONE]``).
    """

    @property
    def usage(self) -> Usage | None: ...
    @property
    def done(self) -> bool: ...
    @property
    def completion_chars(self) -> int: ...

    def step(self, event: Event) -> list[bytes]: ...


class Adapter(Protocol):
    """What the dispatch loop needs from a dialect. ``model`` is the provider's model id and
    ``created`` the epoch second that translated answers carry."""

    def request(
        self,
        provider: ProviderSpec,
        slot: Slot,
        secret: str,
        body: Mapping[str, Any],
        *,
        stream: bool,
    ) -> Outgoing | Untranslatable: ...

    def answer(
        self, data: bytes, *, model: str, created: int
    ) -> tuple[dict[str, Any], Usage | None]:
        """The OpenAI ``chat.completion`` of a 200 response. Raises ``ValueError`` if broken."""
        ...

    def stream(self, *, client_wants_usage: bool, model: str, created: int) -> Fold: ...


def _auth_headers(provider: ProviderSpec, token: str) -> dict[str, str]:
    headers = {"content-type": "application/json", **provider.headers}
    if provider.auth is AuthStyle.GOOG_API_KEY:
        headers["x-goog-api-key"] = token
    else:
        headers["authorization"] = f"Bearer {token}"
    return headers


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
        upstream = openai_dialect.prepare_body(
            body, slot.model.id, stream=stream, stream_options=provider.id != "cohere"
        )
        return Outgoing(
            "POST",
            f"{base_url}/chat/completions",
            _auth_headers(provider, token),
            wire.dumps(upstream),
        )

    def answer(
        self, data: bytes, *, model: str, created: int
    ) -> tuple[dict[str, Any], Usage | None]:
        parsed = json.loads(data)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("choices"), list):
            raise ValueError("not a chat.completion")
        return openai_dialect.normalize_response(parsed), openai_dialect.usage_of(parsed)

    def stream(self, *, client_wants_usage: bool, model: str, created: int) -> Fold:
        return openai_dialect.StreamFold(client_wants_usage=client_wants_usage)


class GeminiAdapter:
    """Google AI Studio's native ``generateContent`` (:mod:`freellm.core.dialects.gemini`)."""

    def request(
        self,
        provider: ProviderSpec,
        slot: Slot,
        secret: str,
        body: Mapping[str, Any],
        *,
        stream: bool,
    ) -> Outgoing | Untranslatable:
        upstream = gemini.translate_request(body)
        if isinstance(upstream, Untranslatable):
            return upstream
        url = provider.base_url + gemini.endpoint(slot.model.id, stream=stream)
        return Outgoing("POST", url, _auth_headers(provider, secret), wire.dumps(upstream))

    def answer(
        self, data: bytes, *, model: str, created: int
    ) -> tuple[dict[str, Any], Usage | None]:
        return gemini.translate_response(json.loads(data), model=model, created=created)

    def stream(self, *, client_wants_usage: bool, model: str, created: int) -> Fold:
        return gemini.GeminiStreamFold(
            client_wants_usage=client_wants_usage, model=model, created=created
        )


class CohereAdapter:
    """Cohere's native v2 chat (:mod:`freellm.core.dialects.cohere`)."""

    def request(
        self,
        provider: ProviderSpec,
        slot: Slot,
        secret: str,
        body: Mapping[str, Any],
        *,
        stream: bool,
    ) -> Outgoing | Untranslatable:
        upstream = cohere.prepare_body(body, slot.model.id, stream=stream)
        if isinstance(upstream, Untranslatable):
            return upstream
        url = f"{provider.base_url}/v2/chat"
        return Outgoing("POST", url, _auth_headers(provider, secret), wire.dumps(upstream))

    def answer(
        self, data: bytes, *, model: str, created: int
    ) -> tuple[dict[str, Any], Usage | None]:
        answer = cohere.translate_response(json.loads(data), model=model, created=created)
        if isinstance(answer, cohere.UpstreamFailure):
            raise ValueError(answer.message)
        return answer.body, answer.usage

    def stream(self, *, client_wants_usage: bool, model: str, created: int) -> Fold:
        return cohere.StreamFold(
            client_wants_usage=client_wants_usage, model=model, created=created
        )


ADAPTERS: Mapping[Dialect, Adapter] = {
    Dialect.OPENAI: OpenAIAdapter(),
    Dialect.GEMINI: GeminiAdapter(),
    Dialect.COHERE: CohereAdapter(),
}


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

    def adapter(self, provider: ProviderSpec) -> Adapter:
        return ADAPTERS[provider.dialect]

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        pools, self._pools = list(self._pools.values()), {}
        for client in clients:
            await client.aclose()
        for pool in pools:
            await pool.aclose()


@asynccontextmanager
async def open_upstreams(
    timeouts: Timeouts | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[Upstreams]:
    upstreams = Upstreams(timeouts or Timeouts(), transport=transport)
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
