"""Calling providers: one pooled ``httpx.AsyncClient`` per provider, and a dialect adapter each.

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
from typing import Any, Final, Protocol

import attrs
import httpx

from freellm.core.catalog import AuthStyle, Catalog, Dialect, ProviderSpec
from freellm.core.dialects import Untranslatable, cohere, gemini
from freellm.core.dialects import openai as openai_dialect
from freellm.core.dialects.openai import Usage
from freellm.core.ledger import Slot
from freellm.core.outcome import TransportError
from freellm.core.sse import Event

__all__ = [
    "ADAPTERS",
    "Adapter",
    "Fold",
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


def _dumps(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


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
            "POST", f"{base_url}/chat/completions", _auth_headers(provider, token), _dumps(upstream)
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
        return Outgoing("POST", url, _auth_headers(provider, secret), _dumps(upstream))

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
        return Outgoing("POST", url, _auth_headers(provider, secret), _dumps(upstream))

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


CLIENTS_PER_PROVIDER: Final = 4
POOL_CONNECTIONS: Final = 16  # per client: 64 connections per provider in all
POOL_KEEP: Final = 8


class _Shard:
    """A provider's clients, handed out in turn."""

    def __init__(self, clients: list[httpx.AsyncClient]) -> None:
        self.clients = clients
        self._turn = 0

    def next(self) -> httpx.AsyncClient:
        self._turn = (self._turn + 1) % len(self.clients)
        return self.clients[self._turn]


class Upstreams:
    """The HTTP clients, one per provider: httpcore scans its whole pool on every request, so
    small per-provider pools are faster than one shared pool (DESIGN.md's measured notes)."""

    def __init__(
        self,
        catalog: Catalog,
        timeouts: Timeouts,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeouts = timeouts
        self._clients: dict[str, _Shard] = {}
        self._catalog = catalog
        self._transport = transport  # tests: an httpx.MockTransport
        # One TLS context for every client (each would load the CA bundle again), made on first use.
        self._tls: ssl.SSLContext | None = None

    def client(self, provider: str) -> httpx.AsyncClient:
        """A client for ``provider``: its few clients take turns, so that each pool stays small
        (httpcore walks the whole pool, and polls each idle connection, on every request)."""
        shard = self._clients.get(provider)
        if shard is None:
            t = self.timeouts
            if self._tls is None:
                self._tls = httpx.create_ssl_context()
            shard = self._clients[provider] = _Shard(
                [
                    httpx.AsyncClient(
                        timeout=httpx.Timeout(t.first_byte, connect=t.connect, read=t.idle),
                        limits=httpx.Limits(
                            max_connections=POOL_CONNECTIONS, max_keepalive_connections=POOL_KEEP
                        ),
                        trust_env=False,
                        verify=self._tls,
                        transport=self._transport,
                    )
                    for _ in range(CLIENTS_PER_PROVIDER)
                ]
            )
        return shard.next()

    def adapter(self, provider: ProviderSpec) -> Adapter:
        return ADAPTERS[provider.dialect]

    async def aclose(self) -> None:
        shards, self._clients = list(self._clients.values()), {}
        for shard in shards:
            for client in shard.clients:
                await client.aclose()


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
