"""The listener: the port clients connect to, what every connection on it shares, and the
connection limit.

Each accepted connection gets its own `ClientConnection` protocol; they share the
settings they need (read once here), the upstream pool, the observers and the control
plane. Connections beyond `limits.max_connections` are closed at once, logged at most
once a second.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import TYPE_CHECKING, Protocol

import structlog

from proxy.connection import ClientConnection
from proxy.exchange import Observers
from proxy.pool import Origin, Pool
from proxy.rules import Rule
from proxy.settings import Settings

if TYPE_CHECKING:
    from proxy.control import Control
    from proxy.tunnel import Tunnel

# A request head may hold several long lines (a cookie and a token), but no more than
# this many times limits.max_header_size in all: llhttp itself sets no bound.
HEAD_LINES = 4


class Listener:
    """What the connections on the port share; `start` binds it, `close` lets it go."""

    def __init__(
        self,
        settings: Settings,
        *,
        origin: Origin,
        pool: Pool,
        observers: Observers,
        control: Control,
        tunnels: set[Tunnel],
    ) -> None:
        self.loop = asyncio.get_running_loop()
        limits = settings.limits
        self.origin = origin
        self.pool = pool
        self.observers = observers
        self.control = control
        self.rules: tuple[Rule, ...] = settings.rewrite.active
        self.max_body_size = limits.max_body_size
        self.max_header_size = limits.max_header_size
        self.max_head_size = limits.max_header_size * HEAD_LINES
        self.max_connections = limits.max_connections
        self.header_timeout = limits.header_timeout
        self.keepalive_timeout = limits.keepalive_timeout
        self.idle_timeout = settings.upstream.idle_timeout
        capture = settings.capture.dir or settings.log.bodies
        inspector = settings.inspector
        self.record_bodies = max(
            settings.capture.body_limit if capture else 0,
            inspector.body_limit if inspector.enabled else 0,
        )
        # Capture writes an event stream's bytes; the inspector shows a stream by its events.
        self.record_streams = bool(capture)
        self.connections: set[ClientConnection] = set()
        self.watchdog = Watchdog(self.loop, self.idle_timeout)
        self.tunnels = tunnels
        self.server: asyncio.Server | None = None
        self.refused = 0
        self._refused_logged_at = -1.0
        # Request ids: unique within the process and across restarts, without a syscall each.
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(8).hex()

    async def start(self, host: str, port: int) -> list[str]:
        """Bind and accept; the addresses it listens on, as URLs."""
        self.server = await self.loop.create_server(
            lambda: ClientConnection(self), host, port, reuse_address=True, backlog=1024
        )
        self.pool.top_up()  # the first request finds a connection ready
        return [_address(sock.getsockname()) for sock in self.server.sockets]

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    def cut(self) -> None:
        """Close every connection: WebSocket sessions get a 1001 close first."""
        for tunnel in list(self.tunnels):
            tunnel.shutdown()
        for connection in list(self.connections):
            connection.cut()

    async def close(self) -> None:
        self.stop_accepting()
        self.cut()
        self.pool.close()
        self.watchdog.close()
        await self.control.close()
        for observer in self.observers.all:
            await observer.aclose()
        if self.server is not None:
            await self.server.wait_closed()

    def refuse(self) -> None:
        self.refused += 1
        now = self.loop.time()
        if now - self._refused_logged_at >= 1.0:
            self._refused_logged_at = now
            structlog.get_logger("proxy").warning(
                "connection refused: limits.max_connections is reached",
                max_connections=self.max_connections,
                refused_so_far=self.refused,
            )

    def new_request_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):016x}"


class Silent(Protocol):
    def silent_since(self) -> float | None: ...

    def silent_too_long(self) -> None: ...


class Watchdog:
    """upstream.idle_timeout for every request awaiting its upstream, with one timer:
    every so often each watched request says when its upstream last spoke, and one
    silent for longer than the timeout is told so (at most a quarter of the timeout,
    or a second, late)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.interval = min(timeout / 4, 1.0)
        self.watched: set[Silent] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, watched: Silent) -> None:
        self.watched.add(watched)
        if self._timer is None:
            self._timer = self.loop.call_later(self.interval, self._look)

    def unwatch(self, watched: Silent) -> None:
        self.watched.discard(watched)

    def _look(self) -> None:
        self._timer = None
        deadline = self.loop.time() - self.timeout
        for watched in [
            w for w in self.watched if (t := w.silent_since()) is not None and t <= deadline
        ]:
            self.watched.discard(watched)
            watched.silent_too_long()
        if self.watched:
            self._timer = self.loop.call_later(self.interval, self._look)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _address(sockname: object) -> str:
    assert isinstance(sockname, tuple)
    host, port = sockname[0], sockname[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
