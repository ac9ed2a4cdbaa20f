"""Replaying recorded traffic live: the real server on loopback, in front of fake providers.

Theory of operation
-------------------
:func:`replay_live` runs, in this process and on ``127.0.0.1``, what a user runs: the server
(:func:`~freellm.shell.runtime.open_runtime` and :func:`~freellm.web.server.serve_runtime`: HTTP
in, the dispatcher, the h11 transport to the providers) with a temporary data directory, and
one fake provider server (:mod:`freellm.sim.fakes`) per provider that has keys. A driver sends
every request of the trace at its arrival time, over one ``httpx`` connection pool, as a client
would. Only the providers are fakes; they enforce the catalog's *configured* caps as their true
caps, and say so in their own rate-limit headers and 429s.

Set-up:

- the config: every provider and model of ``catalog`` written into a temporary config file (so
  a user's ``--config`` is honoured), with the base URL of each provider that has keys pointed at
  its fake; the server's catalog is checked against ``catalog`` once it is loaded;
- the fakes: the flavor the fleet of the core replay gives the provider
  (:func:`freellm.sim.fleet.wire.flavor_for`), each model's caps as :class:`FakeCaps`, the caps
  of ``account`` models as the key's ``account_caps``; the keys are made up (``sim-groq-1``,
  ...) and sealed into the temporary store, as ``freellm keys add`` would;
- the requests: the trace's model, ``max_tokens``, tools, images and JSON mode; one user message
  whose size is the recorded prompt twice over: freellm's estimate of it
  (:func:`freellm.core.tokens.estimate_messages`) and the fakes' count (characters / 4) are both
  within a token of ``prompt_tokens`` (:func:`prompt_text`); it opens with ``Answer in N
  words.``, and the fakes, made with ``reply_tokens`` (their opt-in sized replies), answer with
  ``completion_tokens`` words, i.e. tokens. ``X-Session-Id`` is the request's conversation or
  ``r{index}``: the session the core replay uses;
- a warm-up: one small request to each provider before the trace's time starts, so that no
  request of the trace pays for a first connection or code run for the first time (see below).

Time is scaled on both sides. The server's clock (``clock=`` of ``open_runtime``: epoch seconds)
and the fakes' clocks (their windows and their epoch) all read one :class:`VirtualClock`,
``EPOCH + (trio.current_time() - t0) * speed``, which stands three days earlier until the
driver starts (the warm-up's usage is then out of every window). The driver sends request ``i``
at ``t0 + at_i / speed`` of trio's clock, so a trace of an hour at ``speed=60`` takes a minute
and every window (a minute, a day) holds what it holds in the trace's time. Timeouts stay real:
they are trio deadlines of the server and the client. What is measured in time (latency, time
to first byte) is converted back to virtual seconds (real seconds times ``speed``); it is the
server's and the loopback's own time, scaled: the fakes answer at once, where the core replay's
fleet models a provider's latency.

The way from the server to a fake takes scaled time too: a fake counts a call a little after
the server reserved it (the loopback's milliseconds times ``speed``), and when one call's way is
slower than the next one's, the fake may still count the first when the server's window has let
it go. freellm's minute windows free a slot up to a second late on purpose (1 s buckets), which
absorbs differences up to a second of trace time: a second divided by ``speed`` on the loopback.
That holds once warmed up (unwarmed, a first request took 2 s of trace time at 15x on a loaded
machine, and met a 429 a minute later) and at speeds the machine has room for; on a busy one a
high speed can see the odd 429 from a fake, counted as a violation (seen at 20x with five busy
processes on two cores, never at 10x), and it warns when it falls behind.

What is counted, as the core replay counts it (:class:`~freellm.sim.replay.Tally`):

- ``served``/``refused``/``failed``: the status the client got (2xx, 429, anything else; a
  request the client could not complete counts as failed);
- ``upstream_429``: the 429s the fakes sent; ``cap_violations``: the calls sent past a
  configured cap. The fakes enforce exactly the configured caps and admit nothing past them, so
  every 429 they send is such a call (as in the core replay when the truth is the config), and
  both figures are the fakes' ``rate_limited``;
- ``attempts``, the shares and the key of each served request: from the server's own record of
  each request (the dispatcher's observers; key ids named ``groq-1``, ... as the core replay
  names them);
- the per-minute timeline; ``capacity_left`` from the server's router state
  (:func:`freellm.core.quotas.quota_view`) as the first request of each minute is sent.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Final

import attrs
import httpx
import trio

from freellm.core import quotas as quotas_
from freellm.core.catalog import (
    AuthStyle,
    Catalog,
    ModelSpec,
    ProviderSpec,
    RouterSettings,
    apply_config,
    load_config_text,
)
from freellm.core.tokens import estimate_messages, estimate_text
from freellm.shell.config import bundled_catalog
from freellm.shell.dispatch import RequestLog
from freellm.shell.runtime import Runtime, open_runtime
from freellm.shell.secrets import Vault, load_master_key
from freellm.shell.store import open_store
from freellm.sim.fakes import FakeCaps, FakeProvider, open_fake_provider
from freellm.sim.fakes.replies import ChatRequest, last_user_text
from freellm.sim.fleet.wire import flavor_for
from freellm.sim.replay import EPOCH, MINUTE, PROGRESS_EVERY, TOOLS, Result, Tally, key_ids
from freellm.sim.trace import Trace, TraceRequest
from freellm.web.server import serve_runtime

__all__ = ["LiveReplay", "VirtualClock", "config_text", "prompt_text", "replay_live", "run_live"]

ANSWER_IN: Final = "Answer in {} words."
# A 1x1 transparent PNG: what a request with images carries (freellm prices an image flat).
PIXEL: Final = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhf"
    "DwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
CLIENT_TIMEOUT_S: Final = 600.0  # real seconds; the server's own deadlines come first
LOGS_GRACE_S: Final = 10.0  # real seconds for the server to record the last answers' requests
LATE_S: Final = 1.0  # trace seconds: a driver this late (p95) says so
WARM_UP_BEFORE_S: Final = 3 * 86_400.0  # the warm-up's time: out of every window by EPOCH

logger = logging.getLogger("freellm.sim.live")


# --- time ---------------------------------------------------------------------------------------


@attrs.define
class VirtualClock:
    """Epoch seconds that run `speed` times faster than trio's clock, from ``EPOCH`` at
    :meth:`start`; before it they stand at `before`. Read only inside ``trio.run``."""

    speed: float
    before: float = EPOCH
    t0: float | None = None

    def start(self) -> float:
        """Start the clock now; returns trio's time of the start."""
        self.t0 = trio.current_time()
        return self.t0

    def now(self) -> float:
        if self.t0 is None:
            return self.before
        return EPOCH + (trio.current_time() - self.t0) * self.speed


