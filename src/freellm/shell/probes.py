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

import random
from collections.abc import Callable
from typing import Final

import httpx
import trio

from freellm.core import health
from freellm.core.catalog import AuthStyle, Dialect, ProviderSpec
from freellm.core.outcome import Kind, classify
from freellm.shell.upstream import Upstreams

__all__ = ["PROBE_INTERVAL_S", "is_due", "probe_key", "probe_url", "run_probes"]

PROBE_INTERVAL_S: Final = 300.0  # at most one probe per key this often
PROBE_TIMEOUT_S: Final = 15.0
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
            return "https://api.cloudflare.com/client/v4/user/tokens/verify", headers
        if provider.id == "huggingface":
            return "https://huggingface.co/api/whoami-v2", headers
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
            if provider.auth is AuthStyle.CLOUDFLARE and "tokens/verify" in url:
                body = response.json()
                active = body.get("success") and body.get("result", {}).get("status") == "active"
                if not active:
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


async def run_probes(
    due: Callable[[float], list[tuple[ProviderSpec, str, str]]],
    report: Callable[[str, str, health.Event, str | None], None],
    upstreams: Upstreams,
    *,
    clock: Callable[[], float],
    tick: float = 30.0,
    seed: int | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Every ``tick`` seconds (jittered), probe the keys ``due(now)`` names, one at a time.

    ``due`` returns ``(provider spec, key id, secret)`` for each key whose last check is older
    than :data:`PROBE_INTERVAL_S`; ``report(provider, key id, event, note)`` feeds the result to
    key health. Probes run one after another: they are background work, never a burst.
    """
    jitter = random.Random(seed)
    task_status.started()
    while True:
        for provider, key_id, secret in due(clock()):
            event, note = await probe_key(upstreams, provider, secret)
            report(provider.id, key_id, event, note)
        await trio.sleep(tick * (0.75 + jitter.random() / 2))


def is_due(checked_at: float | None, now: float) -> bool:
    """Whether a key never checked, or last checked at ``checked_at``, should be probed now."""
    return checked_at is None or now - checked_at >= PROBE_INTERVAL_S
