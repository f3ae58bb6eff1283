"""Readiness and drain: counts exchanges in flight so shutdown can wait for them."""

from __future__ import annotations

import asyncio

from aiohttp import web

from proxy.exchange import Exchange


class Lifecycle:
    """An observer of every exchange; `ready` is false from the moment shutdown begins."""

    def __init__(self) -> None:
        self.ready = True
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def started(self, exchange: Exchange) -> None:
        self.in_flight += 1
        self._idle.clear()

    def changed(self, exchange: Exchange) -> None:
        pass

    def ended(self, exchange: Exchange) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drain(self, grace: float) -> int:
        """Wait up to `grace` seconds for every exchange to end; the number still running."""
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            pass
        return self.in_flight


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
