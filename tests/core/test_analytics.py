"""Analytics: windows, latency bins, and the report from cells against a naive recount."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freellm.core import analytics as an
from freellm.core.analytics import AttemptRow, Cells, RequestRow, Window
from freellm.core.outcome import Kind

NOW = 1_780_000_000.0  # 2026-05-28, an arbitrary fixed instant

TARGETS = ["groq/llama", "groq/qwen", "cerebras/llama", "google/gemini", None]
PROVIDERS = ["groq", "cerebras", "google"]
OUTCOMES = [kind.value for kind in Kind] + [None]
STATUSES = [200, 200, 200, 400, 429, 499, 502, 503]

durations = st.one_of(
    st.floats(0, 1e8, allow_nan=False),
    st.sampled_from([0.0, 0.05, 0.1, 0.105, 1.0, 999.9999, 1e7]),
    st.sampled_from(an.EDGES_US).map(lambda us: us / 1000),
)
tokens = st.none() | st.integers(0, 100_000)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Window, int, list[RequestRow], list[AttemptRow]]:
    """A window, its start, and rows in it and around it (some on bucket edges)."""
    window = draw(st.sampled_from(list(an.WINDOWS.values())))
    now = draw(st.floats(NOW, NOW + 40 * 86_400, allow_nan=False))
    since, until = an.bounds(window, now=now)
    step = window.step_s
    instants = st.one_of(
        st.floats(since - 2 * step, until + 2 * step, allow_nan=False),
        st.integers(-2, window.buckets + 2).map(lambda k: float(since + k * step)),
        st.integers(-2, window.buckets + 2).map(lambda k: since + k * step - 0.001),
    )
    requests = draw(
        st.lists(
            st.builds(
                RequestRow,
                at=instants,
                target=st.sampled_from(TARGETS),
                status=st.sampled_from(STATUSES),
                attempts=st.integers(0, 4),
                prompt_tokens=tokens,
                completion_tokens=tokens,
                latency_ms=durations,
                ttft_ms=st.none() | durations,
            ),
            max_size=40,
        )
    )
    attempts = draw(
        st.lists(
            st.builds(
                AttemptRow,
                at=instants,
                provider=st.sampled_from(PROVIDERS),
                outcome=st.sampled_from(OUTCOMES),
                prompt_tokens=tokens,
                completion_tokens=tokens,
                latency_ms=durations,
            ),
            max_size=40,
        )
    )
    return window, since, requests, attempts


# --- the naive recount --------------------------------------------------------------------------


def naive_percentile(values: Sequence[float], p: int) -> float | None:
    """Nearest rank, on the values themselves; reported as the value of the value's bin."""
    if not values:
        return None
    rank = math.ceil(p * len(values) / 100)
    return an.bin_value(an.latency_bin(sorted(values)[rank - 1]))


def naive_percentiles(values: Sequence[float]) -> dict[str, float | None]:
    return {"p50": naive_percentile(values, 50), "p95": naive_percentile(values, 95)}


