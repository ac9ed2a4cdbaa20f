"""Bad input on a running server (issue 11): Hypothesis-made bodies, headers and byte streams
against ``/v1/chat/completions`` and the ``/api`` routes that change something, through real
sockets (httpx, and a raw socket client for what httpx will not send: :mod:`wire_client`).

What every answer must be: never a 5xx; a 4xx in OpenAI's shape
(``{"error": {"message", "type", "param", "code"}}``) whose ``param`` or message names the
problem; and a refused body changes nothing in the store and reaches no provider.

One exception, by design: a request that is not HTTP/1.1 at all (a negative or non-numeric
``Content-Length``, two different ones, a broken request line) never reaches freellm. The HTTP
server (hypercorn, through h11) answers it with a bare ``400`` and closes the connection: there
is no request to name a field of.

A body that trickles in (slowloris) gets ``408`` in OpenAI's shape once
:data:`freellm.web.v1.BODY_TIMEOUT_S` has passed since the request's head, and the connection is
closed; a head that trickles in is hypercorn's to cut (its keep-alive timeout runs until a whole
head has arrived). Neither holds anyone else back: each connection is a task of its own. Nor
does a client that stops reading its stream: freellm stops reading that stream's upstream.

The Hypothesis tests run in a worker thread (blocking clients), beside the server's trio loop in
the test's own thread: starting a server for each example would cost more than the examples.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio
from harness import CLIENT_GENERATORS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopback import GROQ_MODEL, NATIVES, Served, loopback_server
from wire_client import Answer, connect, head, read_answer, request, trickle

from freellm.web import server, v1

pytestmark = CLIENT_GENERATORS

USER = [{"role": "user", "content": "hello from the fuzz tests"}]
VALID: Mapping[str, Any] = {"model": "auto", "messages": USER}


@asynccontextmanager
async def fuzz_server(tmp_path: Path) -> AsyncIterator[Served]:
    async with loopback_server(tmp_path / "data") as served:
        yield served


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a worker thread: blocking clients beside the server's trio loop."""
    return await trio.to_thread.run_sync(fn, *args)


def with_client(served: Served, test: Callable[[httpx.Client], None]) -> None:
    """``test(client)`` with an httpx client that sends the unified key (blocking: run it in
    a worker thread)."""
    with httpx.Client(base_url=served.url, headers=served.auth()) as http:
        test(http)


