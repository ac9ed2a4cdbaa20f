"""Baseline routing policies: the yardsticks freellm's own routing is measured against.

Each is a process of :func:`freellm.sim.replay.run`, made the way
:func:`~freellm.sim.replay.freellm_process` is: ``policy(context, request, index)`` runs at the
request's arrival, sends attempts to ``context.fleet`` at ``context.now``, yields the virtual time
each answer arrives, counts every attempt (``context.tally.attempt``) and ends the request once
(``context.tally.ended``): 200 served; 429 given up for lack of capacity; 502 every attempt failed
otherwise; 400 when no deployment can take the request at all (freellm answers so too).

A *deployment* is a (provider, model, key): every target of the fallback chain (or, for a request
that names a model, every target that serves it) with every key of its provider. The three
policies share what a request can be sent to (:class:`Deployments`: tools, vision and JSON mode
when it asks for them, a context window that holds the prompt plus the completion budget, a
``max_tokens`` within the model's output), and each is modelled on a real router:

- ``first-fit``: the original Node proxy freellm replaces. It walks the chain in order and skips a
  deployment in cooldown or whose counted usage is at its configured cap (rpm, rpd, tpm, tpd,
  counted per key and model in rolling 60 s and 86,400 s windows). Usage is counted only when a
  call succeeds, when its answer arrives (so concurrent requests overshoot a cap); any error
  (429, 5xx, 401) cools the deployment down for a flat 120 s, and the request goes on down the
  chain. Past the end: 429 if a deployment was skipped for its caps or a cooldown, else 502.
- ``round-robin``: a global pointer moves one deployment on per request; the request tries the
  deployments in turn from there, each once at most, knowing nothing of caps. Past the last:
  429 if any answered 429, else 502.
- ``least-used``: LiteLLM's ``usage-based-routing-v2``. Among the deployments whose counted usage
  leaves room for the request under their configured caps, it picks the one with the lowest
  token use this minute (ties: chain order). As LiteLLM counts, a request counts at its send, its
  tokens (the real count) when it succeeds, both in the current *aligned* minute (LiteLLM keys
  its counters by the UTC ``%H-%M``), and the check adds the prompt's tokens to the minute's
  use. LiteLLM has no day caps; the deployments' rpd and tpd are checked here too, in rolling
  day windows, or the baseline would spend most of a day on 429s. An error that LiteLLM cools a
  deployment down for (429, 401, 404, 408, 5xx) takes it out for ``cooldown_s``, and the router
  picks again, ``retries`` times at most. LiteLLM's defaults, from its source: ``num_retries``
  falls back to ``openai.DEFAULT_MAX_RETRIES``, 2; the cooldown is
  ``DEFAULT_COOLDOWN_TIME_SECONDS``, 5 s.

The baselines count for themselves, as the real routers do: account-wide caps
(``ModelSpec.account``) are not known to them, each deployment counts alone. Every window is a
deque of entries with running sums, so counting costs O(1) amortized per call.

A policy keeps its state (counters, cooldowns, the pointer) per replay, in the replay's
:class:`~freellm.sim.replay.Context` (``policies``), so it goes with it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Generator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Generic, TypeVar

import attrs

from freellm.core.catalog import Catalog, ModelSpec, Target
from freellm.core.router import AUTO

if TYPE_CHECKING:
    from freellm.sim.fleet import SimAnswer
    from freellm.sim.replay import Context, Policy
    from freellm.sim.trace import TraceRequest

__all__ = [
    "BASELINES",
    "FIRST_FIT_COOLDOWN_S",
    "LITELLM_COOLDOWN_S",
    "LITELLM_RETRIES",
    "Aligned",
    "Deployment",
    "Deployments",
    "Rolling",
    "capable",
    "first_fit",
    "fits",
    "least_used",
    "round_robin",
]

MINUTE: Final = 60.0
DAY: Final = 86_400.0
FIRST_FIT_COOLDOWN_S: Final = 120.0
LITELLM_RETRIES: Final = 2
"""LiteLLM's Router: ``num_retries`` unset falls back to ``openai.DEFAULT_MAX_RETRIES`` (2)."""
LITELLM_COOLDOWN_S: Final = 5.0
"""LiteLLM's ``DEFAULT_COOLDOWN_TIME_SECONDS``."""

Process = Generator[float, None, None]
_S = TypeVar("_S")


# --- what a request can be sent to --------------------------------------------------------------


