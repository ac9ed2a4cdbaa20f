"""An offline upper bound: at most how many of a trace's requests any router could serve.

:func:`upper_bound` answers for a router that knows the whole trace in advance, against providers
that enforce the *configured* caps as the replay's default fleet does (:mod:`freellm.sim.fleet`:
rolling 60 s and 86,400 s windows; a call is admitted when the window's use plus the call stays
within every cap it touches, and counted at its send; tokens are the prompt plus the completion,
the prompt alone on Gemini; an ``account`` model's caps apply to one counter shared by the key's
account models). A request is served at its arrival or not at all, as freellm answers 429 at once
and never queues: more exactly, its successful attempt is sent at most ``slack_s`` after its
arrival (failed attempts before it take that time).

Why it is an upper bound
------------------------
Take any schedule that serves a set of requests within the caps. Every step below only drops
constraints or replaces one by a consequence of it, so the schedule still satisfies what is left,
and the largest count that satisfies what is left is at least the schedule's:

- *A request goes only where it can be taken.* A model lacking tools, vision or JSON mode that
  the request needs, a context window below its prompt plus completion, a cap of 0 requests or a
  token cap below its own tokens: the provider refuses it whoever sends it. (The routers in this
  code base are stricter: they reserve the completion *budget*, not what the completion turned
  out to be.) Requests with no such target are never served.
- *Aligned minutes.* A rolling cap of N per 60 s allows at most N sends in an aligned minute
  [60k, 60k + 60): were there N + 1, the last of them would find the N others less than 60 s
  old, still counted, and be refused. A request that arrives within ``slack_s`` of a minute's
  end may be sent in the next one, so it is a candidate of both minutes; counting it in both
  only loosens the bound.
- *Whole trace for the day caps.* The sends all fall in [first arrival, last arrival + slack];
  cut it into 86,400 s pieces (``w`` of them) and a rolling day cap of N allows at most ``w * N``
  over the trace (for a day that resets at a local midnight: N per calendar day touched; the
  larger of the two is used, so the bound holds either way).
- *Pooling.* Sum the caps over every counter that can take some request (keys times the cap; a
  counter shared by account models at the largest cap among them) and forget which request may
  go where. In a minute, the counters without a tpm cap serve at most their rpm; those with one
  serve at most their rpm, and at most as many as the smallest candidates whose tokens fit in
  their tpm (each request counted at its fewest tokens over its targets); and no more are served
  than there are candidates. Over the whole trace the same, each counter allowing min(w * rpd,
  M * rpm) requests and min(w * tpd, M * tpm) tokens, M the minutes with candidates. The
  pooled bound is the least of: the requests some target can take, the sum of the minutes'
  limits, the trace's limit.
- *The LP relaxation* (when SciPy is installed: ``pip install scipy``; an optional extra, never
  a dependency) keeps which target can take which request: variables x[r, t, m] >= 0 (request r
  on target t, sent in minute m), sum over t, m <= 1, per counter and minute sum x <= rpm and
  sum tokens * x <= tpm, per counter over the trace likewise for rpd and tpd, plus the pooled
  bound's own limits (each holds for any schedule, so the LP only gets tighter and never exceeds
  the pooled bound). Any schedule is an integral point of it, so ``floor`` of its optimum bounds
  the schedule. The keys of one provider have equal caps, so one variable per target stands for
  all its keys (splitting a solution evenly across them satisfies every key's counter); requests
  of one minute with the same targets and nearly the same size are grouped in buckets of at most
  ``LP_BUCKET``, each counted at the bucket's smallest tokens, which only loosens it, and by at
  most ``LP_TOLERANCE`` (2%) of any member's tokens: a bucket holds requests whose prompt and
  total are both within 2% of its smallest. (Buckets of any sizes, counted at their smallest,
  made the bound up to twice what any router serves on token-capped keys: a minute's 16 requests
  counted at the smallest of them.)

``bound.served`` is the least of these. Concurrency caps are left out (another relaxation).
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import math
import time
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

from freellm.core.catalog import ROLLING, Caps, Catalog, Target
from freellm.core.router import AUTO
from freellm.sim.baselines import capable
from freellm.sim.fleet import REFUSAL_S
from freellm.sim.fleet.wire import flavor_for
from freellm.sim.replay import EPOCH
from freellm.sim.trace import Trace, TraceRequest

__all__ = ["LP_BUCKET", "Bound", "replay_slack", "upper_bound"]

MINUTE: Final = 60.0
DAY: Final = 86_400.0
LP_BUCKET: Final = 16
"""The most requests of one minute, with the same targets, one LP variable stands for."""
LP_TOLERANCE: Final = 0.02
"""How far above a bucket's smallest prompt and total its other requests' may be."""
INF: Final = math.inf

Row = tuple[int, bool, int, int, int, int, int]
"""A request some target takes: its arrival minute, whether it may be sent in the next one, its
fewest tokens over its targets, its prompt and total tokens, and its group of targets with the
mask of the kinds that take it."""


@attrs.frozen
class Bound:
    """The bound (``served``) and its parts.

    ``feasible``: requests some target can take; ``per_minute``: the sum over minutes of the
    pooled limit of each; ``per_trace``: the pooled limit over the whole trace; ``pooled``: the
    least of those three; ``lp``: floor of the LP relaxation's optimum (None when it was not
    solved: SciPy missing or not asked for), with its time and size; ``slack_s``: the slack it
    allows (see :func:`upper_bound`); ``seconds``: the whole computation's time.
    """

    served: int
    how: str
    requests: int
    feasible: int
    per_minute: int
    per_trace: int
    pooled: int
    lp: int | None
    lp_seconds: float | None
    lp_variables: int
    slack_s: float
    seconds: float

    def to_data(self) -> dict[str, Any]:
        return attrs.asdict(self)


# --- the model of the problem -------------------------------------------------------------------


@attrs.frozen
class _Target:
    """A target with keys: where it counts, and the per-request limits its caps set."""

    index: int
    target: Target
    keys: int
    counter: int
    prompt_only: bool
    context: float
    tokens: float  # a request of more tokens is refused outright


@attrs.define
class _Counter:
    """The counters of one (provider, model or account) scope, one per key, pooled."""

    provider: str
    keys: int
    windows: int  # day windows the sends can touch
    caps: list[Caps] = attrs.field(factory=list)  # of the targets that count here
    used: bool = False

    def cap(self, name: str, *, day: bool = False) -> float:
        """The pooled cap: keys x the largest of the targets' caps (a target's request is
        admitted while the shared use stays within its own caps), inf when one has none."""
        values = [getattr(caps, name) for caps in self.caps]
        if not values or any(value is None for value in values):
            return INF
        return float(self.keys * max(values) * (self.windows if day else 1))


class _Problem:
    """The targets, counters and requests' candidate targets of one bound."""

    def __init__(self, trace: Trace, catalog: Catalog, keys: Mapping[str, int], slack: float):
        self.catalog = catalog
        self.keys = {p: n for p, n in keys.items() if n > 0 and p in catalog.providers}
        self.targets: list[_Target] = []
        self.counters: list[_Counter] = []
        self._target_of: dict[tuple[str, str], _Target | None] = {}
        self._counter_of: dict[tuple[str, str], int] = {}
        self._groups: dict[tuple[str, bool, bool, bool], tuple[int, tuple[_Kind, ...]]] = {}
        self.groups: list[tuple[_Kind, ...]] = []
        self._taken: dict[tuple[int, int], tuple[int, ...]] = {}
        requests = trace.requests
        first = requests[0].at if requests else 0.0
        last = requests[-1].at if requests else 0.0
        self._span = (EPOCH + first, EPOCH + last + slack)

    def _windows(self, provider: str) -> int:
        start, end = self._span
        rolling = int((end - start) // DAY) + 1
        reset = self.catalog.providers[provider].daily_reset
        if reset == ROLLING:
            return rolling
        zone = zoneinfo.ZoneInfo(reset)
        first = dt.datetime.fromtimestamp(start, zone).date()
        last = dt.datetime.fromtimestamp(end, zone).date()
        return max(rolling, (last - first).days + 1)

    def _target(self, target: Target) -> _Target | None:
        name = (target.provider, target.model.id)
        if name in self._target_of:
            return self._target_of[name]
        count = self.keys.get(target.provider, 0)
        caps = target.model.caps
        if count == 0 or caps.rpm == 0 or caps.rpd == 0:
            self._target_of[name] = None
            return None
        scope = (target.provider, "*" if target.model.account else target.model.id)
        counter = self._counter_of.get(scope)
        if counter is None:
            counter = self._counter_of[scope] = len(self.counters)
            windows = self._windows(target.provider)
            self.counters.append(_Counter(target.provider, count, windows))
        self.counters[counter].caps.append(caps)
        spec = self.catalog.providers[target.provider]
        limits = [cap for cap in (caps.tpm, caps.tpd) if cap is not None]
        found = _Target(
            index=len(self.targets),
            target=target,
            keys=count,
            counter=counter,
            prompt_only=flavor_for(spec) == "gemini",
            context=INF if target.model.context is None else float(target.model.context),
            tokens=float(min(limits)) if limits else INF,
        )
        self.targets.append(found)
        self._target_of[name] = found
        return found

    def kinds(self, request: TraceRequest) -> tuple[int, tuple[_Kind, ...]]:
        """The targets with keys that have what ``request`` needs, but for its size, as kinds:
        targets alike in what sizes they take; and the group (an index) of requests with the
        same needs."""
        shape = (request.model, request.tools, request.images, request.json)
        found = self._groups.get(shape)
        if found is None:
            if request.model == AUTO:
                named: Iterable[Target] = self.catalog.chain_targets
            else:
                named = self.catalog.resolve(request.model)
            alike: dict[tuple[float, float, bool], list[int]] = {}
            for target in named:
                if capable(target.model, request):
                    entry = self._target(target)
                    if entry is not None:
                        sizes = (entry.context, entry.tokens, entry.prompt_only)
                        alike.setdefault(sizes, []).append(entry.index)
            kinds = tuple(
                _Kind(1 << bit, context, tokens, prompt_only, tuple(indexes))
                for bit, ((context, tokens, prompt_only), indexes) in enumerate(alike.items())
            )
            found = self._groups[shape] = (len(self.groups), kinds)
            self.groups.append(kinds)
        return found

    def taken(self, group: int, mask: int) -> tuple[int, ...]:
        """The targets of the kinds of ``group`` whose bits ``mask`` holds."""
        found = self._taken.get((group, mask))
        if found is None:
            kinds = self.groups[group]
            found = self._taken[group, mask] = tuple(
                sorted(index for kind in kinds if kind.bit & mask for index in kind.targets)
            )
        return found


@attrs.frozen
class _Kind:
    """Targets that take the same sizes of request: a context window, a token limit per
    request, and whether their tokens are the prompt's alone."""

    bit: int
    context: float
    tokens: float
    prompt_only: bool
    targets: tuple[int, ...]


# --- the bound ----------------------------------------------------------------------------------


def replay_slack(catalog: Catalog, keys: Mapping[str, int]) -> float:
    """The slack that makes the bound hold for every policy of the replay (freellm's and the
    baselines) against the default fleet, whose refusals take ``REFUSAL_S``: a request's
    successful attempt comes after at most one failed attempt per deployment, or freellm's
    ``max_attempts`` - 1. Capped below a minute."""
    deployments = sum(keys.get(t.provider, 0) for t in catalog.chain_targets)
    named = sum(
        keys.get(provider, 0) * len(spec.models) for provider, spec in catalog.providers.items()
    )
    attempts = max(deployments, named, catalog.settings.max_attempts)
    return min(max(0, attempts - 1) * REFUSAL_S, 59.0)


def upper_bound(
    trace: Trace,
    catalog: Catalog,
    keys: Mapping[str, int],
    *,
    slack_s: float | None = None,
    lp: bool | None = None,
) -> Bound:
    """At most how many of ``trace``'s requests any router could serve with ``keys`` (provider:
    how many keys) under ``catalog``'s configured caps (the module docstring says why).

    ``slack_s``: how long after its arrival a request's successful attempt may be sent; None
    takes :func:`replay_slack`, which covers every policy the replay runs; 0 is the strict
    "served at its arrival". ``lp``: solve the LP relaxation too (needs SciPy); None solves it
    when SciPy is installed. Raises ``ValueError`` unless ``0 <= slack_s < 60``, and
    ``ImportError`` when ``lp=True`` and SciPy is missing.
    """
    started = time.perf_counter()
    slack = replay_slack(catalog, keys) if slack_s is None else float(slack_s)
    if not 0.0 <= slack < MINUTE:
        raise ValueError(f"slack_s must be within [0, 60), not {slack_s!r}")
    problem = _Problem(trace, catalog, keys, slack)

    # Each feasible request: its arrival minute, whether it may be sent in the next one, its
    # smallest token count over its targets, and (for the LP) which targets take it.
    rows: list[Row] = []
    seen: set[tuple[int, int]] = set()
    for request in trace.requests:
        group, kinds = problem.kinds(request)
        prompt = request.prompt_tokens
        total = prompt + request.completion_tokens
        fewest = total
        mask = 0
        for kind in kinds:
            if total <= kind.context and (prompt if kind.prompt_only else total) <= kind.tokens:
                mask |= kind.bit
                if kind.prompt_only:
                    fewest = prompt
        if mask:
            minute = int(request.at // MINUTE)
            spills = request.at + slack >= (minute + 1) * MINUTE
            rows.append((minute, spills, fewest, prompt, total, group, mask))
            seen.add((group, mask))
    for group, mask in seen:
        for index in problem.taken(group, mask):
            problem.counters[problem.targets[index].counter].used = True

    # Candidates per minute: its arrivals, and the previous minute's that may spill into it.
    candidates: dict[int, list[int]] = {}
    for minute, spills, fewest, *_ in rows:
        candidates.setdefault(minute, []).append(fewest)
        if spills:
            candidates.setdefault(minute + 1, []).append(fewest)
    used = [c for c in problem.counters if c.used]
    minutes = len(candidates)
    in_a_minute = [(c.cap("rpm"), c.cap("tpm")) for c in used]
    in_the_trace = [
        (
            min(c.cap("rpd", day=True), c.cap("rpm") * minutes),
            min(c.cap("tpd", day=True), c.cap("tpm") * minutes),
        )
        for c in used
    ]
    per_minute = {minute: _pooled(sizes, in_a_minute) for minute, sizes in candidates.items()}
    minute_sum = sum(per_minute.values())
    feasible = len(rows)
    per_trace = _pooled([fewest for _, _, fewest, *_ in rows], in_the_trace)
    pooled = min(feasible, minute_sum, per_trace)

    solved: int | None = None
    lp_seconds: float | None = None
    variables = 0
    note = ""
    if lp is None:
        lp = _scipy_installed()
        if not lp:
            note = "; no LP relaxation (SciPy is not installed)"
    if lp and pooled > 0:
        lp_started = time.perf_counter()
        solved, variables = _solve_lp(problem, rows, per_minute, pooled)
        lp_seconds = time.perf_counter() - lp_started
        if solved is None:
            note = "; the LP solver found no optimum"
    served = pooled if solved is None else min(pooled, solved)
    how = _how(
        served,
        feasible=feasible,
        minute=minute_sum,
        trace=per_trace,
        lp=solved,
        lp_seconds=lp_seconds,
        slack=slack,
        note=note,
    )
    return Bound(
        served=served,
        how=how,
        requests=len(trace.requests),
        feasible=feasible,
        per_minute=minute_sum,
        per_trace=per_trace,
        pooled=pooled,
        lp=solved,
        lp_seconds=lp_seconds,
        lp_variables=variables,
        slack_s=slack,
        seconds=time.perf_counter() - started,
    )


def _fitting(tokens: list[int], cap: float) -> int:
    """How many of the smallest of ``tokens`` fit together within ``cap``."""
    if cap == INF:
        return len(tokens)
    total = 0
    count = 0
    for size in sorted(tokens):
        total += size
        if total > cap:
            break
        count += 1
    return count


def _pooled(sizes: list[int], limits: Sequence[tuple[float, float]]) -> int:
    """At most how many of the requests of token counts ``sizes`` counters of ``limits``
    (requests, tokens; inf for no cap) can take together: those without a token cap take at
    most their requests; those with one at most their requests, and at most the smallest of
    ``sizes`` that fit in their tokens."""
    untimed = sum(requests for requests, tokens in limits if tokens == INF)
    capped = [(requests, tokens) for requests, tokens in limits if tokens != INF]
    if capped:
        fit = _fitting(sizes, sum(tokens for _, tokens in capped))
        untimed += min(sum(requests for requests, _ in capped), fit)
    return int(min(len(sizes), untimed))


def _how(
    served: int,
    *,
    feasible: int,
    minute: int,
    trace: int,
    lp: int | None,
    lp_seconds: float | None,
    slack: float,
    note: str,
) -> str:
    if lp is not None and lp < min(feasible, minute, trace):
        why = f"the LP relaxation over minutes and targets ({lp_seconds or 0:.2f} s)"
    elif served == feasible:
        why = "every request some model can take"
    elif served == minute:
        why = "the caps of each minute, pooled over the keys"
    else:
        why = "the caps over the whole trace, pooled over the keys"
    return f"{why}{note}; a send up to {slack:.2f} s after arrival"


# --- the LP relaxation --------------------------------------------------------------------------


def _alike(members: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """``members`` (total, prompt) in buckets of at most ``LP_BUCKET`` whose totals and prompts
    are each within ``LP_TOLERANCE`` of the bucket's smallest."""
    buckets: list[list[tuple[int, int]]] = []
    for total, prompt in sorted(members):
        for bucket in reversed(buckets[-4:]):  # sorted by total: only the last few can fit
            low_total, low_prompt = bucket[0][0], min(p for _, p in bucket)
            if (
                len(bucket) < LP_BUCKET
                and total <= low_total * (1 + LP_TOLERANCE)
                and low_prompt <= prompt <= low_prompt * (1 + LP_TOLERANCE)
            ):
                bucket.append((total, prompt))
                break
        else:
            buckets.append([(total, prompt)])
    return buckets


def _scipy_installed() -> bool:
    return importlib.util.find_spec("scipy") is not None


def _solve_lp(
    problem: _Problem,
    rows: Sequence[Row],
    per_minute: Mapping[int, int],
    pooled: int,
) -> tuple[int | None, int]:
    """floor of the LP relaxation's optimum (None if the solver failed) and its variable count."""
    # Imported by name: SciPy is optional, and ships no type hints.
    linprog = importlib.import_module("scipy.optimize").linprog
    coo_matrix = importlib.import_module("scipy.sparse").coo_matrix

    buckets: dict[tuple[int, bool, tuple[int, ...]], list[tuple[int, int]]] = {}
    for minute, spills, _, prompt, total, group, mask in rows:
        taken = problem.taken(group, mask)
        buckets.setdefault((minute, spills, taken), []).append((total, prompt))

    data: list[float] = []
    row_of: list[int] = []
    column_of: list[int] = []
    limits: list[float] = []
    rows_named: dict[tuple[Any, ...], int] = {}

    def constraint(name: tuple[Any, ...], limit: float) -> int | None:
        if limit == INF:
            return None
        found = rows_named.get(name)
        if found is None:
            found = rows_named[name] = len(limits)
            limits.append(limit)
        return found

    def put(row: int | None, column: int, value: float) -> None:
        if row is not None and value:
            row_of.append(row)
            column_of.append(column)
            data.append(value)

    counters = problem.counters
    targets = problem.targets
    total_row = constraint(("total",), float(pooled))
    column = 0
    for (minute, spills, taken), members in buckets.items():
        for start, part in enumerate(_alike(members)):
            least_total = min(total for total, _ in part)
            least_prompt = min(prompt for _, prompt in part)
            bucket_row = constraint(("bucket", minute, spills, taken, start), float(len(part)))
            for sent in (minute, minute + 1) if spills else (minute,):
                minute_row = constraint(("minute", sent), float(per_minute[sent]))
                for index in taken:
                    target = targets[index]
                    counter = counters[target.counter]
                    tokens = float(least_prompt if target.prompt_only else least_total)
                    c = target.counter
                    put(total_row, column, 1.0)
                    put(bucket_row, column, 1.0)
                    put(minute_row, column, 1.0)
                    put(constraint(("rpm", c, sent), counter.cap("rpm")), column, 1.0)
                    put(constraint(("tpm", c, sent), counter.cap("tpm")), column, tokens)
                    put(constraint(("rpd", c), counter.cap("rpd", day=True)), column, 1.0)
                    put(constraint(("tpd", c), counter.cap("tpd", day=True)), column, tokens)
                    column += 1
    if column == 0:
        return 0, 0
    matrix = coo_matrix((data, (row_of, column_of)), shape=(len(limits), column)).tocsr()
    result = linprog([-1.0] * column, A_ub=matrix, b_ub=limits, bounds=(0, None), method="highs")
    if result.status != 0:
        return None, column
    return math.floor(-result.fun + 1e-6), column
