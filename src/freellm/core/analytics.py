"""Analytics: the numbers of the dashboard's Analytics page, combined from compact cells.

Theory of operation
-------------------
A report covers one window of :data:`WINDOWS` (``1h``, ``24h``, ``7d``, ``30d``), cut into about
60 timeline buckets of ``step_s`` seconds. :func:`bounds` aligns the window to its step: it is
the ``buckets`` whole steps ending with the one that holds ``now``, so every bucket of the
timeline is a whole step (the last one still filling) and bucket ``k`` is
``[k * step, (k + 1) * step)``, i.e. ``int(at) // step`` (SQL: ``CAST(at AS INTEGER) / step``).
Times are epoch seconds, never negative; the window's edges are whole seconds.

The request log can hold millions of rows, so nobody loads them: the store lets SQLite group
them into *cells*, counts and sums keyed by a few small values, and this module combines the
cells into a :class:`Report`:

- :class:`RequestCell`: the requests of one bucket answered by one target (``routed_via``, None
  when nothing answered), failed (status >= 400) or not;
- :class:`AttemptCell`: the attempts of one provider that ended in one outcome class
  (a :class:`~freellm.core.outcome.Kind` value; :data:`UNKNOWN_OUTCOME` when none was logged);
- :class:`BinCell`: how many samples of one :class:`Metric` (request latency or time to first
  token per target, attempt latency per provider) fell in one latency bin.

Cells with the same key add up (:func:`merge`), so they may come in pieces: the store reads the
middle of a long window from hourly and daily rollups and its edges from the log itself
(:func:`split` says which part is which), and :func:`summarize` merges the pieces first.
:func:`cells_of` is the reference grouping: from rows, what the store's queries compute. The
tests hold the store's SQL and :func:`summarize` to it, and it to a naive recount.

Percentiles come from histograms. :func:`latency_bin` puts a duration on a log scale, bins
about 5% wide (:data:`EDGES_US`); the store keeps the bin beside each duration, so SQL can
``GROUP BY`` it. The percentile of a histogram is the nearest-rank percentile of its samples,
reported as its bin's :func:`bin_value`: for a duration ``x`` in ``[0.1 ms, EDGES_US[-1] us)``
that is within :data:`BIN_ERROR` (2.7%) of ``x``; below 0.1 ms it is 0.05 ms; from the last
edge on (about 2.8 hours) it is that edge, a lower bound.
"""

from __future__ import annotations

import enum
import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from itertools import pairwise
from types import MappingProxyType
from typing import Any, Final

import attrs

from freellm.core.outcome import Kind

__all__ = [
    "BIN_ERROR",
    "BUCKETS",
    "EDGES_US",
    "OK_OUTCOME",
    "UNKNOWN_OUTCOME",
    "WINDOWS",
    "AttemptCell",
    "AttemptRow",
    "BinCell",
    "Cells",
    "ErrorClass",
    "Metric",
    "ModelRow",
    "Percentiles",
    "ProviderRow",
    "Report",
    "RequestCell",
    "RequestRow",
    "Split",
    "TimelineBucket",
    "Totals",
    "Window",
    "bin_value",
    "bounds",
    "cells_of",
    "latency_bin",
    "merge",
    "percentile",
    "split",
    "summarize",
    "to_json",
]

# --- windows ------------------------------------------------------------------------------------

BUCKETS: Final = 60
"""Timeline buckets per window (the 7-day window has 56: its step is a whole 3 hours)."""


@attrs.frozen
class Window:
    name: str
    span_s: int
    step_s: int

    @property
    def buckets(self) -> int:
        return self.span_s // self.step_s


# The long windows' steps are whole hours, so the store can read their timelines from hourly
# rollups: 7 days in 3-hour steps (56 of them) rather than 60 steps of 2.8 hours.
WINDOWS: Final[Mapping[str, Window]] = MappingProxyType(
    {
        "1h": Window("1h", 3_600, 60),
        "24h": Window("24h", 86_400, 1_440),
        "7d": Window("7d", 7 * 86_400, 3 * 3_600),
        "30d": Window("30d", 30 * 86_400, 12 * 3_600),
    }
)