@attrs.frozen(weakref_slot=False)
class Deployment:
    """A key of a provider on one of its models; ``rank`` is its place in :attr:`Deployments.all`
    (chain order, then keys in order), unique within one :class:`Deployments`."""

    provider: str
    model: ModelSpec
    key: str
    rank: int


def capable(model: ModelSpec, request: TraceRequest) -> bool:
    """Whether ``model`` has what ``request`` asks for: tools, vision, JSON mode."""
    return (
        (model.tools or not request.tools)
        and (model.vision or not request.images)
        and (model.json or not request.json)
    )


def fits(model: ModelSpec, request: TraceRequest, budget: int) -> bool:
    """Whether ``model`` can take ``request`` as freellm's router judges it (``router._unfit``):
    :func:`capable`, a context window that holds the prompt plus the completion ``budget``, and a
    ``max_tokens`` within the model's ``max_output``."""
    if not capable(model, request):
        return False
    if model.context is not None and request.prompt_tokens + budget > model.context:
        return False
    return not (
        model.max_output is not None
        and request.max_tokens is not None
        and request.max_tokens > model.max_output
    )


class Deployments:
    """The deployments of a catalog and key set, and those that can take a request.

    ``all`` starts with the chain's deployments; targets outside the chain (named by a request's
    ``model``) join it when a request first names them.
    """

    def __init__(self, catalog: Catalog, keys: Mapping[str, Sequence[str]]) -> None:
        self.catalog = catalog
        self.keys = keys
        self.all: list[Deployment] = []
        self._of_target: dict[tuple[str, str], tuple[Deployment, ...]] = {}
        # (model, tools, images, json, max_tokens): per capable target, its context (inf when
        # unknown) and its deployments. The context check is what remains per request.
        self._capable: dict[
            tuple[str, bool, bool, bool, int | None],
            tuple[tuple[float, tuple[Deployment, ...]], ...],
        ] = {}
        for target in catalog.chain_targets:
            self._of(target)

    def _of(self, target: Target) -> tuple[Deployment, ...]:
        name = (target.provider, target.model.id)
        found = self._of_target.get(name)
        if found is None:
            first = len(self.all)
            found = tuple(
                Deployment(target.provider, target.model, key, first + n)
                for n, key in enumerate(self.keys.get(target.provider, ()))
            )
            self.all.extend(found)
            self._of_target[name] = found
        return found

    def targets(self, request: TraceRequest) -> tuple[Target, ...]:
        """The targets ``request`` may go to, best first: the chain for ``auto``, else the
        targets that serve the model it names (:meth:`Catalog.resolve`)."""
        if request.model == AUTO:
            return self.catalog.chain_targets
        return self.catalog.resolve(request.model)

    def for_request(self, request: TraceRequest) -> list[Deployment]:
        """Every deployment that :func:`fits` ``request``, in chain order, keys in order."""
        shape = (request.model, request.tools, request.images, request.json, request.max_tokens)
        entries = self._capable.get(shape)
        if entries is None:
            budget = self._budget(request)
            probe = attrs.evolve(request, prompt_tokens=0)  # all but the context check
            entries = self._capable[shape] = tuple(
                (
                    math.inf if target.model.context is None else float(target.model.context),
                    self._of(target),
                )
                for target in self.targets(request)
                if fits(target.model, probe, budget)
            )
        need = request.prompt_tokens + self._budget(request)
        return [d for context, some in entries if need <= context for d in some]

    def _budget(self, request: TraceRequest) -> int:
        if request.max_tokens is not None:
            return request.max_tokens
        return self.catalog.settings.default_completion_tokens


# --- counting -----------------------------------------------------------------------------------


class Rolling:
    """Requests and tokens counted in the last ``span`` seconds: an entry made at ``t`` counts
    while ``now < t + span``. Entries come in time order (the replay's clock never goes back)."""

    __slots__ = ("entries", "requests", "span", "tokens")

    def __init__(self, span: float) -> None:
        self.span = span
        self.entries: deque[tuple[float, int, int]] = deque()
        self.requests = 0
        self.tokens = 0

    def at(self, now: float) -> Rolling:
        """This window with what has left it by ``now`` dropped."""
        entries, span = self.entries, self.span
        while entries and entries[0][0] + span <= now:
            _, requests, tokens = entries.popleft()
            self.requests -= requests
            self.tokens -= tokens
        return self

    def add(self, now: float, requests: int, tokens: int) -> None:
        self.at(now).entries.append((now, requests, tokens))
        self.requests += requests
        self.tokens += tokens


