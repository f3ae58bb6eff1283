"""Memory given back: glibc's allocator keeps the memory that many short-lived
connections freed (TLS ones especially, under uvloop) in pieces it does not return, so a
process that served thousands of WebSocket sessions grows though nothing is in use.
After many connections have closed, `malloc_trim` hands the free pages back; at most
once a second, and only on glibc (elsewhere nothing is done)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

# Closed client connections between two trims, and the least time between them.
TRIM_AFTER = 256
INTERVAL = 1.0


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):
        return False


class Heap:
    __slots__ = ("_last", "_loop", "_trim", "closed")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._trim: Callable[[int], int] | None = None
        self._last = 0.0
        self.closed = 0 if _glibc() else -(1 << 62)  # elsewhere: never due

    def released(self) -> None:
        self.closed += 1

    def deadline(self) -> float | None:
        return self._last + INTERVAL if self.closed >= TRIM_AFTER else None

    def expired(self) -> None:
        self.closed = 0
        self._last = self._loop.time()
        trim = self._trim
        if trim is None:
            import ctypes  # noqa: PLC0415 - only once there is something to give back

            trim = self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        trim(0)
