"""Metrics as Prometheus text, through prometheus-client: built from the counters of
`proxy.metrics` when scraped, beside the standard process, platform and GC collectors.
Imported with the control plane, never on the forwarding path."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from proxy import __version__
from proxy.metrics import COUNTERS, PREFIX, Metrics

__all__ = ["CONTENT_TYPE_LATEST", "Exposition", "registry", "text"]


def registry(metrics: Metrics) -> CollectorRegistry:
    """The registry a scrape reads: this proxy's metrics and the process's."""
    # A `_created` series beside every counter and histogram doubles what is scraped
    # and no dashboard reads it (a process-wide switch: this is the only registry).
    disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
    registry = CollectorRegistry(auto_describe=True)
    # What scrapers expect of any process: process_* (CPU, memory, open files),
    # python_info and python_gc_*, as prometheus-client's default registry has them.
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(Exposition(metrics))
    return registry


def text(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


class Exposition:
    """A prometheus-client collector reading the proxy's counters."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        """What prometheus-client writes when scraped."""
        info = GaugeMetricFamily(
            PREFIX + "build_info",
            "The running version, as a label; the value is always 1.",
            labels=("version",),
        )
        info.add_metric((__version__,), 1)
        yield info
        for name, (documentation, labels) in COUNTERS.items():
            family = CounterMetricFamily(PREFIX + name, documentation, labels=labels)
            for values, count in metrics.counters[name].items():
                family.add_metric(values, count)
            yield family
        duration = HistogramMetricFamily(
            PREFIX + "request_duration_seconds",
            "Time from request to the end of the exchange (a stream's end).",
            labels=("kind",),
        )
        for kind, histogram in metrics.duration.items():
            duration.add_metric((kind,), histogram.buckets(), histogram.sum)
        yield duration
        first_byte = HistogramMetricFamily(
            PREFIX + "time_to_first_byte_seconds",
            "Time from request to the first response body byte.",
        )
        first_byte.add_metric((), metrics.first_byte.buckets(), metrics.first_byte.sum)
        yield first_byte
        first_token = HistogramMetricFamily(
            PREFIX + "time_to_first_token_seconds",
            "Time from request to a stream's first output (a text, reasoning or tool-call delta).",
        )
        first_token.add_metric((), metrics.first_token.buckets(), metrics.first_token.sum)
        yield first_token
        yield from plan(metrics)
        for name, documentation, histogram in (
            (
                "upstream_connect_seconds",
                "TCP (and any CONNECT tunnel) of a new upstream connection.",
                metrics.opened,
            ),
            ("upstream_tls_seconds", "TLS handshake of a new upstream connection.", metrics.tls),
        ):
            opening = HistogramMetricFamily(PREFIX + name, documentation)
            opening.add_metric((), histogram.buckets(), histogram.sum)
            yield opening
        # Read when scraped: the lifecycle counts exchanges, the tunnels WebSocket sessions.
        in_flight = GaugeMetricFamily(
            PREFIX + "in_flight",
            "Exchanges in progress: HTTP requests and WebSocket sessions.",
            labels=("kind",),
        )
        sessions = metrics.sessions()
        in_flight.add_metric(("http",), metrics.in_flight() - sessions)
        in_flight.add_metric(("websocket",), sessions)
        yield in_flight


def plan(metrics: Metrics) -> Iterator[Metric]:
    """The plan's windows as the ledger last saw them: used percent and reset time per
    family and window, and whether a 429 said a family's limit is reached. Without the
    account label, each series is the account seen last."""
    labels: tuple[str, ...] = ("family", "window")
    if metrics.account_label:
        labels = ("account", *labels)
    used = GaugeMetricFamily(
        PREFIX + "plan_used_percent",
        "Percent of a plan's rate-limit window used, as the upstream last said.",
        labels=labels,
    )
    resets = GaugeMetricFamily(
        PREFIX + "plan_reset_timestamp_seconds",
        "When a plan's rate-limit window starts anew (Unix time), as the upstream last said.",
        labels=labels,
    )
    reached = GaugeMetricFamily(
        PREFIX + "plan_limit_reached",
        "1 while a 429 (usage_limit_reached) said a family's limit is reached, until it lifts.",
        labels=labels[:-1],
    )
    now = metrics.usage.clock()
    series: dict[tuple[str, ...], tuple[float, float | None]] = {}
    stopped: dict[tuple[str, ...], float] = {}
    for account in reversed(metrics.usage.ledger.view(now)["accounts"]):  # the newest last
        for limit in account["limits"]:
            key = (account["account"], limit["family"])[0 if metrics.account_label else 1 :]
            for window in limit["windows"]:
                series[(*key, window["label"])] = (window["used_percent"], window["resets_at"])
            stopped[key] = 1.0 if limit["reached"] is not None else 0.0
    for key, (percent, at) in series.items():
        used.add_metric(key, percent)
        if at is not None:
            resets.add_metric(key, at)
    for key, value in stopped.items():
        reached.add_metric(key, value)
    yield used
    yield resets
    yield reached