def error_of(status: int, body: bytes) -> dict[str, Any]:
    """The error object of an OpenAI-shaped 4xx answer (asserting that it is one)."""
    assert 400 <= status < 500, (status, body[:300])
    data = json.loads(body)
    assert set(data) == {"error"}, data
    error = data["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str), error
    assert error["message"], error
    assert error["type"] == "invalid_request_error", error
    assert error["param"] is None or isinstance(error["param"], str), error
    return dict(error)


def refused(answer: Answer | httpx.Response) -> dict[str, Any]:
    if isinstance(answer, httpx.Response):
        return error_of(answer.status_code, answer.content)
    return error_of(answer.status, answer.body)


def chat(served: Served, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> Answer:
    return request(
        served.url,
        "POST",
        "/v1/chat/completions",
        [*served.bearer, (b"content-type", b"application/json"), *headers],
        body,
    )


# --- defects found by the fuzzers, each kept as a plain test ------------------------------------


async def test_nesting_deeper_than_the_limit_is_a_400_naming_the_field(tmp_path: Path) -> None:
    """A body nested 980 deep parsed, then broke the JSON encoder on its way upstream (500)."""
    async with fuzz_server(tmp_path) as served:
        for depth in (101, 500, 980, 5000):
            nested = "[" * depth + "]" * depth
            body = json.dumps({**VALID, "extra": "@"}).replace('"@"', nested).encode()
            error = refused(await in_thread(chat, served, body))
            assert "more than 100 deep" in error["message"], error
            if depth <= 500:  # deeper, Python's own parser gives up first, before any field
                assert error["param"] == "extra", error
        fine = json.dumps({**VALID, "extra": "@"}).replace('"@"', "[" * 99 + "]" * 99)
        assert (await in_thread(chat, served, fine.encode())).status == 200
        assert served.groq.served == 1


async def test_nan_and_infinity_are_not_json(tmp_path: Path) -> None:
    """Python's parser reads them (``1e999`` as infinity); they went upstream as ``NaN`` and
    ``Infinity``, which no provider reads."""
    async with fuzz_server(tmp_path) as served:
        for constant in ("NaN", "Infinity", "-Infinity", "1e999"):
            body = json.dumps({**VALID, "extra": "@"}).replace('"@"', constant).encode()
            error = refused(await in_thread(chat, served, body))
            assert f"{constant} is not a finite number" in error["message"], error
        assert served.groq.served == 0


async def test_a_limit_of_digits_that_are_not_ascii_is_a_400(tmp_path: Path) -> None:
    """``"²".isdigit()`` is true and ``int("²")`` raises: it was a 500."""
    async with fuzz_server(tmp_path) as served, httpx.AsyncClient(base_url=served.url) as http:
        for limit in ("²", "٣", "1e3", "", "-1", "0", "201"):
            answer = await http.get("/api/requests", params={"limit": limit}, headers=served.auth())
            assert refused(answer)["param"] == "limit", limit
        assert (await http.get("/api/requests?limit=3", headers=served.auth())).status_code == 200


async def test_a_login_token_that_is_not_unicode_is_a_400(tmp_path: Path) -> None:
    """``"\\ud800"`` (half a character) in JSON became a 500 when the token was compared."""
    async with fuzz_server(tmp_path) as served:
        half = b'{"token": "\\ud800x"}'
        answer = await in_thread(partial(request, served.url, "POST", "/api/login", body=half))
        error = refused(answer)
        assert error["param"] == "token", error


async def test_the_dashboard_closes_a_connection_the_client_asked_to_close(
    tmp_path: Path,
) -> None:
    """Quart's answers to ``Connection: close`` left the connection open for good: quart-trio
    cancels its request as soon as it hears the disconnect that hypercorn's close produces,
    inside hypercorn's last send, between its ``send_eof`` and its ``aclose``."""
    async with fuzz_server(tmp_path) as served:
        for path in ("/api/token", "/api/keys", "/login", "/static/app.css", "/api/nowhere"):
            answer = await in_thread(request, served.url, "GET", path, served.bearer)
            assert answer.status < 500
            assert answer.closed, path


async def test_a_header_that_must_be_single_sent_twice_is_a_400_naming_it(
    tmp_path: Path,
) -> None:
    """Two Authorization headers meant the last one won, on every route: one good and one bad
    key in either order were answered differently. Two of a header that holds one value are
    ambiguous, so they are refused, naming the header, before anything reads them."""
    async with fuzz_server(tmp_path) as served:
        good = f"Bearer {served.proxy.key}".encode()
        doubles = {
            "authorization": [(b"authorization", good), (b"authorization", b"Bearer nope")],
            "Authorization": [(b"authorization", b"Bearer nope"), (b"Authorization", good)],
            "x-api-key": [(b"x-api-key", served.proxy.key.encode())] * 2,
            "content-type": [
                *served.bearer,
                (b"content-type", b"application/json"),
                (b"Content-Type", b"text/plain"),
            ],
        }
        routes = [
            ("POST", "/v1/chat/completions"),
            ("GET", "/v1/models"),
            ("POST", "/api/keys"),
            ("PUT", "/api/chain"),
            ("POST", "/api/chat/completions"),
            ("GET", "/metrics"),
        ]
        for (method, path), (name, headers) in itertools.product(routes, doubles.items()):
            body = json.dumps(VALID).encode()
            answer = await in_thread(request, served.url, method, path, headers, body)
            error = refused(answer)
            assert answer.status == 400, (method, path, name, answer)
            assert name.lower() in error["message"].lower(), error
            assert error["code"] == "duplicate_header", error
        assert served.groq.served == 0
        assert len(await served.proxy.runtime.store.list_keys()) == 1


async def test_a_content_length_over_the_limit_is_refused_before_the_body(tmp_path: Path) -> None:
    """A head that announces more than /v1 takes is answered at once (it waited for a body
    that would be refused anyway, for as long as the client kept the connection)."""
    async with fuzz_server(tmp_path) as served:
        for length in (v1.MAX_BODY_BYTES + 1, 10**18):
            data = head("POST", "/v1/chat/completions", served.bearer, body_length=length)

            def send(data: bytes = data) -> Answer:
                with connect(served.url, timeout=5) as sock:
                    # The head alone: body bytes left unread when the server closes would
                    # turn its close into a reset, which can drop the answer on our side.
                    sock.sendall(data)
                    return read_answer(sock)

            answer = await in_thread(send)
            error = refused(answer)
            assert answer.status == 413, answer
            assert error["code"] == "request_too_large", error
            assert answer.closed


async def test_a_head_that_is_not_http_gets_the_http_servers_bare_400(tmp_path: Path) -> None:
    """Framing errors never reach freellm: h11 refuses them, hypercorn answers a bare 400 and
    closes (the module docstring says why that is the one answer not in OpenAI's shape)."""
    async with fuzz_server(tmp_path) as served:
        bearer = served.bearer
        heads = [
            head(
                "POST",
                "/v1/chat/completions",
                [*bearer, (b"content-length", b"-5")],
                body_length=None,
            ),
            head(
                "POST",
                "/v1/chat/completions",
                [*bearer, (b"content-length", b"abc")],
                body_length=None,
            ),
            head(
                "POST", "/v1/chat/completions", [*bearer, (b"content-length", b"3")], body_length=4
            ),
            head("POST", "/v1/chat/completions", bearer, body_length=10**40),
            head("POST", "/api/keys", [*bearer, (b"content-length", b"1, 2")], body_length=None),
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",  # a TLS hello
            b"GET /\xff\x00 HTTP/1.1\r\nhost: x\r\n\r\n",
        ]
        for data in heads:
            answer = await in_thread(partial(request, served.url, "", "", raw_head=data))
            assert answer.status == 400, (data, answer)
            assert answer.body == b"", answer
            assert answer.closed
        assert served.groq.served == 0


async def test_a_body_that_trickles_in_gets_a_408_and_holds_no_one_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slowloris: one byte of the body every 50 ms, on /v1 and on /api. Meanwhile other
    clients are answered as usual; when the body deadline passes, the trickler gets a 408 in
    OpenAI's shape and its connection is closed."""
    monkeypatch.setattr(v1, "BODY_TIMEOUT_S", 1.0)
    body = json.dumps({**VALID, "padding": "x" * 200}).encode()
    async with fuzz_server(tmp_path) as served, httpx.AsyncClient(base_url=served.url) as http:

        def slow(method: str, path: str) -> tuple[Answer, int]:
            headers = [*served.bearer, (b"content-type", b"application/json")]
            with connect(served.url, timeout=10) as sock:
                sock.sendall(head(method, path, headers, body_length=len(body)))
                sent = trickle(sock, body, every=0.05, until=time.monotonic() + 5)
                return read_answer(sock), sent

        for method, path in (
            ("POST", "/v1/chat/completions"),
            ("POST", "/api/keys"),
            ("PUT", "/api/chain"),
        ):
            slowly: list[tuple[Answer, int, float]] = []

            async def trickler(
                method: str = method, path: str = path, into: list[Any] = slowly
            ) -> None:
                answer, sent = await in_thread(slow, method, path)
                into.append((answer, sent, trio.current_time()))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickler)
                for _ in range(5):  # others, served while the body trickles
                    fast = await http.post(
                        "/v1/chat/completions", json=VALID, headers=served.auth()
                    )
                    assert fast.status_code == 200
                others_done = trio.current_time()
            ((answer, sent, refused_at),) = slowly
            assert others_done < refused_at
            error = refused(answer)
            assert answer.status == 408, (path, answer)
            assert error["code"] == "request_timeout", error
            assert answer.closed
            assert 5 <= sent < len(body), sent  # cut off mid-body, after about a second


async def test_a_head_that_trickles_in_is_cut_by_the_keep_alive_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slowloris on the head: hypercorn's keep-alive timer runs from the connection's start
    until a whole head has arrived, and then closes it (75 s in freellm's settings, shortened
    here); other clients are served meanwhile."""
    configured = server.server_config

    def short_keep_alive(host: str, port: int) -> Any:
        config = configured(host, port)
        config.keep_alive_timeout = 1.0
        return config

    monkeypatch.setattr(server, "server_config", short_keep_alive)
    async with fuzz_server(tmp_path) as served, httpx.AsyncClient(base_url=served.url) as http:
        data = head("POST", "/v1/chat/completions", served.bearer, body_length=2) + b"{}"

        def slow_head() -> tuple[float, int]:
            started = time.monotonic()
            with connect(served.url, timeout=10) as sock:
                sent = trickle(sock, data, every=0.05, until=started + 5)
                closed = sock.recv(100) == b""
            assert closed
            return time.monotonic() - started, sent

        cut: list[tuple[float, int]] = []

        async def trickler() -> None:
            cut.append(await in_thread(slow_head))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickler)
            for _ in range(5):
                answer = await http.post("/v1/chat/completions", json=VALID, headers=served.auth())
                assert answer.status_code == 200
        ((took, sent),) = cut
        assert 0.9 < took < 3.0, took
        assert sent < len(data), sent


# --- Hypothesis: /v1/chat/completions ------------------------------------------------------------

# Real sockets on a shared machine: how long an example takes is not what these tests judge.
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def kind_of(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}[
        type(value)
    ]


def other_than(*kinds: str) -> st.SearchStrategy[Any]:
    """JSON values of no kind in ``kinds`` (``"number"`` stands for int and float)."""
    if "number" in kinds:
        kinds = (*kinds, "int", "float")
    return json_values.filter(lambda value: kind_of(value) not in kinds)


def numbers_outside(low: float, high: float) -> st.SearchStrategy[Any]:
    return st.floats(allow_nan=False, allow_infinity=False).filter(
        lambda x: not low <= x <= high
    ) | st.integers().filter(lambda x: not low <= x <= high)


ROLES = ("system", "developer", "user", "assistant", "tool", "function")

# (where the wrong value goes, what `param` must then say, the wrong values)
WRONG_FIELDS: list[tuple[tuple[str | int, ...], str, st.SearchStrategy[Any]]] = [
    (("model",), "model", other_than("str") | st.just("")),
    (("messages",), "messages", other_than("list") | st.just([])),
    (("messages", 0), "messages[0]", other_than("dict")),
    (
        ("messages", 0, "role"),
        "messages[0].role",
        other_than("str") | st.text(max_size=30).filter(lambda r: r not in ROLES),
    ),
    (("messages", 0, "content"), "messages[0].content", other_than("str", "list")),
    (
        ("messages", 0, "content"),
        "messages[0].content[0].type",
        st.lists(
            other_than("dict") | st.fixed_dictionaries({"type": other_than("str")}), min_size=1
        ),
    ),
    (("stream",), "stream", other_than("bool", "null")),
    (("stream_options",), "stream_options", other_than("dict", "null")),
    (("stream_options", "include_usage"), "stream_options.include_usage", other_than("bool")),
    (("max_tokens",), "max_tokens", other_than("int", "null") | st.integers(max_value=0)),
    (
        ("max_completion_tokens",),
        "max_completion_tokens",
        other_than("int", "null") | st.integers(max_value=0),
    ),
    (("temperature",), "temperature", other_than("number", "null") | numbers_outside(0, 2)),
    (("top_p",), "top_p", other_than("number", "null") | numbers_outside(0, 1)),
    (("n",), "n", other_than("int", "null") | st.integers().filter(lambda n: n != 1)),
    (("tools",), "tools", other_than("list", "null")),
    (("tools", 0), "tools[0].type", other_than("dict")),
    (("tools", 0, "function"), "tools[0].function", other_than("dict")),
    (
        ("tool_choice",),
        "tool_choice",
        other_than("str", "dict", "null")
        | st.text().filter(lambda c: c not in ("none", "auto", "required")),
    ),
    (("response_format",), "response_format.type", other_than("dict", "null")),
    (
        ("response_format", "type"),
        "response_format.type",
        json_values.filter(lambda t: t not in ("text", "json_object", "json_schema")),
    ),
    (("user",), "user", other_than("str", "null")),
    (("session_id",), "session_id", other_than("str", "null")),
]

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def body_with(where: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """A valid request (with a tool, stream options and a response format, so every field has
    a place) with ``value`` put at ``where``."""
    body: dict[str, Any] = {
        "model": "auto",
        "messages": [{"role": "user", "content": "hello"}],
        "tools": [json.loads(json.dumps(TOOL))],
        "tool_choice": "auto",
        "stream_options": {"include_usage": True},
        "response_format": {"type": "text"},
    }
    node: Any = body
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = value
    return body


async def test_a_chat_field_of_the_wrong_kind_is_a_400_naming_it(tmp_path: Path) -> None:
    """Each field a chat request is checked for, given a value it must refuse: a 400 whose
    ``param`` is that field (``messages[0].role``), whose message names it too, and nothing
    sent upstream."""
    async with fuzz_server(tmp_path) as served, httpx.AsyncClient() as warm:
        await warm.post(f"{served.url}/v1/chat/completions", json=VALID, headers=served.auth())
        before = served.groq.served

        fields: set[str] = set()

        @FUZZ
        @given(data=st.data(), field=st.sampled_from(range(len(WRONG_FIELDS))))
        def check(data: st.DataObject, field: int) -> None:
            where, param, wrong = WRONG_FIELDS[field]
            fields.add(param)
            value = data.draw(wrong, label=param)
            answer = chat(served, json.dumps(body_with(where, value)).encode())
            error = refused(answer)
            assert answer.status == 400, answer
            assert error["param"] == param, (value, error)
            assert f"`{param}`" in error["message"], error

        await in_thread(check)
        assert len(fields) >= len(WRONG_FIELDS) // 2, fields  # the examples did run
        assert served.groq.served == before


def nested(depth: int) -> bytes:
    return json.dumps({**VALID, "extra": "@"}).replace('"@"', "[" * depth + "]" * depth).encode()


VALID_BYTES = json.dumps(VALID).encode()
BAD_UTF8 = [b"\xff", b"\xc3", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"]
raw_bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.integers(0, len(VALID_BYTES) - 1).map(lambda n: VALID_BYTES[:n]),  # cut short
    st.tuples(st.sampled_from(BAD_UTF8), st.integers(0, 4)).map(
        lambda bad: VALID_BYTES.replace(b"hello", b"hel" + bad[0] * (bad[1] + 1) + b"lo")
    ),
    st.integers(90, 3000).map(nested),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-0", "1" * 5000]).map(
        lambda constant: VALID_BYTES[:-1] + b', "extra": ' + constant.encode() + b"}"
    ),
    # Long text, bounded for CI's time (bench/ may go further): up to 2 MB in one message.
    st.integers(0, 2_000_000).map(
        lambda n: json.dumps({**VALID, "messages": [{"role": "user", "content": "x" * n}]}).encode()
    ),
    st.dictionaries(
        st.sampled_from(["model", "messages", "stream", "tools", "n", "user"])
        | st.text(max_size=5),
        json_values,
        max_size=6,
    ).map(lambda body: json.dumps(body).encode()),
)


def is_json(raw: bytes) -> bool:
    """Whether ``raw`` is standard JSON (no NaN, no number that overflows a float)."""

    def refuse(name: str) -> None:
        raise ValueError(name)

    def finite(text: str) -> float:
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise ValueError(text)
        return value

    try:  # a leading BOM is let through, as freellm does
        json.loads(raw.decode("utf-8-sig"), parse_constant=refuse, parse_float=finite)
    except (ValueError, RecursionError):
        return False
    return True


async def test_chat_bodies_of_any_bytes_never_get_a_5xx(tmp_path: Path) -> None:
    """Any bytes as the body of a chat request: never a 5xx; a body that is not JSON a 400 that
    says what is wrong with it; whatever is refused reaches no provider."""
    async with fuzz_server(tmp_path) as served:
        statuses: set[int] = set()

        @FUZZ
        @given(raw=raw_bodies)
        def check(raw: bytes) -> None:
            before = served.groq.served
            answer = chat(served, raw)
            statuses.add(answer.status)
            assert answer.status < 500, answer
            if answer.status >= 400:
                error = refused(answer)
                assert served.groq.served == before
                if not is_json(raw):
                    assert answer.status == 400, answer
                    assert any(
                        word in error["message"]
                        for word in ("not valid JSON", "not valid UTF-8", "deep", "digits")
                    ), error

        await in_thread(check)
        assert 400 in statuses, statuses


header_names = st.sampled_from(
    [
        "authorization",
        "x-api-key",
        "content-type",
        "x-session-id",
        "x-csrf-token",
        "cookie",
        "accept",
        "accept-encoding",
        "content-encoding",
        "expect",
        "connection",
        "x-forwarded-for",
        "user-agent",
    ]
) | st.from_regex(r"\A[A-Za-z0-9!#$%&'*+.^_`|~-]{1,30}\Z")
# What h11 lets through as a header value: visible latin-1, with inner spaces and tabs.
header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80
).map(lambda text: text.strip(" \t").encode("latin-1"))


async def test_requests_with_any_headers_never_get_a_5xx(tmp_path: Path) -> None:
    """A valid chat request, or a valid new chain, with headers added (any names, any values
    h11 passes, the ones freellm reads among them, some twice): never a 5xx, and a 4xx in
    OpenAI's shape naming the header or the key. The exception is framing (the module
    docstring): a bare 400 and a closed connection from the HTTP server itself."""
    chain = json.dumps({"entries": [{"target": f"groq/{GROQ_MODEL}"}]}).encode()
    calls = [("POST", "/v1/chat/completions", VALID_BYTES), ("PUT", "/api/chain", chain)]
    async with fuzz_server(tmp_path) as served:
        statuses: set[int] = set()

        @FUZZ
        @given(
            call=st.sampled_from(calls),
            extra=st.lists(st.tuples(header_names, header_values), max_size=6),
        )
        def check(call: tuple[str, str, bytes], extra: list[tuple[str, bytes]]) -> None:
            method, path, body = call
            headers = [*served.bearer, *((name.encode(), value) for name, value in extra)]
            answer = request(served.url, method, path, headers, body)
            statuses.add(answer.status)
            assert answer.status < 500, (extra, answer)
            if answer.status >= 400 and answer.body == b"":
                assert answer.status == 400, answer  # h11's refusal, answered by hypercorn
                assert answer.closed
            elif answer.status >= 400:
                error = refused(answer)
                named = {"duplicate_header", "invalid_api_key", "csrf_token_invalid"}
                assert error["code"] in named or error["param"], (extra, error)

        await in_thread(check)
        assert 200 in statuses, statuses
        assert 400 in statuses, statuses


# --- Hypothesis: the /api routes that change something ------------------------------------------

TARGET = f"groq/{GROQ_MODEL}"
near_values: st.SearchStrategy[Any] = json_values | st.sampled_from(
    ["groq", "google", TARGET, "groq/", "/x", "gsk-fuzz-2", " ", "", True, False, None, [], {}]
)
API_FIELDS = {
    "/api/login": ("token",),
    "/api/keys": ("provider", "secret", "label"),
    "/api/keys/{id}": ("enabled", "label", "secret"),
    "/api/chain": ("entries",),
}
chain_entries = st.lists(
    st.dictionaries(
        st.sampled_from(["target", "enabled"]) | st.text(max_size=6), near_values, max_size=3
    )
    | near_values,
    max_size=4,
)


@st.composite
def api_calls(draw: st.DrawFn, key_id: str) -> tuple[str, str, bytes]:
    """(method, path, body): a route that changes something, and a body made of its fields,
    some other ones, wrong and right values, or bytes that are not JSON at all."""
    route = draw(st.sampled_from(sorted(API_FIELDS)))
    method = {"/api/login": "POST", "/api/keys": "POST", "/api/chain": "PUT"}.get(route, "PATCH")
    path = route.replace("{id}", draw(st.sampled_from([key_id, "k_00000000", "x" * 300])))
    names = st.sampled_from(API_FIELDS[route]) | st.text(max_size=8)
    values = chain_entries if route == "/api/chain" else near_values
    body = draw(st.dictionaries(names, values, max_size=4) | json_values)
    raw = json.dumps(body).encode()
    return method, path, draw(st.just(raw) | st.binary(max_size=40) | st.just(raw[:-1]))


def top_field(param: str) -> str:
    return param.split(".")[0].split("[")[0]


async def test_api_bodies_that_are_refused_change_nothing(tmp_path: Path) -> None:
    """Made-up bodies for every ``/api`` route that changes something (login, a new key, a key's
    edit, the chain): never a 5xx; a refusal is in OpenAI's shape and names a field of the
    route, and the store (keys, their sealed secrets, the chain) is as it was."""
    async with fuzz_server(tmp_path) as served:
        store = served.proxy.runtime.store
        (record,) = await store.list_keys()

        async def snapshot() -> Any:
            keys = [
                (k.id, k.provider, k.label, k.enabled, k.sealed) for k in await store.list_keys()
            ]
            return keys, await store.get_chain_entries()

        statuses: set[int] = set()

        @FUZZ
        @given(call=api_calls(record.id))
        def check(http: httpx.Client, call: tuple[str, str, bytes]) -> None:
            method, path, raw = call
            before = trio.from_thread.run(snapshot)
            answer = http.request(method, path, content=raw)
            statuses.add(answer.status_code)
            assert answer.status_code < 500, (call, answer.text)
            if answer.status_code < 400:
                return
            error = refused(answer)
            assert trio.from_thread.run(snapshot) == before, call
            if answer.status_code == 400 and error["param"] is not None:
                fields = API_FIELDS["/api/keys/{id}" if method == "PATCH" else path]
                sent = json.loads(raw)  # an unknown field is named as sent, "[" or "a.b" too
                named = {error["param"], top_field(error["param"])}
                assert named & {*fields, *sent}, (call, error)
                assert f"`{error['param']}`" in error["message"], error

        await in_thread(with_client, served, check)
        assert 400 in statuses, statuses


async def test_api_query_strings_of_any_text_never_get_a_5xx(tmp_path: Path) -> None:
    async with fuzz_server(tmp_path) as served:

        @FUZZ
        @given(
            path=st.sampled_from(["/api/requests", "/api/analytics"]),
            query=st.dictionaries(
                st.sampled_from(["limit", "window", "failed"]) | st.text(max_size=5),
                st.text(max_size=12),
                max_size=3,
            ),
        )
        def check(http: httpx.Client, path: str, query: dict[str, str]) -> None:
            answer = http.get(path, params=query)
            assert answer.status_code < 500, (path, query, answer.text)
            if answer.status_code >= 400:
                assert refused(answer)["param"] in ("limit", "window", "failed"), (query, answer)

        await in_thread(with_client, served, check)


# --- a slow reader --------------------------------------------------------------------------------

LONG_WORDS = 40_000  # about 10 MB of SSE: forty times what the sockets on the way buffer


def rss_bytes() -> int:
    """This process's resident memory (the server runs in it)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def read_stream_to_end(sock: socket.socket) -> bytes:
    """The rest of a chunked SSE answer, up to its last chunk after ``data: [DONE]``."""
    received = bytearray()
    while not (b"data: [DONE]" in received[-200:] and received.endswith(b"0\r\n\r\n")):
        piece = sock.recv(65536)
        if not piece:
            break
        received += piece
    return bytes(received)