def bounds(window: Window, *, now: float) -> tuple[int, int]:
    """``(since, until)``: the window's whole steps, ending with the step that holds ``now``."""
    step = window.step_s
    until = (math.floor(now) // step + 1) * step
    return until - window.span_s, until


@attrs.frozen
class Split:
    """``[since, until)`` cut for a store that keeps rollups of ``period`` seconds: the whole
    periods inside it (``periods``, a range of period numbers ``at // period``, or None) and the
    ``edges`` around them, which only the log itself can answer."""

    periods: tuple[int, int] | None
    edges: tuple[tuple[int, int], ...]


def split(since: int, until: int, period: int) -> Split:
    """Cut ``[since, until)`` into whole ``period``-second periods and the edges around them."""
    first = -(-since // period)
    end = until // period
    if first >= end:
        return Split(None, ((since, until),) if since < until else ())
    edges = ((since, first * period), (end * period, until))
    return Split((first, end), tuple((lo, hi) for lo, hi in edges if lo < hi))


# --- latency bins -------------------------------------------------------------------------------

_RATIO: Final = 1.05
_FIRST_EDGE_US: Final = 100
_LAST_EDGE_US: Final = 10**10  # about 2.8 hours


def _edges() -> tuple[int, ...]:
    # Whole microseconds, so that SQL and Python compare a duration with exactly the same edges
    # (a migration computes the bins of old rows in SQL from a table of them).
    edges = [_FIRST_EDGE_US]
    while edges[-1] < _LAST_EDGE_US:
        edges.append(max(edges[-1] + 1, round(_FIRST_EDGE_US * _RATIO ** len(edges))))
    return tuple(edges)


EDGES_US: Final = _edges()
"""Bin ``b`` (``1 <= b < len``) holds ``[EDGES_US[b - 1], EDGES_US[b])`` microseconds; bin 0
holds what is shorter than the first edge, bin ``len(EDGES_US)`` what is at least the last."""


def latency_bin(ms: float) -> int:
    """The bin of a duration of ``ms`` milliseconds. The bins are stored: never change them
    without a migration that recomputes every stored bin."""
    return bisect_right(EDGES_US, ms * 1000.0)


def bin_value(b: int) -> float:
    """The milliseconds that stand for bin ``b``: its geometric middle (see :data:`BIN_ERROR`)."""
    if b <= 0:
        return EDGES_US[0] / 2000
    if b >= len(EDGES_US):
        return EDGES_US[-1] / 1000
    return math.sqrt(EDGES_US[b - 1] * EDGES_US[b]) / 1000


BIN_ERROR: Final = max(math.sqrt(hi / lo) - 1 for lo, hi in pairwise(EDGES_US))
"""The largest relative error of :func:`bin_value` for a duration inside the edges: 2.7% (2.5%
but where rounding to whole microseconds widens the first bins)."""


def percentile(histogram: Mapping[int, int], p: int) -> float | None:
    """The nearest-rank ``p``-th percentile of the samples counted by bin in ``histogram``, as
    its bin's value; None without samples."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = max(1, (p * total + 99) // 100)
    seen = 0
    for b in sorted(histogram):
        seen += histogram[b]
        if seen >= rank:
            return bin_value(b)
    raise AssertionError("unreachable: the ranks add up to the total")


# --- cells --------------------------------------------------------------------------------------

OK_OUTCOME: Final = Kind.SUCCESS.value
"""The outcome class of an attempt that succeeded; every other class is an error class."""

UNKNOWN_OUTCOME: Final = "unknown"
"""The class of an attempt logged without one."""


class Metric(enum.Enum):
    LATENCY = "latency"  # a request's latency, keyed by the target that answered
    TTFT = "ttft"  # a request's time to first token, keyed by the target that answered
    ATTEMPT_LATENCY = "attempt"  # an attempt's latency, keyed by its provider


@attrs.frozen
class RequestCell:
    bucket: int  # the timeline bucket: ``int(at) // step``
    target: str | None  # "provider/model" that answered; None when nothing did
    failed: bool  # the client's status was >= 400
    requests: int
    fallbacks: int  # requests that took more than one attempt
    prompt_tokens: int
    completion_tokens: int

    @property
    def key(self) -> tuple[int, str | None, bool]:
        return self.bucket, self.target, self.failed


@attrs.frozen
class AttemptCell:
    provider: str
    outcome: str  # a Kind value, or UNKNOWN_OUTCOME
    attempts: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def key(self) -> tuple[str, str]:
        return self.provider, self.outcome


@attrs.frozen
class BinCell:
    metric: Metric
    key: str | None  # the target (LATENCY, TTFT) or the provider (ATTEMPT_LATENCY)
    bin: int
    count: int


@attrs.frozen
class Cells:
    requests: tuple[RequestCell, ...] = ()
    attempts: tuple[AttemptCell, ...] = ()
    bins: tuple[BinCell, ...] = ()

    def __add__(self, other: Cells) -> Cells:
        return Cells(
            self.requests + other.requests, self.attempts + other.attempts, self.bins + other.bins
        )


def _none_last(value: str | None) -> tuple[bool, str]:
    return value is None, value or ""


def merge(cells: Cells) -> Cells:
    """The same cells with those of equal keys added up, in a canonical order."""
    requests: dict[tuple[int, str | None, bool], list[int]] = {}
    for r in cells.requests:
        sums = requests.setdefault(r.key, [0, 0, 0, 0])
        for i, value in enumerate((r.requests, r.fallbacks, r.prompt_tokens, r.completion_tokens)):
            sums[i] += value
    attempts: dict[tuple[str, str], list[int]] = {}
    for a in cells.attempts:
        sums = attempts.setdefault(a.key, [0, 0, 0])
        for i, value in enumerate((a.attempts, a.prompt_tokens, a.completion_tokens)):
            sums[i] += value
    bins: dict[tuple[Metric, str | None, int], int] = {}
    for c in cells.bins:
        key = (c.metric, c.key, c.bin)
        bins[key] = bins.get(key, 0) + c.count
    return Cells(
        tuple(
            RequestCell(*key, *sums)
            for key, sums in sorted(
                requests.items(), key=lambda kv: (kv[0][0], _none_last(kv[0][1]), kv[0][2])
            )
        ),
        tuple(AttemptCell(*key, *sums) for key, sums in sorted(attempts.items())),
        tuple(
            BinCell(metric, key, b, count)
            for (metric, key, b), count in sorted(
                bins.items(), key=lambda kv: (kv[0][0].value, _none_last(kv[0][1]), kv[0][2])
            )
        ),
    )


# --- the reference grouping ---------------------------------------------------------------------


@attrs.frozen
class RequestRow:
    """What the grouping reads of a row of the request log."""

    at: float
    target: str | None
    status: int
    attempts: int
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float
    ttft_ms: float | None


@attrs.frozen
class AttemptRow:
    """What the grouping reads of an attempt; ``at`` is its request's."""

    at: float
    provider: str
    outcome: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float


def cells_of(
    requests: Iterable[RequestRow],
    attempts: Iterable[AttemptRow],
    *,
    since: int,
    until: int,
    step: int,
) -> Cells:
    """The cells of the rows in ``[since, until)``, merged: what the store's queries compute."""
    request_cells: list[RequestCell] = []
    bins: list[BinCell] = []
    for r in requests:
        if not since <= r.at < until:
            continue
        request_cells.append(
            RequestCell(
                int(r.at) // step,
                r.target,
                r.status >= 400,
                1,
                int(r.attempts > 1),
                r.prompt_tokens or 0,
                r.completion_tokens or 0,
            )
        )
        bins.append(BinCell(Metric.LATENCY, r.target, latency_bin(r.latency_ms), 1))
        if r.ttft_ms is not None:
            bins.append(BinCell(Metric.TTFT, r.target, latency_bin(r.ttft_ms), 1))
    attempt_cells: list[AttemptCell] = []
    for a in attempts:
        if not since <= a.at < until:
            continue
        outcome = UNKNOWN_OUTCOME if a.outcome is None else a.outcome
        attempt_cells.append(
            AttemptCell(a.provider, outcome, 1, a.prompt_tokens or 0, a.completion_tokens or 0)
        )
        bins.append(BinCell(Metric.ATTEMPT_LATENCY, a.provider, latency_bin(a.latency_ms), 1))
    return merge(Cells(tuple(request_cells), tuple(attempt_cells), tuple(bins)))


# --- the report ---------------------------------------------------------------------------------


@attrs.frozen
class Percentiles:
    p50: float | None
    p95: float | None

    @classmethod
    def of(cls, histogram: Mapping[int, int]) -> Percentiles:
        return cls(percentile(histogram, 50), percentile(histogram, 95))


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@attrs.frozen
class Totals:
    requests: int
    succeeded: int  # status < 400
    attempts: int
    attempts_succeeded: int  # outcome class OK_OUTCOME
    fallbacks: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: Percentiles
    ttft_ms: Percentiles

    @property
    def success_rate(self) -> float | None:
        return _rate(self.succeeded, self.requests)

    @property
    def attempt_success_rate(self) -> float | None:
        return _rate(self.attempts_succeeded, self.attempts)


@attrs.frozen
class TimelineBucket:
    at: int  # the bucket's first second
    requests: int
    errors: int  # requests that failed (status >= 400)


@attrs.frozen
class ProviderRow:
    provider: str
    attempts: int
    succeeded: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: Percentiles

    @property
    def success_rate(self) -> float | None:
        return _rate(self.succeeded, self.attempts)


@attrs.frozen
class ModelRow:
    """Requests by the target that answered them; ``target`` None for those nothing answered."""

    target: str | None
    requests: int
    succeeded: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: Percentiles
    ttft_ms: Percentiles

    @property
    def success_rate(self) -> float | None:
        return _rate(self.succeeded, self.requests)


@attrs.frozen
class ErrorClass:
    name: str
    count: int


@attrs.frozen
class Report:
    window: str
    since: int
    until: int
    step_s: int
    totals: Totals
    timeline: tuple[TimelineBucket, ...]
    providers: tuple[ProviderRow, ...]  # most attempts first
    models: tuple[ModelRow, ...]  # most requests first; the row of target None last among equals
    error_classes: tuple[ErrorClass, ...]  # most first


def summarize(cells: Cells, window: Window, *, since: int) -> Report:
    """The report of ``window`` starting at ``since`` (from :func:`bounds`), from its cells.

    Raises ``ValueError`` when ``since`` is not on a step or a cell's bucket is outside the
    window: the cells are not this window's.
    """
    step = window.step_s
    if since % step:
        raise ValueError(f"the window must start on a step of {step} s, not at {since}")
    first = since // step
    # Every figure is a sum, so the cells need no merging first: pieces add up as they come.

    timeline = [[0, 0] for _ in range(window.buckets)]
    models: dict[str | None, list[int]] = {}
    for r in cells.requests:
        index = r.bucket - first
        if not 0 <= index < window.buckets:
            raise ValueError(f"a cell of bucket {r.bucket} is outside the window at {since}")
        timeline[index][0] += r.requests
        timeline[index][1] += r.requests if r.failed else 0
        row = models.setdefault(r.target, [0, 0, 0, 0, 0])
        for i, value in enumerate(
            (
                r.requests,
                0 if r.failed else r.requests,
                r.fallbacks,
                r.prompt_tokens,
                r.completion_tokens,
            )
        ):
            row[i] += value

    providers: dict[str, list[int]] = {}
    errors: dict[str, int] = {}
    for a in cells.attempts:
        row = providers.setdefault(a.provider, [0, 0, 0, 0])
        ok = a.outcome == OK_OUTCOME
        for i, value in enumerate(
            (a.attempts, a.attempts if ok else 0, a.prompt_tokens, a.completion_tokens)
        ):
            row[i] += value
        if not ok:
            errors[a.outcome] = errors.get(a.outcome, 0) + a.attempts

    histograms: dict[tuple[Metric, str | None], dict[int, int]] = {}
    totals: dict[Metric, dict[int, int]] = {metric: {} for metric in Metric}
    for c in cells.bins:
        histogram = histograms.setdefault((c.metric, c.key), {})
        histogram[c.bin] = histogram.get(c.bin, 0) + c.count
        total = totals[c.metric]
        total[c.bin] = total.get(c.bin, 0) + c.count

    def of(metric: Metric, key: str | None) -> Percentiles:
        return Percentiles.of(histograms.get((metric, key), {}))

    sums = [sum(row[i] for row in models.values()) for i in range(5)]
    attempt_sums = [sum(row[i] for row in providers.values()) for i in range(2)]
    return Report(
        window=window.name,
        since=since,
        until=since + window.buckets * step,
        step_s=step,
        totals=Totals(
            requests=sums[0],
            succeeded=sums[1],
            attempts=attempt_sums[0],
            attempts_succeeded=attempt_sums[1],
            fallbacks=sums[2],
            prompt_tokens=sums[3],
            completion_tokens=sums[4],
            latency_ms=Percentiles.of(totals[Metric.LATENCY]),
            ttft_ms=Percentiles.of(totals[Metric.TTFT]),
        ),
        timeline=tuple(
            TimelineBucket((first + i) * step, requests, failed)
            for i, (requests, failed) in enumerate(timeline)
        ),
        providers=tuple(
            ProviderRow(
                provider,
                attempts,
                succeeded,
                prompt,
                completion,
                of(Metric.ATTEMPT_LATENCY, provider),
            )
            for provider, (attempts, succeeded, prompt, completion) in sorted(
                providers.items(), key=lambda kv: (-kv[1][0], kv[0])
            )
        ),
        models=tuple(
            ModelRow(
                target,
                requests,
                succeeded,
                prompt,
                completion,
                of(Metric.LATENCY, target),
                of(Metric.TTFT, target),
            )
            for target, (requests, succeeded, _, prompt, completion) in sorted(
                models.items(), key=lambda kv: (-kv[1][0], _none_last(kv[0]))
            )
        ),
        error_classes=tuple(
            ErrorClass(name, count)
            for name, count in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))
        ),
    )


