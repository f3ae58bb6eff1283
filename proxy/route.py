"""What every request on the port shares, handed to each connection, relay and tunnel at
construction: where requests go, by which rules, within which limits, through which
pool, timed by which deadlines, watched by which observers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.connector import Origin
from proxy.deadlines import Deadlines
from proxy.exchange import Observers
from proxy.rules import Rule
from proxy.settings import Settings

if TYPE_CHECKING:
    from proxy.pool import Pool
    from proxy.tunnel import Tunnel

# A request head may hold several long lines (a cookie and a token), but no more than
# this many times limits.max_header_size in all: llhttp itself sets no bound.
HEAD_LINES = 4
# The control plane takes no uploads: a /_proxy request body past this is refused.
CONTROL_BODY_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    max_body_size: int
    max_header_size: int
    max_head_size: int
    header_timeout: float
    keepalive_timeout: float
    body_timeout: float
    # Upstream silence while a request awaits (or streams) its answer.
    idle_timeout: float
    # Silence both ways in a WebSocket session.
    websocket_idle_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        limits = settings.limits
        return cls(
            max_body_size=limits.max_body_size,
            max_header_size=limits.max_header_size,
            max_head_size=limits.max_header_size * HEAD_LINES,
            header_timeout=limits.header_timeout,
            keepalive_timeout=limits.keepalive_timeout,
            body_timeout=limits.body_timeout,
            idle_timeout=settings.upstream.idle_timeout,
            websocket_idle_timeout=limits.websocket_idle_timeout,
        )

    @property
    def timeouts(self) -> tuple[float, ...]:
        return (
            self.header_timeout,
            self.keepalive_timeout,
            self.body_timeout,
            self.idle_timeout,
            self.websocket_idle_timeout,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    loop: asyncio.AbstractEventLoop
    origin: Origin
    rules: tuple[Rule, ...]
    limits: Limits
    pool: Pool
    deadlines: Deadlines
    observers: Observers
    # Bytes of each body kept for capture and the inspector (0: none kept).
    record_bodies: int
    # Capture writes an event stream's bytes; the inspector shows a stream by its events.
    record_streams: bool
    new_request_id: Callable[[], str]
    # WebSocket sessions in progress, for shutdown to close.
    sessions: set[Tunnel]
