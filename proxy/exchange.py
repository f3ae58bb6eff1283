"""One exchange (a request and its response, or a WebSocket session) as it happens.

The relay fills it in; observers (the log line, metrics, the inspector, body capture)
are told when it starts, when its response head arrives, as it changes and when it
ends. It holds the raw header pairs as they crossed the wire: whatever shows them
decodes and redacts them first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import structlog

from proxy.failures import Failure, Outcome
from proxy.headers import Pairs, RawPairs, decode_lossy
from proxy.sse import StreamSummary
from proxy.usage import Meter, Report

if TYPE_CHECKING:
    from proxy.connector import Opened

T = TypeVar("T")

__all__ = [
    "Bodies",
    "Body",
    "Exchange",
    "Observer",
    "Observers",
    "Outcome",
    "Watcher",
    "WebSocketStats",
]


class Observer:
    """Told of every exchange; each hook does nothing unless a subclass overrides it."""

    def started(self, exchange: Exchange) -> None:
        """The request head arrived and was accepted for forwarding."""

    def responded(self, exchange: Exchange) -> None:
        """The upstream's response head arrived (status and headers are set)."""

    def changed(self, exchange: Exchange) -> None:
        """Bytes moved: an event, a frame, a piece of a plain body."""

    def metered(self, exchange: Exchange, report: Report, source: str) -> None:
        """Plan usage came: in the response head ("headers"), an event of its stream
        ("event") or a WebSocket message ("websocket")."""

    def ended(self, exchange: Exchange) -> None:
        """The exchange is over; nothing in it changes any more."""

    async def aclose(self) -> None:
        """The proxy is stopping: finish what is pending (files being written)."""


class Observers:
    """The observers of a running proxy, with each hook's list holding only those that
    override it: a hook nobody uses costs nothing per event."""

    __slots__ = ("all", "changed", "ended", "metered", "responded", "started")

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self.all = tuple(observers)
        self.started = self._overriding("started")
        self.responded = self._overriding("responded")
        self.changed = self._overriding("changed")
        self.metered = self._overriding("metered")
        self.ended = self._overriding("ended")

    def _overriding(self, hook: str) -> tuple[Observer, ...]:
        return tuple(o for o in self.all if getattr(type(o), hook) is not getattr(Observer, hook))

    def find(self, kind: type[T]) -> T | None:
        return next((o for o in self.all if isinstance(o, kind)), None)

    def without(self, observer: Observer) -> Observers:
        return Observers(o for o in self.all if o is not observer)


NONE = Observers()


class Watcher:
    """Reads an exchange's content as it passes (the inspector does, when it is on).

    Forwarding hands it each event of a stream and each message of a WebSocket session,
    whole when at most `keep` bytes long (else None, with the size), after the bytes
    have gone on.
    """

    keep = 0

    def event(self, kind: str, data: bytes | None, size: int) -> None:
        """One server-sent event's data."""

    def message(
        self, side: str, opcode: int, payload: bytes | None, size: int, compressed: bool
    ) -> None:
        """One WebSocket message (or control frame) from `side`, "client" or "upstream"."""


def _index(pairs: RawPairs) -> dict[bytes, bytes]:
    """The first value of each header by lower-cased name, as sent."""
    index: dict[bytes, bytes] = {}
    for name, value in reversed(pairs):
        index[name.lower()] = value
    return index