class Aligned:
    """Requests and tokens counted in the current aligned minute, as LiteLLM keys them."""

    __slots__ = ("minute", "requests", "tokens")

    def __init__(self) -> None:
        self.minute = -1
        self.requests = 0
        self.tokens = 0

    def at(self, now: float) -> Aligned:
        minute = int(now // MINUTE)
        if minute != self.minute:
            self.minute, self.requests, self.tokens = minute, 0, 0
        return self


class _Windows:
    """One deployment's minute and day windows, made when first used."""

    def __init__(self) -> None:
        self.minute: dict[int, Rolling] = {}
        self.day: dict[int, Rolling] = {}

    def of(self, rank: int) -> tuple[Rolling, Rolling]:
        minute = self.minute.get(rank)
        if minute is None:
            minute = self.minute[rank] = Rolling(MINUTE)
            self.day[rank] = Rolling(DAY)
        return minute, self.day[rank]


class _PerContext(Generic[_S]):
    """A policy's state for one replay: made on first use, kept on the replay's context."""

    def __init__(self, make: Callable[[Context], _S]) -> None:
        self._make = make

    def __call__(self, context: Context) -> _S:
        state: _S | None = context.policies.get(self)
        if state is None:
            state = context.policies[self] = self._make(context)
        return state


# --- the policies -------------------------------------------------------------------------------


def _call(context: Context, deployment: Deployment, request: TraceRequest) -> SimAnswer:
    answer = context.fleet.call(
        deployment.provider,
        deployment.key,
        deployment.model.id,
        prompt_tokens=request.prompt_tokens,
        completion_tokens=request.completion_tokens,
        now=context.now,
    )
    context.tally.attempt(answer)
    return answer


def _served(
    context: Context,
    request: TraceRequest,
    deployment: Deployment,
    *,
    attempts: int,
    arrival: float,
    first_token: float,
) -> None:
    context.tally.ended(
        request,
        200,
        attempts=attempts,
        routed=(deployment.provider, deployment.model.id, deployment.key),
        latency_s=context.now - arrival,
        ttft_s=first_token - arrival,
    )


def _gave_up(
    context: Context, request: TraceRequest, status: int, *, attempts: int, arrival: float
) -> None:
    context.tally.ended(
        request,
        status,
        attempts=attempts,
        routed=None,
        latency_s=context.now - arrival,
        ttft_s=None,
    )


class _FirstFit:
    def __init__(self, context: Context) -> None:
        self.deployments = Deployments(context.catalog, context.keys)
        self.windows = _Windows()
        self.cooldown: dict[int, float] = {}

    def at_cap(self, deployment: Deployment, now: float) -> bool:
        caps = deployment.model.caps
        minute, day = self.windows.of(deployment.rank)
        minute.at(now)
        day.at(now)
        return (
            (caps.rpm is not None and minute.requests >= caps.rpm)
            or (caps.tpm is not None and minute.tokens >= caps.tpm)
            or (caps.rpd is not None and day.requests >= caps.rpd)
            or (caps.tpd is not None and day.tokens >= caps.tpd)
        )


_first_fit_state = _PerContext(_FirstFit)


def first_fit(context: Context, request: TraceRequest, index: int) -> Process:
    """The original Node proxy's routing (see the module docstring)."""
    state = _first_fit_state(context)
    arrival = context.now
    options = state.deployments.for_request(request)
    if not options:
        _gave_up(context, request, 400, attempts=0, arrival=arrival)
        return
    tokens = request.prompt_tokens + request.completion_tokens
    attempts = 0
    skipped = False
    for deployment in options:
        now = context.now
        if state.cooldown.get(deployment.rank, -math.inf) > now or state.at_cap(deployment, now):
            skipped = True
            continue
        sent = now
        answer = _call(context, deployment, request)
        attempts += 1
        yield sent + answer.latency_s
        if 200 <= answer.status < 300:
            minute, day = state.windows.of(deployment.rank)
            minute.add(context.now, 1, tokens)
            day.add(context.now, 1, tokens)
            _served(
                context,
                request,
                deployment,
                attempts=attempts,
                arrival=arrival,
                first_token=sent + answer.ttft_s,
            )
            return
        state.cooldown[deployment.rank] = context.now + FIRST_FIT_COOLDOWN_S
    _gave_up(context, request, 429 if skipped else 502, attempts=attempts, arrival=arrival)


class _RoundRobin:
    def __init__(self, context: Context) -> None:
        self.deployments = Deployments(context.catalog, context.keys)
        self.pointer = 0


_round_robin_state = _PerContext(_RoundRobin)


def round_robin(context: Context, request: TraceRequest, index: int) -> Process:
    """Every deployment in turn, from a global pointer that moves one on per request."""
    state = _round_robin_state(context)
    arrival = context.now
    options = state.deployments.for_request(request)
    if not options:
        _gave_up(context, request, 400, attempts=0, arrival=arrival)
        return
    count = len(state.deployments.all)
    start = state.pointer % count
    state.pointer = start + 1
    options.sort(key=lambda d: (d.rank - start) % count)
    attempts = 0
    limited = False
    for deployment in options:
        sent = context.now
        answer = _call(context, deployment, request)
        attempts += 1
        yield sent + answer.latency_s
        if 200 <= answer.status < 300:
            _served(
                context,
                request,
                deployment,
                attempts=attempts,
                arrival=arrival,
                first_token=sent + answer.ttft_s,
            )
            return
        limited = limited or answer.status == 429
    _gave_up(context, request, 429 if limited else 502, attempts=attempts, arrival=arrival)


class _LeastUsed:
    def __init__(self, context: Context) -> None:
        self.deployments = Deployments(context.catalog, context.keys)
        self.minute: dict[int, Aligned] = {}
        self.day: dict[int, Rolling] = {}
        self.cooldown: dict[int, float] = {}

    def windows(self, rank: int, now: float) -> tuple[Aligned, Rolling]:
        minute = self.minute.get(rank)
        if minute is None:
            minute = self.minute[rank] = Aligned()
            self.day[rank] = Rolling(DAY)
        return minute.at(now), self.day[rank].at(now)

    def room(self, deployment: Deployment, now: float, prompt: int) -> int | None:
        """The deployment's token use this minute when it has room for a request of ``prompt``
        tokens, else None."""
        caps = deployment.model.caps
        minute, day = self.windows(deployment.rank, now)
        if (
            (caps.rpm is not None and minute.requests + 1 > caps.rpm)
            or (caps.tpm is not None and minute.tokens + prompt > caps.tpm)
            or (caps.rpd is not None and day.requests + 1 > caps.rpd)
            or (caps.tpd is not None and day.tokens + prompt > caps.tpd)
        ):
            return None
        return minute.tokens


def _litellm_cools_down(status: int) -> bool:
    """The answers LiteLLM's router cools a deployment down for (``_is_cooldown_required``)."""
    return status in (401, 404, 408, 429) or status >= 500


def least_used(*, retries: int = LITELLM_RETRIES, cooldown_s: float = LITELLM_COOLDOWN_S) -> Policy:
    """LiteLLM's usage-based routing (see the module docstring), with ``retries`` picks after the
    first and ``cooldown_s`` out after an error."""
    state_of = _PerContext(_LeastUsed)

    def process(context: Context, request: TraceRequest, index: int) -> Process:
        state = state_of(context)
        arrival = context.now
        options = state.deployments.for_request(request)
        if not options:
            _gave_up(context, request, 400, attempts=0, arrival=arrival)
            return
        prompt = request.prompt_tokens
        attempts = 0
        limited = False
        cooldown = state.cooldown
        for _ in range(1 + retries):
            now = context.now
            best: Deployment | None = None
            lowest = 0
            for deployment in options:
                if cooldown.get(deployment.rank, -math.inf) > now:
                    continue
                used = state.room(deployment, now, prompt)
                if used is not None and (best is None or used < lowest):
                    best, lowest = deployment, used
            if best is None:
                limited = True
                break
            minute, day = state.windows(best.rank, now)
            minute.requests += 1
            day.add(now, 1, 0)
            sent = now
            answer = _call(context, best, request)
            attempts += 1
            yield sent + answer.latency_s
            if 200 <= answer.status < 300:
                tokens = request.prompt_tokens + request.completion_tokens
                minute, day = state.windows(best.rank, context.now)
                minute.tokens += tokens
                day.add(context.now, 0, tokens)
                _served(
                    context,
                    request,
                    best,
                    attempts=attempts,
                    arrival=arrival,
                    first_token=sent + answer.ttft_s,
                )
                return
            limited = limited or answer.status == 429
            if _litellm_cools_down(answer.status):
                cooldown[best.rank] = context.now + cooldown_s
        _gave_up(context, request, 429 if limited else 502, attempts=attempts, arrival=arrival)

    return process


BASELINES: Final[Mapping[str, Policy]] = MappingProxyType(
    {
        "first-fit": first_fit,
        "round-robin": round_robin,
        "least-used": least_used(),
    }
)
"""The baseline policies by the names ``freellm replay --policy`` knows them by."""