async def test_a_slow_reader_of_one_stream_does_not_slow_the_others(tmp_path: Path) -> None:
    """One client opens a long stream (about 10 MB) and stops reading after its head, with a
    small socket buffer; five others stream as usual and finish at once. Meanwhile freellm
    stops reading the slow one's upstream (backpressure): the fake is still sending, long after
    it would have finished had freellm read on into memory, and the process' memory does not
    grow by the stream. When the slow client reads again, it gets the whole stream."""

    def size(request: Any) -> int | None:
        return LONG_WORDS if "long" in json.dumps(request.messages) else None

    async with loopback_server(tmp_path / "data", reply_tokens=size) as served:
        body = json.dumps(
            {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "long"}]}
        ).encode()

        def open_slow() -> tuple[socket.socket, bytes]:
            sock = connect(served.url, timeout=10, receive_buffer=4096)
            request_head = head(
                "POST", "/v1/chat/completions", served.bearer, body_length=len(body)
            )
            sock.sendall(request_head + body)
            return sock, sock.recv(200)  # the head, and then no more reading

        client = openai.AsyncOpenAI(
            base_url=f"{served.url}/v1", api_key=served.proxy.key, max_retries=0
        )
        took: list[float] = []

        async def stream_normally() -> None:
            started = trio.current_time()
            chunks = await client.chat.completions.create(
                model="auto", stream=True, messages=[{"role": "user", "content": "hi"}]
            )
            async with chunks:
                texts = [c.choices[0].delta.content or "" async for c in chunks if c.choices]
            assert "".join(texts).startswith("fake-groq says: hi")
            took.append(trio.current_time() - started)

        await stream_normally()  # warm: what the first stream loads is not the slow one's
        sock, first = await in_thread(open_slow)
        try:
            assert first.startswith(b"HTTP/1.1 200"), first
            with trio.fail_after(10):
                while len(served.groq.requests) < 2:  # noqa: ASYNC110 - another server's counters
                    await trio.sleep(0.01)
            slow = served.groq.requests[1]
            before = rss_bytes()
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    for _ in range(5):
                        nursery.start_soon(stream_normally)
            assert len(took) == 6
            assert max(took) < 5.0, took

            await trio.sleep(1.0)  # ample for 10 MB over loopback, were anything reading it
            assert slow.outcome == "pending", "the upstream was read on: nothing held it back"
            grown = rss_bytes() - before
            assert grown < 3_000_000, f"grew by {grown} bytes while the reader slept"

            rest = await in_thread(read_stream_to_end, sock)
        finally:
            sock.close()
            await client.close()
        assert rest.count(b"data: {") >= LONG_WORDS
        assert b"data: [DONE]" in rest
        with trio.fail_after(5):
            while slow.outcome == "pending":  # noqa: ASYNC110 - another server's counters
                await trio.sleep(0.01)
        assert slow.outcome == "ok"