# --- JSON ---------------------------------------------------------------------------------------


def _percentiles(p: Percentiles) -> dict[str, float | None]:
    return {"p50": p.p50, "p95": p.p95}


def to_json(report: Report) -> dict[str, Any]:
    """The report as plain JSON data: what ``GET /api/analytics`` answers. Rates are None when
    their denominator is 0, percentiles None without a sample."""
    t = report.totals
    return {
        "window": report.window,
        "since": report.since,
        "until": report.until,
        "step_s": report.step_s,
        "totals": {
            "requests": t.requests,
            "succeeded": t.succeeded,
            "success_rate": t.success_rate,
            "attempts": t.attempts,
            "attempts_succeeded": t.attempts_succeeded,
            "attempt_success_rate": t.attempt_success_rate,
            "fallbacks": t.fallbacks,
            "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens,
            "latency_ms": _percentiles(t.latency_ms),
            "ttft_ms": _percentiles(t.ttft_ms),
        },
        "timeline": [
            {"at": b.at, "requests": b.requests, "errors": b.errors} for b in report.timeline
        ],
        "providers": [
            {
                "provider": p.provider,
                "attempts": p.attempts,
                "succeeded": p.succeeded,
                "success_rate": p.success_rate,
                "prompt_tokens": p.prompt_tokens,
                "completion_tokens": p.completion_tokens,
                "latency_ms": _percentiles(p.latency_ms),
            }
            for p in report.providers
        ],
        "models": [
            {
                "target": m.target,
                "requests": m.requests,
                "succeeded": m.succeeded,
                "success_rate": m.success_rate,
                "prompt_tokens": m.prompt_tokens,
                "completion_tokens": m.completion_tokens,
                "latency_ms": _percentiles(m.latency_ms),
                "ttft_ms": _percentiles(m.ttft_ms),
            }
            for m in report.models
        ],
        "error_classes": [{"class": e.name, "count": e.count} for e in report.error_classes],
    }
