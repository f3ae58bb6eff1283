"""One connection to the upstream, and who uses it: a relayed request, or a tunnel.

Its bytes go to its user, if any; bytes that arrive while it is idle mean it can never
be trusted again. Reading is paused and resumed through its flow control (a slow client
holds the upstream back), and writes go through here, so a user never reaches for the
transport.
"""

from __future__ import annotations

import asyncio
import select
import ssl
from typing import TYPE_CHECKING, Protocol, cast

from proxy.connector import Opened
from proxy.flow import FlowControl, keepalive_probes

if TYPE_CHECKING:
    from proxy.pool import Pool

# Idle for less than this, a connection is reused without asking its socket.
FRESH = 0.1


class User(Protocol):
    """What holds a connection while it is in use."""

    def upstream_data(self, data: bytes) -> None: ...

    def upstream_lost(self, exc: BaseException | None) -> None: ...

    def upstream_write_paused(self) -> None: ...

    def upstream_write_resumed(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "clean_end",
        "closed",
        "counted",
        "eof",
        "flow",
        "idle_since",
        "idle_since_wall",
        "opened",
        "pool",
        "remembered",
        "served",
        "transport",
        "user",
        "warm",
    )

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self.user: User | None = None
        self.closed = False
        # The far side ended its half (a FIN, or TLS close_notify): no request may start.
        self.eof = False
        # It ended as its protocol says an end is made (for TLS: with close_notify).
        self.clean_end = False
        # Whether it holds one of the pool's places (given back when it closes).
        self.counted = False
        # When it went idle, by the loop's clock and by the wall's (which goes on while a
        # laptop sleeps): its age is the larger of the two.
        self.idle_since = 0.0
        self.idle_since_wall = 0.0
        self.opened = Opened()
        # Opened ahead of the request that uses it (a warm spare), and requests served.
        self.warm = False
        self.served = 0
        # Its TLS session was read for the next connection to resume (once, not per use).
        self.remembered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.flow = FlowControl(self.transport)

    def ready(self, transport: asyncio.Transport) -> None:
        """TLS (or a tunnel) now stands between this protocol and the socket."""
        self.transport = transport
        self.flow = FlowControl(transport)

    def data_received(self, data: bytes) -> None:
        user = self.user
        if user is not None:
            user.upstream_data(data)
        else:
            # Bytes nobody asked for on an idle connection: it can never be trusted again.
            self.close()

    def eof_received(self) -> bool:
        self.eof = True
        self.clean_end = self._ended_cleanly()
        return False

    def _ended_cleanly(self) -> bool:
        """A TLS connection's end is an end only when the far side said so (close_notify):
        a bare FIN may be an attacker's or a broken path's cut (RFC 9112 §9.8). The TLS
        object tells: after a close_notify it reads as ended; after a bare FIN it still
        waits for more."""
        assert self.transport is not None
        ssl_object = self.transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return True
        try:
            return bool(ssl_object.read(1) == b"")
        except ssl.SSLError:
            return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None and not self.clean_end and self._is_tls():
            exc = ConnectionResetError("the TLS connection ended without close_notify")
        self.closed = True
        if self.flow is not None:
            self.flow.closed = True
        self.pool.lost(self)
        user, self.user = self.user, None
        if user is not None:
            user.upstream_lost(exc)

    def pause_writing(self) -> None:
        if self.user is not None:
            self.user.upstream_write_paused()

    def resume_writing(self) -> None:
        if self.user is not None:
            self.user.upstream_write_resumed()

    # What its user does with it.

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        assert self.transport is not None
        self.transport.writelines(parts)

    def pause_reading(self) -> None:
        if self.flow is not None:
            self.flow.pause_reading()

    def resume_reading(self) -> None:
        if self.flow is not None:
            self.flow.resume_reading()

    def keep_alive_probes(self) -> None:
        if self.transport is not None:
            keepalive_probes(self.transport)

    def _is_tls(self) -> bool:
        return self.transport is not None and (
            self.transport.get_extra_info("ssl_object") is not None
        )

    def dropped(self, idle: float) -> bool:
        """Whether the far side has closed it (or sent something) while it sat idle for
        `idle` seconds: its socket is readable though nothing was asked. The loop may not
        have read that yet, so the socket itself is asked, as urllib3 asks before reusing
        a connection (not after a moment's idleness: no server drops a connection that
        soon, and a busy proxy reuses its connections within one)."""
        if self.closed or self.eof or self.transport is None:
            return True
        if idle < FRESH:
            return False
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return False
        try:
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        """Close for good (reused never again), once what was written is out."""
        self.closed = True
        self.user = None
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close at once, whatever is still unsent (the far side may not be reading)."""
        self.closed = True
        self.user = None
        if self.transport is not None:
            self.transport.abort()
