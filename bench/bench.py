"""Issue 7's benchmark: direct, nginx, mitmproxy and the proxy under test, side by side.

Run it through `bench/run` (which installs what it needs first); `bench/run --help`
lists the options. Progress goes to stderr; the table, the targets and the refusal (if
the machine was busy) go to stdout; everything measured goes to bench/results/*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import measure
import procstat
import report
import targets as targets_mod
import workloads
from report import Results
from targets import Target
from workloads import FULL, QUICK, Bench, Params

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmark the proxy against direct, nginx and mitmproxy (issue 7).",
    )
    parser.add_argument("--quick", action="store_true", help="short cells: about 2 minutes")
    parser.add_argument(
        "--proxy-cmd",
        default=targets_mod.DEFAULT_PROXY_CMD,
        metavar="CMD",
        help="the proxy under test; {port}, {upstream} and {python} are filled in "
        "(default: %(default)s, run from the repo root)",
    )
    parser.add_argument(
        "--add-proxy",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "CMD"),
        help="another proxy command to compare (another version of this proxy), repeatable",
    )
    parser.add_argument(
        "--comparators",
        default=",".join(targets_mod.COMPARATORS),
        help="which comparators to run (default: %(default)s)",
    )
    parser.add_argument(
        "--workloads", default="W1,W2,W3,W4,W5", help="which workloads (default: %(default)s)"
    )
    parser.add_argument("--reps", type=int, help="repetitions of each cell (at least 3)")
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds before remaining cells are skipped (default: 840, quick: 110)",
    )
    parser.add_argument("--proxy-cpu", type=int, help="CPU for the target (default: the last one)")
    parser.add_argument(
        "--load-cpu", type=int, help="CPU for the upstream and load generator (default: the first)"
    )
    parser.add_argument(
        "--max-foreign",
        type=float,
        default=0.10,
        help="share of a reserved core that other processes may use before a cell is redone "
        "(default: %(default)s)",
    )
    parser.add_argument("--retries", type=int, default=2, help="redos of a disturbed cell")
    parser.add_argument(
        "--report-anyway",
        action="store_true",
        help="print the table even when the machine was busy (marked INVALID)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the targets' logs")
    parser.add_argument(
        "--mitm-venv", default=os.environ.get("BENCH_MITM_VENV", str(HERE / ".venv-mitmproxy"))
    )
    return parser


class UsageError(Exception):
    """A bad option: one line and exit code 2."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What one run does, decided from the options before anything starts."""

    quick: bool
    params: Params
    budget: float
    proxy_cpu: int
    load_cpu: int
    chosen: list[str]
    targets: list[Target]
    max_foreign: float
    retries: int
    report_anyway: bool
    keep_logs: bool


