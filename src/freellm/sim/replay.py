"""Replaying recorded traffic through freellm's own routing, in virtual time.

Theory of operation
-------------------
A replay is a discrete-event simulation. Every request of the trace is a *process*: a generator
that runs at its arrival time, does what it does at that instant, and yields the virtual time at
which it wants to go on (an upstream answer arriving). :func:`run` keeps a heap of the processes
waiting, and moves the shared clock (:attr:`Context.now`, epoch seconds) from one event to the
next, so requests overlap exactly as they did when the trace was recorded. Nothing sleeps: an
hour of traffic replays in about a second.

freellm's policy (:func:`freellm_process`) is the server's own request path with the HTTP taken
out, driven the way :mod:`freellm.shell.dispatch` drives it: one
:class:`~freellm.core.exchange.Exchange` per request (the plan, admission and reservation in the
ledger, the attempt machine, settlement, sessions), against one router state that every request
shares and replaces, as the server's state holder does. Only the upstream differs: a
:class:`~freellm.sim.fleet.Fleet` of simulated providers answers each attempt with the bytes the
provider would send, enforcing its *true* caps, after the time its latency model says.

freellm's policy routes with the strategy of the catalog (``[router] strategy``);
``freellm-chain`` and ``freellm-capacity`` are the same policy with that strategy forced, so the
two strategies compare on the same trace, keys and fleet.

Other policies (the baselines of :mod:`freellm.sim.baselines`) are processes too, with the same
:class:`Context`: the same fleet, clock and :class:`Tally`, so their figures compare one to one.

What is counted (:class:`Tally`, then :class:`Result`):

- ``served``: requests answered 2xx; ``refused``: answered 429 (no capacity anywhere: the
  client would retry later); ``failed``: any other answer (every attempt failed upstream, 502;
  a model nobody serves, 404; no key at all, 503);
- ``upstream_429``: attempts the fleet refused (wasted calls), ``cap_violations``: attempts sent
  past a key's *configured* caps (zero for freellm when the config is right);
- ``fallbacks``: attempts beyond the first, over all served requests;
- shares of served requests per provider, ``provider/model`` and key; latency and time to first
  token percentiles (of served requests, from arrival); a per-minute timeline of arrivals,
  served, refused and failed, with the capacity left across all keys (freellm's ledger) at each
  minute's start.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from functools import partial
from typing import Any, Final, Protocol

import attrs

from freellm.core import quotas as quotas_
from freellm.core.attempt import FINAL, Phase
from freellm.core.catalog import Catalog, Strategy
from freellm.core.chat import ChatShape
from freellm.core.exchange import Effect, Exchange, Send, Start
from freellm.core.router import Key, RouterState, Topology
from freellm.shell.state import StateHolder
from freellm.sim.fleet import Fleet, SimAnswer
from freellm.sim.trace import Trace, TraceRequest

__all__ = [
    "EPOCH",
    "FREELLM_POLICIES",
    "Context",
    "Policy",
    "Result",
    "Tally",
    "freellm_process",
    "key_ids",
    "replay",
    "run",
]

EPOCH: Final = 1_767_268_800.0
"""Where virtual time starts: 2026-01-01 12:00 UTC (a trace's ``at`` is added to it)."""
MINUTE: Final = 60.0
PROGRESS_EVERY: Final = 500
FREELLM_POLICIES: Final = {
    "freellm": None,
    "freellm-chain": Strategy.CHAIN,
    "freellm-capacity": Strategy.CAPACITY,
}
"""freellm's own policies: the configured strategy, or one forced."""

Process = Generator[float, None, None]


class Policy(Protocol):
    """Makes the process of one request: ``policy(context, request, index)``."""

    def __call__(self, context: Context, request: TraceRequest, index: int) -> Process: ...


# --- what is counted ----------------------------------------------------------------------------


@attrs.define
class Tally:
    """Counts as requests end; :meth:`result` sums them up."""

    requests: int = 0
    served: int = 0
    refused: int = 0
    failed: int = 0
    upstream_429: int = 0
    cap_violations: int = 0
    attempts: int = 0
    fallbacks: int = 0
    by_provider: dict[str, int] = attrs.field(factory=dict)
    by_target: dict[str, int] = attrs.field(factory=dict)
    by_key: dict[str, int] = attrs.field(factory=dict)
    latency_s: list[float] = attrs.field(factory=list)
    ttft_s: list[float] = attrs.field(factory=list)
    minutes: dict[int, list[int]] = attrs.field(
        factory=dict
    )  # minute: arrivals, served, refused, failed
    minute_providers: dict[int, dict[str, int]] = attrs.field(
        factory=dict
    )  # minute: served per provider
    capacity: dict[int, dict[str, int]] = attrs.field(factory=dict)  # minute: left per window

    def attempt(self, answer: SimAnswer) -> None:
        """One call made to the fleet."""
        self.attempts += 1
        if answer.status == 429:
            self.upstream_429 += 1
        if answer.violation is not None:
            self.cap_violations += 1

    def ended(
        self,
        request: TraceRequest,
        status: int,
        *,
        attempts: int,
        routed: tuple[str, str, str] | None,
        latency_s: float,
        ttft_s: float | None,
    ) -> None:
        """One request's end: its status, how many attempts it took, and (when served) the
        ``(provider, model, key)`` that answered."""
        self.requests += 1
        row = self.minutes.setdefault(int(request.at // MINUTE), [0, 0, 0, 0])
        row[0] += 1
        if 200 <= status < 300:
            self.served += 1
            row[1] += 1
            self.fallbacks += max(0, attempts - 1)
            if routed is not None:
                provider, model, key = routed
                self.by_provider[provider] = self.by_provider.get(provider, 0) + 1
                load = self.minute_providers.setdefault(int(request.at // MINUTE), {})
                load[provider] = load.get(provider, 0) + 1
                target = f"{provider}/{model}"
                self.by_target[target] = self.by_target.get(target, 0) + 1
                self.by_key[key] = self.by_key.get(key, 0) + 1
            self.latency_s.append(latency_s)
            if ttft_s is not None:
                self.ttft_s.append(ttft_s)
        elif status == 429:
            self.refused += 1
            row[2] += 1
        else:
            self.failed += 1
            row[3] += 1

    def result(self, *, policy: str, mode: str, seconds: float) -> Result:
        served = self.served
        timeline = []
        for minute in range(min(self.minutes, default=0), max(self.minutes, default=-1) + 1):
            arrivals, ok, refused, failed = self.minutes.get(minute, [0, 0, 0, 0])
            timeline.append(
                {
                    "minute": minute,
                    "arrivals": arrivals,
                    "served": ok,
                    "refused": refused,
                    "failed": failed,
                    "by_provider": self.minute_providers.get(minute, {}),
                    "capacity_left": self.capacity.get(minute),
                }
            )
        return Result(
            policy=policy,
            mode=mode,
            requests=self.requests,
            served=served,
            refused=self.refused,
            failed=self.failed,
            upstream_429=self.upstream_429,
            cap_violations=self.cap_violations,
            attempts=self.attempts,
            fallbacks_per_served=self.fallbacks / served if served else 0.0,
            shares={
                "provider": _shares(self.by_provider, served),
                "target": _shares(self.by_target, served),
                "key": _shares(self.by_key, served),
            },
            latency_ms=_percentiles(self.latency_s),
            ttft_ms=_percentiles(self.ttft_s),
            timeline=tuple(timeline),
            seconds=seconds,
        )


@attrs.frozen
class Result:
    """A replay's figures; :meth:`to_data` gives the JSON of ``freellm replay --json``."""

    policy: str
    mode: str
    requests: int
    served: int
    refused: int
    failed: int
    upstream_429: int
    cap_violations: int
    attempts: int
    fallbacks_per_served: float
    shares: Mapping[str, Mapping[str, float]]
    latency_ms: Mapping[str, float | None]
    ttft_ms: Mapping[str, float | None]
    timeline: tuple[Mapping[str, Any], ...]
    seconds: float
    strategy: str | None = None  # freellm's routing strategy, when the policy is freellm's

    @property
    def served_fraction(self) -> float:
        return self.served / self.requests if self.requests else 0.0

    def to_data(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        data["timeline"] = list(self.timeline)
        data["shares"] = {k: dict(v) for k, v in self.shares.items()}
        data["latency_ms"] = dict(self.latency_ms)
        data["ttft_ms"] = dict(self.ttft_ms)
        data["served_fraction"] = self.served_fraction
        return data


def _shares(counts: Mapping[str, int], total: int) -> dict[str, float]:
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {name: count / total for name, count in ordered} if total else {}


def _percentiles(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "p95": None}
    ordered = sorted(samples)
    return {
        "p50": round(_rank(ordered, 0.50) * 1000, 1),
        "p95": round(_rank(ordered, 0.95) * 1000, 1),
    }


def _rank(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank percentile."""
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


# --- the simulation -----------------------------------------------------------------------------


@attrs.define
class Context:
    """What every process of one replay shares."""

    catalog: Catalog
    keys: Mapping[str, tuple[str, ...]]  # provider: its key ids
    fleet: Fleet
    tally: Tally = attrs.field(factory=Tally)
    now: float = EPOCH
    holder: StateHolder | None = None  # freellm's router state, when its policy runs
    policies: dict[object, Any] = attrs.field(
        factory=dict
    )  # what a baseline keeps between requests


def key_ids(keys: Mapping[str, int]) -> dict[str, tuple[str, ...]]:
    """Key ids for ``keys`` (provider: how many): ``groq-1``, ``groq-2``, ..."""
    return {
        provider: tuple(f"{provider}-{n}" for n in range(1, count + 1))
        for provider, count in keys.items()
        if count > 0
    }


def run(
    context: Context,
    trace: Trace,
    policy: Policy,
    *,
    progress: Callable[[int, int], None] | None = None,
    every_minute: Callable[[Context, int], None] | None = None,
) -> None:
    """Replay ``trace`` with ``policy``: every request's process, in virtual time, to the end.

    ``progress(done, total)`` is called every few hundred arrivals; ``every_minute(context,
    minute)`` at the start of each minute of the trace that has arrivals.
    """
    requests = trace.requests
    total = len(requests)
    waiting: list[tuple[float, int, Process]] = []
    order = itertools.count()
    minute = -1
    for index, request in enumerate(requests):
        arrival = EPOCH + request.at
        while waiting and waiting[0][0] <= arrival:
            _resume(context, waiting, order)
        context.now = arrival
        if every_minute is not None and int(request.at // MINUTE) != minute:
            minute = int(request.at // MINUTE)
            every_minute(context, minute)
        process = policy(context, request, index)
        _step(context, waiting, order, process)
        if progress is not None and index % PROGRESS_EVERY == 0:
            progress(index, total)
    while waiting:
        _resume(context, waiting, order)
    if progress is not None:
        progress(total, total)


def _resume(
    context: Context, waiting: list[tuple[float, int, Process]], order: itertools.count[int]
) -> None:
    at, _, process = heapq.heappop(waiting)
    context.now = at
    _step(context, waiting, order, process)


def _step(
    context: Context,
    waiting: list[tuple[float, int, Process]],
    order: itertools.count[int],
    process: Process,
) -> None:
    try:
        wake = next(process)
    except StopIteration:
        return
    heapq.heappush(waiting, (max(wake, context.now), next(order), process))


# --- freellm's policy ---------------------------------------------------------------------------

MESSAGES: Final = ({"role": "user", "content": "(a replayed request)"},)
TOOLS: Final = (
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "A tool, so that the request needs a model that calls tools.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    },
)


def freellm_process(context: Context, request: TraceRequest, index: int) -> Process:
    """One request through freellm's own request machine, as the dispatcher drives it."""
    holder = context.holder
    assert holder is not None, "freellm's policy needs the router state"
    arrival = context.now
    body: dict[str, Any] = {"model": request.model, "messages": list(MESSAGES)}
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.tools:
        body["tools"] = list(TOOLS)
    if request.json:
        body["response_format"] = {"type": "json_object"}
    shape = ChatShape(
        model=request.model,
        messages=MESSAGES,
        prompt_tokens=request.prompt_tokens,
        max_tokens=request.max_tokens,
        tools=request.tools,
        vision=request.images,
        json=request.json,
    )
    # A conversation stays on its model; a request without one is a conversation of its own
    # (the server hashes its first messages, all different in real traffic).
    session = request.conversation or f"r{index}"
    ex = Exchange(holder.state, shape, body, id=f"r{index}", session=session, now=arrival)
    tally = context.tally
    routed: tuple[str, str, str] | None = None
    ttft: float | None = None
    for slot in ex.plan:
        holder.apply(partial(ex.admit, slot, now=context.now))
        attempt = ex.attempt
        if attempt is None:
            continue  # not admitted: the plan knows why
        sent = context.now
        answer = context.fleet.call(
            slot.provider,
            slot.key_id,
            slot.model.id,
            prompt_tokens=request.prompt_tokens,
            completion_tokens=request.completion_tokens,
            now=sent,
        )
        tally.attempt(answer)
        yield sent + answer.latency_s
        now = context.now
        _do(holder, ex.head(answer.status, answer.header_map, now=now))
        if attempt.phase is Phase.HEAD or attempt.phase is Phase.STREAMING:
            _do(holder, ex.data(answer.body, now=now))
        if attempt.phase not in FINAL:
            _do(holder, ex.end(now=now))
        if ex.answered:
            if ex.status is not None and 200 <= ex.status < 300:
                routed = (slot.provider, slot.model.id, slot.key_id)
                ttft = sent + answer.ttft_s - arrival
            break
    else:
        _do(holder, ex.exhausted(holder.state, now=context.now))
    tally.ended(
        request,
        ex.status or 500,
        attempts=len(ex.attempts),
        routed=routed,
        latency_s=context.now - arrival,
        ttft_s=ttft,
    )


def _do(holder: StateHolder, effects: list[Effect]) -> None:
    """State changes go to the holder; what the client would be sent is dropped."""
    for effect in effects:
        if not isinstance(effect, Start | Send):
            holder.apply(effect)


def _capacity(context: Context, minute: int) -> None:
    """The capacity left across all keys at the start of ``minute``, as freellm's ledger sees it."""
    if context.holder is None:
        return
    view = quotas_.quota_view(context.holder.state, now=context.now)
    context.tally.capacity[minute] = {
        name: view.capacity.window(name).left for name in quotas_.WINDOWS
    }


# --- one replay ---------------------------------------------------------------------------------


def replay(
    trace: Trace,
    catalog: Catalog,
    keys: Mapping[str, int],
    *,
    policy: str = "freellm",
    seed: int = 0,
    fleet: Callable[[Catalog, Mapping[str, Sequence[str]]], Fleet] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Result:
    """Replay ``trace`` in the core with ``keys`` (provider: how many keys) under ``policy``.

    ``fleet(catalog, key_ids)`` makes the simulated providers (by default they enforce the
    configured caps, with latency jitter drawn from ``seed``); a fresh one per replay, so
    replays never share usage. Raises ``KeyError`` for an unknown policy.
    """
    ids = key_ids(keys)
    make = fleet or (lambda c, k: Fleet(c, k, seed=seed))
    forced = FREELLM_POLICIES.get(policy)
    if forced is not None:
        catalog = attrs.evolve(catalog, settings=attrs.evolve(catalog.settings, strategy=forced))
    context = Context(catalog, ids, make(catalog, ids))
    if policy in FREELLM_POLICIES:
        topology = Topology(
            catalog,
            [
                Key(provider, key_id, f"sim-{key_id}")
                for provider, some in ids.items()
                for key_id in some
            ],
        )
        context.holder = StateHolder(RouterState(topology))
        process: Policy = freellm_process
    else:
        from freellm.sim.baselines import BASELINES

        process = BASELINES[policy]
    started = time.perf_counter()
    run(context, trace, process, progress=progress, every_minute=_capacity)
    result = context.tally.result(policy=policy, mode="core", seconds=time.perf_counter() - started)
    if policy in FREELLM_POLICIES:
        result = attrs.evolve(result, strategy=catalog.settings.strategy.value)
    return result
