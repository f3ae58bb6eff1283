"""The listener: the port clients connect to, what every connection on it shares (the
route), the connection limit and the shutdown.

Each accepted connection gets its own `ClientConnection` protocol, handed the route and
the control plane. At `limits.max_connections` the oldest idle kept-alive connection is
closed to admit a new client; with none idle, the new client gets a JSON 503 (logged at
most once a second). From shutdown on, idle connections close at once, busy ones answer
with `Connection: close`, a forwarded request that arrives is answered 503, and the
port keeps answering the proxy's own endpoints (readyz says 503) until the drain ends.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import TYPE_CHECKING

import structlog

from proxy.connection import ClientConnection
from proxy.deadlines import Deadlines, interval_for
from proxy.exchange import Observers
from proxy.heap import Heap
from proxy.pool import Pool
from proxy.route import Limits, Route
from proxy.settings import Settings

if TYPE_CHECKING:
    from proxy.connector import Origin
    from proxy.control import Control
    from proxy.tunnel import Tunnel


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
        sessions: set[Tunnel],
    ) -> None:
        loop = asyncio.get_running_loop()
        limits = Limits.from_settings(settings)
        capture = settings.capture.dir or settings.log.bodies
        inspector = settings.inspector
        self.deadlines = Deadlines(loop, interval_for(*limits.timeouts))
        # Request ids: unique within the process and across restarts, without a syscall each.
        ids = itertools.count(1)
        prefix = os.urandom(8).hex()
        self.route = Route(
            loop=loop,
            origin=origin,
            rules=settings.rewrite.active,
            limits=limits,
            pool=pool,
            deadlines=self.deadlines,
            observers=observers,
            record_bodies=max(
                settings.capture.body_limit if capture else 0,
                inspector.body_limit if inspector.enabled else 0,
            ),
            record_streams=bool(capture),
            new_request_id=lambda: f"{prefix}{next(ids):016x}",
            sessions=sessions,
        )
        self.loop = loop
        self.pool = pool
        self.observers = observers
        self.control = control
        self.max_connections = settings.limits.max_connections
        self.connections: set[ClientConnection] = set()
        self.heap = Heap(loop)
        self.server: asyncio.Server | None = None
        self.closing = False
        self.refused = 0
        self._refused_logged_at = -1.0

    async def start(self, host: str, port: int) -> list[str]:
        """Bind and accept; the addresses it listens on, as URLs."""
        route, control = self.route, self.control
        self.server = await self.loop.create_server(
            lambda: ClientConnection(route, control, self),
            host,
            port,
            reuse_address=True,
            backlog=1024,
        )
        self.deadlines.watch(self.pool)
        self.deadlines.watch(self.heap)
        self.pool.top_up()  # the first request finds a connection ready
        return [_address(sock.getsockname()) for sock in self.server.sockets]

    # The registry every connection reports to.

    def admit(self, connection: ClientConnection) -> bool:
        """Room for a new client: under the limit, or by closing the oldest idle one."""
        connections = self.connections
        if len(connections) >= self.max_connections:
            idle = [c for c in connections if c.idle_since is not None]
            if not idle:
                self._refuse()
                return False
            oldest = min(idle, key=lambda c: c.idle_since or 0.0)
            connections.discard(oldest)
            oldest.close_if_idle()
        connections.add(connection)
        return True

    def discard(self, connection: ClientConnection) -> None:
        self.connections.discard(connection)
        self.heap.released()

    def _refuse(self) -> None:
        self.refused += 1
        now = self.loop.time()
        if now - self._refused_logged_at >= 1.0:
            self._refused_logged_at = now
            structlog.get_logger("proxy").warning(
                "connection refused: limits.max_connections is reached and none is idle",
                max_connections=self.max_connections,
                refused_so_far=self.refused,
            )

    # Shutting down.

    def begin_shutdown(self) -> None:
        """No new exchange from now on: idle connections close, busy ones close after
        their answer (which says `Connection: close`)."""
        self.closing = True
        for connection in list(self.connections):
            connection.close_if_idle()

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    def cut(self) -> None:
        """Close every connection: WebSocket sessions get a 1001 close first."""
        for tunnel in list(self.route.sessions):
            tunnel.shutdown()
        for connection in list(self.connections):
            connection.cut_all()

    async def close(self) -> None:
        self.closing = True
        self.stop_accepting()
        self.cut()
        self.pool.close()
        self.deadlines.close()
        await self.control.close()
        for observer in self.observers.all:
            await observer.aclose()
        if self.server is not None:
            await self.server.wait_closed()


def _address(sockname: object) -> str:
    assert isinstance(sockname, tuple)
    host, port = sockname[0], sockname[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
