"""The proxy process as the kernel sees it, from outside: its memory (VmRSS), its open
file descriptors and the TCP sockets among them (state, timer), read from /proc; and its
log lines, read as they come (a busy proxy whose stderr pipe is full stops)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tests.proc import ProxyProcess, start_proxy_process

# /proc/net/tcp's states (include/net/tcp_states.h) and timers (the `tr` column).
ESTABLISHED = 0x01
LISTEN = 0x0A
KEEPALIVE_TIMER = 2
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed while listed
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


@dataclass(frozen=True, slots=True)
class TcpSocket:
    local_port: int
    remote_port: int
    state: int
    # Bytes sent and not yet acknowledged; bytes received and not yet read by the process.
    tx_queue: int
    rx_queue: int
    # Which timer is pending (0: none, 1: retransmit, 2: keepalive) and in how many seconds.
    timer: int
    expires_in: float


def tcp_sockets(pid: int) -> list[TcpSocket]:
    """The process's own TCP sockets: its namespace's table, kept to the inodes of its fds."""
    inodes = socket_inodes(pid)
    found = []
    for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if int(fields[9]) not in inodes:
                    continue
                timer, when = fields[5].split(":")
                tx_queue, rx_queue = fields[4].split(":")
                found.append(
                    TcpSocket(
                        local_port=int(fields[1].rsplit(":", 1)[1], 16),
                        remote_port=int(fields[2].rsplit(":", 1)[1], 16),
                        state=int(fields[3], 16),
                        tx_queue=int(tx_queue, 16),
                        rx_queue=int(rx_queue, 16),
                        timer=int(timer, 16),
                        expires_in=int(when, 16) / TICKS_PER_SECOND,
                    )
                )
    return found


def client_connections(pid: int, port: int) -> int:
    """Connections from clients the process still holds on its port `port`."""
    return sum(1 for s in tcp_sockets(pid) if s.local_port == port and s.state != LISTEN)


async def no_client_connections(proxy: ProxyProcess, *, timeout: float = 10) -> None:
    """Wait until the proxy has let go of every client connection (it learns of a close
    when its loop next runs: nothing to await from here but the kernel's table)."""
    pid = proxy.process.pid
    async with asyncio.timeout(timeout):
        while client_connections(pid, proxy.port):  # noqa: ASYNC110 - see the docstring
            await asyncio.sleep(0.02)


class LogLines:
    """The proxy's log, read as it comes: lines counted by event, those `keep` selects kept."""

    def __init__(
        self, proxy: ProxyProcess, keep: Callable[[dict[str, Any]], bool] = lambda _: True
    ) -> None:
        self.proxy = proxy
        self.keep = keep
        self.counts: Counter[str] = Counter()
        self.kept: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        stderr = self.proxy.process.stderr
        assert stderr is not None
        while raw := await stderr.readline():
            try:
                line: dict[str, Any] = orjson.loads(raw)
            except orjson.JSONDecodeError:
                line = {"event": "not a log line", "raw": raw.decode(errors="replace")}
            self.counts[line["event"]] += 1
            if self.keep(line):
                self.kept.append(line)
            self._changed.set()

    async def wait(self, event: str, count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
        """Once `count` lines of `event` were written: the kept ones."""
        async with asyncio.timeout(timeout):
            while self.counts[event] < count:
                if self._task.done():
                    raise AssertionError(f"the proxy's log ended: {self.kept[-5:]}")
                self._changed.clear()
                await self._changed.wait()
        return [line for line in self.kept if line["event"] == event]

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def proxy_process(
    *args: str,
    env: dict[str, str] | None = None,
    keep: Callable[[dict[str, Any]], bool] = lambda _: True,
) -> AsyncIterator[tuple[ProxyProcess, LogLines]]:
    """The real command, its log drained as it comes; killed at the end."""
    proxy = await start_proxy_process(*args, env=env)
    log = LogLines(proxy, keep)
    try:
        yield proxy, log
    finally:
        proxy.stop()
        await proxy.process.wait()
        await log.close()
