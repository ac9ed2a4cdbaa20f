"""``/v1/embeddings``: the request checked, and translated for each dialect's embeddings call.

An embeddings request takes the same routing and dispatch path as a chat completion, with an
adapter of this module (:data:`EMBEDDING_ADAPTERS`) in place of the chat one: the request to
send, and the OpenAI ``list`` of ``embedding`` objects read back. Vectors always come back as
floats here; the client's ``encoding_format`` is the door's business (base64 is a way of
writing the same floats).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from freellm.core import wire
from freellm.core.catalog import Dialect, ProviderSpec
from freellm.core.dialects import Untranslatable
from freellm.core.dialects.adapters import Adapter, Fold, Outgoing, _auth_headers
from freellm.core.dialects.openai import Usage
from freellm.core.ledger import Slot

__all__ = ["EMBEDDING_ADAPTERS"]


class OpenAIEmbeddings:
    """OpenAI-compatible ``POST {base_url}/embeddings``."""

    def request(
        self,
        provider: ProviderSpec,
        slot: Slot,
        secret: str,
        body: Mapping[str, Any],
        *,
        stream: bool,
    ) -> Outgoing | Untranslatable:
        upstream = dict(body)
        upstream["model"] = slot.model.id
        upstream["encoding_format"] = "float"
        return Outgoing(
            "POST",
            f"{provider.base_url}/embeddings",
            _auth_headers(provider, secret),
            wire.dumps(upstream),
        )

    def answer(
        self, data: bytes, *, model: str, created: int
    ) -> tuple[dict[str, Any], Usage | None]:
        parsed = json.loads(data)
        if not isinstance(parsed, dict) or not isinstance(parsed.get("data"), list):
            raise ValueError("not an embeddings list")
        usage = parsed.get("usage")
        prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        return parsed, Usage(prompt, 0) if isinstance(prompt, int) else None

    def stream(self, *, client_wants_usage: bool, model: str, created: int) -> Fold:
        raise ValueError("embeddings do not stream")


EMBEDDING_ADAPTERS: Final[Mapping[Dialect, Adapter]] = MappingProxyType(
    {Dialect.OPENAI: OpenAIEmbeddings()}
)
