"""Key checks against a fake provider on loopback, and the probe loop's pacing."""

from __future__ import annotations

from functools import partial
from typing import Any

import httpx
import pytest
import trio
from scripted import BASE, scripted_connect

from freellm.core import health, router
from freellm.core.catalog import Catalog, apply_config
from freellm.core.router import Key, RouterState, Topology
from freellm.shell import probes
from freellm.shell.probes import PROBE_INTERVAL_S, is_due, probe_due, probe_key, probe_url
from freellm.shell.state import StateHolder
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


def holder_with(catalog: Catalog, *keys: Key) -> StateHolder:
    return StateHolder(RouterState(Topology(catalog, keys)))


async def test_a_round_checks_the_keys_that_are_due_and_notes_what_it_found() -> None:
    async with open_fake_provider("groq", keys=["good"], models={"m": FakeCaps()}) as fake:
        catalog = catalog_for(fake.base_url)
        holder = holder_with(catalog, Key("groq", "k1", "good"), Key("groq", "k2", "bad"))
        holder.apply(
            partial(
                router.note_health,
                provider="groq",
                key="k2",
                event=health.Event.PROBE_OK,
                now=BASE - 10,
            )
        )
        async with open_upstreams() as upstreams:
            await probe_due(holder, upstreams, clock=lambda: BASE)
        k1 = holder.state.health.of("groq", "k1")
        assert (k1.state, k1.checked_at) == (health.State.HEALTHY, BASE)
        # k2 was checked 10 s ago: not due, not asked.
        assert holder.state.health.of("groq", "k2").checked_at == BASE - 10
        assert [r.path for r in fake.requests] == ["/models"]


async def test_a_check_that_raises_marks_only_its_key_and_the_round_goes_on(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def flaky(upstreams: Any, provider: Any, secret: str) -> Any:
        if secret == "boom":
            raise KeyError("a bug in a check")
        return health.Event.PROBE_OK, None

    monkeypatch.setattr(probes, "probe_key", flaky)
    catalog = catalog_for("http://127.0.0.1:9/unused")
    holder = holder_with(catalog, Key("groq", "k1", "boom"), Key("groq", "k2", "fine"))
    async with open_upstreams() as upstreams:
        await probe_due(holder, upstreams, clock=lambda: BASE)
    broken = holder.state.health.of("groq", "k1")
    assert (broken.state, broken.last_error) == (
        health.State.ERROR,
        "freellm could not check the key (logged)",
    )
    assert holder.state.health.of("groq", "k2").state is health.State.HEALTHY


def cloudflare_catalog() -> Catalog:
    """Cloudflare at its own base URL: its key check is ``tokens/verify``."""
    provider = {
        "dialect": "openai",
        "auth": "cloudflare",
        "base_url": probes.DEFAULT_BASES["cloudflare"],
    }
    return apply_config(Catalog(), {"providers": {"cloudflare": provider}})


@pytest.mark.parametrize(
    "answer",
    [
        b'{"success": true, "result": null}',
        b'{"success": true, "result": []}',
        b'{"success": true}',
        b"[1, 2]",
        b"not json at all",
        b'{"success": "yes", "result": {"status": "active"}}',
    ],
)
async def test_a_malformed_cloudflare_verify_answer_is_a_key_not_active_not_a_crash(
    answer: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cloudflare's check has its own URL; served here by a scripted server over a socket pair.
    monkeypatch.setattr(probes, "CLOUDFLARE_VERIFY_URL", "http://api.cloudflare.test/verify")
    catalog = cloudflare_catalog()
    served: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        served.append(request.url.path)
        return httpx.Response(200, content=answer)

    async with trio.open_nursery() as nursery:
        connect = scripted_connect(handler, nursery, [])
        async with open_upstreams(connect=connect) as upstreams:
            event, note = await probe_key(upstreams, catalog.providers["cloudflare"], "acct:tok")
        nursery.cancel_scope.cancel()
    assert served == ["/verify"]
    assert (event, note) == (health.Event.PROBE_INVALID, "the Cloudflare token is not active")


async def test_an_active_cloudflare_token_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probes, "CLOUDFLARE_VERIFY_URL", "http://api.cloudflare.test/verify")
    catalog = cloudflare_catalog()
    active = {"success": True, "result": {"status": "active"}}
    async with trio.open_nursery() as nursery:
        connect = scripted_connect(lambda r: httpx.Response(200, json=active), nursery, [])
        async with open_upstreams(connect=connect) as upstreams:
            verdict = await probe_key(upstreams, catalog.providers["cloudflare"], "acct:tok")
        nursery.cancel_scope.cancel()
    assert verdict == (health.Event.PROBE_OK, None)


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
