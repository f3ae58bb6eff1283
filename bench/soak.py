"""Soak (issue 8): a bounded run mixing every request kind and fault against the proxy,
sampling its RSS, open file descriptors, threads and in-flight exchanges, then checking
that they come back to their baseline once the load stops.

    bench/run soak                 5 minutes
    bench/run soak --seconds 30    to check the harness

Each kind has an expected outcome (a status, a clean end, or a cut); anything else is
counted as unexpected. The report goes to stdout and bench/results/soak-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import procstat
import targets as targets_mod
from client import Client, EventTimes, Result, Sink, request_bytes

HERE = Path(__file__).resolve().parent
MB = 1 << 20


@dataclass(slots=True)
class QuitAfter(EventTimes):
    """An SSE reader that hangs up after `limit` events: a client that goes away."""

    limit: int = 5
    quit: Callable[[], None] = lambda: None

    def feed(self, data: memoryview, now_ns: int) -> None:
        EventTimes.feed(self, data, now_ns)
        if self.events >= self.limit:
            self.quit()


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    weight: int
    run: Callable[[int, str], Awaitable[str | None]]  # (port, path) -> problem or None


def _expect(result: Result, status: int, *, complete: bool = True) -> str | None:
    if complete and result.error:
        return result.error
    if result.status != status:
        return f"status {result.status}, expected {status} ({result.error or 'no error'})"
    return None


async def small(port: int, path: str) -> str | None:
    client = Client(port)
    try:
        return _expect(await client.fetch(f"{path}?w=small", b"{}" * 512), 200)
    finally:
        client.close()


async def stream(port: int, path: str) -> str | None:
    client, sink = Client(port), EventTimes()
    try:
        result = await client.fetch(f"{path}?w=sse&n=40&every_ms=5", b"{}", sink)
    finally:
        client.close()
    if problem := _expect(result, 200):
        return problem
    return None if sink.completed and sink.events == 40 else f"{sink.events} of 40 events"


def _bulk(query: str, rate: float = 0.0) -> Callable[[int, str], Awaitable[str | None]]:
    async def run(port: int, path: str) -> str | None:
        client = Client(port, bufsize=1 * MB)
        try:
            return _expect(await client.fetch(f"{path}?{query}", b"{}", Sink(), rate=rate), 200)
        finally:
            client.close()

    return run


UPLOAD = b"x" * (8 * MB)


async def upload(port: int, path: str) -> str | None:
    client = Client(port)
    try:
        return _expect(await client.fetch(f"{path}?w=small", UPLOAD, timeout=60), 200)
    finally:
        client.close()


async def client_quits(port: int, path: str) -> str | None:
    client = Client(port)
    sink = QuitAfter(limit=5, quit=client.close)
    result = await client.fetch(f"{path}?w=sse&n=200&every_ms=5", b"{}", sink)
    client.close()
    return None if result.error and sink.events >= 5 else "the stream did not start"


async def upstream_cuts(port: int, path: str) -> str | None:
    client, sink = Client(port), EventTimes()
    try:
        result = await client.fetch(f"{path}?w=sse&n=40&cut_after=5&every_ms=2", b"{}", sink)
    finally:
        client.close()
    if result.complete and sink.completed:
        return "a cut upstream stream ended cleanly for the client"
    return None


async def stall(port: int, path: str) -> str | None:
    client = Client(port)
    result = await client.fetch(f"{path}?w=stall&seconds=5", b"{}", timeout=0.5)
    client.close()
    return None if result.error else "the stalled stream ended early"


def _status(code: int, expected: int, query: str) -> Callable[[int, str], Awaitable[str | None]]:
    async def run(port: int, path: str) -> str | None:
        client = Client(port)
        try:
            return _expect(await client.fetch(f"{path}?{query}", b"{}"), expected)
        finally:
            client.close()

    return run


async def _raw(port: int, data: bytes, *, read: bool = True) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if not read:
            return 0
        line = await asyncio.wait_for(reader.readline(), 10)
        parts = line.split(b" ", 2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    finally:
        writer.close()


async def oversized(port: int, path: str) -> str | None:
    head = f"POST {path}?w=small HTTP/1.1\r\nHost: x\r\nContent-Length: 200000000\r\n\r\n"
    status = await _raw(port, head.encode())
    return None if status == 413 else f"status {status}, expected 413"


async def malformed(port: int, path: str) -> str | None:
    status = await _raw(port, f"POST {path} HTTP/1.1\r\nHost: x\r\nBad header\r\n\r\n".encode())
    return None if status == 400 else f"status {status}, expected 400"


async def upload_abandoned(port: int, path: str) -> str | None:
    head = request_bytes(f"{path}?w=small", "127.0.0.1", b"")
    head = head.replace(b"Content-Length: 0", b"Content-Length: 8388608")
    await _raw(port, head + b"x" * MB, read=False)
    return None


KINDS = (
    Kind("small", 30, small),
    Kind("stream", 20, stream),
    Kind("image-line", 4, _bulk("w=line&mb=4")),
    Kind("body-16mb", 2, _bulk("w=body&mb=16")),
    Kind("body-16mb-slow", 1, _bulk("w=body&mb=16", rate=64 * MB)),
    Kind("upload-8mb", 2, upload),
    Kind("client-quits", 8, client_quits),
    Kind("upstream-cuts", 6, upstream_cuts),
    Kind("upstream-stalls", 4, stall),
    Kind("upstream-500", 4, _status(500, 500, "w=status&code=500")),
    Kind("upstream-429", 3, _status(429, 429, "w=status&code=429")),
    Kind("upstream-drops", 3, _status(0, 502, "w=drop")),
    Kind("too-large", 2, oversized),
    Kind("malformed", 2, malformed),
    Kind("upload-abandoned", 2, upload_abandoned),
)


Check = dict[str, bool | str | None]


@dataclass(slots=True)
class Sample:
    t: float
    rss_mb: float
    fds: int
    threads: int
    in_flight: float | None


@dataclass(slots=True)
class Soak:
    pid: int
    port: int
    path: str
    samples: list[Sample] = field(default_factory=list)
    done: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def sample(self, began: float) -> Sample:
        sample = Sample(
            t=round(time.monotonic() - began, 2),
            rss_mb=round(procstat.tree_rss_bytes(self.pid) / MB, 2),
            fds=procstat.fd_count(self.pid),
            threads=procstat.threads(self.pid),
            in_flight=in_flight(self.port),
        )
        self.samples.append(sample)
        return sample

    async def worker(self, rng: random.Random, until: float, budget: list[int]) -> None:
        weights = [kind.weight for kind in KINDS]
        while time.monotonic() < until and budget[0] > 0:
            budget[0] -= 1
            kind = rng.choices(KINDS, weights)[0]
            try:
                problem = await asyncio.wait_for(kind.run(self.port, self.path), 90)
            except (OSError, TimeoutError, ValueError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            self.done[kind.name] += 1
            if problem:
                self.unexpected[kind.name] += 1
                self.examples.setdefault(kind.name, problem)


def in_flight(port: int) -> float | None:
    """The proxy's in-flight gauge from /_proxy/metrics, if it has one."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /_proxy/metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
                if len(data) > 4 * MB:
                    break
    except OSError:
        return None
    if b" 200 " not in data.split(b"\r\n", 1)[0]:
        return None
    total, seen = 0.0, False
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("#") or "in_flight" not in line.split("{")[0].split(" ")[0]:
            continue
        total += float(line.rsplit(" ", 1)[1])
        seen = True
    return total if seen else None


