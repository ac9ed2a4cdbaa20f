"""/metrics: what the plain counters say once the registry reads them, in Prometheus' text."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from freellm.core.dialects.openai import Usage
from freellm.core.outcome import Kind
from freellm.shell.dispatch import AttemptLog, RequestLog
from freellm.shell.metrics import Metrics


def attempt(provider: str, outcome: Kind, latency_s: float, usage: Usage | None) -> AttemptLog:
    return AttemptLog(provider, "m", "k", 200, outcome, latency_s, usage)


def request(status: int, *attempts: AttemptLog) -> RequestLog:
    return RequestLog("r", 0.0, "auto", False, None, status, None, attempts, None, 0.1)


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_requests_attempts_fallbacks_latency_and_tokens_are_counted_and_rendered() -> None:
    metrics = Metrics()
    metrics.watch(lambda: 3, lambda: (5, 2))
    metrics.observe(
        request(
            200,
            attempt("groq", Kind.RATE_LIMITED, 0.05, None),
            attempt("cerebras", Kind.SUCCESS, 0.3, Usage(7, 2)),
        )
    )
    metrics.observe(request(200, attempt("cerebras", Kind.SUCCESS, 200.0, Usage(1, 1))))
    metrics.observe(request(502, attempt("groq", Kind.TIMEOUT, 1.0, None)))
    got = samples(metrics)
    assert got["freellm_requests_total", (("status", "200"),)] == 2
    assert got["freellm_requests_total", (("status", "502"),)] == 1
    assert got["freellm_attempts_total", (("outcome", "rate_limited"), ("provider", "groq"))] == 1
    assert got["freellm_attempts_total", (("outcome", "success"), ("provider", "cerebras"))] == 2
    assert got["freellm_fallbacks_total", (("provider", "groq"),)] == 2  # a 429, a timeout
    assert ("freellm_fallbacks_total", (("provider", "cerebras"),)) not in got
    assert got["freellm_tokens_total", (("kind", "prompt"), ("provider", "cerebras"))] == 8
    assert got["freellm_tokens_total", (("kind", "completion"), ("provider", "cerebras"))] == 3
    # A bucket counts the latencies up to its bound (0.05 is in le=0.05), cumulatively.
    groq = {
        labels[0][1]: value
        for (name, labels), value in got.items()
        if name == "freellm_upstream_latency_seconds_bucket" and ("provider", "groq") in labels
    }
    assert groq["0.05"] == 1
    assert groq["0.5"] == 1
    assert groq["1.0"] == 2
    assert groq["+Inf"] == 2
    cerebras = ("provider", "cerebras")
    assert got["freellm_upstream_latency_seconds_count", (cerebras,)] == 2
    assert got["freellm_upstream_latency_seconds_sum", (cerebras,)] == 200.3
    assert got["freellm_upstream_latency_seconds_bucket", (("le", "120.0"), cerebras)] == 1
    assert got["freellm_requests_in_progress", ()] == 3
    assert got["freellm_upstream_connections", (("state", "open"),)] == 5
    assert got["freellm_upstream_connections", (("state", "idle"),)] == 2
