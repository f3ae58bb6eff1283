"""Every timeout of the forwarding path on one timer.

A request head that must arrive in time, a body that must not stall, an idle kept-alive
connection, an upstream that must keep talking, a silent WebSocket session, a closing
connection that must be gone: each is an object that says when it expires (its
`deadline`, by the loop's clock, or None while nothing is timed) and what to do then
(`expired`). Objects move their deadline by changing a number, never a timer: every
`interval` one sweep asks each watched object, so a timeout fires at most `interval`
late, and a request costs no timer of its own.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Timed(Protocol):
    def deadline(self) -> float | None: ...

    def expired(self) -> None: ...


def interval_for(*timeouts: float) -> float:
    """A quarter of the shortest timeout, between 10 ms and 1 s."""
    return min(1.0, max(0.01, min(timeouts) / 4))


class Deadlines:
    __slots__ = ("_loop", "_timer", "interval", "watched")

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self._loop = loop
        self.interval = interval
        self.watched: set[Timed] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, timed: Timed) -> None:
        self.watched.add(timed)
        if self._timer is None:
            self._timer = self._loop.call_later(self.interval, self._sweep)

    def unwatch(self, timed: Timed) -> None:
        self.watched.discard(timed)

    def _sweep(self) -> None:
        self._timer = None
        now = self._loop.time()
        due = [t for t in self.watched if (when := t.deadline()) is not None and when <= now]
        for timed in due:
            if timed in self.watched:
                timed.expired()
        if self.watched:
            self._timer = self._loop.call_later(self.interval, self._sweep)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.watched.clear()
