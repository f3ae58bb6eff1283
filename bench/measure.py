"""One measured cell: CPU time of the target and of the bench's own side, and whether
anything else ran on the two reserved cores while it ran (then the cell is redone)."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import procstat


@dataclass(frozen=True, slots=True)
class Snapshot:
    wall: float
    cores: dict[int, procstat.CoreTimes]
    target_cpu: float
    load_cpu: float
    processes: dict[int, tuple[str, float]]

    @classmethod
    def take(cls, target_pid: int | None, load_pids: tuple[int, ...]) -> Snapshot:
        own = os.times()
        load = own.user + own.system + own.children_user + own.children_system
        for pid in load_pids:
            try:
                load += procstat.tree_cpu_seconds(pid)
            except OSError:
                continue
        target = 0.0
        if target_pid is not None:
            try:
                target = procstat.tree_cpu_seconds(target_pid)
            except OSError:
                target = 0.0
        return cls(
            wall=time.monotonic(),
            cores=procstat.core_times(),
            target_cpu=target,
            load_cpu=load,
            processes=procstat.all_cpu_seconds(),
        )


@dataclass(frozen=True, slots=True)
class Usage:
    """Seconds spent during one cell. `foreign` is CPU time on a reserved core that
    neither the target nor the bench's own processes account for; `steal` is time the
    hypervisor gave to another guest."""

    wall_s: float
    target_cpu_s: float
    load_cpu_s: float
    proxy_core_busy_s: float
    proxy_core_foreign_s: float
    proxy_core_steal_s: float
    load_core_foreign_s: float
    load_core_steal_s: float
    busiest: str

    @classmethod
    def between(
        cls,
        before: Snapshot,
        after: Snapshot,
        *,
        proxy_cpu: int,
        load_cpu: int,
        exclude: frozenset[int] = frozenset(),
    ) -> Usage:
        proxy_core = after.cores[proxy_cpu] - before.cores[proxy_cpu]
        load_core = after.cores[load_cpu] - before.cores[load_cpu]
        target = after.target_cpu - before.target_cpu
        load = after.load_cpu - before.load_cpu
        # A target pinned to the proxy core can spend there at most what that core was
        # busy; the rest of its time ran elsewhere (inspector_page.py's reader, on the load
        # core by design, as a browser would): not another process's.
        target_elsewhere = max(0.0, target - proxy_core.busy)
        return cls(
            wall_s=after.wall - before.wall,
            target_cpu_s=target,
            load_cpu_s=load,
            proxy_core_busy_s=proxy_core.busy,
            proxy_core_foreign_s=max(0.0, proxy_core.busy - target),
            proxy_core_steal_s=proxy_core.steal,
            load_core_foreign_s=max(0.0, load_core.busy - load - target_elsewhere),
            load_core_steal_s=load_core.steal,
            busiest=_busiest(before, after, exclude),
        )

    def disturbance(self, limit: float, slack_s: float = 0.03) -> str | None:
        """Why this cell cannot be trusted, or None. `limit` is a share of wall time;
        `slack_s` absorbs the 10 ms granularity of /proc's clock ticks."""
        allowed = limit * self.wall_s + slack_s
        reasons = []
        if self.proxy_core_foreign_s > allowed:
            reasons.append(
                f"other processes used {self.proxy_core_foreign_s / self.wall_s:.0%} "
                "of the proxy's core"
            )
        if self.load_core_foreign_s > allowed:
            reasons.append(
                f"other processes used {self.load_core_foreign_s / self.wall_s:.0%} "
                "of the load generator's core"
            )
        steal = max(self.proxy_core_steal_s, self.load_core_steal_s)
        if steal > allowed:
            reasons.append(f"the hypervisor stole {steal / self.wall_s:.0%} of a core")
        if reasons and self.busiest:
            reasons.append(f"busiest: {self.busiest}")
        return "; ".join(reasons) or None

    def as_dict(self) -> dict[str, float | str]:
        return {
            key: round(value, 4) if isinstance(value, float) else value
            for key, value in asdict(self).items()
        }


def _busiest(before: Snapshot, after: Snapshot, exclude: frozenset[int]) -> str:
    """The three other processes that used the most CPU between the snapshots."""
    used = []
    for pid, (name, seconds) in after.processes.items():
        if pid in exclude:
            continue
        spent = seconds - before.processes.get(pid, (name, 0.0))[1]
        if spent >= 0.02:
            used.append((spent, name, pid))
    used.sort(reverse=True)
    return ", ".join(f"{name} ({pid}) {spent:.2f} s" for spent, name, pid in used[:3])


def idle_check(seconds: float, cpus: tuple[int, ...]) -> tuple[dict[int, float], str]:
    """Share of each reserved core that was busy (or stolen) while the bench did nothing,
    and the busiest other processes meanwhile."""
    before = procstat.core_times()
    own_before = os.times()
    processes = procstat.all_cpu_seconds()
    time.sleep(seconds)
    after = procstat.core_times()
    own_after = os.times()
    own = (own_after.user + own_after.system) - (own_before.user + own_before.system)
    shares = {}
    for cpu in cpus:
        delta = after[cpu] - before[cpu]
        shares[cpu] = max(0.0, delta.busy + delta.steal - own) / seconds
    then = Snapshot(wall=0, cores=before, target_cpu=0, load_cpu=0, processes=processes)
    now = Snapshot(
        wall=0, cores=after, target_cpu=0, load_cpu=0, processes=procstat.all_cpu_seconds()
    )
    return shares, _busiest(then, now, frozenset({os.getpid()}))
