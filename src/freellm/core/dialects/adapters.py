"""One interface over every dialect: the request to send, the answer read back, the stream folded.

The request machine (:mod:`freellm.core.exchange`) never knows which dialect it talks to: it asks
an :class:`Adapter` for the request to send (or why the request cannot be translated), for the
OpenAI-shaped answer of a JSON response, and for a :class:`Fold` that turns upstream events into
OpenAI chunks. :data:`ADAPTERS` maps each :class:`~freellm.core.catalog.Dialect` to its adapter:
OpenAI-compatible, native Gemini and native Cohere. Everything here is pure translation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Protocol

import attrs

from freellm.core import wire
from freellm.core.catalog import AuthStyle, Dialect, ProviderSpec
from freellm.core.dialects import Untranslatable, cohere, gemini
from freellm.core.dialects import openai as openai_dialect
from freellm.core.dialects.openai import Usage
from freellm.core.ledger import Slot
from freellm.core.sse import Event

__all__ = [
    "ADAPTERS",
    "Adapter",
    "Fold",
    "Outgoing",
    "adapter_for",
    "auth_headers",
    "openai_endpoint",
]


@attrs.frozen
class Outgoing:
    """One upstream request, ready for the wire. ``headers`` carry the key: never log them."""

    method: str
    url: str
    headers: Mapping[str, str] = attrs.field(repr=False)
    body: bytes = attrs.field(repr=False)


class Fold(Protocol):
    """One upstream stream turned into OpenAI ``chat.completion.chunk`` events, event by event.

    :meth:`step` returns the SSE bytes for the client (possibly none) and raises
    :class:`~freellm.core.dialects.openai.StreamError` when the provider reports a failure
    mid-stream, ``ValueError`` for an event it cannot read. ``done`` once the stream ended well
    (the client has had ``data: [DONE]``). ``completion_tokens`` estimates what was streamed, for
    a stream that ends before the provider reports ``usage``.

    :meth:`passthrough` may take the first events of a read in one step, the common case of a
    stream, before they are decoded one by one: it appends their bytes for the client to ``out``
    and returns how many bytes of ``data`` they were (0: none; the decoder reads the rest).
    """

    @property
    def usage(self) -> Usage | None: ...
    @property
    def done(self) -> bool: ...
    @property
    def completion_tokens(self) -> int: ...

    def step(self, event: Event) -> list[bytes]: ...

    def passthrough(self, data: bytes, out: list[bytes]) -> int: ...


class Adapter(Protocol):
    """What the request machine needs from a dialect. ``model`` is the provider's model id and
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
        """The OpenAI ``chat.completion`` of a 2xx response. Raises ``ValueError`` if broken."""
        ...

    def stream(self, *, client_wants_usage: bool, model: str, created: int) -> Fold: ...


def auth_headers(provider: ProviderSpec, token: str) -> dict[str, str]:
    headers = {"content-type": "application/json", **provider.headers}
    if provider.auth is AuthStyle.GOOG_API_KEY:
        headers["x-goog-api-key"] = token
    else:
        headers["authorization"] = f"Bearer {token}"
    return headers


def openai_endpoint(provider: ProviderSpec, secret: str) -> tuple[str, dict[str, str]]:
    """An OpenAI-compatible provider's base URL and headers for ``secret``: Cloudflare's key is
    ``account_id:api_token``, the account id going into the URL and the token into the header."""
    base_url, token = provider.base_url, secret
    if provider.auth is AuthStyle.CLOUDFLARE:
        account, _, token = secret.partition(":")
        base_url = base_url.replace("{account_id}", account)
    return base_url, auth_headers(provider, token)


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
        base_url, headers = openai_endpoint(provider, secret)
        upstream = openai_dialect.prepare_body(
            body, slot.model.id, stream=stream, stream_options=provider.id != "cohere"
        )
        return Outgoing("POST", f"{base_url}/chat/completions", headers, wire.dumps(upstream))

    def answer(
        self, data: bytes, *, model: str, created: int
    ) -> tuple[dict[str, Any], Usage | None]:
        parsed = json.loads(data)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("choices"), list):
            raise ValueError("not a chat.completion")
        if parsed.get("error") is not None:
            # OpenRouter: a 200 whose generation failed after it was sent (finish_reason "error").
            raise ValueError("a chat.completion that carries an error")
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
        return Outgoing("POST", url, auth_headers(provider, secret), wire.dumps(upstream))

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
        return Outgoing("POST", url, auth_headers(provider, secret), wire.dumps(upstream))

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


ADAPTERS: Final[Mapping[Dialect, Adapter]] = MappingProxyType(
    {
        Dialect.OPENAI: OpenAIAdapter(),
        Dialect.GEMINI: GeminiAdapter(),
        Dialect.COHERE: CohereAdapter(),
    }
)


def adapter_for(provider: ProviderSpec) -> Adapter:
    return ADAPTERS[provider.dialect]
