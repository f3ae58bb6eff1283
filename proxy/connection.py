"""One client connection: its bytes parsed by llhttp, its requests answered in order.

llhttp (through httptools) hands over the raw target and each header name and value
as sent; the callbacks below only record. When a head is complete it becomes a relay
(a request to forward) or a control request (the proxy's own `/_proxy` endpoints),
started once every request before it on the connection has been answered. Strict
llhttp refuses the smuggling shapes; head sizes are counted here, since llhttp has no
limit of its own. A request head must arrive within `limits.header_timeout`; an idle
kept-alive connection is closed after `limits.keepalive_timeout`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Protocol, cast

import structlog
from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpRequestParser

from proxy.failures import Failure, error_response
from proxy.forward import Head
from proxy.headers import RawPairs
from proxy.relay import Relay

if TYPE_CHECKING:
    from proxy.listener import Listener
    from proxy.tunnel import Tunnel

# The reserved prefix: answered by the proxy itself, never forwarded.
PREFIX = b"/_proxy"
# More header lines than this in one head: 431.
MAX_HEADERS = 128
# Closing while the client may still be sending: read and drop what it sends for this
# long first, or the kernel answers its bytes with a reset that can destroy the answer.
LINGER_SECONDS = 5.0

# Why reading from the client is paused (any of them keeps it paused).
BACKPRESSURE = 1  # the upstream (or the control plane) cannot take more yet
WAITING = 2  # the request's upstream connection is not ready, or a request waits its turn

# What the connection's one timer is waiting for.
_NOTHING = 0
_HEAD = 1
_IDLE = 2


class Request(Protocol):
    """A request on a connection: a relay, or a control request."""

    started: bool
    finished: bool
    keep_alive: bool

    def start(self) -> None: ...

    def body(self, piece: bytes) -> None: ...

    def body_complete(self) -> None: ...

    def flush_request(self) -> None: ...

    def client_lost(self) -> None: ...

    def cut(self) -> None: ...

    def fail(self, failure: Failure, message: str) -> None: ...

    def client_write_paused(self) -> None: ...

    def client_write_resumed(self) -> None: ...


class _RefusedError(Exception):
    def __init__(self, failure: Failure, message: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message


def reserved(target: bytes) -> bool:
    """`/_proxy`, `/_proxy/…` and `/_proxy?…`: the proxy's own."""
    return target.startswith(PREFIX) and (
        len(target) == len(PREFIX) or target[len(PREFIX)] in b"/?"
    )


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "_began_at",
        "_deadline",
        "_fed",
        "_fed_before",
        "_headers",
        "_held",
        "_in_head",
        "_lingering",
        "_mid_message",
        "_paused",
        "_refusal",
        "_timer",
        "_timer_at",
        "_url",
        "_waiting_for",
        "closed",
        "listener",
        "loop",
        "parser",
        "parsing",
        "peer",
        "requests",
        "transport",
        "tunnel",
    )

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.loop = listener.loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment] # set at once
        self.peer: str | None = None
        self.parser = HttpRequestParser(self)
        # Requests in order: the first is being answered, the rest wait their turn.
        self.requests: deque[Request] = deque()
        # The request whose body llhttp is reading.
        self.parsing: Request | None = None
        self.tunnel: Tunnel | None = None
        self.closed = False
        self._url = b""
        self._headers: RawPairs = []
        self._in_head = True
        self._mid_message = False
        self._lingering = False
        # Bytes fed to the parser: in all, before the current read, and before the read in
        # which the current head began. A head spans at most _fed - _began_at bytes.
        self._fed = 0
        self._fed_before = 0
        self._began_at = 0
        self._paused = 0
        # Bytes after an upgrade request, held until the upstream answers it.
        self._held: bytearray | None = None
        # A malformed request's answer, written once the requests before it are answered.
        self._refusal: bytes | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0
        self._waiting_for = _NOTHING

    # --- asyncio's callbacks.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        listener = self.listener
        if len(listener.connections) >= listener.max_connections:
            listener.refuse()
            self.closed = True
            self.transport.abort()
            return
        listener.connections.add(self)
        # A request is coming: the upstream connection opens while its head arrives.
        listener.pool.ahead_of_request()
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else None
        self._expect(_HEAD, listener.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self.tunnel is not None:
            self.tunnel.client_data(data)
            return
        if self._held is not None:
            self._held += data
            return
        self._fed_before = self._fed
        self._fed += len(data)
        if self._in_head and self._fed - self._began_at > self.listener.max_head_size:
            # llhttp itself sets no bound on a head; this keeps what it gathers bounded.
            self._reject(
                Failure.HEADERS_TOO_LARGE,
                "the request head is larger than the limits allow",
            )
            return
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            self._upgrade_requested(data[upgrade.args[0] :])
        except HttpParserError as exc:
            self._malformed(exc)
            return
        self._after_read()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.listener.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.tunnel is not None:
            self.tunnel.client_lost()
        for request in list(self.requests):
            request.client_lost()
        self.requests.clear()

    def pause_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.client_write_paused()
        elif self.requests:
            self.requests[0].client_write_paused()

    def resume_writing(self) -> None:
        if self.tunnel is not None:
            self.tunnel.client_write_resumed()
        elif self.requests:
            self.requests[0].client_write_resumed()

    # --- llhttp's callbacks: they only record.

    def on_message_begin(self) -> None:
        self._mid_message = True
        self.parsing = None
        self._url = b""
        self._headers = []
        self._in_head = True
        self._began_at = self._fed_before
        self._expect(_HEAD, self.listener.header_timeout)

    def on_url(self, url: bytes) -> None:
        self._url = self._url + url if self._url else url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def _check_head_size(self) -> None:
        """limits.max_header_size for the target and each header line, 128 lines at most.
        A head that arrived in fewer bytes than the limit needs no line measured."""
        limit = self.listener.max_header_size
        if len(self._headers) > MAX_HEADERS:
            raise _RefusedError(Failure.HEADERS_TOO_LARGE, "the request has too many header fields")
        if self._fed - self._began_at <= limit:
            return
        if len(self._url) > limit:
            raise _RefusedError(
                Failure.URI_TOO_LONG, "the request target is longer than limits.max_header_size"
            )
        if any(len(name) + len(value) > limit for name, value in self._headers):
            raise _RefusedError(
                Failure.HEADERS_TOO_LARGE,
                "a request header line is longer than limits.max_header_size",
            )

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._waiting_for = _NOTHING
        self._check_head_size()
        parser = self.parser
        head = Head.read(
            parser.get_method(),
            self._url,
            parser.get_http_version(),
            self._headers,
            keep_alive=parser.should_keep_alive(),
            upgrade=parser.should_upgrade(),
        )
        if head.version == "1.1" and not head.host:
            raise _RefusedError(Failure.BAD_REQUEST, "an HTTP/1.1 request must carry a Host header")
        request: Request
        if reserved(head.target):
            from proxy.control import ControlRequest  # noqa: PLC0415 - rarely needed

            request = ControlRequest(self, head)
        else:
            request = Relay(self, head)
        self.requests.append(request)
        self.parsing = request

    def on_body(self, body: bytes) -> None:
        parsing = self.parsing
        if parsing is not None:
            parsing.body(body)

    def on_message_complete(self) -> None:
        self._mid_message = False
        parsing = self.parsing
        if parsing is not None:
            parsing.body_complete()

    # --- Moving requests along.

    def _after_read(self) -> None:
        parsing = self.parsing
        if parsing is not None and parsing.started and not parsing.finished:
            parsing.flush_request()
        self._advance()
        requests = self.requests
        if len(requests) > 1 or (self._held is not None and requests):
            # A request waits its turn: read no further until it comes.
            self.pause_reading(WAITING)

    def _advance(self) -> None:
        requests = self.requests
        while requests and not requests[0].started and not self.closed:
            request = requests[0]
            request.start()
            if not request.finished:
                request.flush_request()
                return

    def relay_done(self, request: Request) -> None:
        """A request was answered (or refused): the next may go, or the connection ends."""
        requests = self.requests
        if requests and requests[0] is request:
            requests.popleft()
        if self.closed:
            return
        # Backpressure was that request's (its upstream could not take more): not the next's.
        self.resume_reading(BACKPRESSURE)
        if self._refusal is not None and not requests:
            self.transport.write(self._refusal)
            self._close(linger=True)
            return
        if not request.keep_alive:
            self._close()
            return
        if requests:
            self.resume_reading(WAITING)
            if not requests[0].started:
                self.loop.call_soon(self._advance_later)
            return
        if self._held is not None:
            self._resume_held()
            return
        self.resume_reading(WAITING)
        if not self._in_head:
            self._expect(_IDLE, self.listener.keepalive_timeout)

    def _advance_later(self) -> None:
        if not self.closed:
            self._advance()

    def _close(self, *, linger: bool = False) -> None:
        """Close once what was written is out. When the client may still be sending (a
        body cut short by an answer, a malformed request), half-close and read what it
        sends for a moment first: closing on unread bytes makes the kernel reset the
        connection, which can destroy the answer before the client reads it."""
        self.closed = True
        transport = self.transport
        if (linger or self._mid_message or self._held) and transport.can_write_eof():
            self._lingering = True
            self._paused = 0
            transport.write_eof()
            transport.resume_reading()
            self._waiting_for = _NOTHING
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(LINGER_SECONDS, transport.close)
            return
        transport.close()

    # --- Upgrades.

    def _upgrade_requested(self, rest: bytes) -> None:
        """llhttp stops at the end of an upgrade request's head (a CONNECT's too): what
        follows is held until the upstream says whether it switched protocols."""
        self._held = bytearray(rest)
        # A refused upgrade leaves HTTP/1.1 going on: what follows needs a fresh parser.
        self.parser = HttpRequestParser(self)
        self.pause_reading(WAITING)

    def become(self, tunnel: Tunnel) -> None:
        """The upstream switched protocols: from now on this connection is a tunnel."""
        self.tunnel = tunnel
        self.requests.clear()
        self._expect(_NOTHING, 0)
        held, self._held = self._held, None
        self._paused = 0
        self.transport.resume_reading()
        if held:
            tunnel.client_data(bytes(held))

    def _resume_held(self) -> None:
        held, self._held = self._held, None
        self.resume_reading(WAITING)
        if held:
            self.data_received(bytes(held))
        elif not self._in_head:
            self._expect(_IDLE, self.listener.keepalive_timeout)

    # --- Refusals.

    def _malformed(self, exc: HttpParserError) -> None:
        cause = exc.__context__ if isinstance(exc, HttpParserCallbackError) else None
        if isinstance(cause, _RefusedError):
            self._reject(cause.failure, cause.message)
            return
        if cause is not None:
            raise cause
        reason = str(exc).split("\n", 1)[0].strip().rstrip(":") or "malformed request"
        self._reject(Failure.BAD_REQUEST, f"malformed HTTP request: {reason}")

    def _reject(self, failure: Failure, message: str) -> None:
        """A request that cannot be parsed: one log line and the proxy's JSON error, after
        the answers to the requests before it; nothing after it is read as a request."""
        status = failure.status
        assert status is not None
        self.pause_reading(WAITING)
        parsing = self.parsing
        requests = self.requests
        answered = parsing is not None and parsing.finished and self._mid_message
        if parsing is not None and not parsing.finished and parsing in requests:
            if parsing.started:
                # Its body broke midway: it answers for itself, in its own log line.
                parsing.keep_alive = False
                parsing.fail(failure, message)
                return
            requests.remove(parsing)
        structlog.get_logger("proxy.request").warning(
            "rejected",
            client=self.peer,
            status=status,
            outcome=str(failure.outcome),
            cause=failure.code,
            detail=message,
        )
        if answered:
            # What broke is the rest of a body whose request has had its answer already.
            self._close(linger=True)
            return
        answer = error_response(status, failure.code, message, close=True)
        if requests:
            # Written once the requests before it are answered (see relay_done).
            self._refusal = answer
            self._advance()
            return
        self.transport.write(answer)
        self._close(linger=True)

    # --- Reading, paused for any of several reasons.

    def pause_reading(self, reason: int = BACKPRESSURE) -> None:
        if not self._paused and not self.closed:
            self.transport.pause_reading()
        self._paused |= reason

    def resume_reading(self, reason: int = BACKPRESSURE) -> None:
        if not self._paused & reason:
            return
        self._paused &= ~reason
        if not self._paused and not self.closed:
            self.transport.resume_reading()

    # --- The one timer: a head must arrive in time; an idle connection is let go.

    def _expect(self, what: int, seconds: float) -> None:
        self._waiting_for = what
        if what == _NOTHING:
            return
        deadline = self.loop.time() + seconds
        self._deadline = deadline
        timer = self._timer
        if timer is not None and self._timer_at <= deadline:
            return  # it fires first, and looks again then
        if timer is not None:
            timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._waiting_for == _NOTHING or self.closed:
            return
        if self.loop.time() < self._deadline:
            self._timer_at = self._deadline
            self._timer = self.loop.call_at(self._deadline, self._on_timer)
            return
        if self._waiting_for == _HEAD:
            structlog.get_logger("proxy").warning(
                "connection closed: request headers not complete within limits.header_timeout",
                header_timeout_s=self.listener.header_timeout,
            )
        self._close()

    def cut(self) -> None:
        """The proxy is stopping: what is still in flight here ends now, as a cut."""
        for request in self.requests:
            request.cut()
        self._close()

    def new_request_id(self) -> str:
        return self.listener.new_request_id()
