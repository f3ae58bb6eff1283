"""Prometheus metrics, through prometheus-client: an observer of every exchange.

Label values are bounded: a method outside the standard set is "other", paths appear
only as rule names, and nothing a client or upstream sends becomes a label verbatim.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from proxy import __version__
from proxy.exchange import Exchange, Observer, Outcome

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


def _kind(exchange: Exchange) -> str:
    return "websocket" if exchange.websocket is not None else "http"


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
        prefix = "codex_path_proxy_"
        Gauge(
            prefix + "build_info",
            "The running version, as a label; the value is always 1.",
            ("version",),
            registry=registry,
        ).labels(__version__).set(1)
        self.requests = Counter(
            prefix + "requests",
            "Exchanges ended, by method, rule and status class.",
            ("kind", "method", "rule", "status_class"),
            registry=registry,
        )
        self.duration = Histogram(
            prefix + "request_duration_seconds",
            "Time from request to the end of the exchange (a stream's end).",
            ("kind",),
            buckets=BUCKETS,
            registry=registry,
        )
        self.first_byte = Histogram(
            prefix + "time_to_first_byte_seconds",
            "Time from request to the first response body byte.",
            buckets=BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            prefix + "in_flight",
            "Exchanges in progress: HTTP requests and WebSocket sessions.",
            ("kind",),
            registry=registry,
        )
        self.bytes = Counter(
            prefix + "bytes",
            "Body bytes relayed (WebSocket: message bytes), by direction.",
            ("direction",),
            registry=registry,
        )
        self.upstream_errors = Counter(
            prefix + "upstream_errors",
            "Exchanges the upstream failed: unreachable, timeout or cut.",
            ("error",),
            registry=registry,
        )
        self.outcomes = Counter(
            prefix + "outcomes",
            "How exchanges ended.",
            ("kind", "outcome"),
            registry=registry,
        )
        self.rewrites = Counter(
            prefix + "rewrites",
            "Requests whose path a rule rewrote, by rule.",
            ("rule",),
            registry=registry,
        )
        self.stream_ends = Counter(
            prefix + "stream_ends",
            "Event streams by how they ended (response.completed, response.failed, … or none).",
            ("end",),
            registry=registry,
        )
        # Read when scraped: the lifecycle counts exchanges, the session set WebSockets.
        self.in_flight.labels("http").set_function(lambda: in_flight() - sessions())
        self.in_flight.labels("websocket").set_function(sessions)
        self._children: dict[tuple[object, ...], Any] = {}
        for direction in ("request", "response"):
            self.bytes.labels(direction)

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """A metric's child for these labels: prometheus-client's labels() takes a lock and
        builds a tuple on every call; the set of label values is bounded, so keep them."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def ended(self, exchange: Exchange) -> None:
        kind = _kind(exchange)
        status = exchange.status
        method = exchange.method if exchange.method in METHODS else "other"
        rule = exchange.rule or "none"
        status_class = f"{status // 100}xx" if status else "none"
        child = self._child
        child(self.requests, kind, method, rule, status_class).inc()
        if exchange.duration_ms is not None:
            child(self.duration, kind).observe(exchange.duration_ms / 1000)
        if exchange.first_byte_ms is not None:
            self.first_byte.observe(exchange.first_byte_ms / 1000)
        child(self.bytes, "request").inc(exchange.request_bytes)
        child(self.bytes, "response").inc(exchange.response_bytes)
        child(self.outcomes, kind, str(exchange.outcome)).inc()
        if exchange.outcome in UPSTREAM_ERRORS:
            child(self.upstream_errors, UPSTREAM_ERRORS[exchange.outcome]).inc()
        if exchange.rule:
            child(self.rewrites, exchange.rule).inc()
        if exchange.sse is not None:
            child(self.stream_ends, exchange.sse.terminal or "none").inc()
