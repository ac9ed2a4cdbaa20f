"""``/openapi.json``: freellm's description of its own API, checked against the app's routes (so
that it cannot rot) and against the running server by schemathesis (so that it says what the
server does).

The schemathesis run is its pytest integration: one test per documented operation, each made
of the three phases that send single requests (the document's examples, the coverage phase's
boundary and negative values, then Hypothesis' fuzzing), bounded so that the whole run stays
within a minute or so on CI's two cores. It sends the unified key as a bearer, read afresh for
every call (``POST /api/token/regenerate`` is one of the operations). The server is
:mod:`loopback`'s, in a thread of its own, so that every provider but the fake is a port on
loopback that refuses: a made-up key or model cannot reach beyond this machine.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import schemathesis
from harness import CLIENT_GENERATORS
from hypothesis import HealthCheck, settings
from loopback import Threaded, loopback_server, loopback_server_in_thread
from schemathesis import BaseSchema, Case
from schemathesis.core.result import Ok

from freellm.web.app import STREAM_PATHS, App, create_app
from freellm.web.dashboard import PAGES, create_dashboard
from freellm.web.openapi import document

pytestmark = CLIENT_GENERATORS

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# The dashboard's routes for browsers, not tools: left out of the document on purpose.
BROWSER_ONLY = {*PAGES, "/login", "/static/<path:name>"}
# What each of the plain streams takes (freellm.web.streams answers 405 to the rest).
STREAM_METHODS = {"/api/events": "GET", "/api/chat/completions": "POST"}
# Paths under /v1/ that OpenAI clients know and freellm does not serve: each must be a 404.
NOT_SERVED = ("/v1/completions", "/v1/images/generations", "/v1/audio/speech")


def documented() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in document()["paths"].items()
        for method in operations
    }


def quart_rule(rule: str) -> str:
    """``/api/keys/<key_id>`` as OpenAPI writes it: ``/api/keys/{key_id}``."""
    return re.sub(r"<(?:[a-z]+:)?([^>]+)>", r"{\1}", rule)


def methods_of(doc: set[tuple[str, str]], path: str) -> set[str]:
    return {method for method, documented_path in doc if documented_path == path}


async def test_every_route_of_the_app_is_documented_and_nothing_else(tmp_path: Path) -> None:
    """The document against the app's own tables: the plain routes (App.paths), the streams,
    the Quart rules under /api; and against the server for /v1, whose handler keeps no table:
    every documented /v1 path answers, methods it does not document are 405, and the other
    OpenAI paths are 404."""
    doc = documented()
    async with loopback_server(tmp_path / "data") as served:
        app = create_app(served.proxy.runtime)
        assert isinstance(app, App)
        quart = create_dashboard(served.proxy.runtime)
        routes: set[tuple[str, str]] = set()
        for rule in quart.url_map.iter_rules():
            if rule.rule in BROWSER_ONLY:
                continue
            assert rule.rule.startswith("/api/"), f"a new page? add it to BROWSER_ONLY: {rule}"
            methods = set(rule.methods or ()) - {"HEAD", "OPTIONS"}
            routes |= {(method, quart_rule(rule.rule)) for method in methods}
        for path in app.paths:
            routes.add((STREAM_METHODS.get(path, "GET"), path))
        assert set(app.paths) >= set(STREAM_PATHS)
        assert list(app.prefixes) == ["/v1/"], "a new prefix: document its routes"
        routes |= {(method, path) for method, path in doc if path.startswith("/v1/")}
        assert doc == routes

        async with httpx.AsyncClient(base_url=served.url, headers=served.auth()) as http:
            for method, path in sorted(doc):
                if not path.startswith("/v1/"):
                    continue
                concrete = path.replace("{model}", "auto").replace("{response_id}", "resp_0")
                for other in METHODS:
                    answer = await http.request(other, concrete, json={})
                    if other in methods_of(doc, path):
                        assert answer.status_code in (200, 400, 404), (method, path, answer.text)
                    else:
                        assert answer.status_code == 405, (other, path, answer.text)
            for path in NOT_SERVED:
                answer = await http.post(path, json={})
                assert answer.status_code == 404, path
                assert answer.json()["error"]["code"] == "not_found"


async def test_the_document_is_served_to_the_key_or_a_session_only(tmp_path: Path) -> None:
    async with (
        loopback_server(tmp_path / "data") as served,
        httpx.AsyncClient(base_url=served.url) as http,
    ):
        for headers in ({}, {"authorization": "Bearer freellm-wrong"}, {"x-api-key": "nope"}):
            refused = await http.get("/openapi.json", headers=headers)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "invalid_api_key"
            assert "paths" not in refused.text
        by_key = await http.get("/openapi.json", headers=served.auth())
        assert by_key.status_code == 200
        assert by_key.headers["content-type"] == "application/json"
        assert by_key.json() == document()
        login = await http.post("/api/login", json={"token": served.proxy.key})
        assert login.status_code == 200
        by_session = await http.get("/openapi.json")  # the cookie the login set
        assert by_session.json() == document()
        wrong = await http.post("/openapi.json", headers=served.auth())
        assert wrong.status_code == 405
        assert served.proxy.key not in by_key.text


def test_the_document_is_valid_openapi_3_1() -> None:
    """The document against the OpenAPI 3.1 schema (schemathesis ships it), and every one of
    its operations loadable."""
    loaded = schemathesis.openapi.from_dict(document())
    loaded.validate()  # raises, quoting what is wrong where
    results = list(loaded.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), [r for r in results if not isinstance(r, Ok)]
    assert {(op.method.upper(), op.path) for op in operations} == documented()


# --- schemathesis against the running server ------------------------------------------------------

# Never-ending or not worth the time in the run, each for a reason:
LEFT_OUT = {
    # A stream that never ends (tests/e2e/test_dashboard_api.py reads it).
    ("GET", "/api/events"),
}


class UnifiedKey:
    """schemathesis' auth provider: the unified key as it is now, as a bearer (regenerating it
    is one of the operations under test). The ``ignored_auth`` check sends each call without
    it too, and expects a 401."""

    server: ClassVar[Threaded | None] = None

    def get(self, case: Case[Any], ctx: Any) -> str | None:
        return None if self.server is None else self.server.key()

    def set(self, case: Case[Any], data: str, ctx: Any) -> None:
        case.headers["Authorization"] = f"Bearer {data}"


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Threaded]:
    with loopback_server_in_thread(tmp_path_factory.mktemp("openapi") / "data") as server:
        UnifiedKey.server = server
        try:
            yield server
        finally:
            UnifiedKey.server = None


def api_schema() -> BaseSchema:
    """The document (the very one the server serves: see above), with the run's settings."""
    config = schemathesis.Config.from_dict(
        {
            "generation": {"max-examples": 30, "mode": "all"},
            "phases": {"stateful": {"enabled": False}},
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
                "negative_data_rejection": {"enabled": True},
                "ignored_auth": {"enabled": True},
                "unsupported_method": {"enabled": True},
            },
        }
    )
    loaded: BaseSchema = schemathesis.openapi.from_dict(document(), config=config)
    for method, path in LEFT_OUT:
        loaded = loaded.exclude(method=method, path=path)
    loaded.auth(refresh_interval=None)(UnifiedKey)  # no caching: the key can change
    return loaded


# Loaded when the module is: schemathesis' lazy loader (from a fixture) reaches into pytest's
# private node ids, which pytest 9 took away.
schema = api_schema()


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_the_document_says(
    case: Case[Any], api_server: Threaded
) -> None:
    case.call_and_validate(base_url=api_server.url, timeout=30)
