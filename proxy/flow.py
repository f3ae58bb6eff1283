"""Flow control for one transport: reading paused for any of several reasons and resumed
when none is left, writing known to be paused while the transport's buffer is over its
high-water mark. One object per transport, used by the relay, the tunnel and the control
plane alike (uvicorn's `flow_control.py` is the model)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

# Why reading is paused; any of them keeps it paused.
BACKPRESSURE = 1  # the other side cannot take more yet
WAITING = 2  # a request waits its turn, or its upstream connection is not ready
APP = 4  # the control plane's handler asked


class FlowControl:
    __slots__ = ("_paused", "_transport", "closed", "writing_paused")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._paused = 0
        self.writing_paused = False
        self.closed = False

    @property
    def reading_paused(self) -> bool:
        return bool(self._paused)

    def pause_reading(self, reason: int = BACKPRESSURE) -> None:
        if not self._paused and not self.closed:
            self._transport.pause_reading()
        self._paused |= reason

    def resume_reading(self, reason: int = BACKPRESSURE) -> None:
        if not self._paused & reason:
            return
        self._paused &= ~reason
        if not self._paused and not self.closed:
            self._transport.resume_reading()

    def resume_all(self) -> None:
        """Read whatever comes (a connection lingering before it closes)."""
        if self._paused and not self.closed:
            self._transport.resume_reading()
        self._paused = 0


# TCP keepalive on a connection that may stay quiet for long: the first probe after this
# many seconds of silence, then one every interval, and the peer is gone after `count`.
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 6


def keepalive_probes(transport: asyncio.BaseTransport) -> None:
    """Have the kernel probe a quiet connection, so a peer that vanished is noticed."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    # A socket that takes no such options (not TCP) goes without.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)


def reset_connection(transport: asyncio.Transport) -> None:
    """Close with a reset, not a FIN: the peer cannot take a cut for a clean end."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
