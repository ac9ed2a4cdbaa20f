"""The live replay: the real server on loopback in front of fake providers, in scaled time; and
the fakes' sized replies it asks for."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

from freellm.core.catalog import Catalog, apply_config, load_config_text
from freellm.core.tokens import estimate_messages
from freellm.shell.config import bundled_catalog, load_catalog
from freellm.sim.fakes import FakeCaps, open_fake_provider
from freellm.sim.fakes.replies import ChatRequest, make_reply, prompt_tokens
from freellm.sim.live import (
    VirtualClock,
    config_text,
    fake_caps,
    prompt_text,
    replay_live,
    request_body,
    run_live,
)
from freellm.sim.replay import EPOCH, TOOLS, replay
from freellm.sim.trace import Trace, TraceRequest, load_trace

DATA = Path(__file__).parents[1] / "data" / "traces"
KEY = "sk-sized"

# One provider of each fake flavor family that the server speaks to differently: Gemini's native
# API, Cohere's, OpenRouter's account-wide caps, and a plain OpenAI-compatible one (GitHub).
# Their caps count requests (per minute and per day), so they bind on a few hundred requests.
KEYS = {"google": 1, "cohere": 1, "openrouter": 1, "github": 1}


def messages(text: str, images: bool = False) -> list[dict[str, Any]]:
    if not images:
        return [{"role": "user", "content": text}]
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": "x"}}]
    return [{"role": "user", "content": parts}]


# -- core and live agree -------------------------------------------------------------------------


async def test_core_and_live_serve_the_same_slice_of_a_real_trace() -> None:
    """The first 250 requests (72 s) of the Azure conversation trace, replayed live at 10x
    (about 7 s) and in the core, with keys whose caps bind (half the requests are refused).

    The core replays the slice as the live server took it: each request at the time the server's
    clock read when its dispatcher took it. On a machine that keeps up, that is the recorded time
    give or take a tenth of a second, and the core replay of the recorded slice gives the same
    figure (126 of 250); on a loaded one the driver and the server fall behind (the replay
    warns) and serve a stretched slice, and the comparison still compares the two request paths,
    not this machine's speed.

    Tolerance: the served counts may differ by max(3, 2% of the requests). The server admits a
    request a little after its dispatcher took it, on a clock that runs 10 times faster than the
    real one: a request that lands on the other side of a rolling minute's edge from the
    admission it waits for can change one admission (and the one that takes its slot a minute
    later). Measured: equal, on an idle machine and with five processes busy on its two cores.
    These caps count requests, so the fakes answering at once (where the core's fleet models a
    provider's latency) changes nothing: the core replay gives the same figure with any latency.

    No cap violations in either. A fake counts a call when it gets it, a little after the
    server's ledger counted it; if one call's way took longer than the next one's by more than
    the margin freellm's minute windows keep (they free a slot up to a second late), the fake
    would still count the first when the server let it go, and refuse the second. At 10x that
    takes 100 ms of difference on the loopback: seen at 20x with five busy processes on the two
    cores, never at 10x.
    """
    full = load_trace(DATA / "azure_llm_2023_conv.csv")
    trace = Trace(full.requests[:250], full.source)
    catalog = bundled_catalog()
    run = await run_live(trace, catalog, KEYS, speed=10)
    live = run.result
    taken = []
    for request, at in zip(trace.requests, run.taken_at, strict=True):
        assert at is not None  # the server took every request
        taken.append(attrs.evolve(request, at=at))
    taken.sort(key=lambda request: request.at)
    core = replay(Trace(tuple(taken), "as the server took it"), catalog, KEYS)
    recorded = replay(trace, catalog, KEYS)
    assert live.mode == "live"
    assert live.policy == "freellm"
    assert core.requests == live.requests == 250
    assert core.refused > 60  # demand above capacity: the caps bind
    tolerance = max(3, math.ceil(0.02 * core.requests))
    assert abs(core.served - live.served) <= tolerance, (core.served, live.served)
    assert live.served + live.refused + live.failed == 250
    assert live.failed == 0
    assert core.cap_violations == live.cap_violations == 0
    assert live.upstream_429 == 0
    assert live.attempts >= live.served
    assert set(live.shares["provider"]) == set(KEYS)
    assert set(live.shares["key"]) == {f"{provider}-1" for provider in KEYS}
    assert [row["arrivals"] for row in live.timeline] == [
        row["arrivals"] for row in recorded.timeline
    ]
    assert all(row["capacity_left"] is not None for row in live.timeline)
    assert live.latency_ms["p50"] is not None
    assert live.seconds > 0


async def test_every_request_of_a_live_replay_is_answered_and_counted() -> None:
    """Conversations stay on their session, models named by the request are honoured, and
    tools, images and JSON mode reach the fakes (the catalog's models serve them all)."""
    requests = [
        TraceRequest(at=0.0, prompt_tokens=300, completion_tokens=40, conversation="c1"),
        TraceRequest(at=1.0, prompt_tokens=500, completion_tokens=20, conversation="c1"),
        TraceRequest(at=2.0, prompt_tokens=200, completion_tokens=10, tools=True),
        TraceRequest(at=3.0, prompt_tokens=1200, completion_tokens=10, images=True),
        TraceRequest(at=4.0, prompt_tokens=100, completion_tokens=10, json=True),
        TraceRequest(at=5.0, prompt_tokens=100, completion_tokens=5, max_tokens=50),
        TraceRequest(at=6.0, prompt_tokens=100, completion_tokens=5, model="no-such-model"),
    ]
    trace = Trace(tuple(requests), "test")
    calls: list[tuple[int, int]] = []
    live = await replay_live(
        trace,
        bundled_catalog(),
        {"github": 1, "google": 1},
        speed=20,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert (live.requests, live.served, live.refused, live.failed) == (7, 6, 0, 1)
    assert calls[0] == (0, 7)
    assert calls[-1] == (7, 7)
    assert live.fallbacks_per_served == 0.0


async def test_live_replay_refuses_what_it_cannot_replay() -> None:
    trace = Trace((TraceRequest(at=0.0, prompt_tokens=10, completion_tokens=1),), "test")
    with pytest.raises(ValueError, match="speed"):
        await replay_live(trace, bundled_catalog(), {"groq": 1}, speed=0)
    with pytest.raises(ValueError, match="concurrency"):
        await replay_live(trace, bundled_catalog(), {"groq": 1}, concurrency=0)
    with pytest.raises(ValueError, match="nowhere"):
        await replay_live(trace, bundled_catalog(), {"nowhere": 1})


# -- time ----------------------------------------------------------------------------------------


async def test_the_virtual_clock_stands_until_started_then_runs_speed_times_faster(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = VirtualClock(60.0)
    assert clock.now() == EPOCH
    await trio.sleep(5)
    assert clock.now() == EPOCH
    clock.start()
    await trio.sleep(1.5)
    assert clock.now() == EPOCH + 90.0


# -- prompts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [18, 19, 50, 107, 374, 1000, 4808, 40160])
def test_a_prompt_counts_its_size_for_freellm_and_for_the_fakes(size: int) -> None:
    text = prompt_text(size, 44)
    assert text.startswith("Answer in 44 words.")
    assert abs(estimate_messages(messages(text)) - size) <= 1
    assert prompt_tokens(messages(text)) == size


@pytest.mark.parametrize(("tools", "images"), [(True, False), (False, True), (True, True)])
def test_freellm_estimates_a_prompt_with_tools_or_images_at_its_size(
    tools: bool, images: bool
) -> None:
    text = prompt_text(2500, 10, tools=tools, images=images)
    estimate = estimate_messages(messages(text, images), list(TOOLS) if tools else None)
    assert abs(estimate - 2500) <= 1


def test_a_request_body_carries_what_the_trace_says() -> None:
    request = TraceRequest(
        at=0.0, prompt_tokens=80, completion_tokens=7, max_tokens=99, json=True, model="m"
    )
    body = json.loads(request_body(request))
    assert body["model"] == "m"
    assert body["max_tokens"] == 99
    assert body["response_format"] == {"type": "json_object"}
    assert "tools" not in body
    assert body["messages"] == [{"role": "user", "content": prompt_text(80, 7)}]


# -- sized replies (the fakes' opt-in knob) ------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 3, 250])
def test_a_sized_reply_has_that_many_words(size: int) -> None:
    request = ChatRequest(model="m", messages=({"role": "user", "content": "hi"},))
    reply = make_reply("groq", attrs.evolve(request, reply_tokens=size), 1)
    assert reply.completion_tokens == len(reply.pieces) == max(1, size)
    assert reply.text.startswith("fake-groq")
    limited = attrs.evolve(request, reply_tokens=size, max_tokens=2)
    assert make_reply("groq", limited, 1).completion_tokens == min(2, max(1, size))


def test_a_reply_is_sized_only_when_asked() -> None:
    request = ChatRequest(model="m", messages=({"role": "user", "content": "hi"},))
    assert make_reply("groq", request, 1).text == "fake-groq says: hi"


async def _completion_tokens(flavor: str, model: str, text: str) -> int:
    async with (
        open_fake_provider(
            flavor,
            keys=[KEY],
            models={model: FakeCaps()},
            reply_tokens=lambda request: 77 if "sized" in request.messages[-1]["content"] else None,
        ) as fake,
        httpx.AsyncClient(base_url=fake.base_url, timeout=10) as client,
    ):
        if flavor == "gemini":
            body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
            response = await client.post(
                f"/models/{model}:generateContent",
                json=body,
                headers={"x-goog-api-key": KEY},
            )
            return int(response.json()["usageMetadata"]["candidatesTokenCount"])
        body = {"model": model, "messages": [{"role": "user", "content": text}]}
        auth = {"authorization": f"Bearer {KEY}"}
        if flavor == "cohere":
            response = await client.post("/v2/chat", json=body, headers=auth)
            return int(response.json()["usage"]["billed_units"]["output_tokens"])
        response = await client.post("/chat/completions", json=body, headers=auth)
        return int(response.json()["usage"]["completion_tokens"])


@pytest.mark.parametrize(
    ("flavor", "model"),
    [("groq", "m"), ("gemini", "gemini-2.5-flash-lite"), ("cohere", "command-a-03-2025")],
)
async def test_a_fake_made_with_reply_tokens_answers_at_that_length(
    flavor: str, model: str
) -> None:
    assert await _completion_tokens(flavor, model, "sized please") == 77
    assert await _completion_tokens(flavor, model, "as usual") < 10


# -- the config and the fakes' caps --------------------------------------------------------------


def test_the_config_gives_the_server_the_catalog_with_the_fakes_urls(tmp_path: Path) -> None:
    catalog = apply_config(
        bundled_catalog(),
        load_config_text(
            """
            [providers.groq]
            [[providers.groq.models]]
            id = "mine"
            rpm = 7
            tpm = 1234
            max_output = 99

            [providers.own]
            dialect = "openai"
            base_url = "http://127.0.0.1:9/v1"
            headers = { "X-Team" = "a \\"quoted\\" name" }
            [[providers.own.models]]
            id = "own/model:free"
            rpd = 5
            account = true

            [router]
            chain = ["groq/mine", "own/own/model:free"]
            sticky_ttl_s = 60
            """
        ),
    )
    path = tmp_path / "freellm.toml"
    path.write_text(config_text(catalog, {"groq": "http://127.0.0.1:1/openai/v1"}))
    loaded = load_catalog(path)
    assert loaded.providers["groq"].base_url == "http://127.0.0.1:1/openai/v1"
    fixed = attrs.evolve(loaded.providers["groq"], base_url=catalog.providers["groq"].base_url)
    assert fixed == catalog.providers["groq"]
    assert loaded.providers["own"] == catalog.providers["own"]
    assert loaded.settings == catalog.settings
    assert loaded.timeouts == catalog.timeouts
    assert loaded.providers == {**catalog.providers, "groq": loaded.providers["groq"]}


async def test_a_catalog_the_config_cannot_give_is_refused() -> None:
    catalog = apply_config(
        Catalog(),
        load_config_text(
            """
            [providers.groq]
            dialect = "openai"
            base_url = "http://127.0.0.1:9/v1"
            [[providers.groq.models]]
            id = "only-this-one"
            """
        ),
    )
    trace = Trace((TraceRequest(at=0.0, prompt_tokens=10, completion_tokens=1),), "test")
    with pytest.raises(ValueError, match="bundled catalog"):
        await replay_live(trace, catalog, {"groq": 1})


def test_account_models_share_the_fakes_account_caps() -> None:
    spec = bundled_catalog().providers["openrouter"]
    models, account = fake_caps(spec)
    assert set(models) == set(spec.models)
    assert all(caps == FakeCaps() for caps in models.values())
    assert account == FakeCaps(rpm=20, rpd=50)
    groq = bundled_catalog().providers["groq"]
    models, account = fake_caps(groq)
    assert account is None
    assert models["llama-3.3-70b-versatile"] == FakeCaps(rpm=30, rpd=1000, tpm=12000, tpd=100000)


def test_account_caps_the_fakes_cannot_enforce_are_refused() -> None:
    catalog = apply_config(
        bundled_catalog(),
        load_config_text(
            """
            [providers.openrouter]
            [[providers.openrouter.models]]
            id = "paid/model"
            rpm = 100
            """
        ),
    )
    with pytest.raises(ValueError, match="account"):
        fake_caps(catalog.providers["openrouter"])
