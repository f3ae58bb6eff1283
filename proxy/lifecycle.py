"""Readiness and drain: counts exchanges in flight so shutdown can wait for them."""

from __future__ import annotations

import asyncio

from proxy.exchange import Exchange, Observer


class Lifecycle(Observer):
    """An observer of every exchange; `ready` is false from the moment shutdown begins."""

    def __init__(self) -> None:
        self.ready = True
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def started(self, exchange: Exchange) -> None:
        self.in_flight += 1
        self._idle.clear()

    def ended(self, exchange: Exchange) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drain(self, grace: float, *, stop_now: asyncio.Event | None = None) -> int:
        """Wait up to `grace` seconds for every exchange to end (or until `stop_now` is
        set); the number still running."""
        waits = [asyncio.ensure_future(self._idle.wait())]
        if stop_now is not None:
            waits.append(asyncio.ensure_future(stop_now.wait()))
        try:
            await asyncio.wait(waits, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        return self.in_flight