# --- prompts ------------------------------------------------------------------------------------

# What builds a prompt to size: words " a" and spaces. freellm's estimate of " a" is about 0.78
# (0.39 for the space, 0.39 for a letter after it) and of a space after a space 0.07; the fakes
# count 1/4 per character. So " a" is dear to the estimate (0.78 for 0.5 of the fakes' tokens)
# and a space cheap (0.07 for 0.25): a mix of the two hits both counts. Trading one " a" for two
# spaces keeps the characters and takes STEP off the estimate.
_WORD, _SPACE = " a", " "


@lru_cache(maxsize=1)
def _step() -> float:
    """What the estimate loses when one word gives way to two spaces, in a long run."""
    runs = 20_000
    word, spaces = estimate_text("a" + _WORD * runs), estimate_text("a" + _SPACE * 2 * runs)
    return (word - spaces) / runs


def _messages(text: str, images: bool) -> list[dict[str, Any]]:
    if not images:
        return [{"role": "user", "content": text}]
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": PIXEL}}]
    return [{"role": "user", "content": parts}]


def prompt_text(
    prompt_tokens: int, completion_tokens: int, *, tools: bool = False, images: bool = False
) -> str:
    """The text of a request's one user message: ``Answer in N words.``, then words.

    freellm's estimate of the request (the message, with the tools of a request with tools and
    an image for one with images) comes within a token of `prompt_tokens`, and so does the
    fakes' count of it (characters / 4), where it can: a prompt below about 14 tokens is the
    opening sentence alone, and the fakes do not count tools and images, so they count that much
    less for a request that has them.
    """
    words, spaces = _layout(prompt_tokens, completion_tokens, tools, images)
    return ANSWER_IN.format(completion_tokens) + _WORD * words + _SPACE * spaces


