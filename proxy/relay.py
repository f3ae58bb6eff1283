"""The relay: one request's body on its way up, its response on its way back, as bytes.

The client connection parses the request and hands its head and body pieces here; the
upstream connection hands over the response's bytes, parsed by llhttp into status,
raw header pairs and body pieces. Each side's pieces from one read go out in one write.
Flow control both ways: a side whose transport's write buffer is over its high-water
mark pauses reading on the other side until it drains.

Framing: a request body goes up as the client framed it (Content-Length, or chunked);
a response body comes back with the upstream's Content-Length, else chunked (an
HTTP/1.0 client: delimited by the connection's close). A failure before the response
head is out becomes the proxy's JSON error; after it, a cut.
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from proxy.diagnose import diagnose
from proxy.exchange import Bodies, Body, Exchange, WebSocketStats
from proxy.failures import Failure, error_response
from proxy.forward import Head, refusal, request_id, upstream_head
from proxy.headers import HOP_BY_HOP, RawPairs, first_invalid_utf8
from proxy.rules import rewrite
from proxy.sse import SSETap

if TYPE_CHECKING:
    from proxy.connection import ClientConnection
    from proxy.pool import ConnectError, UpstreamConnection

# Request body held while no upstream connection is ready yet, before the client pauses.
PENDING_LIMIT = 256 * 1024
# At most this many header lines in an upstream response head.
MAX_HEADERS = 256
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# How the response body reaches the client.
_NO_BODY = 0  # HEAD, 204, 304
_LENGTH = 1  # the upstream's Content-Length, bytes as they come
_CHUNKED = 2  # chunked, one chunk per read
_UNTIL_CLOSE = 3  # an HTTP/1.0 client: the body ends when the connection does

_RESPONSE_NOTABLE = {
    b"content-type": 1,
    b"content-length": 2,
    b"transfer-encoding": 3,
    b"connection": 4,
    b"sec-websocket-accept": 5,
}


class _BadResponseError(Exception):
    failure = Failure.BAD_RESPONSE


class _BadHandshakeError(_BadResponseError):
    failure = Failure.BAD_HANDSHAKE


def _tokens(value: bytes) -> frozenset[bytes]:
    return frozenset(token.strip().lower() for token in value.split(b",") if token.strip())


def client_head(
    version: str,
    status: int,
    reason: bytes,
    headers: RawPairs,
    *,
    drop: frozenset[bytes],
    chunked: bool,
    close: bool,
) -> bytes:
    """The response head the client receives, in one join: the upstream's status, reason
    and end-to-end pairs as sent, then this hop's framing and connection headers."""
    http10 = version == "1.0"
    parts = [b"HTTP/1.0 " if http10 else b"HTTP/1.1 ", b"%d " % status, reason, b"\r\n"]
    for name, value in headers:
        if name.lower() not in drop:
            parts += (name, b": ", value, b"\r\n")
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if close and not http10:
        parts.append(b"Connection: close\r\n")
    elif not close and http10:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class Relay:
    """One request on its way up and its response on its way back."""

    __slots__ = (
        "_accept",
        "_codings",
        "_delimited",
        "_head_bytes",
        "_header_count",
        "_heads",
        "_in_acquire",
        "_interim",
        "_junk",
        "_keep_alive",
        "_last_read",
        "_left",
        "_length",
        "_listed",
        "_mode",
        "_over",
        "_parser",
        "_pending",
        "_pieces",
        "_reason",
        "_response_headers",
        "_reusable",
        "_sse",
        "_timer_paused",
        "body_done",
        "client",
        "exchange",
        "finished",
        "head",
        "keep_alive",
        "request_sent",
        "response_done",
        "response_started",
        "started",
        "tap",
        "upstream",
    )

    def __init__(self, client: ClientConnection, head: Head) -> None:
        self.client = client
        self.head = head
        self.keep_alive = head.keep_alive
        listener = client.listener
        self.exchange = Exchange(
            request_id=request_id(head) or listener.new_request_id(),
            method=head.method.decode("ascii"),
            target=head.target.decode("latin-1"),
            client=client.peer,
            raw_request_headers=head.headers,
            observers=listener.observers,
        )
        if listener.record_bodies:
            self.exchange.bodies = Bodies.capped(listener.record_bodies)
        self._over = False
        self.upstream: UpstreamConnection | None = None
        self.started = False
        self.finished = False
        self.body_done = False
        self.request_sent = False
        self.response_started = False
        self.response_done = False
        self.tap: SSETap | None = None
        # Request pieces not yet written upstream (framed as they will be sent).
        self._pending: list[bytes] = []
        # Response heads (1xx, then the answer's) and body pieces of the current read,
        # not yet written to the client.
        self._heads: list[bytes] = []
        self._pieces: list[bytes] = []
        self._parser: HttpResponseParser | None = None
        self._reason = b""
        self._response_headers: RawPairs = []
        self._head_bytes = 0
        self._header_count = 0
        self._interim = False
        self._mode = _LENGTH
        self._junk = False
        self._reusable = False
        self._delimited = True
        self._length: bytes | None = None
        # Body bytes still to come when the head gave a length (0: none, or not known).
        self._left = 0
        self._keep_alive = False
        self._codings: bytes | None = None
        self._listed: bytes | None = None
        self._accept: bytes | None = None
        self._in_acquire = False
        self._sse = False
        self._timer_paused = False
        self._last_read = 0.0

    # --- The request.

    def start(self) -> None:
        """The request is next in line on its connection: refuse it, or send it upstream."""
        self.started = True
        client = self.client
        listener = client.listener
        head = self.head
        exchange = self.exchange
        if head.websocket:
            exchange.websocket = WebSocketStats()
        exchange.start()
        refused = refusal(head)
        if refused is not None:
            failure, message = refused
            self.fail(failure, message)
            return
        rewritten = rewrite(listener.rules, exchange.target)
        exchange.upstream_target = rewritten.target
        exchange.rule = rewritten.rule.name if rewritten.rule else None
        if self._over or (head.length is not None and head.length > listener.max_body_size):
            self._too_large()
            return
        target = (
            head.target
            if rewritten.rule is None
            else rewritten.target.encode("latin-1", "surrogateescape")
        )
        self._pending.insert(0, upstream_head(head, target, host=listener.origin.authority))
        if head.continue_expected:
            client.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if not head.has_body:
            self.body_done = True
        # Whether the pool answers at once (an idle connection) or later: attach tells.
        self._in_acquire = True
        listener.pool.acquire(self)
        self._in_acquire = False

    def body(self, piece: bytes) -> None:
        """A piece of the request body, as llhttp un-framed it."""
        if self.finished or self._over:
            return
        exchange = self.exchange
        exchange.request_bytes += len(piece)
        if exchange.request_bytes > self.client.listener.max_body_size:
            # Nothing past the limit is ever sent: the answer is a 413 (see flush_request).
            self._over = True
            return
        if self.head.chunked:
            self._pending += (b"%x\r\n" % len(piece), piece, b"\r\n")
        else:
            self._pending.append(piece)
        if exchange.bodies is not None:
            exchange.bodies.request.add(piece)

    def body_complete(self) -> None:
        if self.finished:
            return
        if self.head.chunked:
            self._pending.append(b"0\r\n\r\n")
        self.body_done = True

    def flush_request(self) -> None:
        """Send what the client's last read brought; without a connection yet, hold it
        (and stop reading from the client once that is too much)."""
        if self._over:
            self._too_large()
            return
        upstream = self.upstream
        if upstream is None:
            if not self.finished and sum(map(len, self._pending)) > PENDING_LIMIT:
                self.client.pause_reading()
            return
        pending = self._pending
        if pending:
            assert upstream.transport is not None
            upstream.transport.write(b"".join(pending) if len(pending) > 1 else pending[0])
            pending.clear()
        if self.body_done and not self.request_sent:
            self.request_sent = True
            self._watch()

    # --- The pool's side.

    def attach(self, upstream: UpstreamConnection) -> None:
        if self.finished:
            upstream.pool.release(upstream)
            return
        exchange = self.exchange
        self.upstream = upstream
        upstream.user = self
        self._parser = HttpResponseParser(self)
        # How it came: reused (it served before), warm (opened ahead of this request) or
        # new (opened for it); what opening it took, when this is its first request; and
        # how long this request waited for it (nothing, when one was ready).
        if upstream.served:
            exchange.connection = "reused"
        else:
            exchange.connection = "warm" if upstream.warm else "new"
            exchange.opened_ms, exchange.tls_ms = upstream.connect_ms, upstream.tls_ms
            if upstream.tls_ms is not None:
                exchange.tls_resumed = upstream.resumed
        upstream.served += 1
        exchange.connect_ms = 0.0 if self._in_acquire else exchange.elapsed_ms()
        self.client.resume_reading()
        self.flush_request()

    def connect_failed(self, error: ConnectError) -> None:
        if self.finished:
            return
        self.fail(error.failure, error.message, detail=error.detail)

    # --- The upstream's side.

    def upstream_data(self, data: bytes) -> None:
        self._last_read = self.client.loop.time()
        if self._left:
            # The rest of a body of known length: counted, not parsed (see _counted).
            self._counted(data)
            return
        if not self.response_started:
            self._head_bytes += len(data)
            if self._head_bytes > self.client.listener.max_head_size:
                self._upstream_broken("its response head is larger than the limits allow")
                return
        parser = self._parser
        assert parser is not None
        try:
            parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            self._flush_response()
            if not self.finished:
                self._upgraded(data[upgrade.args[0] :])
            return
        except HttpParserError as exc:
            if self.response_done:
                # Whatever follows a complete answer was never asked for.
                self._junk = True
                self._flush_response()
                return
            cause = exc.__context__
            failure, reason = Failure.BAD_RESPONSE, str(exc) or type(exc).__name__
            if isinstance(cause, _BadResponseError):
                failure, reason = cause.failure, str(cause)
            elif cause is not None:
                raise cause from exc
            self._flush_response()
            self._upstream_broken(reason, failure)
            return
        self._flush_response()

    def upstream_lost(self, exc: BaseException | None) -> None:
        if self.finished:
            return
        if self.response_started and not self._delimited and exc is None:
            # The body ends with the connection (the upstream sent no framing).
            self.response_done = True
            self._flush_response()
            return
        if self.response_started:
            self._cut(Failure.CUT_MID_BODY)
        else:
            self.fail(
                Failure.DISCONNECTED,
                f"{self.client.listener.origin.url} closed the connection before answering",
            )

    def upstream_write_paused(self) -> None:
        self.client.pause_reading()

    def upstream_write_resumed(self) -> None:
        self.client.resume_reading()

    # llhttp's callbacks: they only record.

    def on_message_begin(self) -> None:
        if self.response_done:
            self._junk = True  # a second answer to one request

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if (
            len(name) + len(value) > self.client.listener.max_header_size
            or self._header_count > MAX_HEADERS
        ):
            raise _BadResponseError("a response header is larger than the limits allow")
        self._response_headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim_response(status)
        else:
            self._response_head(status)

    def on_body(self, piece: bytes) -> None:
        if self.response_done:
            self._junk = True  # bytes after a body that was to have none
            return
        self._pieces.append(piece)
        if self._left:
            self._left -= len(piece)

    def _counted(self, data: bytes) -> None:
        """Bytes of a body whose length the head gave: llhttp had only to count them, so
        they are counted here and go on as they came, with no copy made on the way (what
        follows the body, if anything, was never asked for)."""
        left = self._left
        if len(data) > left:
            data, self._junk = data[:left], True
        self._left = left - len(data)
        self._pieces.append(data)
        if not self._left:
            self._reusable = self._keep_alive
            self.response_done = True
        self._flush_response()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self.exchange.status == 101:
            return  # llhttp stops next, at the first byte of the new protocol
        # Read now: llhttp forgets it once the next message begins.
        parser = self._parser
        assert parser is not None
        self._reusable = parser.should_keep_alive()
        self.response_done = True

    # --- Writing the response.

    def _interim_response(self, status: int) -> None:
        """A 1xx before the answer: 103 Early Hints and the like are relayed; 100 was this
        hop's to send (it answered Expect itself)."""
        self._interim = True
        headers, self._response_headers = self._response_headers, []
        reason, self._reason = self._reason, b""
        self._header_count = 0
        if status == 100 or self.head.version == "1.0":
            return  # an HTTP/1.0 client gets no interim answer (RFC 9110 §15.2)
        self._heads.append(
            client_head(
                self.head.version,
                status,
                reason,
                headers,
                drop=HOP_BY_HOP,
                chunked=False,
                close=False,
            )
        )

    def _response_head(self, status: int) -> None:
        headers = self._response_headers
        self._scan_response(headers)
        self._check_response(status, headers)
        head = self.head
        mode = self._mode = self._framing(status)
        close = not self.keep_alive or mode == _UNTIL_CLOSE
        if close:
            self.keep_alive = False
        exchange = self.exchange
        exchange.headers_ms = exchange.elapsed_ms()
        reason = self._reason
        exchange.respond(status, reason.decode("latin-1"), headers)
        if self._sse:
            exchange.sse = (self.tap or self._new_tap()).summary
            if exchange.bodies is not None and not self.client.listener.record_streams:
                exchange.bodies.response = Body(0)  # counted, not kept
        if status == 101:
            return  # the tunnel writes the 101 itself, once it is sure of it
        drop = HOP_BY_HOP
        if self._listed is not None:
            drop = drop | _tokens(self._listed)
        self._heads.append(
            client_head(
                head.version,
                status,
                reason,
                headers,
                drop=drop,
                chunked=mode == _CHUNKED,
                close=close,
            )
        )
        self.response_started = True
        if mode == _LENGTH:
            assert self._parser is not None
            assert self._length is not None
            self._left = int(self._length)
            self._keep_alive = self._parser.should_keep_alive()
        if mode == _NO_BODY:
            # A HEAD's answer may announce a length it never sends: done at its head.
            assert self._parser is not None
            self._reusable = self._parser.should_keep_alive()
            self.response_done = True

    def _check_response(self, status: int, headers: RawPairs) -> None:
        """What cannot be relayed as it is fails here, before any of it reaches the client."""
        invalid = first_invalid_utf8(headers)
        if invalid is not None:
            raise _BadResponseError(
                f"header {invalid.decode('ascii', 'replace')!r} is not valid UTF-8: "
                "it cannot be relayed unchanged"
            )
        if status == 101:
            if not self.head.websocket:
                raise _BadResponseError("101 Switching Protocols to a request that asked none")
            self._check_accept()
        codings = self._codings
        if codings is not None and codings.strip().lower() != b"chunked":
            raise _BadResponseError(f"unsupported Transfer-Encoding {codings.decode('latin-1')!r}")

    def _framing(self, status: int) -> int:
        """How the body reaches the client: as the upstream framed it where it can."""
        head = self.head
        if status == 101 or head.method == b"HEAD" or status in (204, 304):
            return _NO_BODY
        if self._codings is None and self._length is not None:
            return _LENGTH
        # No framing at all: the upstream's body ends when its connection does.
        self._delimited = self._codings is not None
        return _UNTIL_CLOSE if head.version == "1.0" else _CHUNKED

    def _scan_response(self, headers: RawPairs) -> None:
        notable = _RESPONSE_NOTABLE
        for name, value in headers:
            kind = notable.get(name.lower())
            if kind is None:
                continue
            if kind == 1:
                self._sse = value[:17].lower() == b"text/event-stream"
            elif kind == 2:
                self._length = value
            elif kind == 3:
                self._codings = value if self._codings is None else self._codings + b"," + value
            elif kind == 4:
                self._listed = value if self._listed is None else self._listed + b"," + value
            else:
                self._accept = value.strip()

    def _check_accept(self) -> None:
        key = self.head.ws_key
        assert key is not None
        expected = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())  # noqa: S324 - RFC 6455
        if self._accept != expected:
            raise _BadHandshakeError("Sec-WebSocket-Accept does not match the key")

    def _new_tap(self) -> SSETap:
        exchange = self.exchange
        watcher = exchange.watcher
        if watcher is None:
            self.tap = SSETap(lambda _kind, _summary: exchange.change())
        else:
            self.tap = SSETap(
                lambda _kind, _summary: exchange.change(), keep=watcher.keep, on_data=watcher.event
            )
        return self.tap

    def _flush_response(self) -> None:
        """Write what this read produced in one go, then let the tap and observers see it."""
        if self.finished:
            return
        heads, pieces = self._heads, self._pieces
        out: list[bytes] = []
        if heads:
            out += heads
            heads.clear()
        if pieces:
            self._pieces = []
            size = sum(map(len, pieces))
            exchange = self.exchange
            if exchange.first_byte_ms is None:
                exchange.first_byte_ms = exchange.elapsed_ms()
            exchange.response_bytes += size
            if self._mode == _CHUNKED:
                out += (b"%x\r\n" % size, *pieces, b"\r\n")
            else:
                out += pieces
        if self.response_done and self._mode == _CHUNKED:
            out.append(b"0\r\n\r\n")
        if out:
            if len(out) == 1:
                self.client.transport.write(out[0])
            else:
                # One write of several buffers (the loop gathers them into one send).
                self.client.transport.writelines(out)
        if pieces:
            self._observe(pieces)
        if self.response_done:
            self._complete()

    def _observe(self, pieces: list[bytes]) -> None:
        """The tap reads after the write: it never delays the bytes it looks at."""
        tap = self.tap
        bodies = self.exchange.bodies
        for piece in pieces:
            if tap is not None:
                tap.feed(piece)
            if bodies is not None:
                bodies.response.add(piece)
        if tap is None:
            self.exchange.change()  # a plain body: its byte count moves

    def _complete(self) -> None:
        """The response is through: give the connection back if it can serve another."""
        reusable = (
            self.upstream is not None
            and self.request_sent
            and self._delimited
            and not self._junk
            and self._reusable
        )
        if not self.body_done:
            # The upstream answered before the client finished sending: the rest of the
            # body cannot be told from a next request, so this connection ends here.
            self.keep_alive = False
        if self.tap is not None:
            self.tap.close()
        self._release(reusable=reusable)
        self.finish()

    # --- Failures.

    def fail(
        self,
        failure: Failure,
        message: str,
        *,
        detail: str | None = None,
        limit: str | None = None,
    ) -> None:
        """Answer with the proxy's own error if nothing of a response is out yet, else cut."""
        if self.finished:
            return
        if self.response_started:
            self._cut(failure, detail=detail)
            return
        exchange = self.exchange
        exchange.fail(failure, detail=detail, limit=limit)
        status = failure.status
        assert status is not None
        exchange.status = status
        close = (
            not self.keep_alive
            or not self.body_done
            or failure.outcome == "rejected"
            or self.head.websocket
        )
        if close:
            self.keep_alive = False
        self._heads.clear()
        self._pieces.clear()
        self.client.transport.write(error_response(status, failure.code, message, close=close))
        self._release(reusable=False)
        self.finish()

    def _too_large(self) -> None:
        limit = self.client.listener.max_body_size
        message = f"the request body is larger than limits.max_body_size ({limit} bytes)"
        if self.response_started:
            self._cut(Failure.TOO_LARGE)
            return
        self._pending.clear()
        self.keep_alive = False
        self.fail(Failure.TOO_LARGE, message, limit="limits.max_body_size")

    def _upstream_broken(self, reason: str, failure: Failure = Failure.BAD_RESPONSE) -> None:
        if self.response_started:
            self._cut(Failure.CUT_MID_BODY, detail=reason)
        elif failure is Failure.BAD_HANDSHAKE:
            self.fail(failure, f"the upstream's WebSocket handshake is invalid: {reason}")
        else:
            self.fail(
                failure,
                f"{self.client.listener.origin.url} sent a malformed response: {reason}",
                detail=reason,
            )

    def _cut(self, failure: Failure, *, detail: str | None = None) -> None:
        """Close the client connection so it sees an incomplete response, never a clean end."""
        exchange = self.exchange
        exchange.fail(failure, detail=detail)
        self.keep_alive = False
        self._pieces.clear()
        self.client.transport.close()
        self._release(reusable=False)
        self.finish()

    def cut(self) -> None:
        """The proxy is stopping with this request still in flight."""
        if self.started and not self.finished and self.exchange.cause is None:
            self.exchange.fail(Failure.SHUTDOWN)

    def client_lost(self) -> None:
        """The client's connection closed under this request."""
        if self.finished:
            return
        self.keep_alive = False
        if not self.started:
            self.finished = True
            return
        if self.exchange.cause is None:
            self.exchange.fail(Failure.CLIENT_GONE)
        self._release(reusable=False)
        self.finish()

    # --- Timing out a silent upstream.

    def _watch(self) -> None:
        """From the moment the request is sent, the upstream may stay silent for at most
        upstream.idle_timeout; a stream may go on as long as it keeps talking. The
        listener's watchdog looks at every watched relay now and then (one timer for
        all of them, not one per request)."""
        if not self.finished:
            self._last_read = self.client.loop.time()
            self.client.listener.watchdog.watch(self)

    def silent_since(self) -> float | None:
        """When the upstream last sent a byte; None while the client holds it back."""
        return None if self._timer_paused else self._last_read

    def silent_too_long(self) -> None:
        idle_timeout = self.client.listener.idle_timeout
        if self.response_started:
            self._cut(Failure.SILENT_MID_BODY)
        else:
            self.fail(
                Failure.NO_RESPONSE,
                f"{self.client.listener.origin.url} sent no response within {idle_timeout:g} s",
            )

    def client_write_paused(self) -> None:
        """The client reads slower than the upstream sends: stop reading the upstream."""
        self._timer_paused = True
        if self.upstream is not None:
            self.upstream.pause_reading()

    def client_write_resumed(self) -> None:
        self._timer_paused = False
        self._last_read = self.client.loop.time()
        if self.upstream is not None:
            self.upstream.resume_reading()

    # --- The end.

    def _upgraded(self, rest: bytes) -> None:
        """The upstream switched to WebSocket: from here on, bytes pass both ways."""
        from proxy.tunnel import Tunnel  # noqa: PLC0415 - only sessions need it

        upstream = self.upstream
        exchange = self.exchange
        assert upstream is not None
        self._cancel_timer()
        self.finished = True
        self.upstream = None
        Tunnel.open(
            self.client,
            upstream,
            exchange,
            reason=self._reason,
            headers=self._response_headers,
            early=rest,
        )

    def _release(self, *, reusable: bool) -> None:
        self._cancel_timer()
        upstream, self.upstream = self.upstream, None
        if upstream is None:
            self.client.listener.pool.forget(self)
            return
        upstream.user = None
        if reusable:
            upstream.pool.release(upstream)
        else:
            upstream.abort() if not self.response_done else upstream.close()

    def _cancel_timer(self) -> None:
        self.client.listener.watchdog.unwatch(self)

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._pending.clear()
        exchange = self.exchange
        listener = self.client.listener
        exchange.diagnosis = diagnose(
            exchange, upstream_host=listener.origin.host, rules=listener.rules
        )
        exchange.end()
        self.client.relay_done(self)
