"""Prometheus metrics, fed by the dispatcher's request logs (prometheus-client does the format)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from freellm.core.outcome import Kind
from freellm.shell.dispatch import RequestLog

__all__ = ["Metrics"]

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """One registry per running server (tests run many in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "freellm_requests", "Client requests by HTTP status", ["status"], registry=self.registry
        )
        self.attempts = Counter(
            "freellm_attempts",
            "Upstream attempts by provider and outcome",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "freellm_fallbacks",
            "Attempts that failed before another candidate was tried",
            ["provider"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "freellm_upstream_latency_seconds",
            "Latency of upstream attempts",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "freellm_tokens",
            "Tokens served, by provider and kind",
            ["provider", "kind"],
            registry=self.registry,
        )

    def watch(
        self, requests: Callable[[], int], connections: Callable[[], tuple[int, int]]
    ) -> None:
        """Gauges read when scraped: client requests in progress, and upstream connections
        (``open`` counts the ``idle`` ones too)."""
        Gauge(
            "freellm_requests_in_progress", "Client requests being answered", registry=self.registry
        ).set_function(requests)
        gauge = Gauge(
            "freellm_upstream_connections",
            "Connections to providers, open (idle included) and idle",
            ["state"],
            registry=self.registry,
        )
        gauge.labels("open").set_function(lambda: connections()[0])
        gauge.labels("idle").set_function(lambda: connections()[1])

    def observe(self, log: RequestLog) -> None:
        self.requests.labels(str(log.status)).inc()
        last = len(log.attempts) - 1
        for index, attempt in enumerate(log.attempts):
            self.attempts.labels(attempt.provider, attempt.outcome.value).inc()
            self.latency.labels(attempt.provider).observe(attempt.latency_s)
            if index < last or attempt.outcome is not Kind.SUCCESS:
                self.fallbacks.labels(attempt.provider).inc()
            if attempt.usage is not None:
                self.tokens.labels(attempt.provider, "prompt").inc(attempt.usage.prompt_tokens)
                self.tokens.labels(attempt.provider, "completion").inc(
                    attempt.usage.completion_tokens
                )

    def render(self) -> bytes:
        return generate_latest(self.registry)