def plan(args: argparse.Namespace) -> Plan:
    params = QUICK if args.quick else FULL
    if args.reps is not None:
        if args.reps < 3:
            raise UsageError("--reps must be at least 3 (a spread needs repetitions)")
        params = _with_reps(params, args.reps)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise UsageError("needs two CPUs (one for the proxy, one for the load)")
    proxy_cpu = args.proxy_cpu if args.proxy_cpu is not None else cpus[-1]
    load_cpu = args.load_cpu if args.load_cpu is not None else cpus[0]
    if proxy_cpu == load_cpu:
        raise UsageError("--proxy-cpu and --load-cpu must differ")
    chosen = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in workloads.WORKLOADS]
    if unknown:
        raise UsageError(f"unknown workloads {unknown} (known: {', '.join(workloads.WORKLOADS)})")
    try:
        targets = [
            targets_mod.comparator(name.strip(), Path(args.mitm_venv))
            for name in args.comparators.split(",")
            if name.strip()
        ]
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    targets.append(targets_mod.proxy_target("proxy", args.proxy_cmd))
    targets += [targets_mod.proxy_target(name, command) for name, command in args.add_proxy]
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise UsageError(f"target names repeat: {names}")
    return Plan(
        quick=args.quick,
        params=params,
        budget=args.budget or (110.0 if args.quick else 840.0),
        proxy_cpu=proxy_cpu,
        load_cpu=load_cpu,
        chosen=chosen,
        targets=targets,
        max_foreign=args.max_foreign,
        retries=args.retries,
        report_anyway=args.report_anyway,
        keep_logs=args.keep_logs,
    )


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    try:
        run = plan(build_parser().parse_args(argv))
    except UsageError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    _raise_fd_limit(needed=8 * run.params.w4_streams + 1024)
    os.sched_setaffinity(0, {run.load_cpu})
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    scratch = RESULTS / f"{stamp}-logs"
    scratch.mkdir(parents=True)
    out_file = RESULTS / f"{stamp}{'-quick' if run.quick else ''}.json"

    say(f"bench: proxy core {run.proxy_cpu}, load core {run.load_cpu}; "
        f"loadavg {procstat.loadavg():.2f}")  # fmt: skip
    idle, busiest = measure.idle_check(1.0, (run.proxy_cpu, run.load_cpu))
    busy = {cpu: share for cpu, share in idle.items() if share > run.max_foreign}
    refusal: list[str] = []
    if busy:
        shown = ", ".join(f"core {cpu} {share:.0%} busy" for cpu, share in busy.items())
        refusal.append(
            f"before starting, other processes kept the reserved cores busy: {shown}"
            + (f"; busiest: {busiest}" if busiest else "")
        )
        if not run.report_anyway:
            print(_refusal(refusal), flush=True)
            shutil.rmtree(scratch, ignore_errors=True)
            return 3

    began = time.monotonic()
    results = measure_all(run, scratch)
    elapsed = time.monotonic() - began
    refusal += results.disturbed
    logs = _log_lines(scratch)
    if not run.keep_logs:
        shutil.rmtree(scratch, ignore_errors=True)
    document = record(
        run, results, started=started, elapsed=elapsed, idle=idle, refusal=refusal, logs=logs
    )
    out_file.write_text(json.dumps(document, indent=1, default=str))
    say(f"bench: done in {elapsed:.0f} s; results in {out_file.relative_to(HERE.parent)}")
    if refusal and not run.report_anyway:
        print(_refusal(refusal), flush=True)
        return 3
    print(render(run, results, refusal=refusal, logs=logs))
    return 1 if results.failures else 0