# --- Hypothesis: requests freellm takes, translated for Gemini and Cohere -----------------------

short_text = st.text(max_size=30)
content_parts = st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": short_text})
    | st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.fixed_dictionaries(
                {
                    "url": st.sampled_from(
                        ["data:image/png;base64,iVBORw0KGgo=", "data:image/png;base64,!!", "data:,"]
                    )
                    | short_text.filter(bool)
                }
            ),
        }
    )
    | st.fixed_dictionaries({"type": short_text.filter(lambda t: t not in ("text", "image_url"))}),
    max_size=3,
)
schemas = st.dictionaries(
    st.sampled_from(["type", "properties", "required", "items", "enum", "anyOf", "$ref"])
    | st.text(max_size=5),
    json_values,
    max_size=4,
)
tool_calls = st.lists(
    st.fixed_dictionaries(
        {
            "id": short_text,
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {"name": short_text, "arguments": short_text | st.just('{"city": "Oslo"}')}
            ),
        }
    ),
    max_size=2,
)
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "developer", "user"]),
            "content": short_text | content_parts,
        }
    )
    | st.fixed_dictionaries(
        {"role": st.just("assistant"), "content": st.none() | short_text | content_parts},
        optional={"tool_calls": tool_calls},
    )
    | st.fixed_dictionaries(
        {"role": st.sampled_from(["tool", "function"]), "content": short_text | content_parts},
        optional={"tool_call_id": short_text, "name": short_text},
    ),
    min_size=1,
    max_size=5,
)
translated_bodies = st.fixed_dictionaries(
    {
        "model": st.sampled_from([f"{provider}/{model}" for provider, _, model, _ in NATIVES]),
        "messages": messages,
    },
    optional={
        "stream": st.booleans(),
        "tools": st.lists(
            st.fixed_dictionaries(
                {
                    "type": st.just("function"),
                    "function": st.fixed_dictionaries(
                        {"name": short_text.filter(bool)},
                        optional={"parameters": schemas, "description": short_text},
                    ),
                }
            ),
            max_size=2,
        ),
        "tool_choice": st.sampled_from(["none", "auto", "required"])
        | st.fixed_dictionaries(
            {"type": st.just("function"), "function": st.fixed_dictionaries({"name": short_text})}
        ),
        "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}])
        | st.fixed_dictionaries(
            {
                "type": st.just("json_schema"),
                "json_schema": st.fixed_dictionaries(
                    {"name": short_text}, optional={"schema": schemas, "strict": st.booleans()}
                ),
            }
        ),
        "max_tokens": st.integers(1, 10**7),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "stop": st.none() | short_text | st.lists(short_text, max_size=5),
        "seed": st.integers(-(2**63), 2**63),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    },
)


async def test_requests_translated_for_gemini_and_cohere_never_get_a_5xx(tmp_path: Path) -> None:
    """Bodies that pass freellm's checks but carry anything a client might (images that are
    not images, tool calls without ids, schemas that are not schemas, stop sequences, seeds),
    sent to a Gemini and a Cohere model: never a 5xx; what cannot be translated, or what the
    provider refuses, is a 4xx in OpenAI's shape that says which field or why."""
    async with loopback_server(tmp_path / "data", natives=True) as served:
        statuses: set[int] = set()

        @FUZZ
        @given(body=translated_bodies)
        def check(http: httpx.Client, body: dict[str, Any]) -> None:
            answer = http.post("/v1/chat/completions", content=json.dumps(body))
            statuses.add(answer.status_code)
            assert answer.status_code < 500, (body, answer.text)
            if answer.status_code >= 400:
                error = refused(answer)
                if error["code"] == "unsupported_parameter":
                    assert error["param"], error

        await in_thread(with_client, served, check)
        assert {200, 400} <= statuses, statuses
