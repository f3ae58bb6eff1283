"""One exchange (a request and its response, or a WebSocket session) as it happens.

Forwarding fills it in; observers (the log line, metrics, the inspector, body capture)
are told when it starts, when it changes and when it ends. It holds raw header pairs:
whatever shows them redacts them first.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Protocol

from proxy.headers import Pairs
from proxy.sse import StreamSummary


class Outcome(enum.StrEnum):
    COMPLETED = "completed"
    CLIENT_DISCONNECTED = "client_disconnected"
    UPSTREAM_CUT = "upstream_cut"
    TIMEOUT = "timeout"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    REJECTED = "rejected"


class Observer(Protocol):
    def started(self, exchange: Exchange) -> None: ...

    def changed(self, exchange: Exchange) -> None: ...

    def ended(self, exchange: Exchange) -> None: ...


def _index(pairs: Pairs) -> dict[str, str]:
    """The first value of each header by lower-cased name."""
    index: dict[str, str] = {}
    for name, value in pairs:
        index.setdefault(name.lower(), value)
    return index


@dataclass(slots=True)
class Body:
    """The first `limit` bytes of one body (a copy for capture), and its whole size."""

    limit: int
    data: bytearray = field(default_factory=bytearray)
    size: int = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    @property
    def truncated(self) -> bool:
        return self.size > len(self.data)


@dataclass(slots=True)
class Bodies:
    request: Body
    response: Body

    @classmethod
    def capped(cls, limit: int) -> Bodies:
        return cls(Body(limit), Body(limit))


@dataclass(slots=True, kw_only=True)
class WebSocketStats:
    frames_in: int = 0
    frames_out: int = 0
    close_code: int | None = None
    close_reason: str | None = None
    closed_by: str | None = None


@dataclass(slots=True, kw_only=True)
class Exchange:
    request_id: str
    method: str
    target: str
    client: str | None = None
    websocket: WebSocketStats | None = None
    upstream_target: str | None = None
    rule: str | None = None
    status: int | None = None
    outcome: Outcome = Outcome.COMPLETED
    cause: str | None = None
    limit: str | None = None
    request_headers: Pairs = field(default_factory=list)
    response_headers: Pairs = field(default_factory=list)
    request_bytes: int = 0
    response_bytes: int = 0
    sse: StreamSummary | None = None
    bodies: Bodies | None = None
    diagnosis: str | None = None
    started_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    connect_ms: float | None = None
    headers_ms: float | None = None
    first_byte_ms: float | None = None
    duration_ms: float | None = None
    observers: tuple[Observer, ...] = ()
    # Header lookups by name, built once per header list (log line, diagnoses, capture).
    _indexes: list[tuple[Pairs, dict[str, str]] | None] = field(
        default_factory=lambda: [None, None], repr=False, compare=False
    )

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def fail(self, outcome: Outcome, cause: str, *, limit: str | None = None) -> None:
        self.outcome = outcome
        self.cause = cause
        self.limit = limit

    def start(self) -> None:
        for observer in self.observers:
            observer.started(self)

    def change(self) -> None:
        for observer in self.observers:
            observer.changed(self)

    def end(self) -> None:
        self.duration_ms = self.elapsed_ms()
        for observer in self.observers:
            observer.ended(self)

    def request_header(self, name: str) -> str | None:
        cached = self._indexes[0]
        if cached is None or cached[0] is not self.request_headers:
            cached = self._indexes[0] = (self.request_headers, _index(self.request_headers))
        return cached[1].get(name.lower())

    def response_header(self, name: str) -> str | None:
        cached = self._indexes[1]
        if cached is None or cached[0] is not self.response_headers:
            cached = self._indexes[1] = (self.response_headers, _index(self.response_headers))
        return cached[1].get(name.lower())

    @property
    def settled(self) -> bool:
        """A WebSocket session whose end is already decided (who closed, with what)."""
        return self.websocket is not None and self.websocket.closed_by is not None

    @property
    def stream_unfinished(self) -> bool:
        """A 200 event stream that ended without `response.completed`."""
        return self.status == 200 and self.sse is not None and not self.sse.completed
