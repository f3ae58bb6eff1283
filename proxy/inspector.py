"""The live inspector (opt-in): recent exchanges, redacted, in a page served at /_proxy/.

Wiring only so far: the ring of recent exchanges, the event stream and the page come next.
"""

from __future__ import annotations

from aiohttp import web

from proxy.exchange import Exchange


class Inspector:
    """An observer of every exchange, serving what it saw under the reserved prefix."""

    def __init__(self, *, ring_size: int) -> None:
        self.ring_size = ring_size

    def started(self, exchange: Exchange) -> None:
        pass

    def changed(self, exchange: Exchange) -> None:
        pass

    def ended(self, exchange: Exchange) -> None:
        pass

    def add_routes(self, router: web.UrlDispatcher) -> None:
        pass
