"""The dashboard's ``/api`` on a running server: who may call it, what it checks, what it
changes. Real server, fake providers, httpx as the browser's stand-in."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import trio
from harness import CLIENT_GENERATORS, Proxy, config_text, running_proxy

from freellm.core.catalog import RouterSettings, Strategy
from freellm.core.sse import Decoder, Event
from freellm.shell.logins import MAX_FAILURES
from freellm.sim.fakes import FakeCaps, FakeProvider, open_fake_provider
from freellm.web.app import STREAM_PATHS
from freellm.web.dashboard import create_dashboard

pytestmark = CLIENT_GENERATORS

GROQ_MODEL = "llama-3.3-70b-versatile"
CEREBRAS_MODEL = "qwen-3-235b-a22b-instruct-2507"
CHAIN = [f"groq/{GROQ_MODEL}", f"cerebras/{CEREBRAS_MODEL}"]
USER = [{"role": "user", "content": "hello from the dashboard tests"}]


def models(provider: str, model: str) -> str:
    return f'[[providers.{provider}.models]]\nid = "{model}"\ncontext = 131072\nrpm = 30\n'


@asynccontextmanager
async def dashboard(tmp_path: Path) -> AsyncIterator[tuple[Proxy, FakeProvider, FakeProvider]]:
    async with (
        open_fake_provider("groq", keys=["gsk-1", "gsk-2"], models={GROQ_MODEL: FakeCaps()}) as g,
        open_fake_provider("cerebras", keys=["csk-1"], models={CEREBRAS_MODEL: FakeCaps()}) as c,
    ):
        config = config_text(
            {"groq": g, "cerebras": c},
            {"groq": models("groq", GROQ_MODEL), "cerebras": models("cerebras", CEREBRAS_MODEL)},
            CHAIN,
        )
        keys = {"groq": ["gsk-1"], "cerebras": ["csk-1"]}
        async with running_proxy(tmp_path / "data", config, keys) as proxy:
            yield proxy, g, c


@asynccontextmanager
async def logged_in(proxy: Proxy) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client holding a session cookie, and the session's CSRF token."""
    async with httpx.AsyncClient(base_url=proxy.url) as client:
        answer = await client.post("/api/login", json={"token": proxy.key})
        assert answer.status_code == 200, answer.text
        yield client, answer.json()["csrf_token"]


def error_of(answer: httpx.Response) -> dict[str, Any]:
    body = answer.json()
    assert set(body) == {"error"}
    assert {"message", "type", "param", "code"} <= set(body["error"])
    return dict(body["error"])


def routes(proxy: Proxy) -> list[tuple[str, str]]:
    """Every ``/api`` route, read off the app itself (so a new one cannot be left out), with a
    concrete path for each parameter."""
    app = create_dashboard(proxy.runtime)
    found = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = re.sub(r"<[^>]+>", "k_00000000", rule.rule)
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                found.add((method, path))
    found |= {("GET", "/api/events"), ("POST", "/api/chat/completions")}
    assert {path for _, path in found} >= STREAM_PATHS
    return sorted(found)


