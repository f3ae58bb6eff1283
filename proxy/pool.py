"""The upstream pool: kept-alive connections to the one configured origin, opened on demand.

Connections are opened by the connector (connector.py). A released connection waits,
idle, for the next request for at most `upstream.keepalive_timeout`; one that the far
side closed, that sent bytes nobody asked for, or whose response was not read to its end
is never used again, and one is looked at before it is reused (the far side may have
closed it a moment ago). At most `upstream.pool_size` connections exist at once; a
request beyond that waits for one to come free, and says so. `upstream.warm_connections`
spares are kept open ahead of requests.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Protocol

import structlog

from proxy.connector import ConnectError, Connector, Origin
from proxy.settings import UpstreamSection
from proxy.upstream import UpstreamConnection

__all__ = ["ConnectError", "Origin", "Pool", "UpstreamConnection", "Waiter"]


class Waiter(Protocol):
    """A request that asked the pool for a connection."""

    def attach(self, connection: UpstreamConnection) -> None: ...

    def connect_failed(self, error: ConnectError) -> None: ...


class Pool:
    """Connections to the origin: idle ones kept, new ones opened, at most `size` at once."""

    def __init__(self, upstream: UpstreamSection, *, connector: Connector) -> None:
        self.connector = connector
        self.origin = connector.origin
        self.size = upstream.pool_size
        self.keepalive_timeout = upstream.keepalive_timeout
        self.loop = asyncio.get_running_loop()
        self.idle: list[UpstreamConnection] = []  # most recently used last
        self.open = 0  # connections open or opening
        self.waiting: deque[tuple[Waiter, float]] = deque()
        # Warm spares: how many idle ones to keep ready, how many are being opened, and
        # the requests that came while one was (each takes the next that is ready).
        self.warm = upstream.warm_connections
        self.warming = 0
        self.ahead: deque[Waiter] = deque()
        # After a spare the far side soon closed, or one that could not be opened, the
        # next waits this long (doubling); a failing way out is told once, not per try.
        self._backoff = 0.0
        self._refill_at: float | None = None
        self._failing: str | None = None
        self._opening: set[asyncio.Task[None]] = set()
        self._closed = False

    # Taking and giving back.

    def acquire(self, waiter: Waiter, *, fresh: bool = False) -> None:
        """Give `waiter` a connection: an idle one now, one being opened ahead, a new one
        soon, or the next free one. `fresh`: a new one, never one that served before."""
        connection = None if fresh else self._take()
        if connection is not None:
            self._backoff = 0.0  # a spare that serves a request was worth keeping
            waiter.attach(connection)
            self.top_up()
        elif self.warming > len(self.ahead) and not fresh:
            self.ahead.append(waiter)
        elif self.open < self.size:
            self._open_for(waiter)
        else:
            structlog.get_logger("proxy.upstream").warning(
                "waiting for a free upstream connection: upstream.pool_size is reached",
                pool_size=self.size,
            )
            self.waiting.append((waiter, time.perf_counter()))

    def forget(self, waiter: Waiter) -> None:
        """A request that no longer needs the connection it waits for."""
        if waiter in self.ahead:
            self.ahead.remove(waiter)
            return
        for entry in self.waiting:
            if entry[0] is waiter:
                self.waiting.remove(entry)
                return

    def release(self, connection: UpstreamConnection) -> None:
        """A connection whose response was read to its end, ready for the next request."""
        if connection.closed or connection.eof or self._closed:
            connection.close()
            return
        connection.user = None
        # Its last reader may have paused it (a slow client): the next must hear it.
        connection.resume_reading()
        if self.waiting:
            waiter, since = self.waiting.popleft()
            self._log_waited(since)
            waiter.attach(connection)
            return
        self._keep(connection)

    def _keep(self, connection: UpstreamConnection, *, spare: bool = False) -> None:
        """Idle, ready for a request. The most recently used is taken first; a new spare
        waits behind them, the one kept in reserve."""
        if not connection.remembered and connection.transport is not None:
            connection.remembered = True
            self.connector.remember(connection.transport)
        connection.idle_since = self.loop.time()
        connection.idle_since_wall = time.time()
        if spare:
            self.idle.insert(0, connection)
        else:
            self.idle.append(connection)

    def _age(self, connection: UpstreamConnection, now: float, wall: float) -> float:
        """How long it has been idle. The loop's clock stops while a machine sleeps; the
        wall's goes on (and may jump): the larger wins, so a connection idle across a
        sleep is never taken for a fresh one."""
        return max(now - connection.idle_since, wall - connection.idle_since_wall)

    def lost(self, connection: UpstreamConnection) -> None:
        """A connection closed (by either side): it frees a place in the pool."""
        was_idle = connection in self.idle
        if was_idle:
            self.idle.remove(connection)
        if not connection.counted:
            return  # it failed while opening: its place was given back then
        connection.counted = False
        self.open -= 1
        if self._closed:
            return
        if self.waiting and self.open < self.size:
            waiter, since = self.waiting.popleft()
            self._log_waited(since)
            self._open_for(waiter)
            return
        if was_idle and not connection.served:
            # A spare the far side closed before any request came: the next one waits a
            # little, then longer, so an upstream that drops idle connections at once is
            # not dialled in a loop.
            self._backoff = min(max(1.0, self._backoff * 2), 60.0)
        self.top_up()

    def close(self) -> None:
        """Shut down: close idle connections, stop opening new ones."""
        self._closed = True
        self.connector.close()
        for connection in list(self.idle):
            connection.close()
        for task in self._opening:
            task.cancel()

    def _take(self) -> UpstreamConnection | None:
        idle = self.idle
        if not idle:
            return None
        now, wall = self.loop.time(), time.time()
        while idle:
            connection = idle.pop()
            age = self._age(connection, now, wall)
            if age >= self.keepalive_timeout:
                # Idle too long: after a laptop sleeps the far side has forgotten it.
                connection.close()
                continue
            if connection.dropped(age):
                connection.abort()
                continue
            return connection
        return None

    # The pool's one timed duty (see deadlines.py): idle connections past their age are
    # closed before the edge forgets them, and a spare that waits its backoff is opened.

    def deadline(self) -> float | None:
        when = self._refill_at
        if self.idle:
            oldest = min(c.idle_since for c in self.idle) + self.keepalive_timeout
            when = oldest if when is None else min(when, oldest)
        return when

    def expired(self) -> None:
        now, wall = self.loop.time(), time.time()
        limit = self.keepalive_timeout
        for connection in [c for c in self.idle if self._age(c, now, wall) >= limit]:
            connection.close()  # lost() opens its replacement
        if self._refill_at is not None and self._refill_at <= now:
            self._refill_at = None
            backoff, self._backoff = self._backoff, 0.0
            self.top_up()
            self._backoff = backoff

    # Warm spares.

    def top_up(self) -> None:
        """Keep `upstream.warm_connections` idle connections ready (or being opened)."""
        if self._closed or self._refill_at is not None:
            return
        ready = len(self.idle) + self.warming - len(self.ahead)
        if ready >= self.warm or self.open >= self.size:
            return
        if self._backoff:
            self._refill_at = self.loop.time() + self._backoff
            return
        for _ in range(min(self.warm - ready, self.size - self.open)):
            self._open_for(None)

    def ahead_of_request(self) -> None:
        """A client connected: a request is coming. Unless a connection is ready (or on its
        way), open one now, while the client is still sending its head."""
        if self.warm and not self.idle and not self.warming and self.open < self.size:
            self._open_for(None)

    def _log_waited(self, since: float) -> None:
        structlog.get_logger("proxy.upstream").info(
            "got an upstream connection",
            waited_ms=round((time.perf_counter() - since) * 1000, 3),
        )

    # Opening.

    def _open_for(self, waiter: Waiter | None) -> None:
        """Open a connection for `waiter`, or (None) a spare, kept warm for the next."""
        self.open += 1
        if waiter is None:
            self.warming += 1
        task = self.loop.create_task(self._connect_for(waiter))
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    async def _connect_for(self, waiter: Waiter | None) -> None:
        try:
            connection = await self.connect()
        except ConnectError as error:
            self.open -= 1
            if waiter is not None:
                waiter.connect_failed(error)
                return
            self.warming -= 1
            self._spare_failed(error)
            return
        except asyncio.CancelledError:
            self.open -= 1
            if waiter is None:
                self.warming -= 1
            raise
        connection.counted = True
        self._recovered()
        if waiter is not None:
            waiter.attach(connection)
            return
        self.warming -= 1
        connection.warm = True
        if self.ahead:
            self.ahead.popleft().attach(connection)
            return
        self._keep(connection, spare=True)

    async def connect(self) -> UpstreamConnection:
        """A new connection to the origin, ready for a request; ConnectError if not."""
        transport, connection, opened = await self.connector.open(lambda: UpstreamConnection(self))
        connection.ready(transport)
        connection.opened = opened
        if connection.closed:  # closed between its handshake and now
            raise self.connector.error(ConnectionResetError("closed at once"), "TCP")
        return connection

    def _spare_failed(self, error: ConnectError) -> None:
        """A spare could not be opened: the requests waiting for it get its error, and the
        next spare waits a while. Said once while the way out keeps failing (each try at
        debug level), and once more when it works again."""
        log = structlog.get_logger("proxy.upstream")
        if self._failing is None:
            log.warning(
                "a warm upstream connection could not be opened; retrying with a growing pause",
                cause=error.failure.code,
                detail=error.detail,
            )
        else:
            log.debug(
                "a warm upstream connection could not be opened",
                cause=error.failure.code,
                detail=error.detail,
            )
        self._failing = error.detail
        while self.ahead:
            self.ahead.popleft().connect_failed(error)
        self._backoff = min(max(1.0, self._backoff * 2), 60.0)
        self.top_up()

    def _recovered(self) -> None:
        if self._failing is not None:
            structlog.get_logger("proxy.upstream").info(
                "upstream connections open again", after=self._failing
            )
            self._failing = None