@lru_cache(maxsize=8192)
def _layout(
    prompt_tokens: int, completion_tokens: int, tools: bool, images: bool
) -> tuple[int, int]:
    """How many words and spaces :func:`prompt_text` puts after its head."""
    head = ANSWER_IN.format(completion_tokens)
    tool_list = list(TOOLS) if tools else None
    extra = estimate_messages(_messages(head, images), tool_list) - estimate_messages(
        _messages(head, False)
    )
    room = 4 * (prompt_tokens - extra) - len(head)  # the characters after the head
    if room <= 0:
        return 0, 0

    def miss(words: int) -> int:
        text = head + _WORD * words + _SPACE * (room - 2 * words)
        return prompt_tokens - estimate_messages(_messages(text, images), tool_list)

    step = _step()
    words = round(miss(0) / step)
    best = (math.inf, 0)
    for _ in range(4):  # the estimate is linear in words, but for its rounding: 1-2 rounds
        words = min(max(words, 0), room // 2)
        missed = miss(words)
        if abs(missed) < best[0]:
            best = (abs(missed), words)
        moved = round(missed / step)
        if moved == 0:
            break
        words += moved
    words = best[1]
    return words, room - 2 * words


def _asked_length(request: ChatRequest) -> int | None:
    """The reply's length a replayed prompt asks for (the fakes' ``reply_tokens``)."""
    first = last_user_text(request.messages).partition(".")[0]
    words = first.split(" ")
    if len(words) == 4 and words[0] == "Answer" and words[2].isdigit():
        return int(words[2])
    return None


def request_body(request: TraceRequest) -> bytes:
    """The JSON body a replayed request sends."""
    text = prompt_text(
        request.prompt_tokens, request.completion_tokens, tools=request.tools, images=request.images
    )
    body: dict[str, Any] = {"model": request.model, "messages": _messages(text, request.images)}
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.tools:
        body["tools"] = list(TOOLS)
    if request.json:
        body["response_format"] = {"type": "json_object"}
    return json.dumps(body, separators=(",", ":")).encode()


# --- the config and the fakes -------------------------------------------------------------------


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    enum_value = getattr(value, "value", None)
    if isinstance(enum_value, str):
        return _toml(enum_value)
    raise TypeError(f"no TOML for {value!r}")


def _model_lines(provider: str, model: ModelSpec) -> list[str]:
    lines = [f"[[providers.{provider}.models]]", f"id = {_toml(model.id)}"]
    for name in ("rpm", "rpd", "tpm", "tpd", "concurrency"):
        value = getattr(model.caps, name)
        if value is not None:
            lines.append(f"{name} = {value}")
    for name in ("context", "max_output", "dimensions", "max_batch"):
        value = getattr(model, name)
        if value is not None:
            lines.append(f"{name} = {value}")
    for name in ("tools", "vision", "json", "account", "reasoning", "custom_dimensions"):
        lines.append(f"{name} = {_toml(getattr(model, name))}")
    lines.append(f"kind = {_toml(model.kind)}")
    return lines


def config_text(catalog: Catalog, base_urls: Mapping[str, str]) -> str:
    """A config file that gives, over the bundled catalog, ``catalog`` with the providers of
    `base_urls` pointed there: every provider and model with its caps, the router settings and
    the timeouts."""
    lines: list[str] = []
    for spec in catalog.providers.values():
        lines += [
            f"[providers.{spec.id}]",
            f"name = {_toml(spec.name)}",
            f"base_url = {_toml(base_urls.get(spec.id, spec.base_url))}",
            f"dialect = {_toml(spec.dialect)}",
            f"auth = {_toml(spec.auth)}",
            f"daily_reset = {_toml(spec.daily_reset)}",
        ]
        if spec.headers:
            lines.append(f"headers = {_toml(spec.headers)}")
        for model in spec.models.values():
            lines += ["", *_model_lines(spec.id, model)]
        lines.append("")
    lines.append("[router]")
    for field in attrs.fields(RouterSettings):
        value = getattr(catalog.settings, field.name)
        if field.name == "aliases":
            value = dict(value)  # a table: pattern = target, in order
        lines.append(f"{field.name} = {_toml(value)}")
    lines += ["", "[timeouts]"]
    for field in attrs.fields(type(catalog.timeouts)):
        lines.append(f"{field.name}_s = {_toml(getattr(catalog.timeouts, field.name))}")
    lines += ["", "[store]", f"keep_days = {catalog.store.keep_days}"]
    lines += ["", "[dashboard]", f"session_hours = {_toml(catalog.dashboard.session_hours)}", ""]
    return "\n".join(lines)


def _check_catalog(catalog: Catalog, providers: Sequence[str]) -> None:
    """Raises ``ValueError`` if the server, given :func:`config_text`, would route otherwise than
    ``catalog`` (the server applies the config over the bundled catalog)."""
    loaded = apply_config(bundled_catalog(), load_config_text(config_text(catalog, {})))
    for provider in providers:
        ours = catalog.providers[provider]
        theirs = loaded.providers.get(provider)
        if theirs is None or attrs.evolve(theirs, base_url=ours.base_url) != ours:
            raise ValueError(
                f"live mode cannot give the server this catalog's {provider!r} (the config file "
                "it writes applies over the bundled catalog, which can add models, not remove them)"
            )
    if loaded.settings != catalog.settings or loaded.timeouts != catalog.timeouts:
        raise ValueError("live mode cannot give the server this catalog's router settings")


def fake_caps(spec: ProviderSpec) -> tuple[dict[str, FakeCaps], FakeCaps | None]:
    """The fakes' caps for `spec`: per model, and across the key's models (``account``).

    Raises ``ValueError`` when the fakes cannot enforce what the catalog configures: account
    caps beside per-model ones, or account models with different caps (a fake has one account
    counter, across all its models).
    """
    models: dict[str, FakeCaps] = {}
    account: set[FakeCaps] = set()
    for model in spec.models.values():
        caps = model.caps
        fake = FakeCaps(rpm=caps.rpm, rpd=caps.rpd, tpm=caps.tpm, tpd=caps.tpd)
        if model.account:
            account.add(fake)
            fake = FakeCaps()
        models[model.id] = fake
    if not account:
        return models, None
    if len(account) > 1 or not all(model.account for model in spec.models.values()):
        raise ValueError(
            f"live mode needs {spec.id!r}'s models to be all account models with the same caps, "
            "or none: a fake provider has one account counter across all its models"
        )
    return models, account.pop()


def _secret(spec: ProviderSpec, key_id: str) -> str:
    """The made-up secret of key `key_id` (``sim-groq-1``), as freellm stores it."""
    secret = f"sim-{key_id}"
    return f"sim-account:{secret}" if spec.auth is AuthStyle.CLOUDFLARE else secret


def _fake_secret(spec: ProviderSpec, key_id: str) -> str:
    """The part of :func:`_secret` that reaches the provider (Cloudflare's is after a ``:``)."""
    return _secret(spec, key_id).rpartition(":")[2]


def _seal(vault: Vault, provider: str, secret: str, key_id: str) -> bytes:
    return vault.seal(key_id, provider, secret)


# --- the replay ---------------------------------------------------------------------------------


@attrs.define
class _Answer:
    """What the client saw of one request (times on trio's clock)."""

    status: int
    request_id: str | None
    sent: float
    first_byte: float
    done: float


async def replay_live(
    trace: Trace,
    catalog: Catalog,
    keys: Mapping[str, int],
    *,
    speed: float = 1.0,
    seed: int = 0,
    concurrency: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> Result:
    """Replay ``trace`` through the real server in front of fake providers, ``speed`` times
    faster than recorded, with ``keys`` (provider: how many keys) and at most ``concurrency``
    requests in flight; returns the figures with ``mode="live"`` and ``policy="freellm"``.

    ``seed`` seeds the fakes (they draw only for injected faults, and none are injected).
    ``progress(done, total)`` is called as in the core replay. ``seconds`` of the result is the
    wall time from the first request sent to the last answer. Runs under trio. Raises
    ``ValueError`` for a speed or concurrency out of range, a provider the catalog does not
    have, a catalog the fakes cannot enforce (:func:`fake_caps`) or that the config file cannot
    give the server.
    """
    run = await run_live(
        trace,
        catalog,
        keys,
        speed=speed,
        seed=seed,
        concurrency=concurrency,
        progress=progress,
    )
    return run.result


@attrs.frozen
class LiveReplay:
    """A live replay's figures, and when the server took each request of the trace.

    `taken_at` holds, per request of the trace, the time on the server's clock when its
    dispatcher took the request, in the trace's seconds (its ``at`` when the machine kept up;
    later when the driver or the server fell behind), or None for a request the server did not
    record (the client got no answer).
    """

    result: Result
    taken_at: tuple[float | None, ...]


async def run_live(
    trace: Trace,
    catalog: Catalog,
    keys: Mapping[str, int],
    *,
    speed: float = 1.0,
    seed: int = 0,
    concurrency: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> LiveReplay:
    """:func:`replay_live`, with when the server took each request (:class:`LiveReplay`)."""
    if not (0 < speed < math.inf):
        raise ValueError(f"speed must be a finite number > 0, not {speed!r}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, not {concurrency!r}")
    ids = key_ids(keys)
    for provider in ids:
        if provider not in catalog.providers:
            raise ValueError(f"{provider!r} is not a provider of the catalog")
    caps = {provider: fake_caps(catalog.providers[provider]) for provider in ids}
    _check_catalog(catalog, list(ids))
    clock = VirtualClock(speed, before=EPOCH - WARM_UP_BEFORE_S)
    encryption_key = secrets.token_hex(32)
    data_dir = Path(
        await trio.to_thread.run_sync(partial(tempfile.mkdtemp, prefix="freellm-live-"))
    )
    try:
        async with AsyncExitStack() as stack:
            fakes: dict[str, FakeProvider] = {}
            for provider, some in ids.items():
                spec = catalog.providers[provider]
                models, account = caps[provider]
                fakes[provider] = await stack.enter_async_context(
                    open_fake_provider(
                        flavor_for(spec),
                        keys=[_fake_secret(spec, key_id) for key_id in some],
                        models=models,
                        account_caps=account,
                        clock=clock.now,
                        epoch=clock.now,
                        seed=seed,
                        record=False,
                        reply_tokens=_asked_length,
                    )
                )
            labels = await _store_keys(data_dir, catalog, ids, encryption_key)
            config_path = data_dir / "freellm.toml"
            base_urls = {provider: fake.base_url for provider, fake in fakes.items()}
            await trio.Path(config_path).write_text(
                config_text(catalog, base_urls), encoding="utf-8"
            )
            runtime = await stack.enter_async_context(
                open_runtime(
                    data_dir,
                    config_path,
                    env={"ENCRYPTION_KEY": encryption_key},
                    clock=clock.now,
                    probes=False,
                )
            )
            nursery = await stack.enter_async_context(trio.open_nursery())
            url = await nursery.start(serve_runtime, runtime, "127.0.0.1", 0)
            try:
                firsts = {p: next(iter(catalog.providers[p].models), None) for p in fakes}
                targets = [f"{p}/{model}" for p, model in firsts.items() if model is not None]
                return await _drive(
                    trace, runtime, url, clock, labels, fakes, targets, concurrency, progress
                )
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(partial(shutil.rmtree, data_dir, ignore_errors=True))


async def _store_keys(
    data_dir: Path, catalog: Catalog, ids: Mapping[str, Sequence[str]], encryption_key: str
) -> dict[str, str]:
    """Seal the made-up keys into the store; returns the store's key ids to our names."""
    vault = Vault(load_master_key(data_dir, encryption_key))
    labels: dict[str, str] = {}
    async with open_store(data_dir / "freellm.db") as store:
        for provider, some in ids.items():
            spec = catalog.providers[provider]
            for key_id in some:
                seal = partial(_seal, vault, provider, _secret(spec, key_id))
                record = await store.add_key(provider, key_id, seal)
                labels[record.id] = key_id
    return labels


async def _drive(
    trace: Trace,
    runtime: Runtime,
    url: str,
    clock: VirtualClock,
    labels: Mapping[str, str],
    fakes: Mapping[str, FakeProvider],
    warm_up: Sequence[str],
    concurrency: int,
    progress: Callable[[int, int], None] | None,
) -> LiveReplay:
    requests = trace.requests
    total = len(requests)
    speed = clock.speed
    tally = Tally()
    answers: list[_Answer | None] = [None] * total
    logs: dict[str, RequestLog] = {}
    logged = trio.Event()
    expected = [math.inf]

    warm_ups: set[str] = set()

    def observe(entry: RequestLog) -> None:
        if entry.id in warm_ups:
            return
        logs[entry.id] = entry
        if len(logs) >= expected[0]:
            logged.set()

    slots = trio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"authorization": f"Bearer {runtime.unified_key}", "content-type": "application/json"}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=CLIENT_TIMEOUT_S, trust_env=False
    ) as client:

        async def send(index: int, request: TraceRequest) -> None:
            try:
                session = request.conversation or f"r{index}"
                sent = trio.current_time()
                status, request_id, first = 0, None, sent
                try:
                    async with client.stream(
                        "POST",
                        "/v1/chat/completions",
                        content=request_body(request),
                        headers={"x-session-id": session},
                    ) as response:
                        first = trio.current_time()
                        await response.aread()
                        status, request_id = (
                            response.status_code,
                            response.headers.get("x-request-id"),
                        )
                except httpx.HTTPError:
                    pass  # no answer: counted as failed
                answers[index] = _Answer(status, request_id, sent, first, trio.current_time())
            finally:
                slots.release()

        warm_ups.update(await _warm_up(client, warm_up))
        rate_limited = sum(fake.rate_limited for fake in fakes.values())
        dispatcher = runtime.dispatcher
        dispatcher.observers = (*dispatcher.observers, observe)
        started_wall = time.perf_counter()
        start = clock.start()
        minute = -1
        async with trio.open_nursery() as nursery:
            for index, request in enumerate(requests):
                await trio.sleep_until(start + request.at / speed)
                await slots.acquire()
                if int(request.at // MINUTE) != minute:
                    minute = int(request.at // MINUTE)
                    view = quotas_.quota_view(runtime.holder.state, now=clock.now())
                    tally.capacity[minute] = {
                        name: view.capacity.window(name).left for name in quotas_.WINDOWS
                    }
                nursery.start_soon(send, index, request)
                if progress is not None and index % PROGRESS_EVERY == 0:
                    progress(index, total)
        seconds = time.perf_counter() - started_wall
    expected[0] = sum(1 for a in answers if a is not None and a.request_id is not None)
    if len(logs) < expected[0]:
        with trio.move_on_after(LOGS_GRACE_S):
            await logged.wait()
    if progress is not None:
        progress(total, total)
    taken: list[float | None] = []
    for index, request in enumerate(requests):
        answer = answers[index]
        assert answer is not None
        entry = logs.get(answer.request_id) if answer.request_id is not None else None
        tally.ended(
            request,
            answer.status,
            attempts=len(entry.attempts) if entry is not None else 0,
            routed=_routed(entry, labels),
            latency_s=(answer.done - answer.sent) * speed,
            ttft_s=(answer.first_byte - answer.sent) * speed,
        )
        tally.attempts += len(entry.attempts) if entry is not None else 0
        taken.append(entry.at - EPOCH if entry is not None else None)
    rate_limited = sum(fake.rate_limited for fake in fakes.values()) - rate_limited
    tally.upstream_429 = rate_limited
    tally.cap_violations = rate_limited
    _report_lag([t - r.at for t, r in zip(taken, requests, strict=True) if t is not None])
    result = tally.result(policy="freellm", mode="live", seconds=seconds)
    return LiveReplay(result, tuple(taken))


async def _warm_up(client: httpx.AsyncClient, targets: Sequence[str]) -> list[str]:
    """One small request to each target (``provider/model``), before the trace's time starts
    (the clock stands days earlier: out of every window by then); returns their request ids.

    The first request over a path costs more (connections opened, code run for the first time):
    a first call that reached its fake a second late in the trace's time would be counted there a
    second after the server's ledger counted it, and could meet a 429 a minute later.
    """
    ids = []
    for target in targets:
        request = TraceRequest(at=0.0, prompt_tokens=50, completion_tokens=5, model=target)
        body, session = request_body(request), {"x-session-id": f"warm-up {target}"}
        async with client.stream(
            "POST", "/v1/chat/completions", content=body, headers=session
        ) as response:
            await response.aread()
            ids.append(response.headers.get("x-request-id", ""))
    return ids


def _routed(entry: RequestLog | None, labels: Mapping[str, str]) -> tuple[str, str, str] | None:
    """``(provider, model, key)`` of the attempt that answered a served request."""
    if entry is None or entry.routed_via is None or not entry.attempts:
        return None
    last = entry.attempts[-1]
    return last.provider, last.model, labels.get(last.key_id, last.key_id)


def _report_lag(late: list[float]) -> None:
    """Say when the server took requests late (`late`: how late each was, in trace seconds): the
    trace was then stretched, the same requests over more time, and the figures are a lighter
    load's."""
    if not late:
        return
    ordered = sorted(late)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    if p95 > LATE_S:
        logger.warning(
            "the live replay fell behind the trace: the server took requests up to %.1f s late "
            "in the trace's time (95%% of them within %.1f s); a lower speed replays it as "
            "recorded",
            ordered[-1],
            p95,
        )