async def run_soak(soak: Soak, *, seconds: float, workers: int, seed: int) -> dict[str, Check]:
    began = time.monotonic()
    for kind in KINDS:  # warm-up: every kind once, so baseline includes lazy set-up
        await kind.run(soak.port, soak.path)
    await asyncio.sleep(2)
    baseline = [soak.sample(began) for _ in range(3)]
    until = time.monotonic() + seconds
    budget = [int(seconds * 400)]
    rngs = [random.Random(seed + index) for index in range(workers)]  # noqa: S311 (load mix)
    tasks = [asyncio.create_task(soak.worker(rng, until, budget)) for rng in rngs]
    while time.monotonic() < until and not all(task.done() for task in tasks):
        await asyncio.sleep(1)
        soak.sample(began)
    await asyncio.gather(*tasks)
    loaded = soak.samples[len(baseline) :]
    settle_until = time.monotonic() + 30
    base_fds = min(s.fds for s in baseline)
    final = soak.sample(began)
    while time.monotonic() < settle_until and (
        final.fds > base_fds + 2 or (final.in_flight or 0) > 0
    ):
        await asyncio.sleep(0.5)
        final = soak.sample(began)
    await asyncio.sleep(2)
    final = soak.sample(began)
    return verdicts(baseline, loaded, final)