def measure_all(run: Plan, scratch: Path) -> Results:
    """Start the upstream, run the chosen workloads, stop everything started."""
    upstream = subprocess.Popen(
        ["taskset", "-c", str(run.load_cpu), sys.executable, str(HERE / "upstream.py")],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert upstream.stdout is not None
        bench = Bench(
            targets=run.targets,
            upstream_port=int(upstream.stdout.readline().split()[1]),
            upstream_pid=upstream.pid,
            proxy_cpu=run.proxy_cpu,
            load_cpu=run.load_cpu,
            params=run.params,
            scratch=scratch,
            deadline=time.monotonic() + run.budget,
            max_foreign=run.max_foreign,
            retries=run.retries,
            out=say,
        )
        _run_loop(_run_workloads(bench, run.chosen, end=time.monotonic() + run.budget))
    finally:
        for target in run.targets:
            targets_mod.stop(target)
        upstream.terminate()
        upstream.wait(10)
    workloads.added_delays(bench.results, run.params.w2b_concurrency)
    return bench.results


def record(
    run: Plan,
    results: Results,
    *,
    started: dt.datetime,
    elapsed: float,
    idle: dict[int, float],
    refusal: list[str],
    logs: dict[str, int],
) -> dict[str, object]:
    """Everything measured, for bench/results/*.json."""
    return {
        "started": started.isoformat(),
        "seconds": round(elapsed, 1),
        "mode": "quick" if run.quick else "full",
        "valid": not refusal,
        "refusal": refusal,
        "failures": results.failures,
        "notes": results.notes,
        "params": dataclasses.asdict(run.params),
        "cpus": {"proxy": run.proxy_cpu, "load": run.load_cpu, "idle_before": idle},
        "machine": _machine(),
        "targets": {
            t.name: {
                "kind": t.kind,
                "command": t.command,
                "startups": [dataclasses.asdict(s) for s in t.startups],
            }
            for t in run.targets
        },
        "log_lines": logs,
        "features": results.features,
        "results": results.summary(),
        "goals": {t.name: report.goals(results, t.name) for t in run.targets if t.under_test},
        "cells": results.cells,
    }


def render(run: Plan, results: Results, *, refusal: list[str], logs: dict[str, int]) -> str:
    params = run.params
    lines = []
    if refusal:
        lines.append("INVALID: the machine was busy; these numbers only check the harness.")
    lines += [
        f"\n{'quick' if run.quick else 'full'} run: medians of up to {params.reps} repetitions "
        f"(W4 {params.w4_reps}, W5 {params.w5_reps}); spread = (max - min) / median;",
        "x = ratio of medians (for lower-is-better metrics, above 1 is worse)\n",
        report.table(results, [t.name for t in run.targets]),
    ]
    for target in run.targets:
        if target.under_test:
            lines += ["", report.goals_text(results, target.name)]
    lines += [f"FAILED: {line}" for line in results.failures]
    lines += [f"note: {line}" for line in results.notes]
    lines.append(f"log lines written: {logs}; metrics endpoint: {results.features}")
    if refusal:
        lines.append(_refusal(refusal))
    return "\n".join(lines)


def _with_reps(params: Params, reps: int) -> Params:
    values = {name: getattr(params, name) for name in params.__dataclass_fields__}
    values.update(reps=reps, w4_reps=max(3, min(reps, params.w4_reps)), w5_reps=reps)
    return Params(**values)


def _run_loop(coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop  # noqa: PLC0415 (optional: a cheaper loop for the bench's own side)
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


async def _run_workloads(bench: Bench, chosen: list[str], *, end: float) -> None:
    for index, name in enumerate(chosen):
        # Each workload gets its share of what is left, so a slow one cannot starve the
        # rest; what a fast one leaves goes to those after it.
        budget_shares = dict(bench.params.shares)
        shares = [budget_shares[later] for later in chosen[index:]]
        now = time.monotonic()
        bench.deadline = now + (end - now) * shares[0] / sum(shares)
        if end - now <= 0:
            bench.results.notes.append(f"skipped {name} and after: the time budget ran out")
            return
        began = now
        bench.out(f"bench: {name}")
        try:
            await _run_workload(bench, name)
        except targets_mod.StartError as exc:
            # A target that cannot start fails this workload, not the whole run.
            bench.results.failures.append(f"{name}: {exc}")
            bench.out(f"  FAILED {name}: {exc}")
        bench.out(f"bench: {name} took {time.monotonic() - began:.0f} s")


async def _run_workload(bench: Bench, name: str) -> None:
    if name == "W5":
        workloads.w5(bench)
        return
    try:
        if name not in workloads.FRESH_PER_REP:
            # Fresh processes for each workload: what one leaves in memory is not
            # charged to the next (W3 and W4 restart at each repetition themselves).
            bench.start_all()
            await workloads.warm_up(bench)
        await workloads.WORKLOADS[name](bench)
    finally:
        bench.stop_all()


def _refusal(reasons: list[str]) -> str:
    lines = [
        "REFUSED: another process used the CPU reserved for the benchmark, so these",
        "numbers would measure the machine's load, not the proxy. Nothing is reported.",
        "Rerun on a quiet machine (or pass --report-anyway to see the invalid numbers).",
    ]
    lines += [f"  - {reason}" for reason in reasons[:20]]
    if len(reasons) > 20:
        lines.append(f"  - ... and {len(reasons) - 20} more")
    return "\n".join(lines)


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else max(soft, min(needed, hard))
    with contextlib.suppress(ValueError, OSError):
        if hard != resource.RLIM_INFINITY and hard < needed:
            # Only root may raise the hard limit.
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _log_lines(scratch: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in scratch.glob("*.log"):
        name = path.stem.rsplit("-", 1)[0]
        with path.open("rb") as file:
            counts[name] = counts.get(name, 0) + sum(1 for _ in file)
    for path in scratch.glob("nginx-*/nginx-access.log"):
        with path.open("rb") as file:
            counts["nginx"] = counts.get("nginx", 0) + sum(1 for _ in file)
    return counts


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (
        (done.stdout + done.stderr).strip().splitlines()[0]
        if (done.stdout + done.stderr).strip()
        else "?"
    )


def _machine() -> dict[str, object]:
    cpu_model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "kernel": platform.release(),
        "cpu": cpu_model,
        "cpus": os.cpu_count(),
        "memory_bytes": procstat.memory_total_bytes(),
        "python": platform.python_version(),
        "nginx": _version([targets_mod.find_tool("nginx"), "-v"]),
        "wrk": _version(["wrk", "-v"]),
        "mitmproxy": _version([str(HERE / ".venv-mitmproxy" / "bin" / "mitmdump"), "--version"]),
        "git": _version(["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"]),
        "loadavg_after": procstat.loadavg(),
    }


if __name__ == "__main__":
    sys.exit(main())
