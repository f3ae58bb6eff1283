"""Samples in, one table of medians out (spread, ratio to direct and to nginx), the
issue's targets checked, and everything kept in a JSON file."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Metric:
    key: str  # "W1 c=16 req/s": workload, cell and what is measured
    unit: str
    better: str  # "higher" | "lower"
    about: str = ""


@dataclass(slots=True)
class Results:
    metrics: dict[str, Metric] = field(default_factory=dict)
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    disturbed: list[str] = field(default_factory=list)
    cells: list[dict[str, object]] = field(default_factory=list)
    features: dict[str, dict[str, object]] = field(default_factory=dict)

    def add(self, key: str, unit: str, better: str, target: str, value: float) -> None:
        self.metrics.setdefault(key, Metric(key=key, unit=unit, better=better))
        self.samples.setdefault(key, {}).setdefault(target, []).append(value)

    def median(self, key: str, target: str) -> float | None:
        values = self.samples.get(key, {}).get(target)
        return statistics.median(values) if values else None

    def spread(self, key: str, target: str) -> float | None:
        """(max - min) / |median| over the repetitions."""
        values = self.samples.get(key, {}).get(target)
        if not values or len(values) < 2:
            return None
        middle = statistics.median(values)
        return (max(values) - min(values)) / abs(middle) if middle else None

    def ratio(self, key: str, target: str, reference: str) -> float | None:
        value, base = self.median(key, target), self.median(key, reference)
        # A ratio to a zero or negative figure (an added delay below direct's) means nothing.
        if value is None or base is None or base <= 0:
            return None
        return value / base

    def summary(self) -> dict[str, dict[str, dict[str, object]]]:
        out: dict[str, dict[str, dict[str, object]]] = {}
        for key, by_target in self.samples.items():
            metric = self.metrics[key]
            out[key] = {}
            for target, values in by_target.items():
                out[key][target] = {
                    "unit": metric.unit,
                    "better": metric.better,
                    "median": self.median(key, target),
                    "spread": self.spread(key, target),
                    "n": len(values),
                    "samples": values,
                    "x_direct": self.ratio(key, target, "direct"),
                    "x_nginx": self.ratio(key, target, "nginx"),
                }
        return out


def number(value: float | None) -> str:
    if value is None:
        return "-"
    size = abs(value)
    if size >= 10000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if value < 100 else f"{value:.0f}x"


def _percent(share: float | None) -> str:
    if share is None:
        return ""
    return f"{share:.0%}" if share < 10 else ">999%"


def table(results: Results, targets: list[str]) -> str:
    """One row per metric; per target: median, spread, ratio to direct, ratio to nginx."""
    head = f"{'metric':<34}"
    for name in targets:
        head += f" | {name[:30]:>30}"
    sub = f"{'(unit)':<34}"
    for _ in targets:
        sub += f" | {'median  spread  xdirect  xnginx':>30}"
    lines = [head, sub, "-" * len(head)]
    workload = ""
    # Grouped by workload in the order each first appeared (derived rows join their own).
    order = {key.split()[0]: index for index, key in reversed(list(enumerate(results.metrics)))}
    keys = sorted(results.metrics, key=lambda key: order[key.split()[0]])
    for key in keys:
        metric = results.metrics[key]
        if key.split()[0] != workload:
            if workload:
                lines.append("")
            workload = key.split()[0]
        row = f"{key + ' (' + metric.unit + ')':<34}"
        for name in targets:
            median = results.median(key, name)
            if median is None:
                row += f" | {'-':>30}"
                continue
            spread = results.spread(key, name)
            cell = (
                f"{number(median):>8} {_percent(spread):>6}"
                f" {_ratio(results.ratio(key, name, 'direct')):>7}"
                f" {_ratio(results.ratio(key, name, 'nginx')):>7}"
            )
            row += f" | {cell:>30}"
        lines.append(row)
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Goal:
    name: str
    check: Callable[[Results, str], tuple[bool | None, str]]
    # Checked against the plain proxy: for the other proxy targets only.
    extra: bool = False


def _at_least_x(
    key: str, factor: float, reference: str
) -> Callable[[Results, str], tuple[bool | None, str]]:
    def check(results: Results, target: str) -> tuple[bool | None, str]:
        ratio = results.ratio(key, target, reference)
        if ratio is None:
            return None, "not measured"
        return ratio >= factor, f"{ratio:.2f}x {reference}"

    return check


def _at_most(
    key: str, limit: float, unit: str
) -> Callable[[Results, str], tuple[bool | None, str]]:
    def check(results: Results, target: str) -> tuple[bool | None, str]:
        value = results.median(key, target)
        if value is None:
            return None, "not measured"
        return value <= limit, f"{number(value)} {unit}"

    return check


def _not_above(
    key: str, reference: str, factor: float = 1.0
) -> Callable[[Results, str], tuple[bool | None, str]]:
    def check(results: Results, target: str) -> tuple[bool | None, str]:
        value, base = results.median(key, target), results.median(key, reference)
        if value is None or base is None:
            return None, "not measured"
        unit = results.metrics[key].unit
        return value <= base * factor, f"{number(value)} vs {reference} {number(base)} {unit}"

    return check


def _none_failed(prefix: str) -> Callable[[Results, str], tuple[bool | None, str]]:
    def check(results: Results, target: str) -> tuple[bool | None, str]:
        key = f"{prefix} failed streams"
        values = results.samples.get(key, {}).get(target)
        if not values:
            return None, "not measured"
        return sum(values) == 0, f"{sum(values):.0f} failed"

    return check


# The targets of the forwarding-path issue (13), each a ratio measured in the same run.
GOALS = (
    Goal("W1 c=16 throughput >= 0.35x nginx", _at_least_x("W1 c=16 req/s", 0.35, "nginx")),
    Goal("W1 c=16 CPU/request <= 3x nginx's", _not_above("W1 c=16 CPU/req", "nginx", 3.0)),
    Goal("W2a CPU/event <= 2x nginx's", _not_above("W2a c=16 CPU/event", "nginx", 2.0)),
    Goal("W2b c=1 added delay p50 <= nginx's", _not_above("W2b c=1 added p50", "nginx")),
    Goal("W2b c=1 added delay p99 <= nginx's", _not_above("W2b c=1 added p99", "nginx")),
    Goal("W2b c=32 added delay p50 <= nginx's", _not_above("W2b c=32 added p50", "nginx")),
    Goal("W2b c=32 added delay p99 <= nginx's", _not_above("W2b c=32 added p99", "nginx")),
    Goal("W3 50 MB body >= 1.2x nginx MB/s", _at_least_x("W3 body50 fast MB/s", 1.2, "nginx")),
    Goal("W3 4 MB line >= 1x nginx MB/s", _at_least_x("W3 line4 fast MB/s", 1.0, "nginx")),
    Goal("W3 slow reader 50 MB: RSS growth <= 4 MB", _at_most("W3 body50 slow RSS+", 4, "MB")),
    Goal("W3 slow reader 4 MB line: RSS growth <= 4 MB", _at_most("W3 line4 slow RSS+", 4, "MB")),
    Goal("W4 RSS per open stream <= nginx's", _not_above("W4 RSS/stream", "nginx")),
    Goal("W4 no stream fails", _none_failed("W4")),
    Goal("W5 first 200 within 10x nginx's", _not_above("W5 serving", "nginx", 10.0)),
    # The debugging features, as extra targets beside the plain proxy (--add-proxy).
    Goal(
        # Throughput, not CPU: the inspector target's page reader is in its process tree.
        "W1 c=16 throughput >= 1/1.5 of the plain proxy's",
        _at_least_x("W1 c=16 req/s", 1 / 1.5, "proxy"),
        extra=True,
    ),
    Goal(
        "W2b c=1 added delay p50 <= 1.5x the plain proxy's",
        _not_above("W2b c=1 added p50", "proxy", 1.5),
        extra=True,
    ),
    Goal(
        "W2b c=32 added delay p50 <= 1.5x the plain proxy's",
        _not_above("W2b c=32 added p50", "proxy", 1.5),
        extra=True,
    ),
)


def goals(results: Results, target: str) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for goal in GOALS:
        if goal.extra and target == "proxy":
            continue
        passed, shown = goal.check(results, target)
        out.append({"goal": goal.name, "passed": passed, "value": shown})
    return out


def goals_text(results: Results, target: str) -> str:
    lines = [f"targets for {target}:"]
    for row in goals(results, target):
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[row["passed"]]  # type: ignore[index]
        lines.append(f"  {verdict}  {row['goal']:<46} {row['value']}")
    return "\n".join(lines)