def verdicts(baseline: list[Sample], loaded: list[Sample], final: Sample) -> dict[str, Check]:
    base_rss = statistics.median(s.rss_mb for s in baseline)
    base_fds = min(s.fds for s in baseline)
    base_threads = min(s.threads for s in baseline)
    peak_rss = max((s.rss_mb for s in loaded), default=base_rss)
    half = loaded[len(loaded) // 2 :]
    first = loaded[: len(loaded) // 2]
    # A leak grows all along; a working set stops growing once every kind has been seen.
    growth_late = max((s.rss_mb for s in half), default=0) - max(
        (s.rss_mb for s in first), default=0
    )
    checks = {
        "file descriptors back to baseline (+2)": (
            final.fds <= base_fds + 2,
            f"{base_fds} -> {final.fds}",
        ),
        "threads back to baseline (+4)": (
            final.threads <= base_threads + 4,
            f"{base_threads} -> {final.threads}",
        ),
        "in-flight exchanges back to baseline": (
            None if final.in_flight is None else final.in_flight <= (baseline[0].in_flight or 0),
            "no metrics endpoint"
            if final.in_flight is None
            else f"{baseline[0].in_flight or 0:g} -> {final.in_flight:g}",
        ),
        "RSS back within 16 MB of baseline": (
            final.rss_mb - base_rss <= 16,
            f"{base_rss:.1f} -> peak {peak_rss:.1f} -> {final.rss_mb:.1f} MB",
        ),
        "RSS flat over the second half (<= 4 MB)": (growth_late <= 4, f"{growth_late:+.1f} MB"),
    }
    return {name: {"passed": passed, "value": value} for name, (passed, value) in checks.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run soak", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300, help="load time (default: 300)")
    parser.add_argument("--workers", type=int, default=24, help="concurrent clients")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--proxy-cmd", default=targets_mod.DEFAULT_PROXY_CMD, metavar="CMD")
    parser.add_argument("--proxy-cpu", type=int, default=max(os.sched_getaffinity(0)))
    parser.add_argument("--load-cpu", type=int, default=min(os.sched_getaffinity(0)))
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 3600:
        parser.error("--seconds must be in (0, 3600]")
    os.sched_setaffinity(0, {args.load_cpu})
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    scratch = HERE / "results" / f"soak-{stamp}-logs"
    scratch.mkdir(parents=True)
    upstream = subprocess.Popen(
        ["taskset", "-c", str(args.load_cpu), sys.executable, str(HERE / "upstream.py")],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    target = targets_mod.proxy_target("proxy", args.proxy_cmd)
    try:
        assert upstream.stdout is not None
        upstream_port = int(upstream.stdout.readline().split()[1])
        targets_mod.start(target, cpu=args.proxy_cpu, upstream_port=upstream_port, scratch=scratch)
        assert target.pid is not None
        soak = Soak(pid=target.pid, port=target.port, path=target.path)
        print(
            f"soak: {args.seconds:g} s, {args.workers} clients, seed {args.seed}", file=sys.stderr
        )
        checks = asyncio.run(
            run_soak(soak, seconds=args.seconds, workers=args.workers, seed=args.seed)
        )
    finally:
        targets_mod.stop(target)
        upstream.terminate()
        upstream.wait(10)
    checks["no unexpected outcome"] = {
        "passed": not soak.unexpected,
        "value": f"{sum(soak.unexpected.values())} of {sum(soak.done.values())}",
    }
    out = HERE / "results" / f"soak-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "seconds": args.seconds,
                "workers": args.workers,
                "seed": args.seed,
                "proxy_cmd": args.proxy_cmd,
                "done": soak.done,
                "unexpected": soak.unexpected,
                "examples": soak.examples,
                "checks": checks,
                "samples": [dataclasses.asdict(s) for s in soak.samples],
            },
            indent=1,
        )
    )
    print(f"requests by kind: {dict(soak.done)}")
    for name, example in soak.examples.items():
        print(f"  unexpected {name} x{soak.unexpected[name]}: {example}")
    for name, check in checks.items():
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[check["passed"]]  # type: ignore[index]
        print(f"{verdict}  {name:<42} {check['value']}")
    print(f"results: {out.relative_to(HERE.parent)}; logs: {scratch.relative_to(HERE.parent)}")
    return 0 if all(c["passed"] is not False for c in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