async def test_every_api_route_refuses_a_request_without_credentials(tmp_path: Path) -> None:
    async with dashboard(tmp_path) as (proxy, _, _), httpx.AsyncClient(base_url=proxy.url) as http:
        listed = routes(proxy)
        assert len(listed) >= 16
        for method, path in listed:
            if path == "/api/login":
                continue
            for headers in ({}, {"authorization": "Bearer freellm-wrong"}):
                answer = await http.request(method, path, headers=headers, json={})
                assert answer.status_code == 401, (method, path, answer.text)
                assert error_of(answer)["code"] == "invalid_api_key"
            cookie = {"cookie": "freellm_session=forged.9999999999.c2lnbmF0dXJl"}
            answer = await http.request(method, path, headers=cookie, json={})
            assert answer.status_code == 401, (method, path)
        for page in ("/", "/keys", "/chain", "/playground", "/analytics", "/quotas"):
            answer = await http.get(page)
            assert answer.status_code == 302
            assert answer.headers["location"] == f"/login?next={page}"
        css = await http.get("/static/app.css")
        assert css.status_code == 200
        assert css.headers["content-type"] == "text/css; charset=utf-8"
        assert (await http.get("/static/vendor/uplot/uPlot.iife.min.js")).status_code == 200
        for outside in ("/static/../web/api.py", "/static/%2e%2e/api.py", "/static/nope.js"):
            answer = await http.get(outside)
            assert answer.status_code in (302, 404), outside  # 302: a page path, to log in
            assert "register_api" not in answer.text
        login = await http.get("/login")
        assert login.status_code == 200
        assert "script-src 'self'" in login.headers["content-security-policy"]
        assert login.headers["x-frame-options"] == "DENY"
        assert '<meta name="csrf-token" content="">' in login.text
        assert (await http.get("/livez")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200


async def test_every_state_changing_route_refuses_a_cookie_without_the_csrf_token(
    tmp_path: Path,
) -> None:
    async with dashboard(tmp_path) as (proxy, _, _), logged_in(proxy) as (client, csrf):
        changing = [(m, p) for m, p in routes(proxy) if m not in ("GET", "HEAD")]
        assert {"POST", "PUT", "PATCH", "DELETE"} <= {m for m, _ in changing}
        for method, path in changing:
            if path == "/api/login":
                continue
            for headers in ({}, {"x-csrf-token": csrf[:-2] + "zz"}):
                answer = await client.request(method, path, headers=headers, json={})
                assert answer.status_code == 403, (method, path, answer.text)
                assert error_of(answer)["code"] == "csrf_token_invalid"
        # The same calls with the token get past the check (and fail, if at all, on content).
        answer = await client.request("PUT", "/api/chain", headers={"x-csrf-token": csrf})
        assert answer.status_code == 400
        # Reading needs no token.
        assert (await client.get("/api/keys")).status_code == 200


async def test_the_bearer_key_needs_no_cookie_and_no_csrf_token(tmp_path: Path) -> None:
    async with dashboard(tmp_path) as (proxy, _, _):
        bearer = {"authorization": f"Bearer {proxy.key}"}
        async with httpx.AsyncClient(base_url=proxy.url, headers=bearer) as http:
            answer = await http.put(
                "/api/chain", json={"entries": [{"target": CHAIN[1]}, {"target": CHAIN[0]}]}
            )
            assert answer.status_code == 200, answer.text
            assert proxy.runtime.holder.state.catalog.settings.chain == (CHAIN[1], CHAIN[0])


async def test_the_routing_strategy_switches_live_and_back_to_the_config(tmp_path: Path) -> None:
    async with dashboard(tmp_path) as (proxy, _, _):
        bearer = {"authorization": f"Bearer {proxy.key}"}

        def settings() -> RouterSettings:
            return proxy.runtime.holder.state.catalog.settings

        async with httpx.AsyncClient(base_url=proxy.url, headers=bearer) as http:
            answer = await http.get("/api/strategy")
            assert answer.json() == {
                "strategy": "chain",
                "source": "config",
                "config": "chain",
                "choices": ["chain", "capacity"],
            }
            answer = await http.put("/api/strategy", json={"strategy": "capacity"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["strategy"] == "capacity"
            assert answer.json()["source"] == "dashboard"
            assert settings().strategy is Strategy.CAPACITY
            assert settings().chain == tuple(CHAIN)  # the chain stays as it was
            async with logged_in(proxy) as (client, _):  # the page shows it without script
                page = await client.get("/chain")
                assert 'value="capacity" checked' in page.text
            for bad in ({"strategy": "cheapest"}, {"strategy": "chain", "more": 1}, ["chain"]):
                answer = await http.put("/api/strategy", json=bad)
                assert answer.status_code == 400, bad
                assert settings().strategy is Strategy.CAPACITY
            answer = await http.put("/api/strategy", json={"strategy": None})
            assert answer.json()["source"] == "config"
            assert settings().strategy is Strategy.CHAIN


@pytest.mark.parametrize(
    ("method", "path", "body", "param"),
    [
        ("POST", "/api/keys", {"provider": "groq"}, "secret"),
        ("POST", "/api/keys", {"provider": "groq", "secret": 12}, "secret"),
        ("POST", "/api/keys", {"provider": "groq", "secret": "x", "colour": "red"}, "colour"),
        ("POST", "/api/keys", {"provider": "nope", "secret": "x"}, "provider"),
        ("PUT", "/api/chain", {"entries": "groq/x"}, "entries"),
        ("PUT", "/api/chain", {"entries": []}, "entries"),
        ("PUT", "/api/chain", {"entries": [{"target": CHAIN[0]}, {"target": "x"}]},
         "entries[1].target"),
        ("PUT", "/api/chain", {"entries": [{"target": "groq/unknown-model"}]},
         "entries[0].target"),
        ("PUT", "/api/chain", {"entries": [{"target": CHAIN[0]}, {"target": CHAIN[0]}]},
         "entries[1].target"),
        ("PUT", "/api/chain", {"entries": [{"target": CHAIN[0], "enabled": "no"}]},
         "entries[0].enabled"),
        ("PUT", "/api/chain", {"entries": [{"target": CHAIN[0], "enabled": False}]}, "entries"),
        ("POST", "/api/login", {"token": None}, "token"),
    ],
)  # fmt: skip
async def test_a_bad_body_is_a_400_naming_the_field_and_changes_nothing(
    tmp_path: Path, method: str, path: str, body: Any, param: str
) -> None:
    async with dashboard(tmp_path) as (proxy, _, _), logged_in(proxy) as (client, csrf):
        before = (await client.get("/api/keys")).json(), (await client.get("/api/chain")).json()
        answer = await client.request(method, path, json=body, headers={"x-csrf-token": csrf})
        assert answer.status_code == 400, answer.text
        error = error_of(answer)
        assert error["param"] == param
        assert error["type"] == "invalid_request_error"
        after = (await client.get("/api/keys")).json(), (await client.get("/api/chain")).json()
        assert after == before
        answer = await client.post(
            "/api/keys", content=b"{not json", headers={"x-csrf-token": csrf}
        )
        assert answer.status_code == 400
        assert "not valid JSON" in error_of(answer)["message"]


async def test_keys_are_added_edited_checked_disabled_and_removed_without_a_secret_coming_back(
    tmp_path: Path,
) -> None:
    async with dashboard(tmp_path) as (proxy, groq, _):
        async with logged_in(proxy) as (client, csrf):
            token = {"x-csrf-token": csrf}
            added = await client.post(
                "/api/keys",
                json={"provider": "groq", "secret": "gsk-2", "label": "second"},
                headers=token,
            )
            assert added.status_code == 201, added.text
            key = added.json()
            assert key["label"] == "second"
            assert key["enabled"] is True
            assert key["routable"] is True  # applied at once, not within a second
            assert proxy.runtime.holder.state.topology.key("groq", key["id"]) is not None

            checked = await client.post(f"/api/keys/{key['id']}/check", headers=token)
            assert checked.json()["health"] == "healthy"
            assert checked.json()["last_check"] is not None

            edited = await client.patch(
                f"/api/keys/{key['id']}", json={"secret": "gsk-wrong"}, headers=token
            )
            assert edited.status_code == 200
            checked = await client.post(f"/api/keys/{key['id']}/check", headers=token)
            assert checked.json()["health"] == "invalid"

            off = await client.patch(
                f"/api/keys/{key['id']}", json={"enabled": False}, headers=token
            )
            assert off.json()["enabled"] is False
            assert off.json()["routable"] is False
            assert proxy.runtime.holder.state.topology.key("groq", key["id"]) is None
            refused = await client.post(f"/api/keys/{key['id']}/check", headers=token)
            assert refused.status_code == 409

            listed = await client.get("/api/keys")
            text = listed.text
            for secret in ("gsk-1", "gsk-2", "gsk-wrong", "csk-1"):
                assert secret not in text
            assert (await client.delete(f"/api/keys/{key['id']}", headers=token)).status_code == 200
            gone = await client.delete(f"/api/keys/{key['id']}", headers=token)
            assert gone.status_code == 404
            assert key["id"] not in (await client.get("/api/keys")).text
            assert (await client.get("/api/token")).json()["masked"].endswith(proxy.key[-4:])
            assert proxy.key not in (await client.get("/api/token")).text
        del groq


async def test_the_chain_saved_is_what_the_next_request_follows(tmp_path: Path) -> None:
    async with dashboard(tmp_path) as (proxy, groq, cerebras):
        bearer = {"authorization": f"Bearer {proxy.key}"}
        async with logged_in(proxy) as (client, csrf):
            body = {"entries": [{"target": CHAIN[0], "enabled": False}, {"target": CHAIN[1]}]}
            saved = await client.put("/api/chain", json=body, headers={"x-csrf-token": csrf})
            assert saved.status_code == 200, saved.text
            assert [(e["target"], e["enabled"]) for e in saved.json()["data"]] == [
                (CHAIN[0], False),
                (CHAIN[1], True),
            ]
            answer = await client.post(
                "/v1/chat/completions", json={"model": "auto", "messages": USER}, headers=bearer
            )
            assert answer.headers["x-routed-via"] == CHAIN[1]
            catalog = (await client.get("/api/catalog")).json()
            assert set(catalog["presets"]) == {"capable", "fastest", "daily"}
            for order in catalog["presets"].values():
                assert sorted(order) == sorted(CHAIN)
            groq_entry = next(p for p in catalog["providers"] if p["id"] == "groq")
            assert groq_entry["key_hint"]["looks_like"].startswith("starts with gsk_")
        assert groq.served == 0
        assert cerebras.served == 1


async def test_named_chains_are_made_listed_routed_by_and_removed(tmp_path: Path) -> None:
    async with dashboard(tmp_path) as (proxy, groq, cerebras):
        bearer = {"authorization": f"Bearer {proxy.key}"}
        async with logged_in(proxy) as (client, csrf):
            csrf_header = {"x-csrf-token": csrf}
            body = {"name": "coding", "entries": [{"target": CHAIN[1]}, {"target": CHAIN[0]}]}
            saved = await client.put("/api/chain", json=body, headers=csrf_header)
            assert saved.status_code == 200, saved.text
            assert saved.json()["name"] == "coding"
            assert saved.json()["chains"] == ["auto", "coding", "embeddings"]
            assert saved.json()["in_use"] == [CHAIN[1], CHAIN[0]]
            listed = (await client.get("/api/chain?name=coding")).json()
            assert [e["target"] for e in listed["data"]] == [CHAIN[1], CHAIN[0]]
            default = (await client.get("/api/chain")).json()
            assert default["name"] == "auto"
            assert [e["target"] for e in default["data"]] == CHAIN
            models = (await client.get("/v1/models", headers=bearer)).json()["data"]
            assert "auto:coding" in [m["id"] for m in models]

            ask = {"model": "auto:coding", "messages": USER}
            answer = await client.post("/v1/chat/completions", json=ask, headers=bearer)
            assert answer.headers["x-routed-via"] == CHAIN[1]

            for bad, param in [
                ({"name": "Coding!", "entries": [{"target": CHAIN[0]}]}, "name"),
                ({"name": "x", "entries": [{"target": "groq/nope"}]}, "entries[0].target"),
            ]:
                refused = await client.put("/api/chain", json=bad, headers=csrf_header)
                assert refused.status_code == 400, refused.text
                assert refused.json()["error"]["param"] == param
            assert (await client.get("/api/chain?name=Bad!")).status_code == 400

            gone = await client.delete("/api/chain?name=coding", headers=csrf_header)
            assert gone.status_code == 200
            assert gone.json()["chains"] == ["auto", "embeddings"]  # the bundled one stays
            missing = await client.post("/v1/chat/completions", json=ask, headers=bearer)
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "model_not_found"
            kept = await client.delete("/api/chain", headers=csrf_header)
            assert kept.status_code == 400
        assert groq.served == 0
        assert cerebras.served == 1


async def test_failed_logins_are_limited_and_a_new_unified_key_ends_every_session(
    tmp_path: Path,
) -> None:
    async with (
        dashboard(tmp_path) as (proxy, _, _),
        logged_in(proxy) as (first, csrf),
        logged_in(proxy) as (second, _),
        httpx.AsyncClient(base_url=proxy.url) as stranger,
    ):
        old_key = proxy.key
        made = await first.post("/api/token/regenerate", headers={"x-csrf-token": csrf})
        assert made.status_code == 200
        new_key = made.json()["token"]
        assert new_key != old_key
        assert proxy.key == new_key  # in force at once
        for client in (first, second):
            assert (await client.get("/api/keys")).status_code == 401
        old = await second.post("/api/login", json={"token": old_key})
        assert old.status_code == 401
        assert (await second.post("/api/login", json={"token": new_key})).status_code == 200
        assert (await second.get("/api/keys")).status_code == 200
        # Failed logins (all from loopback here) are limited; even the right key waits.
        for _ in range(MAX_FAILURES):
            wrong = await stranger.post("/api/login", json={"token": "freellm-guess"})
            assert wrong.status_code == 401
        held = await stranger.post("/api/login", json={"token": new_key})
        assert held.status_code == 429
        assert int(held.headers["retry-after"]) > 0


async def test_logout_ends_the_session_and_the_store_remembers_it(
    tmp_path: Path,
) -> None:
    async with dashboard(tmp_path) as (proxy, _, _), logged_in(proxy) as (client, csrf):
        cookie = client.cookies.get("freellm_session")
        assert cookie
        assert (await client.post("/api/logout", headers={"x-csrf-token": csrf})).json()
        assert (await client.get("/api/keys")).status_code == 401
        saved = await proxy.runtime.store.get_setting("revoked_sessions")
        assert isinstance(saved, dict)
        assert len(saved) == 1
        async with httpx.AsyncClient(base_url=proxy.url) as replay:
            answer = await replay.get("/api/keys", headers={"cookie": f"freellm_session={cookie}"})
            assert answer.status_code == 401


class EventStream:
    """``GET /api/events`` read over a plain socket with h11 and freellm's own SSE decoder (an
    endless stream that the test leaves, which httpx would leave to the garbage collector)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.connection = h11.Connection(h11.CLIENT)
        self.decoder = Decoder()
        self.pending: list[Event] = []
        self.status = 0
        self.headers: dict[str, str] = {}
        self.latest: dict[str, Any] = {}  # kind: the data of the last such event read

    @classmethod
    @asynccontextmanager
    async def open(cls, proxy: Proxy, cookie: str) -> AsyncIterator[EventStream]:
        host, port = proxy.url.removeprefix("http://").split(":")
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            reader = cls(stream)
            request = h11.Request(
                method="GET",
                target="/api/events",
                headers=[("host", host), ("cookie", f"freellm_session={cookie}")],
            )
            await stream.send_all(reader.connection.send(request) or b"")
            await stream.send_all(reader.connection.send(h11.EndOfMessage()) or b"")
            yield reader

    async def until(self, kind: str, condition: Callable[[Any], bool]) -> Any:
        """The data of the first ``kind`` event, the last one read included, that meets
        ``condition``."""
        data = self.latest.get(kind)
        while data is None or not condition(data):
            data = await self.next(kind)
        return data

    async def next(self, kind: str) -> Any:
        """The data of the next event named ``kind`` (others are passed over)."""
        while True:
            while self.pending:
                event = self.pending.pop(0)
                if event.event is not None:
                    self.latest[event.event] = json.loads(event.data)
                if event.event == kind:
                    return self.latest[kind]
            got = self.connection.next_event()
            if got is h11.NEED_DATA:
                self.connection.receive_data(await self.stream.receive_some(65536))
            elif isinstance(got, h11.Response):
                self.status = got.status_code
                self.headers = {k.decode(): v.decode() for k, v in got.headers}
            elif isinstance(got, h11.Data):
                self.pending += self.decoder.feed(bytes(got.data))
            else:
                raise AssertionError(f"the event stream ended: {got!r}")


async def test_the_playground_goes_through_dispatch_and_events_carry_requests_and_quotas(
    tmp_path: Path,
) -> None:
    async with dashboard(tmp_path) as (proxy, groq, _):
        async with logged_in(proxy) as (client, csrf):
            cookie = client.cookies["freellm_session"]
            async with EventStream.open(proxy, cookie) as events:
                with trio.fail_after(10):
                    quotas = await events.next("quotas")
                assert events.status == 200
                assert events.headers["content-type"] == "text/event-stream"
                assert {row["key_id"] for row in quotas["rows"]}
                answer = await client.post(
                    "/api/chat/completions",
                    json={"model": "auto", "messages": USER, "stream": True},
                    headers={"x-csrf-token": csrf, "x-session-id": "pg-test"},
                )
                assert answer.status_code == 200, answer.text
                assert answer.headers["x-routed-via"] == CHAIN[0]
                assert "data: [DONE]" in answer.text
                with trio.fail_after(10):
                    request = await events.next("request")
                assert request["routed_via"] == CHAIN[0]
                assert request["trail"] == [{"target": CHAIN[0], "outcome": "success"}]

                def groq_used(quotas: Any) -> int:
                    row = next(r for r in quotas["rows"] if r["provider"] == "groq")
                    return int(row["windows"]["rpm"]["used"])

                with trio.fail_after(10):
                    quotas = await events.until("quotas", lambda q: groq_used(q) > 0)
                assert groq_used(quotas) == 1
            no_token = await client.post(
                "/api/chat/completions", json={"model": "auto", "messages": USER}
            )
            assert no_token.status_code == 403
        assert groq.served == 1
