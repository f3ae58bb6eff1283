"""The five workloads of issue 7. Each repetition visits every target in a rotated order,
so drift over the run falls on all of them alike."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import procstat
import targets as targets_mod
from client import Client, EventTimes, Result, Sink
from measure import Snapshot, Usage
from report import Results
from targets import Target

HERE = Path(__file__).resolve().parent
MB = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Params:
    """How long and how often: `--quick` shrinks durations, never the shape of a workload."""

    reps: int
    w1_warmup: bool
    w1_seconds: int
    w1_concurrency: tuple[int, ...]
    w2a_seconds: float
    w2_events: int
    w2b_events: int
    w2b_concurrency: tuple[int, ...]
    w3_fast_seconds: float
    w3_body_mb: int
    w3_line_mb: int
    w3_slow_body_mb_s: float
    w3_slow_line_mb_s: float
    w4_streams: int
    w4_hold_seconds: float
    w4_every_ms: int
    w4_ramp_seconds: float
    w4_reps: int
    w5_reps: int
    # Shares of the time budget, from each mode's own durations; what a workload leaves
    # unused goes to those after it.
    shares: tuple[tuple[str, float], ...]


FULL = Params(
    reps=5,
    w1_warmup=True,
    w1_seconds=3,
    w1_concurrency=(1, 16, 64),
    w2a_seconds=2.0,
    w2_events=200,
    w2b_events=200,
    w2b_concurrency=(1, 32),
    w3_fast_seconds=1.5,
    w3_body_mb=50,
    w3_line_mb=4,
    w3_slow_body_mb_s=32,
    w3_slow_line_mb_s=8,
    w4_streams=500,
    w4_hold_seconds=10,
    w4_every_ms=500,
    w4_ramp_seconds=1.0,
    w4_reps=3,
    w5_reps=5,
    shares=(("W1", 0.27), ("W2", 0.18), ("W3", 0.17), ("W4", 0.33), ("W5", 0.05)),
)
QUICK = Params(
    reps=3,
    w1_warmup=False,
    w1_seconds=1,
    w1_concurrency=(1, 16, 64),
    w2a_seconds=0.3,
    w2_events=200,
    w2b_events=30,
    w2b_concurrency=(1, 32),
    w3_fast_seconds=0.3,
    w3_body_mb=50,
    w3_line_mb=4,
    w3_slow_body_mb_s=128,
    w3_slow_line_mb_s=16,
    w4_streams=500,
    w4_hold_seconds=0.5,
    w4_every_ms=125,
    w4_ramp_seconds=0.25,
    w4_reps=3,
    w5_reps=3,
    shares=(("W1", 0.35), ("W2", 0.14), ("W3", 0.19), ("W4", 0.26), ("W5", 0.06)),
)


def small_request_body(size: int = 2048) -> bytes:
    """A Responses API request of exactly `size` bytes."""
    head = (
        '{"model":"gpt-5-codex","instructions":"You are a coding agent.","stream":false,'
        '"store":false,"input":[{"type":"message","role":"user","content":[{"type":"input_text",'
        '"text":"'
    )
    tail = '"}]}],"tools":[],"tool_choice":"auto","parallel_tool_calls":false}'
    text = ("Refactor the function below and explain the change. " * 64)[
        : size - len(head) - len(tail)
    ]
    body = (head + text + tail).encode()
    assert len(body) == size
    return body


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile; `share` in [0, 1]."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))
    return ordered[index]


def rotated(items: Sequence[T], by: int) -> list[T]:
    shift = by % len(items)
    return [*items[shift:], *items[:shift]]


@dataclass(slots=True)
class Bench:
    """Everything a workload needs: where things run and where results go."""

    targets: list[Target]
    upstream_port: int
    upstream_pid: int
    proxy_cpu: int
    load_cpu: int
    params: Params
    scratch: Path
    deadline: float
    max_foreign: float
    retries: int
    results: Results = field(default_factory=Results)
    out: Callable[[str], None] = print

    @property
    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    async def cell(
        self, target: Target, label: str, run: Callable[[], Awaitable[T]]
    ) -> tuple[T, Usage]:
        """Run one measured repetition; redo it when another process used a reserved core."""
        for attempt in range(self.retries + 1):
            before = Snapshot.take(target.pid, (self.upstream_pid,))
            value = await run()
            after = Snapshot.take(target.pid, (self.upstream_pid,))
            ours = {os.getpid(), self.upstream_pid}
            if target.pid is not None:
                ours.update(procstat.tree(target.pid))
            usage = Usage.between(
                before,
                after,
                proxy_cpu=self.proxy_cpu,
                load_cpu=self.load_cpu,
                exclude=frozenset(ours),
            )
            reason = usage.disturbance(self.max_foreign)
            record: dict[str, object] = {"cell": label, "target": target.name}
            record.update(attempt=attempt, disturbed=reason, **usage.as_dict())
            self.results.cells.append(record)
            if reason is None:
                return value, usage
            if attempt < self.retries and self.time_left > 0:
                self.out(f"    {label} {target.name}: disturbed ({reason}); measuring again")
        self.results.disturbed.append(f"{label} {target.name}: {reason}")
        self.out(f"    {label} {target.name}: still disturbed after {self.retries} retries")
        return value, usage

    def start_all(self) -> None:
        targets_mod.start_many(
            self.targets, cpu=self.proxy_cpu, upstream_port=self.upstream_port, scratch=self.scratch
        )

    async def fresh(self) -> None:
        """Restart every target and warm it up."""
        self.stop_all()
        self.start_all()
        await warm_up(self)

    def stop_all(self) -> None:
        targets_mod.stop_many(self.targets)

    def over_budget(self, what: str) -> bool:
        if self.time_left > 0:
            return False
        note = f"skipped {what}: its share of the time budget ran out"
        if note not in self.results.notes:
            self.results.notes.append(note)
            self.out(f"  {note}")
        return True

    def fail(self, label: str, target: Target, what: str) -> None:
        message = f"{label} {target.name}: {what}"
        self.results.failures.append(message)
        self.out(f"    FAILED {message}")


def rss_mb(target: Target) -> float | None:
    return procstat.tree_rss_bytes(target.pid) / MB if target.pid else None


async def warm_up(bench: Bench) -> None:
    """A few requests of each kind through each target before anything is measured."""
    body = small_request_body(300)
    for target in bench.targets:
        if target.under_test and target.name not in bench.results.features:
            # Default features stay on: say whether metrics were being collected.
            status = targets_mod.probe(target.port, "/_proxy/metrics")
            bench.results.features[target.name] = {"metrics_endpoint_status": status}
        client = Client(target.port)
        for query in ("w=small",) * 20 + ("w=sse&n=20",) * 3 + ("w=line&mb=1",):
            result = await client.fetch(f"{target.path}?{query}", body, EventTimes())
            if result.status != 200 or not result.complete:
                bench.fail("warm-up", target, f"{query}: status {result.status} {result.error}")
                break
        client.close()


# W1 ----------------------------------------------------------------------------------


async def w1(bench: Bench) -> None:
    """Small requests: 2 KB JSON POST, 300 B JSON back, wrk at each concurrency."""
    body_file = bench.scratch / "w1-body.json"
    body_file.write_bytes(small_request_body(2048))
    if bench.params.w1_warmup:
        for target in bench.targets:  # a wrk-sized warm-up: connections, pools, caches
            await wrk(bench, target, 16, 1, body_file)
    for rep in range(bench.params.reps):
        for concurrency in bench.params.w1_concurrency:
            if bench.over_budget("the rest of W1"):
                return
            for target in rotated(bench.targets, rep):
                label = f"W1 c={concurrency}"
                out, usage = await bench.cell(
                    target,
                    label,
                    lambda t=target, c=concurrency: wrk(  # type: ignore[misc]
                        bench, t, c, bench.params.w1_seconds, body_file
                    ),
                )
                requests = out["requests"]
                errors = sum(out[k] for k in ("connect", "read", "write", "status", "timeout"))
                if errors or not requests:
                    bench.fail(label, target, f"wrk counted {errors} errors in {requests} requests")
                    continue
                add = bench.results.add
                add(f"{label} req/s", "req/s", "higher", target.name,
                    requests / (out["duration_us"] / 1e6))  # fmt: skip
                add(f"{label} p50", "ms", "lower", target.name, out["p50_us"] / 1000)
                add(f"{label} p99", "ms", "lower", target.name, out["p99_us"] / 1000)
                if target.pid:
                    add(f"{label} CPU/req", "us", "lower", target.name,
                        usage.target_cpu_s * 1e6 / requests)  # fmt: skip
                    add(f"{label} RSS", "MB", "lower", target.name, rss_mb(target) or 0.0)
            bench.out(f"  W1 rep {rep + 1} c={concurrency} done")


async def wrk(
    bench: Bench, target: Target, concurrency: int, seconds: int, body_file: Path
) -> dict[str, int]:
    argv = [
        "taskset", "-c", str(bench.load_cpu), "wrk", "-t1", f"-c{concurrency}",
        f"-d{seconds}s", "--timeout", "10s", "-s", str(HERE / "wrk_post.lua"),
        f"http://127.0.0.1:{target.port}{target.path}?w=small",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "BENCH_BODY_FILE": str(body_file)},
    )
    output, _ = await asyncio.wait_for(process.communicate(), seconds + 30)
    for line in output.decode(errors="replace").splitlines():
        if line.startswith("BENCH "):
            parsed: dict[str, int] = json.loads(line[6:])
            return parsed
    raise RuntimeError(f"wrk printed no summary:\n{output.decode(errors='replace')[-2000:]}")


# W2 ----------------------------------------------------------------------------------


def failed(result: Result, sink: EventTimes, events: int) -> str | None:
    if result.error:
        return result.error
    if result.status != 200:
        return f"status {result.status}"
    if sink.events != events or not sink.completed:
        return f"{sink.events} of {events} events, completed={sink.completed}"
    return None


async def w2(bench: Bench) -> None:
    """Token streams: (a) as fast as possible at c=16, (b) paced 10 ms at c=1 and c=32."""
    body = small_request_body(1024)
    params = bench.params
    for rep in range(params.reps):
        if bench.over_budget("the rest of W2"):
            return
        for target in rotated(bench.targets, rep):
            await _w2a(bench, target, body)
        for concurrency in params.w2b_concurrency:
            for target in rotated(bench.targets, rep):
                await _w2b(bench, target, body, concurrency, rep)
        bench.out(f"  W2 rep {rep + 1} done")


async def _w2a(bench: Bench, target: Target, body: bytes) -> None:
    params = bench.params
    events = params.w2_events
    path = f"{target.path}?w=sse&n={events}&size=100"
    problems: list[str] = []
    ttfb: list[int] = []
    counts = {"events": 0, "streams": 0}

    async def worker(until: float) -> None:
        client = Client(target.port)
        try:
            while time.monotonic() < until:
                sink = EventTimes()
                result = await client.fetch(path, body, sink)
                problem = failed(result, sink, events)
                if problem:
                    problems.append(problem)
                    return
                counts["events"] += sink.events
                counts["streams"] += 1
                ttfb.append(result.ttfb_ns)
        finally:
            client.close()

    async def run() -> float:
        # A redone cell starts from nothing.
        problems.clear()
        ttfb.clear()
        counts.update(events=0, streams=0)
        began = time.monotonic()
        await asyncio.gather(*(worker(began + params.w2a_seconds) for _ in range(16)))
        return time.monotonic() - began

    seconds, usage = await bench.cell(target, "W2a c=16", run)
    if problems or not counts["events"]:
        bench.fail("W2a c=16", target, f"{len(problems)} streams failed: {problems[:1]}")
        return
    add = bench.results.add
    add("W2a c=16 events/s", "ev/s", "higher", target.name, counts["events"] / seconds)
    add("W2a c=16 TTFB p50", "ms", "lower", target.name, percentile(ttfb, 0.5) / 1e6)
    if target.pid:
        add("W2a c=16 CPU/event", "us", "lower", target.name,
            usage.target_cpu_s * 1e6 / counts["events"])  # fmt: skip


async def _w2b(bench: Bench, target: Target, body: bytes, concurrency: int, rep: int) -> None:
    params = bench.params
    events = params.w2b_events
    label = f"W2b c={concurrency}"
    path = f"{target.path}?w=sse&n={events}&size=100&every_ms=10"
    sinks = [EventTimes() for _ in range(concurrency)]

    async def stream(index: int) -> tuple[Result, EventTimes]:
        # Staggered over one interval: real streams are not in lock-step.
        await asyncio.sleep(index * 0.010 / concurrency)
        client = Client(target.port)
        try:
            return await client.fetch(path, body, sinks[index], timeout=events * 0.01 + 30), sinks[
                index
            ]
        finally:
            client.close()

    async def run() -> list[tuple[Result, EventTimes]]:
        sinks[:] = [EventTimes() for _ in range(concurrency)]  # a redone cell starts afresh
        return await asyncio.gather(*(stream(i) for i in range(concurrency)))

    outcomes, _ = await bench.cell(target, label, run)
    problems = [p for p in (failed(r, s, events) for r, s in outcomes) if p]
    if problems:
        bench.fail(label, target, f"{len(problems)} streams failed: {problems[0]}")
        return
    delays = [d for _, sink in outcomes for d in sink.delays_ns]
    ttfb = [result.ttfb_ns for result, _ in outcomes]
    add = bench.results.add
    p50, p99 = percentile(delays, 0.5) / 1000, percentile(delays, 0.99) / 1000
    add(f"{label} delay p50", "us", "lower", target.name, p50)
    add(f"{label} delay p99", "us", "lower", target.name, p99)
    if concurrency == 1:
        add(f"{label} TTFB", "ms", "lower", target.name, ttfb[0] / 1e6)
    else:
        add(f"{label} TTFB p50", "ms", "lower", target.name, percentile(ttfb, 0.5) / 1e6)
        add(f"{label} TTFB p99", "ms", "lower", target.name, percentile(ttfb, 0.99) / 1e6)
    bench.results.cells.append({"cell": label, "target": target.name, "rep": rep,
                                "delay_p50_us": p50, "delay_p99_us": p99})  # fmt: skip


def added_delays(results: Results, concurrencies: Sequence[int]) -> None:
    """Per-event delay added over direct, repetition by repetition (they ran side by side)."""
    for concurrency in concurrencies:
        label = f"W2b c={concurrency}"
        for quantile in ("p50", "p99"):
            by_target = results.samples.get(f"{label} delay {quantile}", {})
            direct = by_target.get("direct")
            if not direct:
                continue
            for name, values in by_target.items():
                if name == "direct":
                    continue
                for value, base in zip(values, direct, strict=False):
                    results.add(f"{label} added {quantile}", "us", "lower", name, value - base)


# W3 ----------------------------------------------------------------------------------


async def w3(bench: Bench) -> None:
    """Big bodies: a 4 MB SSE data line and a 50 MB body, slow reader then fast reader.

    Each repetition starts fresh processes: memory a process grew once it keeps, so only
    a fresh one shows what a cell makes it hold. RSS+ is the peak during the cell minus
    the fresh process's RSS after warm-up (later cells of a repetition also carry what
    earlier ones left: an upper bound).
    """
    params = bench.params
    body = small_request_body(1024)
    cells = (
        ("body50", f"w=body&mb={params.w3_body_mb}", params.w3_slow_body_mb_s * MB),
        ("line4", f"w=line&mb={params.w3_line_mb}", params.w3_slow_line_mb_s * MB),
        ("line4", f"w=line&mb={params.w3_line_mb}", 0.0),
        ("body50", f"w=body&mb={params.w3_body_mb}", 0.0),
    )
    for rep in range(params.reps):
        if bench.over_budget("the rest of W3"):
            return
        await bench.fresh()
        baselines = {t.name: procstat.tree_rss_bytes(t.pid) if t.pid else 0 for t in bench.targets}
        for name, query, rate in cells:
            for target in rotated(bench.targets, rep):
                await _w3_cell(
                    bench,
                    target,
                    name,
                    query,
                    body=body,
                    rate=rate,
                    baseline=baselines[target.name],
                )
        bench.out(f"  W3 rep {rep + 1} done")


async def _w3_cell(
    bench: Bench, target: Target, name: str, query: str, *, body: bytes, rate: float, baseline: int
) -> None:
    speed = "slow" if rate else "fast"
    label = f"W3 {name} {speed}"
    path = f"{target.path}?{query}"
    client = Client(target.port, bufsize=1 * MB)
    totals = {"bytes": 0, "transfers": 0}
    problems: list[str] = []

    async def run() -> float:
        # A redone cell starts from nothing, with a new peak mark.
        problems.clear()
        totals.update(bytes=0, transfers=0)
        tracked[0] = procstat.reset_hwm(target.pid) if target.pid else False
        began = time.monotonic()
        while True:
            result = await client.fetch(path, body, Sink(), rate=rate, timeout=120)
            if result.error or result.status != 200:
                problems.append(result.error or f"status {result.status}")
                break
            totals["bytes"] += result.body_bytes
            totals["transfers"] += 1
            if rate or time.monotonic() - began >= bench.params.w3_fast_seconds:
                break
            if totals["transfers"] >= 1000:
                break
        return time.monotonic() - began

    tracked = [False]
    try:
        seconds, usage = await bench.cell(target, label, run)
    finally:
        client.close()
    if problems:
        bench.fail(label, target, problems[0])
        return
    megabytes = totals["bytes"] / MB
    add = bench.results.add
    if not rate:
        add(f"{label} MB/s", "MB/s", "higher", target.name, megabytes / seconds)
    if target.pid:
        add(f"{label} CPU/MB", "ms", "lower", target.name, usage.target_cpu_s * 1000 / megabytes)
        if tracked[0]:
            peak = procstat.tree_hwm_bytes(target.pid)
            add(f"{label} RSS+", "MB", "lower", target.name, max(0, peak - baseline) / MB)


# W4 ----------------------------------------------------------------------------------


async def w4(bench: Bench) -> None:
    """Many streams: 500 SSE connections opened over a short ramp, held, paced events."""
    params = bench.params
    body = small_request_body(1024)
    for rep in range(params.w4_reps):
        # Fresh processes: memory grown for one rep's streams would hide the next's.
        await bench.fresh()
        baselines = {t.name: procstat.tree_rss_bytes(t.pid) if t.pid else 0 for t in bench.targets}
        for target in rotated(bench.targets, rep):
            if bench.over_budget("the rest of W4"):
                return
            await _w4_cell(bench, target, body, baselines[target.name])
        bench.out(f"  W4 rep {rep + 1} done")


async def _w4_cell(bench: Bench, target: Target, body: bytes, baseline: int) -> None:
    """RSS per stream: the peak while the streams are open minus the fresh process's RSS
    (so a redone cell, whose process kept what the first try grew, is not flattered)."""
    params = bench.params
    count = params.w4_streams
    events = max(2, round(params.w4_hold_seconds * 1000 / params.w4_every_ms))
    path = f"{target.path}?w=sse&n={events}&size=100&every_ms={params.w4_every_ms}"
    label = "W4"
    sinks: list[EventTimes] = []
    clients: list[Client] = []
    tracked = [False]

    async def stream(index: int) -> Result:
        await asyncio.sleep(index * params.w4_ramp_seconds / count)
        return await clients[index].fetch(
            path, body, sinks[index], timeout=params.w4_hold_seconds + params.w4_ramp_seconds + 60
        )

    async def run() -> list[Result]:
        # A redone cell starts afresh: new connections, new readers, a new peak mark.
        for client in clients:
            client.close()
        sinks[:] = [EventTimes() for _ in range(count)]
        clients[:] = [Client(target.port, bufsize=16 * 1024) for _ in range(count)]
        tracked[0] = procstat.reset_hwm(target.pid) if target.pid else False
        return await asyncio.gather(*(stream(i) for i in range(count)))

    try:
        outcomes, _ = await bench.cell(target, label, run)
    finally:
        for client in clients:
            client.close()
    problems = [
        p for p in (failed(r, s, events) for r, s in zip(outcomes, sinks, strict=True)) if p
    ]
    add = bench.results.add
    add(f"{label} failed streams", "count", "lower", target.name, len(problems))
    if problems:
        bench.fail(label, target, f"{len(problems)} of {count} streams failed: {problems[0]}")
    good = [(r, s) for r, s in zip(outcomes, sinks, strict=True) if failed(r, s, events) is None]
    if not good:
        return
    delays = [d for _, sink in good for d in sink.delays_ns]
    ttfb = [result.ttfb_ns for result, _ in good]
    add(f"{label} TTFB p50", "ms", "lower", target.name, percentile(ttfb, 0.5) / 1e6)
    add(f"{label} TTFB p99", "ms", "lower", target.name, percentile(ttfb, 0.99) / 1e6)
    add(f"{label} delay p50", "ms", "lower", target.name, percentile(delays, 0.5) / 1e6)
    add(f"{label} delay p99", "ms", "lower", target.name, percentile(delays, 0.99) / 1e6)
    if target.pid and tracked[0]:
        growth = procstat.tree_hwm_bytes(target.pid) - baseline
        add(f"{label} RSS/stream", "KB", "lower", target.name, max(0, growth) / 1024 / count)


# W5 ----------------------------------------------------------------------------------


def w5(bench: Bench) -> None:
    """Start-up: process start to first accepted connection and first 200 response."""
    # One unmeasured start each first: a sidecar restarts with its files in the page cache
    # and its bytecode compiled (at install), not from a cold disk and bare sources.
    for target in bench.targets:
        if target.kind != "direct":
            with contextlib.suppress(targets_mod.StartError):
                targets_mod.start(
                    target, cpu=bench.proxy_cpu, upstream_port=bench.upstream_port,
                    scratch=bench.scratch,
                )  # fmt: skip
            targets_mod.stop(target)
    for rep in range(bench.params.w5_reps):
        if bench.over_budget("the rest of W5"):
            return
        for target in rotated(bench.targets, rep):
            if target.kind == "direct":
                continue
            before = procstat.core_times()
            began = time.monotonic()
            try:
                startup = targets_mod.start(
                    target, cpu=bench.proxy_cpu, upstream_port=bench.upstream_port,
                    scratch=bench.scratch,
                )  # fmt: skip
                assert startup is not None
                assert target.pid is not None
                cpu = procstat.tree_cpu_seconds(target.pid)
            except targets_mod.StartError as exc:
                bench.fail("W5", target, str(exc))
                continue
            finally:
                wall = time.monotonic() - began
            after = procstat.core_times()
            targets_mod.stop(target)
            core = after[bench.proxy_cpu] - before[bench.proxy_cpu]
            foreign = max(0.0, core.busy - cpu)
            if (
                foreign > bench.max_foreign * wall + 0.03
                or core.steal > bench.max_foreign * wall + 0.03
            ):
                bench.results.disturbed.append(
                    f"W5 {target.name}: {foreign / wall:.0%} of the proxy's core used by others"
                )
            add = bench.results.add
            add("W5 listening", "ms", "lower", target.name, startup.listening_s * 1000)
            add("W5 serving", "ms", "lower", target.name, startup.serving_s * 1000)
        bench.out(f"  W5 rep {rep + 1} done")


def median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


WORKLOADS: dict[str, Any] = {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5}
# These restart the targets at each repetition themselves.
FRESH_PER_REP = frozenset({"W3", "W4"})
