"""Prometheus metrics, fed by the dispatcher's request logs (prometheus-client does the format).

A request adds to plain counters (dictionaries and lists): prometheus-client's own metric objects
take a lock and look their labels up on every change, which cost a request about 0.03 ms of CPU
(a few percent of all it costs). The registry reads the counters when ``/metrics`` is scraped,
through :class:`Metrics` as a custom collector.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from freellm.core.outcome import Kind
from freellm.shell.dispatch import RequestLog

__all__ = ["Metrics"]

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class _Histogram:
    """One provider's upstream latencies: a count per bucket (the last: past every bound)."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        buckets = []
        total = 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            total += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
        return buckets


class Metrics:
    """One registry per running server (tests run many in one process)."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()  # by status
        self.attempts: Counter[tuple[str, str]] = Counter()  # by provider and outcome
        self.fallbacks: Counter[str] = Counter()  # by provider
        self.tokens: Counter[tuple[str, str]] = Counter()  # by provider and kind
        self.latency: dict[str, _Histogram] = {}  # by provider
        self._requests_in_progress: Callable[[], int] = lambda: 0
        self._connections: Callable[[], tuple[int, int]] = lambda: (0, 0)
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def watch(
        self, requests: Callable[[], int], connections: Callable[[], tuple[int, int]]
    ) -> None:
        """Gauges read when scraped: client requests in progress, and upstream connections
        (``open`` counts the ``idle`` ones too)."""
        self._requests_in_progress = requests
        self._connections = connections

    def observe(self, log: RequestLog) -> None:
        self.requests[str(log.status)] += 1
        last = len(log.attempts) - 1
        for index, attempt in enumerate(log.attempts):
            provider = attempt.provider
            self.attempts[provider, attempt.outcome.value] += 1
            histogram = self.latency.get(provider)
            if histogram is None:
                histogram = self.latency[provider] = _Histogram()
            histogram.observe(attempt.latency_s)
            if index < last or attempt.outcome is not Kind.SUCCESS:
                self.fallbacks[provider] += 1
            usage = attempt.usage
            if usage is not None:
                self.tokens[provider, "prompt"] += usage.prompt_tokens
                self.tokens[provider, "completion"] += usage.completion_tokens

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """The counters as Prometheus metric families (the registry calls this on a scrape)."""
        requests = CounterMetricFamily(
            "freellm_requests", "Client requests by HTTP status", labels=["status"]
        )
        for status, count in sorted(self.requests.items()):
            requests.add_metric([status], count)
        yield requests
        attempts = CounterMetricFamily(
            "freellm_attempts",
            "Upstream attempts by provider and outcome",
            labels=["provider", "outcome"],
        )
        for labels, count in sorted(self.attempts.items()):
            attempts.add_metric(list(labels), count)
        yield attempts
        fallbacks = CounterMetricFamily(
            "freellm_fallbacks",
            "Attempts that failed before another candidate was tried",
            labels=["provider"],
        )
        for provider, count in sorted(self.fallbacks.items()):
            fallbacks.add_metric([provider], count)
        yield fallbacks
        latency = HistogramMetricFamily(
            "freellm_upstream_latency_seconds", "Latency of upstream attempts", labels=["provider"]
        )
        for provider, histogram in sorted(self.latency.items()):
            latency.add_metric([provider], histogram.cumulative(), sum_value=histogram.sum)
        yield latency
        tokens = CounterMetricFamily(
            "freellm_tokens", "Tokens served, by provider and kind", labels=["provider", "kind"]
        )
        for labels, count in sorted(self.tokens.items()):
            tokens.add_metric(list(labels), count)
        yield tokens
        yield GaugeMetricFamily(
            "freellm_requests_in_progress",
            "Client requests being answered",
            value=self._requests_in_progress(),
        )
        connections = GaugeMetricFamily(
            "freellm_upstream_connections",
            "Connections to providers, open (idle included) and idle",
            labels=["state"],
        )
        open_, idle = self._connections()
        connections.add_metric(["open"], open_)
        connections.add_metric(["idle"], idle)
        yield connections
