"""Prometheus metrics: an observer of every exchange, counting.

Each exchange that ends adds to plain counters (a dict keyed by label values, a list of
bucket counts); `proxy.exposition` turns them into Prometheus' text format, through
prometheus-client, only when scraped (and imports it only then). prometheus-client's own
metric objects take a lock and look up a child for every update, which cost a
measurable share of a small request.

Label values are bounded: a method outside the standard set is "other", paths appear
only as rule names, and nothing a client or upstream sends becomes a label verbatim,
except a model's name (the first 32 that look like one; any other is "other") and a
plan limit's family (an id of at most 64 lower-case letters, digits and `_`, 16 an
account).

Plan usage is counted here too: `accounting` reads it from every exchange into its
ledger, which `/_proxy/usage` shows and the plan gauges are read from when scraped.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Callable

from proxy import accounting
from proxy.accounting import Accounting
from proxy.exchange import Exchange, Observer, Outcome
from proxy.usage import Report

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
MODELS = 32
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
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
    "tokens": (
        "Tokens the responses reported (response.usage), by model and kind: input, cached "
        "(of the input), output, reasoning (of the output).",
        ("model", "kind"),
    ),
}


class Metrics(Observer):
    def __init__(
        self,
        *,
        in_flight: Callable[[], int],
        sessions: Callable[[], int],
        account_label: bool = False,
        usage: Accounting | None = None,
    ) -> None:
        self.in_flight = in_flight
        self.sessions = sessions
        # The plan gauges carry the account's fingerprint as a label (one series each).
        self.account_label = account_label
        self.usage = usage or Accounting()
        self._models: set[str] = set()
        self.counters: dict[str, Counter[tuple[str, ...]]] = {name: Counter() for name in COUNTERS}
        for direction in ("request", "response"):
            self.counters["bytes"][(direction,)] = 0
        self.duration: dict[str, Histogram] = {}
        self.first_byte = Histogram()
        self.first_token = Histogram()
        # What opening an upstream connection took, on its first use: TCP, then TLS.
        self.opened = Histogram()
        self.tls = Histogram()

    def metered(self, exchange: Exchange, report: Report, source: str) -> None:
        self.usage.metered(exchange, report, source)

    def ended(self, exchange: Exchange) -> None:
        if exchange.meter is not None:
            self.usage.ended(exchange)
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
            if exchange.first_token_ms is not None:
                self.first_token.observe(exchange.first_token_ms / 1000)
        if exchange.sse is not None or exchange.meter is not None:
            self._count_tokens(exchange)

    def _count_tokens(self, exchange: Exchange) -> None:
        found, model = accounting.tokens_of(exchange)
        if found is not None:
            label = self._model(model)
            tokens = self.counters["tokens"]
            for kind, count in found.as_dict().items():
                tokens[label, kind] += count

    def _model(self, model: str | None) -> str:
        """A model's name as a label: the first MODELS names that look like one."""
        if model is None:
            return "unknown"
        if model in self._models:
            return model
        if len(self._models) < MODELS and _MODEL.fullmatch(model):
            self._models.add(model)
            return model
        return "other"
