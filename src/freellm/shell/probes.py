"""Key checks: a cheap authenticated request per provider, and the loop that makes them.

What each provider's check is comes from providers.md: OpenAI-style providers ``GET {base}/models``
(valid unless 401/403); Google ``GET /models`` with the key (a bad key is a 400
``API_KEY_INVALID`` there); Cohere ``GET /v1/models`` (providers.md says ``/v2/models``, but
Cohere's model list is a v1 endpoint, in its API reference and its SDK's v2 client alike);
Cloudflare ``GET /user/tokens/verify``; Hugging Face ``GET https://huggingface.co/api/whoami-v2``.
The Cloudflare and Hugging Face checks need their default base URLs; with a base URL overridden
in the config (a fake provider, a proxy) they check ``GET {base}/models`` instead.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from functools import partial
from typing import Final

import httpx
import trio

from freellm.core import health, router
from freellm.core.catalog import AuthStyle, Dialect, ProviderSpec
from freellm.core.outcome import Kind, classify
from freellm.shell.state import StateHolder
from freellm.shell.upstream import Upstreams

__all__ = [
    "PROBE_INTERVAL_S",
    "PROBE_TICK_S",
    "check_key",
    "is_due",
    "jittered",
    "probe_due",
    "probe_key",
    "probe_url",
]

logger = logging.getLogger("freellm.probes")

PROBE_INTERVAL_S: Final = 300.0  # at most one probe per key this often
PROBE_TIMEOUT_S: Final = 15.0
PROBE_TICK_S: Final = 30.0  # how often to look for keys that are due
CLOUDFLARE_VERIFY_URL = "https://api.cloudflare.com/client/v4/user/tokens/verify"
HUGGINGFACE_WHOAMI_URL = "https://huggingface.co/api/whoami-v2"
DEFAULT_BASES: Final = {
    "cloudflare": "https://api.cloudflare.com/client/v4/accounts/{account_id}/ai/v1",
    "huggingface": "https://router.huggingface.co/v1",
    "cohere": "https://api.cohere.com",
}


def probe_url(provider: ProviderSpec, secret: str) -> tuple[str, dict[str, str]]:
    """The URL and headers that check ``secret`` with ``provider``."""
    token = secret
    if provider.auth is AuthStyle.CLOUDFLARE:
        _, _, token = secret.partition(":")
    headers = (
        {"x-goog-api-key": token}
        if provider.auth is AuthStyle.GOOG_API_KEY
        else {"authorization": f"Bearer {token}"}
    )
    default_base = DEFAULT_BASES.get(provider.id)
    if default_base is not None and provider.base_url == default_base:
        if provider.id == "cloudflare":
            return CLOUDFLARE_VERIFY_URL, headers
        if provider.id == "huggingface":
            return HUGGINGFACE_WHOAMI_URL, headers
    if provider.dialect is Dialect.COHERE:
        return f"{provider.base_url}/v1/models", headers
    return f"{provider.base_url}/models", headers


async def probe_key(
    upstreams: Upstreams, provider: ProviderSpec, secret: str
) -> tuple[health.Event, str | None]:
    """Check one key: the health event it gives, and a short note on a failure (no secrets)."""
    url, headers = probe_url(provider, secret)
    client = upstreams.client(provider.id)
    with trio.move_on_after(PROBE_TIMEOUT_S):
        try:
            response = await client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            return health.Event.PROBE_ERROR, f"{type(exc).__name__} while checking the key"
        status = response.status_code
        if 200 <= status < 300:
            verified = provider.auth is AuthStyle.CLOUDFLARE and url == CLOUDFLARE_VERIFY_URL
            if verified and not _cloudflare_active(response.content):
                return health.Event.PROBE_INVALID, "the Cloudflare token is not active"
            return health.Event.PROBE_OK, None
        # The answer is read as a chat answer would be (Gemini refuses a bad key with a 400);
        # with no headers passed, nothing in it is timed, so any ``now`` will do.
        kind = classify(status, {}, response.content, now=0.0).kind
        if kind is Kind.INVALID_KEY:
            return health.Event.PROBE_INVALID, f"{status}: the provider refused the key"
        if kind in (Kind.RATE_LIMITED, Kind.QUOTA_EXHAUSTED):
            return health.Event.PROBE_RATE_LIMITED, f"{status} while checking the key"
        return health.Event.PROBE_ERROR, f"{status} while checking the key"
    return health.Event.PROBE_ERROR, "the check timed out"


async def probe_due(
    holder: StateHolder, upstreams: Upstreams, *, clock: Callable[[], float]
) -> None:
    """One round of key checks: every key of the topology whose last check is older than
    :data:`PROBE_INTERVAL_S`, one after another (background work, never a burst). A check that
    raises is logged and counts as a failed check of that key; the others go on."""
    state = holder.state
    now = clock()
    due = [
        key
        for key in state.topology.keys
        if is_due(state.health.of(key.provider, key.id).checked_at, now)
    ]
    for key in due:
        await check_key(holder, upstreams, key, clock=clock)


async def check_key(
    holder: StateHolder, upstreams: Upstreams, key: router.Key, *, clock: Callable[[], float]
) -> None:
    """Check one key of the topology now and apply what the check says to its health. A check
    that raises is logged and counts as a failed check; a key that left or changed while it
    was checked is left alone."""
    provider = holder.state.catalog.providers.get(key.provider)
    if provider is None or holder.state.topology.key(key.provider, key.id) != key:
        return  # removed, disabled or replaced meanwhile
    try:
        event, note = await probe_key(upstreams, provider, key.secret)
    except Exception:
        logger.error("checking key %s (%s) failed", key.id, key.provider, exc_info=True)
        event, note = health.Event.PROBE_ERROR, "freellm could not check the key (logged)"
    if holder.state.topology.key(key.provider, key.id) != key:
        return  # the answer is about a key that left while it was checked
    holder.apply(
        partial(
            router.note_health,
            provider=key.provider,
            key=key.id,
            event=event,
            now=clock(),
            error=note,
        )
    )


def jittered(tick: float, seed: int | None = None) -> Callable[[], float]:
    """``tick`` seconds, give or take a quarter, so that probes of many servers never align."""
    jitter = random.Random(seed)
    return lambda: tick * (0.75 + jitter.random() / 2)


def is_due(checked_at: float | None, now: float) -> bool:
    """Whether a key never checked, or last checked at ``checked_at``, should be probed now."""
    return checked_at is None or now - checked_at >= PROBE_INTERVAL_S


def _cloudflare_active(body: bytes) -> bool:
    """Whether Cloudflare's ``tokens/verify`` answer says the token is active; never raises."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return False
    result = data.get("result") if isinstance(data, dict) else None
    return (
        isinstance(data, dict)
        and data.get("success") is True
        and isinstance(result, dict)
        and result.get("status") == "active"
    )
