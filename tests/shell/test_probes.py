"""Key checks against a fake provider on loopback, and the probe loop's pacing."""

from __future__ import annotations

from functools import partial
from typing import Any

import trio

from freellm.core import health
from freellm.core.catalog import Catalog, apply_config
from freellm.shell.probes import PROBE_INTERVAL_S, is_due, probe_key, probe_url, run_probes
from freellm.shell.upstream import open_upstreams
from freellm.sim.fakes import FakeCaps, FaultKind, open_fake_provider


def catalog_for(base_url: str) -> Catalog:
    config = {"providers": {"groq": {"base_url": base_url}}}
    return apply_config(apply_config(Catalog(), _groq()), config)


def _groq() -> dict[str, Any]:
    return {
        "providers": {
            "groq": {
                "dialect": "openai",
                "base_url": "https://api.groq.com/openai/v1",
                "models": [{"id": "m"}],
            }
        }
    }


async def test_a_key_check_tells_valid_invalid_and_rate_limited_apart() -> None:
    async with open_fake_provider("groq", keys=["good"], models={"m": FakeCaps()}) as fake:
        catalog = catalog_for(fake.base_url)
        provider = catalog.providers["groq"]
        async with open_upstreams() as upstreams:
            assert await probe_key(upstreams, provider, "good") == (health.Event.PROBE_OK, None)
            event, note = await probe_key(upstreams, provider, "bad")
            assert event is health.Event.PROBE_INVALID
            assert note == "401: the provider refused the key"
            assert "bad" not in note
            fake.faults.next(1, FaultKind.RATE_LIMIT, path="/models")
            event, _ = await probe_key(upstreams, provider, "good")
            assert event is health.Event.PROBE_RATE_LIMITED
            fake.faults.next(1, FaultKind.STATUS, status=503, path="/models")
            assert (await probe_key(upstreams, provider, "good"))[0] is health.Event.PROBE_ERROR
        assert [r.path for r in fake.requests] == ["/models"] * 4


def test_probe_urls_follow_each_providers_check() -> None:
    catalog = apply_config(
        Catalog(),
        {
            "providers": {
                "cloudflare": {
                    "dialect": "openai",
                    "auth": "cloudflare",
                    "base_url": "https://api.cloudflare.com/client/v4/accounts/{account_id}/ai/v1",
                },
                "cohere": {"dialect": "cohere", "base_url": "https://api.cohere.com"},
                "mine": {"dialect": "openai", "base_url": "http://127.0.0.1:11434/v1"},
            }
        },
    )
    url, headers = probe_url(catalog.providers["cloudflare"], "acct:tok")
    assert url == "https://api.cloudflare.com/client/v4/user/tokens/verify"
    assert headers == {"authorization": "Bearer tok"}
    assert probe_url(catalog.providers["cohere"], "k")[0] == "https://api.cohere.com/v1/models"
    assert probe_url(catalog.providers["mine"], "k")[0] == "http://127.0.0.1:11434/v1/models"


def test_a_key_is_due_when_never_checked_or_checked_long_enough_ago() -> None:
    now = 1000.0 + PROBE_INTERVAL_S
    assert is_due(None, now)
    assert is_due(1000.0, now)
    assert not is_due(1100.0, now)


async def test_the_loop_probes_due_keys_one_at_a_time_on_a_jittered_tick(
    autojump_clock: Any,
) -> None:
    reports: list[tuple[str, health.Event, float]] = []
    catalog = catalog_for("http://127.0.0.1:9/unused")
    provider = catalog.providers["groq"]

    def due(now: float) -> list[tuple[Any, str, str]]:
        return [(provider, "k1", "secret")] if not reports else []

    def report(p: str, key: str, event: health.Event, note: str | None) -> None:
        reports.append((key, event, trio.current_time()))

    async with open_upstreams() as upstreams, trio.open_nursery() as nursery:
        probes = partial(run_probes, due, report, upstreams, clock=trio.current_time, seed=1)
        await nursery.start(probes)
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert len(reports) == 1  # probed once, then not due again
    assert reports[0][:2] == ("k1", health.Event.PROBE_ERROR)  # nothing listens on port 9


async def test_gemini_and_cohere_keys_are_checked_at_their_own_endpoints() -> None:
    """Gemini refuses a bad key with a 400 API_KEY_INVALID, Cohere with a 401: both are
    invalid keys. The fakes serve each provider's real paths."""
    async with (
        open_fake_provider("gemini", keys=["AIza-good"]) as gemini,
        open_fake_provider("cohere", keys=["co-good"]) as cohere,
    ):
        config = {
            "providers": {
                "google": {
                    "dialect": "gemini",
                    "auth": "x-goog-api-key",
                    "base_url": gemini.base_url,
                },
                "cohere": {"dialect": "cohere", "base_url": cohere.base_url},
            }
        }
        catalog = apply_config(Catalog(), config)
        async with open_upstreams() as upstreams:
            for provider, good in (("google", "AIza-good"), ("cohere", "co-good")):
                spec = catalog.providers[provider]
                assert await probe_key(upstreams, spec, good) == (health.Event.PROBE_OK, None)
                event, note = await probe_key(upstreams, spec, "wrong")
                assert event is health.Event.PROBE_INVALID, (provider, note)
        assert [(r.path, r.status) for r in gemini.requests] == [("/models", 200), ("/models", 400)]
        assert [(r.path, r.status) for r in cohere.requests] == [
            ("/v1/models", 200),
            ("/v1/models", 401),
        ]
