"""Prometheus metrics, through prometheus-client: an observer of every exchange.

Each exchange that ends adds to plain counters (a dict keyed by label values, a list of
bucket counts); prometheus-client turns them into its text format only when scraped.
Its own metric objects take a lock and look up a child for every update, which cost a
measurable share of a small request.

Label values are bounded: a method outside the standard set is "other", paths appear
only as rule names, and nothing a client or upstream sends becomes a label verbatim.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from proxy import __version__
from proxy.exchange import Exchange, Observer, Outcome

PREFIX = "codex_path_proxy_"
# LLM exchanges run from milliseconds (a refusal) to an hour (a long stream).
BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UPSTREAM_ERRORS = {
    Outcome.UPSTREAM_UNREACHABLE: "unreachable",
    Outcome.TIMEOUT: "timeout",
    Outcome.UPSTREAM_CUT: "cut",
}
# As prometheus-client writes bounds: 0.005, 1.0, 3600.0.
_LE = [str(float(bound)) for bound in BUCKETS] + ["+Inf"]


class _Histogram:
    """Observations by bucket (not cumulative until scraped), their sum and count."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        total, out = 0, []
        for le, count in zip(_LE, self.counts, strict=True):
            total += count
            out.append((le, float(total)))
        return out


# Counters: name, help, label names.
_COUNTERS = {
    "requests": (
        "Exchanges ended, by method, rule and status class.",
        ("kind", "method", "rule", "status_class"),
    ),
    "bytes": ("Body bytes relayed (WebSocket: message bytes), by direction.", ("direction",)),
    "upstream_errors": ("Exchanges the upstream failed: unreachable, timeout or cut.", ("error",)),
    "outcomes": ("How exchanges ended.", ("kind", "outcome")),
    "rewrites": ("Requests whose path a rule rewrote, by rule.", ("rule",)),
    "stream_ends": (
        "Event streams by how they ended (response.completed, response.failed, … or none).",
        ("end",),
    ),
}


class Metrics(Observer):
    def __init__(self, *, in_flight: Callable[[], int], sessions: Callable[[], int]) -> None:
        # A `_created` series beside every counter and histogram doubles what is scraped
        # and no dashboard reads it (a process-wide switch: this is the only registry).
        disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
        self.registry = registry = CollectorRegistry(auto_describe=True)
        # What scrapers expect of any process: process_* (CPU, memory, open files),
        # python_info and python_gc_*, as prometheus-client's default registry has them.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.in_flight = in_flight
        self.sessions = sessions
        self.counters: dict[str, Counter[tuple[str, ...]]] = {name: Counter() for name in _COUNTERS}
        for direction in ("request", "response"):
            self.counters["bytes"][(direction,)] = 0
        self.duration: dict[str, _Histogram] = {}
        self.first_byte = _Histogram()
        registry.register(self)

    def ended(self, exchange: Exchange) -> None:
        kind = "websocket" if exchange.websocket is not None else "http"
        status = exchange.status
        method = exchange.method if exchange.method in METHODS else "other"
        counters = self.counters
        counters["requests"][
            kind, method, exchange.rule or "none", f"{status // 100}xx" if status else "none"
        ] += 1
        if exchange.duration_ms is not None:
            histogram = self.duration.get(kind)
            if histogram is None:
                histogram = self.duration[kind] = _Histogram()
            histogram.observe(exchange.duration_ms / 1000)
        if exchange.first_byte_ms is not None:
            self.first_byte.observe(exchange.first_byte_ms / 1000)
        sent = counters["bytes"]
        sent["request",] += exchange.request_bytes
        sent["response",] += exchange.response_bytes
        outcome = exchange.outcome
        counters["outcomes"][kind, str(outcome)] += 1
        if outcome in UPSTREAM_ERRORS:
            counters["upstream_errors"][UPSTREAM_ERRORS[outcome],] += 1
        if exchange.rule:
            counters["rewrites"][exchange.rule,] += 1
        if exchange.sse is not None:
            counters["stream_ends"][exchange.sse.terminal or "none",] += 1

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        """What prometheus-client writes when scraped."""
        info = GaugeMetricFamily(
            PREFIX + "build_info",
            "The running version, as a label; the value is always 1.",
            labels=("version",),
        )
        info.add_metric((__version__,), 1)
        yield info
        for name, (documentation, labels) in _COUNTERS.items():
            family = CounterMetricFamily(PREFIX + name, documentation, labels=labels)
            for values, count in self.counters[name].items():
                family.add_metric(values, count)
            yield family
        duration = HistogramMetricFamily(
            PREFIX + "request_duration_seconds",
            "Time from request to the end of the exchange (a stream's end).",
            labels=("kind",),
        )
        for kind, histogram in self.duration.items():
            duration.add_metric((kind,), histogram.buckets(), histogram.sum)
        yield duration
        first_byte = HistogramMetricFamily(
            PREFIX + "time_to_first_byte_seconds",
            "Time from request to the first response body byte.",
        )
        first_byte.add_metric((), self.first_byte.buckets(), self.first_byte.sum)
        yield first_byte
        # Read when scraped: the lifecycle counts exchanges, the tunnels WebSocket sessions.
        in_flight = GaugeMetricFamily(
            PREFIX + "in_flight",
            "Exchanges in progress: HTTP requests and WebSocket sessions.",
            labels=("kind",),
        )
        sessions = self.sessions()
        in_flight.add_metric(("http",), self.in_flight() - sessions)
        in_flight.add_metric(("websocket",), sessions)
        yield in_flight
