"""The faults the fault matrix (tests/e2e/test_fault_matrix.py) needs of the fakes, in every
dialect, as a plain HTTP client sees them: a reset after the head, a 429 with no retry hint,
and the two ports that cannot be connected to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from freellm.core.signals import parse_gemini_error, parse_ratelimit_headers, parse_retry_after
from freellm.sim.fakes import (
    ALL_FLAVORS,
    FakeCaps,
    FakeProvider,
    FaultKind,
    open_closed_port,
    open_fake_provider,
    open_silent_port,
)

KEY = "sk-fake-fault-kinds-key"
MODEL = "fault-model"
NOW = 1_700_000_000.0


def request_for(flavor: str, fake: FakeProvider, *, stream: bool) -> httpx.Request:
    """A chat request in `flavor`'s own wire format."""
    if flavor == "gemini":
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
        url = f"{fake.base_url}/models/{MODEL}:{verb}"
        return httpx.Request("POST", url, json=body, headers={"x-goog-api-key": KEY})
    path = "/v2/chat" if flavor == "cohere" else "/chat/completions"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "stream": stream}
    headers = {"authorization": f"Bearer {KEY}"}
    return httpx.Request("POST", fake.base_url + path, json=body, headers=headers)


async def read_raw(response: httpx.Response, into: list[bytes]) -> None:
    async for data in response.aiter_raw():
        into.append(data)


@asynccontextmanager
async def fake_of(flavor: str) -> AsyncIterator[tuple[FakeProvider, httpx.AsyncClient]]:
    caps = {MODEL: FakeCaps(rpm=30, tpm=100_000)}
    async with (
        open_fake_provider(flavor, keys=[KEY], models=caps, epoch=lambda: NOW) as fake,
        httpx.AsyncClient(timeout=5) as client,
    ):
        yield fake, client


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("flavor", ALL_FLAVORS)
async def test_a_reset_after_the_head_sends_the_head_and_no_byte_of_the_body(
    flavor: str, stream: bool
) -> None:
    async with fake_of(flavor) as (fake, client):
        fake.faults.next(1, FaultKind.RESET_AFTER_HEAD)
        response = await client.send(request_for(flavor, fake, stream=stream), stream=True)
        received: list[bytes] = []
        with pytest.raises(httpx.RemoteProtocolError):
            await read_raw(response, received)
        await response.aclose()
        again = await client.send(request_for(flavor, fake, stream=stream))
    assert response.status_code == 200
    content_type = response.headers["content-type"]
    assert content_type.startswith("text/event-stream" if stream else "application/json")
    if not stream:
        assert int(response.headers["content-length"]) > 0  # the answer's, never sent
    assert b"".join(received) == b""
    assert again.status_code == 200  # a one-shot fault: the next request is answered
    assert [(r.status, r.outcome) for r in fake.requests] == [
        (200, "reset_after_head"),
        (200, "ok"),
    ]
    assert fake.served == 1
    assert fake.in_flight == 0


@pytest.mark.parametrize("flavor", ALL_FLAVORS)
async def test_a_429_without_retry_after_gives_no_hint_of_when(flavor: str) -> None:
    async with fake_of(flavor) as (fake, client):
        # A served request first, so that the flavors that report caps have a standing to say.
        assert (await client.send(request_for(flavor, fake, stream=False))).status_code == 200
        fake.faults.next(1, FaultKind.RATE_LIMIT, retry_after=None)
        bare = await client.send(request_for(flavor, fake, stream=False))
        fake.faults.next(1, FaultKind.RATE_LIMIT, retry_after=7)
        hinted = await client.send(request_for(flavor, fake, stream=False))
    assert (bare.status_code, hinted.status_code) == (429, 429)
    headers = {name.lower(): value for name, value in bare.headers.items()}
    assert parse_retry_after(headers, now=NOW) is None
    assert not [name for name in headers if "reset" in name or name.startswith("retry-after")]
    assert all(c.reset_at is None for c in parse_ratelimit_headers(headers, now=NOW))
    assert body_delay(bare.content) is None
    for hint in ("try again in", "retry in", "retryDelay"):
        assert hint.lower() not in bare.text.lower()
    # The same 429 with a hint says it where the flavor says it (Cohere's never does).
    hinted_headers = {name.lower(): value for name, value in hinted.headers.items()}
    said = {
        "retry-after": parse_retry_after(hinted_headers, now=NOW) is not None,
        "reset": any(c.reset_at for c in parse_ratelimit_headers(hinted_headers, now=NOW)),
        "body": body_delay(hinted.content) is not None,
    }
    expected = {
        "openai": {"retry-after"},
        "groq": {"retry-after", "reset"},
        "cerebras": {"reset"},
        "openrouter": {"reset"},
        "gemini": {"body"},
        "cohere": set(),
    }
    assert {where for where, yes in said.items() if yes} == expected[flavor]
    assert fake.rate_limited == 2


def body_delay(body: bytes) -> float | None:
    """The delay a 429's body gives (Gemini's way, the only one freellm reads), if any."""
    signal = parse_gemini_error(body)
    return None if signal is None else signal.retry_after


def test_a_negative_retry_after_is_refused() -> None:
    plan = FakeProvider("openai").faults
    with pytest.raises(ValueError, match="retry_after"):
        plan.next(1, FaultKind.RATE_LIMIT, retry_after=-1)


async def test_a_silent_port_never_completes_a_connect() -> None:
    async with open_silent_port() as origin, httpx.AsyncClient() as client:
        assert origin.startswith("http://127.0.0.1:")
        started = trio.current_time()
        with pytest.raises(httpx.ConnectTimeout):
            await client.get(origin + "/v1/models", timeout=httpx.Timeout(5, connect=0.3))
        assert trio.current_time() - started < 2  # the connect timeout, not anything later
        # A second client waits just the same: the queue stays full.
        with pytest.raises(httpx.ConnectTimeout):
            await client.get(origin + "/v1/models", timeout=httpx.Timeout(5, connect=0.3))


async def test_a_closed_port_refuses_at_once() -> None:
    async with open_closed_port() as origin, httpx.AsyncClient() as client:
        assert origin.startswith("http://127.0.0.1:")
        with trio.fail_after(2), pytest.raises(httpx.ConnectError):
            await client.get(origin + "/v1/models")
