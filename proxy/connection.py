"""One client connection: its bytes read into requests, its requests answered in order.

The connection reads in named phases (a head, a body, bytes held after an upgrade,
bytes drained before closing, a tunnel), whatever the reads: framing.py finds where each
message ends and llhttp parses exactly its bytes. A complete head becomes a relay (a
request to forward) or a control request (the proxy's own `/_proxy` endpoints), started
once every request before it on the connection has been answered; the body's bytes go to
the request they belong to, as the client framed them. A head must arrive within
`limits.header_timeout`, a body must not stall for `limits.body_timeout`, an idle
kept-alive connection is let go after `limits.keepalive_timeout`, and a closing one that
will not finish is aborted: all on the route's one deadline timer.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol, cast

import structlog

from proxy.failures import Failure, error_response
from proxy.flow import BACKPRESSURE, WAITING, FlowControl, keepalive_probes, reset_connection
from proxy.forward import Head, malformed
from proxy.framing import (
    B_CHUNKED,
    B_LENGTH,
    P_DONE,
    FramingError,
    HeadTooLargeError,
    LineTooLongError,
    Message,
)
from proxy.relay import Relay

if TYPE_CHECKING:
    from proxy.control import Control
    from proxy.route import Route
    from proxy.tunnel import Tunnel

# The reserved prefix: answered by the proxy itself, never forwarded.
PREFIX = b"/_proxy"
# Closing while the client may still be sending, or while it has not read the answer:
# what it sends is read and dropped for this long, then the connection is aborted. (A
# close on unread bytes makes the kernel answer with a reset that can destroy the answer.)
LINGER_SECONDS = 5.0


class HeadRefusedError(FramingError):
    """A head read whole, and unfit to be a request (a missing or repeated Host)."""

    def __init__(self, message: str, *, head_only: bool) -> None:
        super().__init__(message)
        self.head_only = head_only  # a HEAD request's answer ends at its head


class Reading(enum.Enum):
    HEAD = "head"  # a request head, or the wait for one
    BODY = "body"  # a request's body
    HELD = "held"  # after an upgrade request: bytes held until the upstream answers
    DRAINING = "draining"  # no more requests: bytes are read and dropped
    TUNNEL = "tunnel"  # a WebSocket session


# Enum members read through their class pay for a metaclass hook at every use; the hot
# path reads them from these module constants.
R_HEAD, R_BODY, R_HELD, R_DRAINING, R_TUNNEL = (
    Reading.HEAD,
    Reading.BODY,
    Reading.HELD,
    Reading.DRAINING,
    Reading.TUNNEL,
)


class Request(Protocol):
    """A request on a connection: a relay, or a control request."""

    started: bool
    finished: bool
    keep_alive: bool
    # Forwarded upstream (a relay), or answered by the proxy itself (a control request).
    forwarded: bool

    def start(self) -> None: ...

    def body(self, raw: bytes, pieces: list[bytes]) -> None: ...

    def body_complete(self) -> None: ...

    def flush_request(self) -> None: ...

    def client_lost(self) -> None: ...

    def cut(self) -> None: ...

    def fail(self, failure: Failure, message: str) -> None: ...

    def decline(self, failure: Failure, message: str) -> None: ...

    def client_write_paused(self) -> None: ...

    def client_write_resumed(self) -> None: ...


class Registry(Protocol):
    """The listener's side: the connection limit and the shutdown."""

    closing: bool

    def admit(self, connection: ClientConnection) -> bool: ...

    def discard(self, connection: ClientConnection) -> None: ...


