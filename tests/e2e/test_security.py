"""Security on a running server (issue 11): every route needs credentials but a justified few;
the server says so when it listens beyond loopback; no secret reaches a log, an output, an answer
or /metrics; a key or label that could break a header is refused on every way in.

Real servers on 127.0.0.1 only, real clients (httpx, the openai SDK), real command-line
processes. Nothing here binds or connects to any other address: the bind warning is checked on
the function that decides it and on ``serve`` with the listening part replaced.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import hypercorn.trio
import openai
import pytest
import trio
from harness import CLIENT_GENERATORS, Proxy, config_text, running_proxy
from hypercorn.config import Config
from openai.types.chat import ChatCompletionMessageParam

from freellm import cli
from freellm.shell.logins import COOKIE, Login, Logins
from freellm.shell.secrets import Vault, load_master_key
from freellm.shell.store import open_store
from freellm.sim.fakes import FakeCaps, open_fake_provider
from freellm.web.app import App, create_app
from freellm.web.dashboard import create_dashboard

pytestmark = CLIENT_GENERATORS

GROQ_MODEL = "llama-3.3-70b-versatile"
GEMINI_MODEL = "gemini-2.5-flash"
CEREBRAS_MODEL = "qwen-3-235b-a22b-instruct-2507"
USER: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "hello from the security tests"}
]
METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
# Plain routes outside /api and /v1 that answer a stranger 401 in OpenAI's shape, not a redirect.
API_PATHS = ("/metrics", "/openapi.json")


def models(provider: str, model: str) -> str:
    return f'[[providers.{provider}.models]]\nid = "{model}"\ncontext = 131072\n'


# --- every route needs credentials ---------------------------------------------------------------

# The routes open to anyone, each for a reason; everything else the app serves needs the unified
# key (``/v1``, ``/api``, ``/metrics``) or the dashboard's session (pages: they send whoever has
# none to /login, which counts as refusing).
OPEN = {
    # Probes: a load balancer or an orchestrator asks them without credentials; they say only
    # whether the server is up (and which background job fails).
    "/livez": "probe",
    "/readyz": "probe",
    # The way in: the login page, and the call it makes with the unified key.
    "/login": "login",
    "/api/login": "login",
    # The files the login page loads (its stylesheet, script and icon) must load before anyone
    # is logged in. They are the app's own static files, the same for everyone: no data.
    "/static/<path:name>": "static",
}


@attrs.frozen
class Route:
    method: str
    path: str  # a concrete path to request
    rule: str  # the route as the app declares it (a Quart rule, a plain path, a prefix)


def every_route(app: App, dashboard: Any) -> list[Route]:
    """Every route of the whole app, read off the app itself, so that one added later (a plain
    ASGI path, a prefix's path, a Quart rule) cannot be left out: each with every method."""
    found: list[Route] = []
    for path in app.paths:
        found += [Route(method, path, path) for method in METHODS]
    for prefix in app.prefixes:
        # The handler of a prefix checks the key before it looks at the path (V1 does): a few
        # known paths, and one that is not a route at all, stand for the rest.
        assert prefix == "/v1/", f"a new prefix {prefix}: list some of its paths here"
        for rest in ("chat/completions", "models", "models/auto", "completions", "no/such"):
            found += [Route(method, prefix + rest, prefix) for method in METHODS]
    for rule in dashboard.url_map.iter_rules():
        path = re.sub(r"<(?:path:)?[^>]+>", "k_00000000", rule.rule)
        if rule.rule.startswith("/static/"):
            path = "/static/app.css"
        found += [Route(method, path, rule.rule) for method in METHODS]
    return found


@asynccontextmanager
async def small_proxy(tmp_path: Path) -> AsyncIterator[Proxy]:
    """A proxy in front of one fake groq, with one key."""
    async with open_fake_provider(
        "groq", keys=["gsk-route-test-1"], models={GROQ_MODEL: FakeCaps()}
    ) as groq:
        chain = [f"groq/{GROQ_MODEL}"]
        config = config_text({"groq": groq}, {"groq": models("groq", GROQ_MODEL)}, chain)
        async with running_proxy(
            tmp_path / "data", config, {"groq": ["gsk-route-test-1"]}
        ) as proxy:
            yield proxy


def forged_cookies(proxy: Proxy) -> list[dict[str, Any]]:
    """Cookies a stranger could send: made up, signed under another unified key, with a
    signature that is not ASCII."""
    other = Logins(lambda: "freellm-" + "o" * 43, clock=time.time, lifetime_s=lambda: 3600.0)
    elsewhere = other.login("freellm-" + "o" * 43, "127.0.0.1")
    assert isinstance(elsewhere, Login)
    return [
        {"cookie": f"{COOKIE}=forged.9999999999.c2lnbmF0dXJl"},
        {"cookie": f"{COOKIE}={elsewhere.cookie}"},
        {"cookie": f"{COOKIE}=x.9999999999.sig\xe9".encode("latin-1")},
    ]


def leaks(text: str, data: Iterable[str]) -> list[str]:
    return [item for item in data if item and item in text]


async def test_every_route_of_the_app_refuses_requests_without_valid_credentials(
    tmp_path: Path,
) -> None:
    async with small_proxy(tmp_path) as proxy, httpx.AsyncClient(base_url=proxy.url) as http:
        bearer = {"authorization": f"Bearer {proxy.key}"}
        added = await http.post(
            "/api/keys",
            json={"provider": "groq", "secret": "gsk-route-test-2", "label": "route label"},
            headers=bearer,
        )
        assert added.status_code == 201, added.text
        private = [added.json()["id"], "route label", "gsk-route-test-1", "gsk-route-test-2"]
        private.append(proxy.key)
        app = create_app(proxy.runtime)
        routes = every_route(app, create_dashboard(proxy.runtime))
        rules = {route.rule for route in routes}
        assert {"/metrics", "/api/keys", "/api/events", "/", "/v1/"} <= rules
        assert set(OPEN) <= rules, "an open route that the app no longer has: drop it from OPEN"
        wrong: list[dict[str, Any]] = [
            {},
            {"authorization": "Bearer freellm-wrong"},
            {"x-api-key": "freellm-wrong"},
            {"authorization": f"Basic {proxy.key}"},
            *forged_cookies(proxy),
        ]
        refused = 0
        for route in routes:
            if route.rule in OPEN:
                continue
            for headers in wrong:
                answer = await http.request(route.method, route.path, headers=headers)
                where = (route.method, route.path, headers)
                if route.path.startswith(("/api/", "/v1/")) or route.path in API_PATHS:
                    assert answer.status_code == 401, (*where, answer.status_code, answer.text)
                    if route.method != "HEAD":
                        assert answer.json()["error"]["code"] == "invalid_api_key", where
                else:  # a page: to the login page, with nothing of the page
                    assert answer.status_code == 302, (*where, answer.status_code)
                    assert answer.headers["location"].startswith("/login?next="), where
                assert leaks(answer.text, private) == [], where
                assert leaks(str(answer.headers), private) == [], where
                refused += 1
        assert refused >= len(METHODS) * len(wrong) * 25  # 28 routes in all, when written
        # The same routes with the right credentials get past the check (GET only: the others
        # would change things), so the refusals above are the check's doing.
        async with httpx.AsyncClient(base_url=proxy.url) as browser:
            login = await browser.post("/api/login", json={"token": proxy.key})
            assert login.status_code == 200
            for route in routes:
                if route.method != "GET" or route.rule in OPEN or "k_00000000" in route.path:
                    continue
                client, headers = (
                    (http, bearer) if route.path.startswith(("/v1/", "/metrics")) else (browser, {})
                )
                async with client.stream("GET", route.path, headers=headers) as answer:
                    assert answer.status_code not in (302, 401, 403), (route, answer.status_code)


async def test_the_open_routes_answer_without_credentials_and_tell_nothing_private(
    tmp_path: Path,
) -> None:
    async with small_proxy(tmp_path) as proxy, httpx.AsyncClient(base_url=proxy.url) as http:
        private = [
            proxy.key,
            "gsk-route-test-1",
            *(k.id for k in proxy.runtime.holder.state.topology.keys),
        ]
        answers = {
            "/livez": await http.get("/livez"),
            "/readyz": await http.get("/readyz"),
            "/login": await http.get("/login"),
            "/static/app.css": await http.get("/static/app.css"),
        }
        for path, answer in answers.items():
            assert answer.status_code == 200, path
            assert leaks(answer.text, private) == [], path
        assert '<meta name="csrf-token" content="">' in answers["/login"].text
        # What the login page loads is open too; nothing else is.
        loaded = re.findall(r'(?:href|src)="(/[^"]+)"', answers["/login"].text)
        assert loaded
        for path in loaded:
            assert path.startswith("/static/"), path
            assert (await http.get(path)).status_code == 200, path
        wrong = await http.post("/api/login", json={"token": "freellm-wrong"})
        assert wrong.status_code == 401
        assert leaks(wrong.text, private) == []


# --- the bind warning ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "where"),
    [
        ("127.0.0.1", None),
        ("127.8.9.10", None),
        ("::1", None),
        ("[::1]", None),
        ("::ffff:127.0.0.1", None),
        ("localhost", None),
        ("LocalHost", None),
        ("0.0.0.0", "every network interface"),
        ("::", "every network interface"),
        ("", "every network interface"),
        ("192.168.1.20", "192.168.1.20"),
        ("10.1.2.3", "10.1.2.3"),
        ("fe80::1", "fe80::1"),
        ("203.0.113.7", "203.0.113.7"),
        ("freellm.lan", "'freellm.lan'"),
    ],
)
def test_the_bind_warning_is_given_for_every_address_but_loopback(
    host: str, where: str | None
) -> None:
    warning = cli.exposure_warning(host)
    if where is None:
        assert warning is None
        return
    assert warning is not None
    assert f"listening on {where}" in warning
    assert "reachable from other machines" in warning
    assert "anyone who has the unified key can use your provider keys" in warning


