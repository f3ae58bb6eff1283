"""What /proc says about a process tree and the CPUs: CPU time, memory, file descriptors,
and whether something else ran on the cores the benchmark reserved."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str]:
    text = (PROC / str(pid) / "stat").read_text()
    # The command name may hold spaces and parentheses: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / TICK


def all_cpu_seconds() -> dict[int, tuple[str, float]]:
    """Every process's name and CPU seconds: to name whoever else used the CPU."""
    found: dict[int, tuple[str, float]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        found[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return found


def children(pid: int) -> list[int]:
    """Direct children, from /proc/<pid>/task/*/children."""
    found: list[int] = []
    try:
        for task in (PROC / str(pid) / "task").iterdir():
            try:
                found.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    except OSError:
        return []
    return found


def tree(pid: int) -> list[int]:
    """The process and all its descendants (nginx's workers, a wrapper script's child)."""
    pids: list[int] = []
    queue = [pid]
    while queue and len(pids) < 1000:
        current = queue.pop()
        pids.append(current)
        queue.extend(children(current))
    return pids


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for member in tree(pid):
        try:
            total += cpu_seconds(member)
        except (OSError, ValueError):
            continue
    return total


def status_kb(pid: int, field: str) -> int:
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for member in tree(pid):
        try:
            total += status_kb(member, "VmRSS") * 1024
        except (OSError, ValueError):
            continue
    return total


def tree_hwm_bytes(pid: int) -> int:
    total = 0
    for member in tree(pid):
        try:
            total += status_kb(member, "VmHWM") * 1024
        except (OSError, ValueError):
            continue
    return total


def reset_hwm(pid: int) -> bool:
    """Reset the peak-RSS mark (VmHWM) of the tree; False if the kernel refused."""
    ok = True
    for member in tree(pid):
        try:
            (PROC / str(member) / "clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def fd_count(pid: int) -> int:
    return sum(len(os.listdir(PROC / str(member) / "fd")) for member in tree(pid))


def threads(pid: int) -> int:
    return sum(status_kb(member, "Threads") for member in tree(pid))


@dataclass(frozen=True, slots=True)
class CoreTimes:
    """Cumulative seconds one CPU spent, from a `cpuN` line of /proc/stat."""

    busy: float  # user + nice + system: time some task ran
    steal: float  # the hypervisor gave the CPU to another guest
    irq: float  # irq + softirq: network work done on behalf of whoever sent
    idle: float

    def __sub__(self, other: CoreTimes) -> CoreTimes:
        return CoreTimes(
            busy=self.busy - other.busy,
            steal=self.steal - other.steal,
            irq=self.irq - other.irq,
            idle=self.idle - other.idle,
        )


def core_times() -> dict[int, CoreTimes]:
    cores: dict[int, CoreTimes] = {}
    for line in (PROC / "stat").read_text().splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *values = line.split()
        v = [int(x) / TICK for x in values[:8]]
        user, nice, system, idle, iowait, irq, softirq, steal = v
        cores[int(name[3:])] = CoreTimes(
            busy=user + nice + system, steal=steal, irq=irq + softirq, idle=idle + iowait
        )
    return cores


def loadavg() -> float:
    return float((PROC / "loadavg").read_text().split()[0])


def memory_total_bytes() -> int:
    for line in (PROC / "meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0
