"""Prometheus metrics: an observer of every exchange, counting.

Each exchange that ends adds to plain counters (a dict keyed by label values, a list of
bucket counts); `proxy.exposition` turns them into Prometheus' text format, through
prometheus-client, only when scraped (and imports it only then). prometheus-client's own
metric objects take a lock and look up a child for every update, which cost a
measurable share of a small request.

Label values are bounded: a method outside the standard set is "other", paths appear
only as rule names, and nothing a client or upstream sends becomes a label verbatim.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable

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
LE = [str(float(bound)) for bound in BUCKETS] + ["+Inf"]


class Histogram:
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
        for le, count in zip(LE, self.counts, strict=True):
            total += count
            out.append((le, float(total)))
        return out


# Counters: name, help, label names.
COUNTERS = {
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
    "upstream_connections": (
        "Exchanges by how their upstream connection came (reused, warm: opened ahead, new) "
        "and its TLS handshake (resumed, full, none).",
        ("connection", "tls"),
    ),
}


class Metrics(Observer):
    def __init__(self, *, in_flight: Callable[[], int], sessions: Callable[[], int]) -> None:
        self.in_flight = in_flight
        self.sessions = sessions
        self.counters: dict[str, Counter[tuple[str, ...]]] = {name: Counter() for name in COUNTERS}
        for direction in ("request", "response"):
            self.counters["bytes"][(direction,)] = 0
        self.duration: dict[str, Histogram] = {}
        self.first_byte = Histogram()
        # What opening an upstream connection took, on its first use: TCP, then TLS.
        self.opened = Histogram()
        self.tls = Histogram()

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
                histogram = self.duration[kind] = Histogram()
            histogram.observe(exchange.duration_ms / 1000)
        if exchange.first_byte_ms is not None:
            self.first_byte.observe(exchange.first_byte_ms / 1000)
        if exchange.connection is not None:
            resumed = exchange.tls_resumed
            tls = "none" if resumed is None else "resumed" if resumed else "full"
            counters["upstream_connections"][exchange.connection, tls] += 1
            if exchange.opened_ms is not None:
                self.opened.observe(exchange.opened_ms / 1000)
            if exchange.tls_ms is not None:
                self.tls.observe(exchange.tls_ms / 1000)
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