@pytest.fixture
def not_serving(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """``serve`` and ``demo`` with hypercorn's part replaced: the hosts they would have bound
    are recorded, and nothing listens (a test binds nothing but 127.0.0.1)."""
    hosts: list[str] = []

    async def record(
        runtime: Any,
        host: str,
        port: int,
        *,
        shutdown_trigger: Any = None,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        hosts.append(host)
        task_status.started(f"http://{host}:{port}")

    monkeypatch.setattr("freellm.web.server.serve_runtime", record)
    for name in ("HOST", "PORT", "ENCRYPTION_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FREELLM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    return hosts


def test_serve_binds_loopback_by_default_without_a_warning(
    not_serving: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", "--port", "3999"]) == 0
    assert not_serving == ["127.0.0.1"]
    out, err = capsys.readouterr()
    assert "serving http://127.0.0.1:3999/v1" in out
    assert "WARNING" not in out + err


@pytest.mark.parametrize(
    ("args", "env", "where"),
    [
        (["--host", "0.0.0.0"], {}, "every network interface"),
        ([], {"HOST": "192.168.1.20"}, "192.168.1.20"),
        (["--host", "::"], {"HOST": "127.0.0.1"}, "every network interface"),
    ],
)
def test_serve_elsewhere_warns_on_stderr(
    not_serving: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    where: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["serve", "--port", "3999", *args]) == 0
    assert len(not_serving) == 1
    out, err = capsys.readouterr()
    assert "WARNING" not in out
    (line,) = [line for line in err.splitlines() if "WARNING" in line]
    assert line.startswith("freellm: WARNING: freellm is listening on " + where)
    assert "anyone who has the unified key can use your provider keys" in line


def test_the_demo_warns_too(not_serving: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--host", "0.0.0.0", "--port", "3999"]) == 0
    assert not_serving == ["0.0.0.0"]
    assert "WARNING: freellm is listening on every network interface" in capsys.readouterr().err


# --- no secret anywhere ------------------------------------------------------------------------

# The real server, as `freellm serve` runs it, with every logger at DEBUG into its stderr.
LAUNCH = (
    "import logging, sys;"
    "logging.basicConfig(level=logging.DEBUG, format='%(levelname)s %(name)s: %(message)s');"
    "logging.captureWarnings(True);"
    "logging.getLogger('tests').debug('every logger at DEBUG');"
    "from freellm.cli import main;"
    "sys.exit(main(sys.argv[1:]))"
)
FREELLM = [sys.executable, "-m", "freellm.cli"]

# Keys shaped so that the core's pattern redaction (outcome.redact: known prefixes, long runs of
# letters and digits) does not recognise them: only removing the very secret that was sent can.
GROQ_KEY = "echo-groq-7f3a-91bc-22de"
GOOGLE_KEY = "echo-gem.4411.xyzw.0077"
CEREBRAS_KEY = "csk-fake.cerebras.1234"
API_KEY = "api-added.5150-abcd-ef"
API_NEW_SECRET = "api-patched.6262-bcde-fg"
LIVE_KEY = "cli-live.7373-cdef-gh"
LIVE_NEW_SECRET = "cli-edited.8484-defg-hi"
STORED_BAD = "stored-bad.9595\r\nX-Injected: efgh"
REFUSED = ["refused-cr.1010\r\nX-Injected: one", "refused-nul.2020\x00two", "refused-é.3030"]
PARTS = ["refused-cr.1010", "X-Injected: one", "refused-nul.2020", "refused-é.3030"]


@attrs.define
class Echo:
    """A provider that quotes the key it was sent in its error answers, as real providers
    sometimes do ("Incorrect API key provided: sk-..."). The model asked for says how it fails
    (:data:`ECHO_MODELS`): ``sec-400`` (and ``-401``, ``-429``) answer that status, ``sec-500``
    a 500 with a plain-text body, ``sec-stream`` one chunk of a stream and then an error event.
    A model list (a key check) is a 401 for a key that has ``api-`` in it, else an empty list."""

    calls: int = 0
    origin: str = ""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.calls += 1
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        sent = headers.get("authorization") or headers.get("x-goog-api-key") or "(none)"
        asked = re.search(r"sec-(400|401|429|500|stream)", scope["path"] + body.decode())
        mode = asked.group(1) if asked else "401"
        if scope["method"] == "GET" and "api-" in sent:
            await _answer(send, 401, _error(f"Incorrect API key provided: {sent}"))
        elif scope["method"] == "GET":
            await _answer(send, 200, b'{"object": "list", "data": []}')
        elif mode == "stream":
            chunk = {
                "id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "sec-stream",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}],
            }  # fmt: skip
            failure = _error(f"the stream broke for the key {sent}")
            events = f"data: {json.dumps(chunk)}\n\ndata: {failure.decode()}\n\n".encode()
            await _answer(send, 200, events, b"text/event-stream")
        elif mode == "500":
            text = f"upstream exploded; request headers: authorization={sent}"
            await _answer(send, 500, text.encode(), b"text/plain")
        else:
            await _answer(send, int(mode), _error(f"Invalid request (sec-{mode}) with {sent}"))


ECHO_MODELS = ("sec-400", "sec-401", "sec-429", "sec-500", "sec-stream")


def _error(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()


async def _answer(send: Any, status: int, body: bytes, kind: bytes = b"application/json") -> None:
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    if status == 429:
        headers.append((b"retry-after", b"30"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def open_echo() -> AsyncIterator[Echo]:
    echo = Echo()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = logging.getLogger("tests.echo")
    config.graceful_timeout = 0.1
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(hypercorn.trio.serve, echo, config, shutdown_trigger=stop.wait)
        )
        echo.origin = binds[0]
        try:
            yield echo
        finally:
            stop.set()


@attrs.define
class Seen:
    """Everything the outside world got to see, by where it was seen."""

    texts: list[tuple[str, str]] = attrs.field(factory=list)

    def add(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    def answer(self, where: str, answer: Any) -> Any:
        """An HTTP answer (httpx's, or the openai SDK's own copy of httpx), whole."""
        head = "\n".join(f"{k}: {v}" for k, v in answer.headers.items())
        self.add(where, f"{answer.status_code}\n{head}\n\n{answer.text}")
        return answer


async def run_cli(seen: Seen, env: dict[str, str], *args: str, stdin: str = "") -> int:
    done = await trio.run_process(
        [*FREELLM, *args],
        stdin=stdin.encode(),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )
    seen.add(f"freellm {' '.join(args)} (stdout)", done.stdout.decode())
    seen.add(f"freellm {' '.join(args)} (stderr)", done.stderr.decode())
    return done.returncode


async def read_stdout(process: trio.Process, pattern: str, printed: list[str]) -> re.Match[str]:
    assert process.stdout is not None
    with trio.fail_after(30):
        while (found := re.search(pattern, "".join(printed))) is None:
            chunk = await process.stdout.receive_some(4096)
            if not chunk:
                raise AssertionError(f"serve exited before printing {pattern!r}: {printed}")
            printed.append(chunk.decode())
    return found


async def wait_for(check: Any, what: str, *, within: float = 15.0) -> Any:
    """Poll ``check`` (async, returns a truthy value when done) on the wall clock: the server
    applies another process's change within about a second."""
    with trio.fail_after(within):
        while True:
            result = await check()
            if result:
                return result
            await trio.sleep(0.1)  # another process's change: nothing here to wait on


def secrets_config(echo: Echo, cerebras_url: str) -> str:
    """groq (OpenAI dialect, Bearer) and google (Gemini dialect, x-goog-api-key) are the echo;
    cerebras, a real fake, serves what they fail, so that requests fail over to it."""
    parts = [f'[providers.groq]\nbase_url = "{echo.origin}/openai/v1"\n']
    parts += [models("groq", model) for model in ECHO_MODELS]
    parts += [f'[providers.google]\nbase_url = "{echo.origin}/v1beta"\n']
    parts += [models("google", model) for model in ("sec-400", "sec-401", "sec-500")]
    parts += [f'[providers.cerebras]\nbase_url = "{cerebras_url}"\n']
    parts += [models("cerebras", model) for model in ("sec-401", "sec-429", "sec-500")]
    chain = [f"groq/{m}" for m in ECHO_MODELS] + ["google/sec-400", "google/sec-401"]
    chain += ["google/sec-500", "cerebras/sec-401", "cerebras/sec-429", "cerebras/sec-500"]
    parts.append(f"[router]\nchain = {json.dumps(chain)}\n")
    return "\n".join(parts)


async def collect_events(
    url: str,
    headers: dict[str, str],
    seen: Seen,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The dashboard's live feed (requests as they end, with their errors), until cancelled."""
    async with (
        httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10, read=None)) as http,
        http.stream("GET", "/api/events", headers=headers) as answer,
    ):
        assert answer.status_code == 200
        task_status.started()
        async for text in answer.aiter_text():
            seen.add("/api/events", text)


async def test_no_secret_reaches_a_log_an_output_an_answer_or_metrics(tmp_path: Path) -> None:
    encryption_key = secrets.token_hex(32)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT", "ENCRYPTION_KEY")}
    env |= {"FREELLM_DATA_DIR": str(data_dir), "ENCRYPTION_KEY": encryption_key}
    seen = Seen()
    fake_models = {model: FakeCaps() for model in ("sec-401", "sec-429", "sec-500")}
    async with (
        open_echo() as echo,
        open_fake_provider("cerebras", keys=[CEREBRAS_KEY], models=fake_models) as cerebras,
    ):
        (data_dir / "freellm.toml").write_text(secrets_config(echo, cerebras.base_url))
        # Keys by the command line: on it, from standard input, and refused ones.
        assert await run_cli(seen, env, "keys", "add", "groq", GROQ_KEY, "--label", "work") == 0
        added = await run_cli(
            seen, env, "keys", "add", "google", "-", "--label", "Zoë's", stdin=GOOGLE_KEY + "\n"
        )
        assert added == 0
        assert await run_cli(seen, env, "keys", "add", "cerebras", CEREBRAS_KEY) == 0
        assert await run_cli(seen, env, "keys", "add", "groq", REFUSED[0]) == 2
        assert await run_cli(seen, env, "keys", "add", "groq", "-", stdin=REFUSED[1] + "\n") == 2
        assert await run_cli(seen, env, "keys", "add", "groq", REFUSED[2]) == 2

        stderr_path = tmp_path / "serve.stderr"
        printed: list[str] = []
        with stderr_path.open("wb") as stderr:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-c", LAUNCH, "serve", "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                cwd=tmp_path,
            )
            try:
                found = await read_stdout(process, r"serving (http://127\.0\.0\.1:\d+)/v1", printed)
                url = found.group(1)
                found = await read_stdout(process, r"shown once[^\n]*: (freellm-\S+)\n", printed)
                unified = found.group(1)
                await exercise(url, unified, env, echo, data_dir, encryption_key, seen)
            finally:
                process.send_signal(signal.SIGINT)
                with trio.fail_after(15):
                    assert await process.wait() == 0
                assert process.stdout is not None
                while chunk := await process.stdout.receive_some(4096):
                    printed.append(chunk.decode())
        assert echo.calls >= 8  # every way of failing was taken
        # After the server: what the command line shows of the errors it saw.
        assert await run_cli(seen, env, "keys", "list") == 0
        listed = seen.texts[-2][1]
        assert "cannot be sent: The key contains a carriage return (U+000D)" in listed

    provider_keys = [GROQ_KEY, GOOGLE_KEY, CEREBRAS_KEY, API_KEY, API_NEW_SECRET, LIVE_KEY]
    provider_keys += [LIVE_NEW_SECRET, *PARTS, "stored-bad.9595", "X-Injected: efgh"]
    private = [*provider_keys, unified, encryption_key, encryption_key.upper()]
    # `freellm serve` prints the unified key on its first start (DESIGN.md), once, and that is
    # the only place it may appear.
    stdout = "".join(printed)
    assert stdout.count(unified) == 1
    seen.add("serve (stdout)", stdout.replace(unified, "<the unified key, printed once>"))
    log = stderr_path.read_text(encoding="utf-8", errors="replace")
    assert "DEBUG tests: every logger at DEBUG" in log
    assert "INFO httpx: HTTP Request" in log  # the libraries' loggers are in it too
    assert "cannot be sent to its provider" in log  # the stored bad secret, named by its id
    seen.add("serve (stderr: logging at DEBUG)", log)
    for path in data_dir.iterdir():
        seen.add(f"data dir: {path.name}", path.read_bytes().decode("latin-1"))
    found_leaks = [(where, leaks(text, private)) for where, text in seen.texts]
    assert [(where, leaked) for where, leaked in found_leaks if leaked] == []
    assert len(seen.texts) > 60


async def exercise(
    url: str,
    unified: str,
    env: dict[str, str],
    echo: Echo,
    data_dir: Path,
    encryption_key: str,
    seen: Seen,
) -> None:
    """Everything a user and their clients do that could show a secret, against the server."""
    auth = {"authorization": f"Bearer {unified}"}
    sdk = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=unified, max_retries=0)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http, trio.open_nursery() as feed:
        await feed.start(partial(collect_events, url, auth, seen))
        # Keys by the command line while the server runs: it picks them up within a second.
        assert await run_cli(seen, env, "keys", "add", "groq", LIVE_KEY, "--label", "live") == 0
        live_id = seen.texts[-2][1].split()[1]
        edited = await run_cli(
            seen, env, "keys", "edit", live_id, "--secret", "-", stdin=LIVE_NEW_SECRET + "\n"
        )
        assert edited == 0

        # A secret stored by other means (an older version, a hand-edited database) that
        # would break its header: the server keeps it out of routing, and says so.
        vault = Vault(load_master_key(data_dir, encryption_key))
        async with open_store(data_dir / "freellm.db") as store:
            bad = await store.add_key("groq", "", lambda kid: vault.seal(kid, "groq", STORED_BAD))

        async def routable() -> Any:
            answer = await http.get("/api/keys", headers=auth)
            data = {entry["id"]: entry for entry in answer.json()["data"]}
            ready = live_id in data and data[live_id]["routable"] and bad.id in data
            return ready and not data[bad.id]["routable"] and answer

        seen.answer("/api/keys", await wait_for(routable, "the server took the CLI's keys"))
        assert await run_cli(seen, env, "keys", "check") == 1  # the stored bad one fails

        # A request the provider refuses goes back to the client with its message.
        for model in ("sec-400", "google/sec-400"):
            with pytest.raises(openai.BadRequestError) as refused:
                await sdk.chat.completions.create(model=model, messages=USER)
            seen.answer(f"chat {model}", refused.value.response)
            seen.add(f"chat {model} (SDK error)", str(refused.value))
            assert "Invalid request (sec-400) with" in refused.value.response.text
        # A stream that breaks after its first chunk ends with an error event.
        stream_body = {"model": "groq/sec-stream", "messages": USER, "stream": True}
        async with http.stream(
            "POST", "/v1/chat/completions", json=stream_body, headers=auth
        ) as answer:
            await answer.aread()
            seen.answer("chat sec-stream", answer)
            assert "event: error" in answer.text
            assert "the stream broke for the key" in answer.text
        # The only provider asked refuses its key: nothing to fail over to.
        refused_key = await http.post(
            "/v1/chat/completions", json={"model": "google/sec-401", "messages": USER},
            headers=auth,
        )  # fmt: skip
        seen.answer("chat google/sec-401", refused_key)
        assert refused_key.status_code == 502
        # Failing over: each echo quotes the key it got; the client gets cerebras's answer.
        # (Last: a 401 marks the groq key invalid.)
        for model in ("sec-500", "sec-429", "sec-401"):
            raw = await sdk.chat.completions.with_raw_response.create(model=model, messages=USER)
            seen.answer(f"chat {model}", raw.http_response)
            assert raw.headers["x-routed-via"] == f"cerebras/{model}"
            assert f"groq/{model}={model[4:]}" in raw.headers["x-fallback-trail"]
        seen.answer("v1 wrong key", await http.get("/v1/models", headers={"x-api-key": "nope"}))
        seen.answer("v1 models", await http.get("/v1/models", headers=auth))

        # Keys by the API: added, its secret replaced, checked (the echo quotes it back).
        added = seen.answer(
            "POST /api/keys",
            await http.post(
                "/api/keys",
                json={"provider": "groq", "secret": API_KEY, "label": "api"},
                headers=auth,
            ),
        )
        assert added.status_code == 201
        key_id = added.json()["id"]
        patched = await http.patch(
            f"/api/keys/{key_id}", json={"secret": API_NEW_SECRET}, headers=auth
        )
        assert seen.answer("PATCH /api/keys", patched).status_code == 200
        checked = await http.post(f"/api/keys/{key_id}/check", headers=auth)
        assert seen.answer("check", checked).status_code == 200
        for body in (
            {"provider": "groq", "secret": "api-refused.4040\r\nX-Injected: api"},
            {"provider": "groq", "secret": "api-refused.5050", "label": "two\nlines"},
        ):
            refused_add = seen.answer("refused POST", await http.post("/api/keys", json=body))
            assert refused_add.status_code == 401  # no credentials: refused before anything
            refused_add = await http.post("/api/keys", json=body, headers=auth)
            assert seen.answer("refused POST", refused_add).status_code == 400

        # What a logged-in browser and a Prometheus scraper see.
        login = await http.post("/api/login", json={"token": unified})
        seen.add("login", login.text)
        cookie = {"cookie": f"{COOKIE}={login.cookies[COOKIE]}"}
        for page in ("/", "/keys", "/chain", "/playground", "/analytics", "/quotas", "/login"):
            seen.answer(page, await http.get(page, headers=cookie))
        for path in (
            "/api/keys", "/api/chain", "/api/catalog", "/api/quotas", "/api/analytics",
            "/api/requests?limit=200", "/api/requests?failed=1", "/api/token", "/metrics",
            "/livez", "/readyz",
        ):  # fmt: skip
            answer = seen.answer(path, await http.get(path, headers=auth))
            assert answer.status_code == 200, (path, answer.text)
        errors = json.dumps((await http.get("/api/requests?failed=1", headers=auth)).json())
        assert "[redacted]" in errors  # the echoed messages are there, without the keys
        await sdk.close()
        feed.cancel_scope.cancel()


# --- a key or label that would break a header, on every way in -----------------------------------

BAD_SECRETS = [
    ("gsk-bad.0001\r\nX-Injected: 1", "a carriage return (U+000D)"),
    ("gsk-bad.0002\nX-Injected: 2", "a line feed (U+000A)"),
    ("gsk-bad.0003\x00", "a NUL (U+0000)"),
    ("gsk-bad.0004\x1b[0m", "an escape (U+001B)"),
    ("gsk-bad.0005\x7f", "U+007F"),
    ("gsk-bad.0006é", "U+00E9"),
    ("gsk-bad 0007", "a space (U+0020)"),
    ("gsk-bad.0008\u200b", "U+200B (ZERO WIDTH SPACE)"),
]
BAD_LABELS = [
    ("work\r\nadded k_forged (groq)", "a carriage return (U+000D)"),
    ("\x1b[2Jcleared", "an escape (U+001B)"),
    ("\u202eevil", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ("tab\there", "a tab (U+0009)"),
]


async def test_a_key_or_label_that_would_break_a_header_is_refused_by_the_api(
    tmp_path: Path,
) -> None:
    async with small_proxy(tmp_path) as proxy, httpx.AsyncClient(base_url=proxy.url) as http:
        auth = {"authorization": f"Bearer {proxy.key}"}
        (key,) = (await http.get("/api/keys", headers=auth)).json()["data"]
        before = (await http.get("/api/keys", headers=auth)).json()
        attempts: list[tuple[str, str, dict[str, Any], str, str]] = []
        edit = f"/api/keys/{key['id']}"
        for secret, named in BAD_SECRETS:
            new = {"provider": "groq", "secret": secret}
            attempts.append(("POST", "/api/keys", new, "secret", named))
            attempts.append(("PATCH", edit, {"secret": secret}, "secret", named))
        for label, named in BAD_LABELS:
            body = {"provider": "groq", "secret": "gsk-good.0009", "label": label}
            attempts.append(("POST", "/api/keys", body, "label", named))
            attempts.append(("PATCH", edit, {"label": label}, "label", named))
        # One good field beside a bad one: nothing of the call is applied.
        both = {"label": "renamed", "secret": BAD_SECRETS[0][0]}
        attempts.append(("PATCH", edit, both, "secret", "a carriage return"))
        for method, path, body, param, named in attempts:
            answer = await http.request(method, path, json=body, headers=auth)
            assert answer.status_code == 400, (method, body, answer.text)
            error = answer.json()["error"]
            assert error["param"] == param
            assert error["type"] == "invalid_request_error"
            assert named in error["message"]
            pieces = re.split(r"[^!-~]+", body.get("secret", ""))  # around the bad characters
            assert leaks(answer.text, [piece for piece in pieces if len(piece) >= 6]) == []
            assert (await http.get("/api/keys", headers=auth)).json() == before
        # Whitespace around a key or label, as a paste leaves it, is taken off instead.
        added = await http.post(
            "/api/keys",
            json={"provider": "groq", "secret": " \tgsk-route-test-3\r\n", "label": "  pasted "},
            headers=auth,
        )
        assert added.status_code == 201, added.text
        assert added.json()["label"] == "pasted"
        stored = proxy.runtime.holder.state.topology.key("groq", added.json()["id"])
        assert stored is not None
        assert stored.secret == "gsk-route-test-3"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("ENCRYPTION_KEY", raising=False)
    monkeypatch.setenv("FREELLM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "data"


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = cli.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize(("secret", "named"), BAD_SECRETS)
def test_a_key_that_would_break_a_header_is_refused_by_the_command_line(
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    secret: str,
    named: str,
) -> None:
    status, out, _ = run_main(capsys, "keys", "add", "groq", "gsk-good.0010", "--label", "ok")
    assert status == 0
    key_id = out.split()[1]
    _, listed, _ = run_main(capsys, "keys", "list")
    tried = []
    if "\x00" not in secret:  # a process's arguments cannot hold a NUL
        tried += [("keys", "add", "groq", secret), ("keys", "edit", key_id, "--secret", secret)]
    if "\n" not in secret:  # with -, the key is the first line of standard input
        tried += [("keys", "add", "groq", "-"), ("keys", "edit", key_id, "--secret", "-")]
    for args in tried:
        monkeypatch.setattr("sys.stdin", io.StringIO(secret + "\n"))
        status, out, err = run_main(capsys, *args)
        assert status == 2, (args, out, err)
        assert err.startswith(f"freellm: the key contains {named}"), err
        assert secret.split()[0][:12] not in out + err
        assert run_main(capsys, "keys", "list")[1] == listed  # nothing changed


@pytest.mark.parametrize(("label", "named"), BAD_LABELS)
def test_a_label_with_control_characters_is_refused_by_the_command_line(
    data_dir: Path, capsys: pytest.CaptureFixture[str], label: str, named: str
) -> None:
    status, out, _ = run_main(capsys, "keys", "add", "groq", "gsk-good.0011")
    assert status == 0
    key_id = out.split()[1]
    _, listed, _ = run_main(capsys, "keys", "list")
    for args in (("keys", "add", "groq", "gsk-good.0012", "--label", label),
                 ("keys", "edit", key_id, "--label", label)):  # fmt: skip
        status, out, err = run_main(capsys, *args)
        assert status == 2
        assert err.startswith(f"freellm: the label contains {named}"), err
        assert run_main(capsys, "keys", "list")[1] == listed
    status, out, _ = run_main(capsys, "keys", "edit", key_id, "--label", "  Zoë's 東京 key  ")
    assert status == 0
    with contextlib.closing(sqlite3.connect(data_dir / "freellm.db")) as db:
        labels = {row[0] for row in db.execute("SELECT label FROM keys")}
    assert labels == {"Zoë's 東京 key"}  # Unicode text is a label; the spaces around it go