def naive_rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def naive_report(
    window: Window, since: int, requests: list[RequestRow], attempts: list[AttemptRow]
) -> dict[str, Any]:
    """The report's JSON, counted straight from the rows."""
    until = since + window.span_s
    step = window.step_s
    rs = [r for r in requests if since <= r.at < until]
    atts = [a for a in attempts if since <= a.at < until]
    succeeded = [r for r in rs if r.status < 400]
    ok = [a for a in atts if a.outcome == "success"]

    models: list[dict[str, Any]] = []
    for target in {r.target for r in rs}:
        mine = [r for r in rs if r.target == target]
        good = sum(1 for r in mine if r.status < 400)
        models.append(
            {
                "target": target,
                "requests": len(mine),
                "succeeded": good,
                "success_rate": naive_rate(good, len(mine)),
                "prompt_tokens": sum(r.prompt_tokens or 0 for r in mine),
                "completion_tokens": sum(r.completion_tokens or 0 for r in mine),
                "latency_ms": naive_percentiles([r.latency_ms for r in mine]),
                "ttft_ms": naive_percentiles([r.ttft_ms for r in mine if r.ttft_ms is not None]),
            }
        )
    models.sort(key=lambda m: (-m["requests"], m["target"] is None, m["target"] or ""))

    providers: list[dict[str, Any]] = []
    for provider in {a.provider for a in atts}:
        mine_a = [a for a in atts if a.provider == provider]
        good = sum(1 for a in mine_a if a.outcome == "success")
        providers.append(
            {
                "provider": provider,
                "attempts": len(mine_a),
                "succeeded": good,
                "success_rate": naive_rate(good, len(mine_a)),
                "prompt_tokens": sum(a.prompt_tokens or 0 for a in mine_a),
                "completion_tokens": sum(a.completion_tokens or 0 for a in mine_a),
                "latency_ms": naive_percentiles([a.latency_ms for a in mine_a]),
            }
        )
    providers.sort(key=lambda p: (-p["attempts"], p["provider"]))

    classes: dict[str, int] = {}
    for a in atts:
        if a.outcome != "success":
            name = a.outcome or "unknown"
            classes[name] = classes.get(name, 0) + 1

    timeline = []
    for k in range(window.buckets):
        start = since + k * step
        inside = [r for r in rs if start <= r.at < start + step]
        errors = sum(1 for r in inside if r.status >= 400)
        timeline.append({"at": start, "requests": len(inside), "errors": errors})

    return {
        "window": window.name,
        "since": since,
        "until": until,
        "step_s": step,
        "totals": {
            "requests": len(rs),
            "succeeded": len(succeeded),
            "success_rate": naive_rate(len(succeeded), len(rs)),
            "attempts": len(atts),
            "attempts_succeeded": len(ok),
            "attempt_success_rate": naive_rate(len(ok), len(atts)),
            "fallbacks": sum(1 for r in rs if r.attempts > 1),
            "prompt_tokens": sum(r.prompt_tokens or 0 for r in rs),
            "completion_tokens": sum(r.completion_tokens or 0 for r in rs),
            "latency_ms": naive_percentiles([r.latency_ms for r in rs]),
            "ttft_ms": naive_percentiles([r.ttft_ms for r in rs if r.ttft_ms is not None]),
        },
        "timeline": timeline,
        "providers": providers,
        "models": models,
        "error_classes": [
            {"class": name, "count": n}
            for name, n in sorted(classes.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
    }


def report_of(
    window: Window, since: int, requests: list[RequestRow], attempts: list[AttemptRow]
) -> dict[str, Any]:
    until = since + window.span_s
    cells = an.cells_of(requests, attempts, since=since, until=until, step=window.step_s)
    return an.to_json(an.summarize(cells, window, since=since))


# --- the report ---------------------------------------------------------------------------------


@given(scenarios())
def test_the_report_of_the_cells_is_the_naive_recount_of_the_rows(
    scenario: tuple[Window, int, list[RequestRow], list[AttemptRow]],
) -> None:
    window, since, requests, attempts = scenario
    assert report_of(window, since, requests, attempts) == naive_report(
        window, since, requests, attempts
    )


@given(scenarios())
def test_the_timeline_adds_up_to_the_totals(
    scenario: tuple[Window, int, list[RequestRow], list[AttemptRow]],
) -> None:
    window, since, requests, attempts = scenario
    report = report_of(window, since, requests, attempts)
    timeline = report["timeline"]
    totals = report["totals"]
    assert len(timeline) == window.buckets
    assert [b["at"] for b in timeline] == list(range(since, report["until"], window.step_s))
    assert sum(b["requests"] for b in timeline) == totals["requests"]
    assert sum(b["errors"] for b in timeline) == totals["requests"] - totals["succeeded"]
    assert sum(m["requests"] for m in report["models"]) == totals["requests"]
    assert sum(p["attempts"] for p in report["providers"]) == totals["attempts"]
    failed = totals["attempts"] - totals["attempts_succeeded"]
    assert sum(c["count"] for c in report["error_classes"]) == failed


@given(scenarios(), st.data())
def test_cells_in_pieces_merge_into_the_cells_of_the_whole(
    scenario: tuple[Window, int, list[RequestRow], list[AttemptRow]], data: st.DataObject
) -> None:
    """What lets the store read a window from rollups and the log: any partition of the rows
    gives cells that add up to those of all of them, and so to the same report."""
    window, since, requests, attempts = scenario
    until = since + window.span_s
    r_parts = data.draw(st.lists(st.integers(0, 2), min_size=len(requests), max_size=len(requests)))
    a_parts = data.draw(st.lists(st.integers(0, 2), min_size=len(attempts), max_size=len(attempts)))
    pieces = Cells()
    for part in range(3):
        pieces += an.cells_of(
            [r for r, p in zip(requests, r_parts, strict=True) if p == part],
            [a for a, p in zip(attempts, a_parts, strict=True) if p == part],
            since=since,
            until=until,
            step=window.step_s,
        )
    whole = an.cells_of(requests, attempts, since=since, until=until, step=window.step_s)
    assert an.merge(pieces) == whole
    assert an.summarize(pieces, window, since=since) == an.summarize(whole, window, since=since)


def test_an_empty_window_has_zeros_and_no_rates_or_percentiles() -> None:
    window = an.WINDOWS["1h"]
    since, until = an.bounds(window, now=NOW)
    report = an.to_json(an.summarize(Cells(), window, since=since))
    assert report["totals"] == {
        "requests": 0,
        "succeeded": 0,
        "success_rate": None,
        "attempts": 0,
        "attempts_succeeded": 0,
        "attempt_success_rate": None,
        "fallbacks": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "latency_ms": {"p50": None, "p95": None},
        "ttft_ms": {"p50": None, "p95": None},
    }
    assert (report["window"], report["since"], report["until"], report["step_s"]) == (
        "1h",
        since,
        until,
        60,
    )
    assert report["timeline"] == [
        {"at": since + 60 * k, "requests": 0, "errors": 0} for k in range(60)
    ]
    assert report["providers"] == report["models"] == report["error_classes"] == []


def test_a_small_report_reads_as_the_page_expects() -> None:
    window = an.WINDOWS["1h"]
    since, _ = an.bounds(window, now=NOW)
    requests = [
        RequestRow(since + 1.5, "groq/llama", 200, 2, 10, 5, 100.0, 40.0),
        RequestRow(since + 61.0, None, 502, 1, None, None, 30.0, None),
    ]
    attempts = [
        AttemptRow(since + 1.5, "cerebras", "rate_limited", None, None, 10.0),
        AttemptRow(since + 1.5, "groq", "success", 10, 5, 90.0),
        AttemptRow(since + 61.0, "groq", "upstream_error", None, None, 29.0),
    ]
    report = report_of(window, since, requests, attempts)
    b = an.bin_value
    bin_ = an.latency_bin
    assert report["totals"] == {
        "requests": 2,
        "succeeded": 1,
        "success_rate": 0.5,
        "attempts": 3,
        "attempts_succeeded": 1,
        "attempt_success_rate": 1 / 3,
        "fallbacks": 1,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "latency_ms": {"p50": b(bin_(30.0)), "p95": b(bin_(100.0))},
        "ttft_ms": {"p50": b(bin_(40.0)), "p95": b(bin_(40.0))},
    }
    assert report["timeline"][:3] == [
        {"at": since, "requests": 1, "errors": 0},
        {"at": since + 60, "requests": 1, "errors": 1},
        {"at": since + 120, "requests": 0, "errors": 0},
    ]
    assert report["providers"] == [
        {
            "provider": "groq",
            "attempts": 2,
            "succeeded": 1,
            "success_rate": 0.5,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "latency_ms": {"p50": b(bin_(29.0)), "p95": b(bin_(90.0))},
        },
        {
            "provider": "cerebras",
            "attempts": 1,
            "succeeded": 0,
            "success_rate": 0.0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "latency_ms": {"p50": b(bin_(10.0)), "p95": b(bin_(10.0))},
        },
    ]
    assert [m["target"] for m in report["models"]] == ["groq/llama", None]
    assert report["models"][1] == {
        "target": None,
        "requests": 1,
        "succeeded": 0,
        "success_rate": 0.0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "latency_ms": {"p50": b(bin_(30.0)), "p95": b(bin_(30.0))},
        "ttft_ms": {"p50": None, "p95": None},
    }
    assert report["error_classes"] == [
        {"class": "rate_limited", "count": 1},
        {"class": "upstream_error", "count": 1},
    ]


def test_cells_of_another_window_are_refused() -> None:
    window = an.WINDOWS["1h"]
    since, _ = an.bounds(window, now=NOW)
    outside = an.RequestCell(since // 60 + 60, None, False, 1, 0, 0, 0)
    with pytest.raises(ValueError, match="outside the window"):
        an.summarize(Cells(requests=(outside,)), window, since=since)
    with pytest.raises(ValueError, match="must start on a step"):
        an.summarize(Cells(), window, since=since + 1)


# --- windows ------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", list(an.WINDOWS.values()), ids=list(an.WINDOWS))
def test_a_window_is_about_60_whole_steps(window: Window) -> None:
    assert window.buckets * window.step_s == window.span_s
    assert 50 <= window.buckets <= 60
    if window.span_s > 86_400:
        assert window.step_s % 3_600 == 0  # the store reads these timelines from hourly rollups


@given(st.sampled_from(list(an.WINDOWS.values())), st.floats(0, 4e9, allow_nan=False))
def test_a_window_ends_with_the_step_that_holds_now(window: Window, now: float) -> None:
    since, until = an.bounds(window, now=now)
    assert until - since == window.span_s
    assert since % window.step_s == 0
    assert until - window.step_s <= now < until


@given(st.integers(0, 10**7), st.integers(0, 10**6), st.sampled_from([60, 3_600, 86_400]))
def test_split_cuts_a_range_into_whole_periods_and_edges(
    since: int, length: int, period: int
) -> None:
    until = since + length
    cut = an.split(since, until, period)
    pieces = list(cut.edges)
    if cut.periods is not None:
        first, end = cut.periods
        assert first < end
        pieces.append((first * period, end * period))
    pieces.sort()
    covered = [(lo, hi) for lo, hi in pieces if lo < hi]
    assert covered == pieces  # no empty piece
    assert sum(hi - lo for lo, hi in pieces) == length
    if pieces:
        assert pieces[0][0] == since
        assert pieces[-1][1] == until
        assert all(a[1] == b[0] for a, b in pairwise(pieces))
    assert len(cut.edges) <= 2
    if cut.periods is not None:  # an edge is less than a period, else it would be one
        assert all(hi - lo < period for lo, hi in cut.edges)


# --- latency bins -------------------------------------------------------------------------------


@given(st.floats(0.1, an.EDGES_US[-1] / 1000, allow_nan=False, exclude_max=True))
def test_a_bin_stands_for_its_durations_within_the_documented_error(ms: float) -> None:
    assert abs(an.bin_value(an.latency_bin(ms)) - ms) <= an.BIN_ERROR * ms * (1 + 1e-12)


def test_the_bin_error_is_about_five_percent_wide_bins() -> None:
    assert 0.024 < an.BIN_ERROR < 0.03
    assert len(an.EDGES_US) < 400


@given(st.floats(0, 1e9, allow_nan=False), st.floats(0, 1e9, allow_nan=False))
def test_bins_keep_the_order_of_durations(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert an.latency_bin(low) <= an.latency_bin(high)


def test_bins_at_the_ends() -> None:
    assert an.latency_bin(0.0) == 0
    assert an.latency_bin(0.0999) == 0
    assert an.latency_bin(0.1) == 1
    assert an.bin_value(0) == 0.05
    top = len(an.EDGES_US)
    assert an.latency_bin(1e12) == top
    assert an.bin_value(top) == an.EDGES_US[-1] / 1000
    assert list(an.EDGES_US) == sorted(set(an.EDGES_US))


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=50))
def test_a_histogram_percentile_is_the_bin_of_the_nearest_rank(values: list[float]) -> None:
    histogram: dict[int, int] = {}
    for value in values:
        histogram[an.latency_bin(value)] = histogram.get(an.latency_bin(value), 0) + 1
    for p in (1, 50, 95, 99, 100):
        assert an.percentile(histogram, p) == naive_percentile(values, p)
    assert an.percentile({}, 50) is None