class Body:
    """The first `limit` bytes of one body (a copy for capture), and its whole size.

    The pieces are kept as they were read and joined once, when first asked for: a body
    grown by appending would be reallocated again and again, and the allocator's heap
    left in pieces that the process never gives back.
    """

    __slots__ = ("_pieces", "kept", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.kept = 0
        self._pieces: list[bytes] = []

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        room = self.limit - self.kept
        if room > 0:
            piece = chunk if len(chunk) <= room else chunk[:room]
            self._pieces.append(piece)
            self.kept += len(piece)

    @property
    def data(self) -> bytes:
        pieces = self._pieces
        if len(pieces) != 1:
            pieces[:] = [b"".join(pieces)]
        return pieces[0]

    @property
    def truncated(self) -> bool:
        return self.size > self.kept


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
    reason: str = ""
    outcome: Outcome = Outcome.COMPLETED
    cause: str | None = None
    # In words, what a person can act on (a refused connection, a certificate's subject).
    detail: str | None = None
    limit: str | None = None
    raw_request_headers: RawPairs = field(default_factory=list)
    raw_response_headers: RawPairs = field(default_factory=list)
    request_bytes: int = 0
    response_bytes: int = 0
    sse: StreamSummary | None = None
    bodies: Bodies | None = None
    watcher: Watcher | None = None
    diagnosis: str | None = None
    started_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    # The upstream connection: "reused", "warm" (opened ahead) or "new" (opened for it).
    connection: str | None = None
    # ms from the request's start until its connection was ready (0: one was ready).
    connect_ms: float | None = None
    # What opening the connection took (TCP and any tunnel, then TLS), on its first use.
    opened_ms: float | None = None
    tls_ms: float | None = None
    tls_resumed: bool | None = None
    # Sent again on a fresh connection: the kept-alive one closed before answering.
    retried: bool = False
    headers_ms: float | None = None
    first_byte_ms: float | None = None
    # ms until a stream's first output (a text, reasoning or tool-call delta).
    first_token_ms: float | None = None
    # The plan usage it carried (proxy.usage), made when the first came.
    meter: Meter | None = None
    duration_ms: float | None = None
    observers: Observers = NONE
    # Decoded (for showing, never for forwarding) and indexed once, when first asked for.
    _decoded: list[Pairs | None] = field(
        default_factory=lambda: [None, None], repr=False, compare=False
    )
    _indexes: list[dict[bytes, bytes] | None] = field(
        default_factory=lambda: [None, None], repr=False, compare=False
    )

    def took(self, served: int, warm: bool, opened: Opened, *, waited: bool) -> None:
        """Its upstream connection: reused (it served before), warm (opened ahead of this
        request) or new (opened for it); what opening it took, on its first use; and how
        long this request waited for it (nothing, when one was ready)."""
        if served:
            self.connection = "reused"
        else:
            self.connection = "warm" if warm else "new"
            self.opened_ms, self.tls_ms = opened.connect_ms, opened.tls_ms
            if opened.tls_ms is not None:
                self.tls_resumed = opened.resumed
        if self.connect_ms is None:
            self.connect_ms = self.elapsed_ms() if waited else 0.0

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def fail(
        self, failure: Failure, *, detail: str | None = None, limit: str | None = None
    ) -> None:
        self.outcome = failure.outcome
        self.cause = failure.code
        self.detail = detail
        self.limit = limit

    def start(self) -> None:
        for observer in self.observers.started:
            try:
                observer.started(self)
            except Exception as exc:  # noqa: BLE001 - see observer_failed
                self.observer_failed(type(observer).__name__, exc, observer)

    def respond(self, status: int, reason: str, headers: RawPairs) -> None:
        self.status = status
        self.reason = reason
        self.raw_response_headers = headers
        self._decoded[1] = self._indexes[1] = None
        for observer in self.observers.responded:
            try:
                observer.responded(self)
            except Exception as exc:  # noqa: BLE001 - see observer_failed
                self.observer_failed(type(observer).__name__, exc, observer)

    def change(self) -> None:
        for observer in self.observers.changed:
            try:
                observer.changed(self)
            except Exception as exc:  # noqa: BLE001 - see observer_failed
                self.observer_failed(type(observer).__name__, exc, observer)

    def measure(self, report: Report, source: str) -> None:
        """Plan usage read as it passed (`source`: see Observer.metered): kept, and told
        to who reads it."""
        meter = self.meter
        if meter is None:
            meter = self.meter = Meter()
        meter.add(report)
        if source == "headers":
            meter.head = report
        for observer in self.observers.metered:
            try:
                observer.metered(self, report, source)
            except Exception as exc:  # noqa: BLE001 - see observer_failed
                self.observer_failed(type(observer).__name__, exc, observer)

    def end(self) -> None:
        self.duration_ms = self.elapsed_ms()
        for observer in self.observers.ended:
            try:
                observer.ended(self)
            except Exception as exc:  # noqa: BLE001 - see observer_failed
                self.observer_failed(type(observer).__name__, exc, observer)

    def observer_failed(self, what: str, exc: Exception, observer: Observer | None = None) -> None:
        """Something that watches the exchange failed: it is said once, and switched off
        for this exchange; what the client receives does not change."""
        if observer is not None:
            self.observers = self.observers.without(observer)
        structlog.get_logger("proxy").error(
            "an observer failed and is switched off for this exchange; the bytes go on",
            request_id=self.request_id,
            observer=what,
            error=f"{type(exc).__name__}: {str(exc)[:200]}",
        )

    @property
    def request_headers(self) -> Pairs:
        decoded = self._decoded[0]
        if decoded is None:
            decoded = self._decoded[0] = decode_lossy(self.raw_request_headers)
        return decoded

    @property
    def response_headers(self) -> Pairs:
        decoded = self._decoded[1]
        if decoded is None:
            decoded = self._decoded[1] = decode_lossy(self.raw_response_headers)
        return decoded

    def request_header(self, name: str) -> str | None:
        index = self._indexes[0]
        if index is None:
            index = self._indexes[0] = _index(self.raw_request_headers)
        value = index.get(name.lower().encode("latin-1"))
        return None if value is None else value.decode("utf-8", "replace")

    def raw_response_header(self, lowered: bytes) -> bytes | None:
        """The first value of a response header by its lower-cased name, as sent."""
        index = self._indexes[1]
        if index is None:
            index = self._indexes[1] = _index(self.raw_response_headers)
        return index.get(lowered)

    def response_header(self, name: str) -> str | None:
        index = self._indexes[1]
        if index is None:
            index = self._indexes[1] = _index(self.raw_response_headers)
        value = index.get(name.lower().encode("latin-1"))
        return None if value is None else value.decode("utf-8", "replace")

    @property
    def settled(self) -> bool:
        """A WebSocket session whose end is already decided (who closed, with what)."""
        return self.websocket is not None and self.websocket.closed_by is not None

    @property
    def stream_unfinished(self) -> bool:
        """A 200 event stream that ended without `response.completed`."""
        return self.status == 200 and self.sse is not None and not self.sse.completed