def reserved(target: bytes) -> bool:
    """`/_proxy`, `/_proxy/…` and `/_proxy?…`: the proxy's own."""
    return target.startswith(PREFIX) and (
        len(target) == len(PREFIX) or target[len(PREFIX)] in b"/?"
    )


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "_expires",
        "_held",
        "_kept_alive",
        "_last_read",
        "_message",
        "_reading",
        "_refusal",
        "_refusal_head_only",
        "closed",
        "control",
        "flow",
        "idle_since",
        "peer",
        "phase",
        "registry",
        "requests",
        "route",
        "transport",
        "tunnel",
    )

    def __init__(self, route: Route, control: Control, registry: Registry) -> None:
        self.route = route
        self.control = control
        self.registry = registry
        self.transport: asyncio.Transport = None  # type: ignore[assignment] # set at once
        self.flow: FlowControl = None  # type: ignore[assignment] # set at once
        self.peer: str | None = None
        self.phase = R_HEAD
        # Requests in order: the first is being answered, the rest wait their turn.
        self.requests: deque[Request] = deque()
        # The message being read, and the request whose body it is.
        self._message: Message | None = None
        self._reading: Request | None = None
        self.tunnel: Tunnel | None = None
        self.closed = False
        # Bytes after an upgrade request, held until the upstream answers it.
        self._held: list[bytes] = []
        # A malformed request's failure, said and answered once the requests before it
        # are answered.
        self._refusal: tuple[Failure, str] | None = None
        self._refusal_head_only = False
        # Timing (see deadline): when the connection went idle (None: busy), when the last
        # body byte came, and the deadline of whatever else is timed (a head, closing).
        self.idle_since: float | None = None
        self._kept_alive = False
        self._last_read = 0.0
        self._expires: float | None = None

    # --- asyncio's callbacks.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.flow = FlowControl(self.transport)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else None
        route = self.route
        if not self.registry.admit(self):
            self._refuse_for_room()
            return
        # A request is coming: the upstream connection opens while its head arrives.
        route.pool.ahead_of_request()
        # Idle (room may be made by closing it) until its first request begins, which
        # must be within limits.header_timeout; kept alive once it has been answered.
        self.idle_since = now = route.loop.time()
        self._kept_alive = False
        self._expires = now + route.limits.header_timeout
        route.deadlines.watch(self)

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase is R_TUNNEL:
            assert self.tunnel is not None
            self.tunnel.client_data(data)
            return
        if phase is R_DRAINING:
            return
        if phase is R_HELD:
            self._held.append(data)
            return
        at, end = 0, len(data)
        try:
            while at < end:
                if phase is R_HEAD:
                    at = self._read_head(data, at)
                elif phase is R_BODY:
                    at = self._read_body(data, at)
                elif phase is R_HELD:
                    self._held.append(data[at:])
                    break
                else:
                    break
                phase = self.phase
        except FramingError as exc:
            self._malformed(exc)
            return
        self._after_read()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.flow.closed = True
        self.registry.discard(self)
        self.route.deadlines.unwatch(self)
        if self.tunnel is not None:
            self.tunnel.client_lost()
        for request in list(self.requests):
            request.client_lost()
        self.requests.clear()
        self._held.clear()
        if self._refusal is not None:
            self._say_refusal()  # the client left before its turn came: still said

    def pause_writing(self) -> None:
        self.flow.writing_paused = True
        if self.tunnel is not None:
            self.tunnel.client_write_paused()
        elif self.requests:
            self.requests[0].client_write_paused()

    def resume_writing(self) -> None:
        self.flow.writing_paused = False
        if self.tunnel is not None:
            self.tunnel.client_write_resumed()
        elif self.requests:
            self.requests[0].client_write_resumed()

    # --- Reading requests.

    def _read_head(self, data: bytes, at: int) -> int:
        message = self._message
        if message is None:
            limits = self.route.limits
            message = self._message = Message(
                request=True, head_limit=limits.max_head_size, line_limit=limits.max_header_size
            )
        stop = message.read_head(data, at)
        if stop < 0:
            if message.head_size and self.idle_since is not None:
                # A head has begun: it must be complete within limits.header_timeout.
                self.idle_since = None
                self._kept_alive = False
                self._expires = self.route.loop.time() + self.route.limits.header_timeout
            return len(data)
        self._head_read(message)
        return stop

    def _head_read(self, message: Message) -> None:
        parser = message.parser
        head = Head.read(
            message.method,
            message.url,
            parser.get_http_version(),
            message.headers,
            keep_alive=message.keep_alive,
            upgrade=message.upgrade,
        )
        self.idle_since = None
        self._expires = None
        problem = malformed(head)
        if problem is not None:
            raise HeadRefusedError(problem, head_only=head.method == b"HEAD")
        request: Request
        if reserved(head.target):
            from proxy.control import ControlRequest  # noqa: PLC0415 - rarely needed

            request = ControlRequest(self, head, self.control)
        else:
            request = Relay(self.route, self, head)
        self.requests.append(request)
        if head.websocket or head.method == b"CONNECT":
            # What follows is for the upstream's answer to decide: a new protocol, or
            # (refused) the next request.
            self._message = None
            message.release()
            request.body_complete()
            self.phase = R_HELD
            self.flow.pause_reading(WAITING)
            return
        if head.chunked:
            message.frame(B_CHUNKED)
        else:
            message.frame(B_LENGTH, head.length or 0)
        if message.phase is P_DONE:
            self._message_done(request, head.keep_alive)
        else:
            self._reading = request
            self._last_read = self.route.loop.time()
            self.phase = R_BODY

    def _read_body(self, data: bytes, at: int) -> int:
        message, request = self._message, self._reading
        assert message is not None
        assert request is not None
        pieces: list[bytes] = []
        stop = message.read_body(data, at, pieces)
        self._last_read = self.route.loop.time()
        request.body(data if not at and stop == len(data) else data[at:stop], pieces)
        if message.phase is P_DONE:
            self._reading = None
            self._message_done(request, request.keep_alive)
        return stop

    def _message_done(self, request: Request, keep_alive: bool) -> None:
        message, self._message = self._message, None
        if message is not None:
            message.release()
        request.body_complete()
        # A request the connection ends with: what the client sends after it is not read
        # (RFC 9112 §9.6).
        if self.phase is not R_DRAINING:
            self.phase = R_HEAD if keep_alive else R_DRAINING

    # --- Moving requests along.

    def _after_read(self) -> None:
        requests = self.requests
        if requests:
            first = requests[0]
            if first.started and not first.finished:
                first.flush_request()
        self._advance()
        if len(requests) > 1 or (self.phase is R_HELD and requests):
            # A request waits its turn: read no further until it comes.
            self.flow.pause_reading(WAITING)

    def _advance(self) -> None:
        requests = self.requests
        while requests and not requests[0].started and not self.closed:
            request = requests[0]
            if self.registry.closing and request.forwarded:
                self._shutting_down(request)
                return
            request.start()
            if not request.finished:
                request.flush_request()
                return

    def _shutting_down(self, request: Request) -> None:
        """The proxy is shutting down: no new exchange starts; a request is told so."""
        request.keep_alive = False
        request.decline(
            Failure.SHUTTING_DOWN, "the proxy is shutting down: send this request again"
        )

    def request_done(self, request: Request) -> None:
        """A request was answered (or refused): the next may go, or the connection ends."""
        requests = self.requests
        if requests and requests[0] is request:
            requests.popleft()
        if self.closed:
            return
        # Backpressure was that request's (its upstream could not take more): not the next's.
        self.resume_reading(BACKPRESSURE)
        if self._refusal is not None and not requests:
            # Said in its turn; answered only on a connection the answer before it did not
            # end (nothing may follow a close, or a body the close delimits).
            self._refuse(answer=request.keep_alive)
            return
        if not request.keep_alive or (self.registry.closing and not requests):
            self.close()
            return
        self.resume_reading(WAITING)
        if requests:
            if not requests[0].started:
                self.route.loop.call_soon(self._advance_later)
            return
        if self.phase is R_HELD:
            self._resume_held()
            return
        if self.phase is R_HEAD:
            if self._message is not None and self._message.head_size:
                # A head already under way (pipelined): its time starts now.
                self._expires = self.route.loop.time() + self.route.limits.header_timeout
            else:
                self._idle()

    def _idle(self) -> None:
        now = self.route.loop.time()
        self.idle_since = now
        self._kept_alive = True
        self._expires = now + self.route.limits.keepalive_timeout

    def _advance_later(self) -> None:
        if not self.closed:
            self._advance()
            self._after_advance()

    def _after_advance(self) -> None:
        if len(self.requests) > 1:
            self.flow.pause_reading(WAITING)

    def may_keep_alive(self) -> bool:
        """Whether an answer may leave the connection open (not while shutting down)."""
        return not self.registry.closing

    # --- Writing to the client (for the requests and the tunnel).

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        self.transport.writelines(parts)

    def pause_reading(self, reason: int = BACKPRESSURE) -> None:
        self.flow.pause_reading(reason)

    def resume_reading(self, reason: int = BACKPRESSURE) -> None:
        flow = self.flow
        if flow.reading_paused:
            flow.resume_reading(reason)
            if not flow.reading_paused and self.phase is R_BODY:
                # A stalled body is one the client holds back: time spent paused by the
                # proxy (a request before it, an upstream not ready) is not the client's.
                self._last_read = self.route.loop.time()

    def abort(self) -> None:
        self.closed = True
        self.transport.abort()

    def extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def keep_alive_probes(self) -> None:
        keepalive_probes(self.transport)

    def cut(self, *, reset: bool = False) -> None:
        """An answer was cut: close so the client sees it incomplete, never a clean end.
        `reset`: an answer the client can only tell complete by the close (HTTP/1.0,
        no length) gets a reset, not a FIN."""
        self.closed = True
        self.phase = R_DRAINING
        if reset:
            reset_connection(self.transport)
            return
        self.transport.close()
        self._closing_deadline()

    def close(self, *, linger: bool = False) -> None:
        """Close once what was written is out. When the client may still be sending (a
        body cut short by an answer, a malformed request, bytes after the last request),
        half-close and read what it sends for a moment first: closing on unread bytes
        makes the kernel reset the connection, which can destroy the answer."""
        self.closed = True
        transport = self.transport
        mid_message = self._message is not None and self._message.head_size
        if (linger or mid_message or self._held or self.phase is R_DRAINING) and (
            transport.can_write_eof()
        ):
            self.phase = R_DRAINING
            self._held.clear()
            try:
                transport.write_eof()
            except OSError:
                # The peer is gone already (a reset the loop has not read yet).
                transport.abort()
                return
            self.flow.resume_all()
        else:
            self.phase = R_DRAINING
            transport.close()
        self._closing_deadline()

    def _closing_deadline(self) -> None:
        self.idle_since = None
        self._expires = self.route.loop.time() + LINGER_SECONDS
        self.route.deadlines.watch(self)

    # --- Upgrades.

    def become(self, tunnel: Tunnel) -> None:
        """The upstream switched protocols: from now on this connection is a tunnel."""
        self.tunnel = tunnel
        self.phase = R_TUNNEL
        self.requests.clear()
        self.route.deadlines.unwatch(self)
        held, self._held = self._held, []
        self.flow.resume_all()
        for data in held:
            tunnel.client_data(data)

    def _resume_held(self) -> None:
        """An upgrade the upstream did not take: HTTP/1.1 goes on with what followed."""
        held, self._held = self._held, []
        self.phase = R_HEAD
        self.flow.resume_reading(WAITING)
        self._idle()
        for data in held:
            self.data_received(data)

    # --- Refusals.

    def _malformed(self, exc: FramingError) -> None:
        if isinstance(exc, HeadTooLargeError):
            failure = Failure.HEADERS_TOO_LARGE
            message = f"the request {exc}"
        elif isinstance(exc, LineTooLongError) and exc.target:
            failure = Failure.URI_TOO_LONG
            message = "the request target is longer than limits.max_header_size"
        elif isinstance(exc, LineTooLongError):
            failure = Failure.HEADERS_TOO_LARGE
            message = "a request header line is longer than limits.max_header_size"
        elif isinstance(exc, HeadRefusedError):
            failure, message = Failure.BAD_REQUEST, str(exc)
            self._refusal_head_only = exc.head_only
        else:
            failure, message = Failure.BAD_REQUEST, f"malformed HTTP request: {exc}"
        self._reject(failure, message)

    def _reject(self, failure: Failure, message: str) -> None:
        """A request that cannot be read: one log line and the proxy's JSON error, after
        the answers to the requests before it; nothing after it is read as a request."""
        status = failure.status
        assert status is not None
        self.flow.pause_reading(WAITING)
        reading, self._reading = self._reading, None
        self._message = None
        self.phase = R_DRAINING
        requests = self.requests
        if reading is not None and not reading.finished and reading in requests:
            if reading.started:
                # Its body broke midway: it answers for itself, in its own log line.
                reading.keep_alive = False
                reading.fail(failure, message)
                return
            requests.remove(reading)
        self._refusal = (failure, message)
        if reading is not None and reading.finished:
            # What broke is the rest of a body whose request has had its answer already.
            self._refuse(answer=False)
        elif requests:
            self._advance()  # said and answered after the requests before it
        else:
            self._refuse()

    def _refuse(self, *, answer: bool = True) -> None:
        """The refusal of an unreadable request, in its turn: its log line, its answer,
        and the connection ends."""
        failure, message = self._say_refusal()
        status = failure.status
        if answer and status is not None:
            head_only = self._refusal_head_only
            self.transport.write(
                error_response(status, failure.code, message, close=True, head_only=head_only)
            )
        self.close(linger=True)

    def _say_refusal(self) -> tuple[Failure, str]:
        refusal, self._refusal = self._refusal, None
        assert refusal is not None
        failure, message = refusal
        structlog.get_logger("proxy.request").warning(
            "rejected",
            client=self.peer,
            status=failure.status,
            outcome=str(failure.outcome),
            cause=failure.code,
            detail=message,
        )
        return refusal

    def _refuse_for_room(self) -> None:
        """No room for another client (limits.max_connections, every connection busy): a
        JSON 503 it can act on, then the connection ends."""
        self.closed = True
        self.phase = R_DRAINING
        self.transport.write(
            error_response(
                503,
                Failure.NO_ROOM.code,
                "the proxy has no room for another connection (limits.max_connections); "
                "try again shortly",
                close=True,
            )
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._closing_deadline()

    # --- Time (the route's deadline timer asks).

    def deadline(self) -> float | None:
        if self.phase is R_BODY and not self.flow.reading_paused:
            return self._last_read + self.route.limits.body_timeout
        return self._expires

    def expired(self) -> None:
        if self.closed:
            self.route.deadlines.unwatch(self)
            self.transport.abort()
            return
        if self.phase is R_BODY:
            self._body_stalled()
            return
        if not (self._kept_alive and self.idle_since is not None) and not self.requests:
            structlog.get_logger("proxy").warning(
                "connection closed: request headers not complete within limits.header_timeout",
                header_timeout_s=self.route.limits.header_timeout,
                client=self.peer,
            )
        self._expires = None
        self.close()

    def _body_stalled(self) -> None:
        """The client stopped sending the body it announced."""
        reading, self._reading = self._reading, None
        self._message = None
        self.phase = R_DRAINING
        timeout = self.route.limits.body_timeout
        message = f"the request body stalled: no byte for {timeout:g} s (limits.body_timeout)"
        if reading is not None and not reading.finished:
            reading.keep_alive = False
            if reading.started:
                reading.fail(Failure.BODY_TIMEOUT, message)
                return
            if reading in self.requests:
                self.requests.remove(reading)
        self._reject(Failure.BODY_TIMEOUT, message)

    def cut_all(self) -> None:
        """The proxy is stopping: what is still in flight here ends now, as a cut."""
        for request in self.requests:
            request.cut()
        self.close()

    def close_if_idle(self) -> bool:
        """Shutdown, or room for a new client: an idle kept-alive connection closes now."""
        if self.idle_since is None or self.requests or self.closed:
            return False
        self.close()
        return True
