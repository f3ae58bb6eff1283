"""The relay: one request forwarded, its answer relayed, and the one decision of how it
ends.

The request writer (request_writer.py) takes the request up as the client framed it; the
response reader (response_reader.py) reads the upstream's answer and gives the client
its bytes. Each side's bytes from one read go out in one write. A failure goes through
`fail`, which answers with the proxy's JSON error while no answer has reached the client
and cuts the connection once one has. A tap or observer that fails is logged once and
switched off for the exchange; the bytes go on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import structlog

from proxy.diagnose import diagnose
from proxy.exchange import Bodies, Body, Exchange, WebSocketStats
from proxy.failures import Failure, error_response
from proxy.forward import Head, refusal, request_id, upstream_head
from proxy.framing import FramingError
from proxy.request_writer import RequestWriter, Sending
from proxy.response_reader import Answer, BadResponseError, Delivery, ResponseReader
from proxy.rules import rewrite
from proxy.sse import SSETap

if TYPE_CHECKING:
    from proxy.connector import ConnectError
    from proxy.route import Route
    from proxy.tunnel import Tunnel
    from proxy.upstream import UpstreamConnection

# Request bytes held while no upstream connection is ready yet, before the client pauses.
PENDING_LIMIT = 256 * 1024


class Client(Protocol):
    """What a request needs of its client connection."""

    peer: str | None

    def write(self, data: bytes) -> None: ...

    def writelines(self, parts: list[bytes]) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def may_keep_alive(self) -> bool: ...

    def cut(self, *, reset: bool = False) -> None: ...

    def close(self, *, linger: bool = False) -> None: ...

    def keep_alive_probes(self) -> None: ...

    def request_done(self, request: Any) -> None: ...

    def become(self, tunnel: Tunnel) -> None: ...


class Relay:
    """One request on its way up and its answer on its way back."""

    forwarded = True

    __slots__ = (
        "_client_paused",
        "_in_acquire",
        "_last_heard",
        "_over",
        "_retried",
        "_reused",
        "body_done",
        "client",
        "exchange",
        "finished",
        "head",
        "keep_alive",
        "reader",
        "route",
        "started",
        "tap",
        "upstream",
        "writer",
    )

    def __init__(self, route: Route, client: Client, head: Head) -> None:
        self.route = route
        self.client = client
        self.head = head
        self.keep_alive = head.keep_alive
        self.exchange = Exchange(
            request_id=request_id(head) or route.new_request_id(),
            method=head.method.decode("latin-1"),
            target=head.target.decode("latin-1"),
            client=client.peer,
            raw_request_headers=head.headers,
            observers=route.observers,
        )
        if route.record_bodies:
            self.exchange.bodies = Bodies.capped(route.record_bodies)
        self.writer = RequestWriter()
        self.reader: ResponseReader | None = None
        self.upstream: UpstreamConnection | None = None
        self.tap: SSETap | None = None
        self.started = False
        self.finished = False
        self.body_done = False
        self._over = False
        self._in_acquire = False
        self._retried = False
        self._reused = False
        self._client_paused = False
        self._last_heard = 0.0

    # --- The request.

    def start(self) -> None:
        """The request is next in line on its connection: refuse it, or send it upstream."""
        self.started = True
        route, head, exchange = self.route, self.head, self.exchange
        if head.websocket:
            exchange.websocket = WebSocketStats()
        exchange.start()
        refused = refusal(head)
        if refused is not None:
            self.fail(*refused)
            return
        rewritten = rewrite(route.rules, exchange.target)
        exchange.upstream_target = rewritten.target
        exchange.rule = rewritten.rule.name if rewritten.rule else None
        if self._over or (head.length or 0) > route.limits.max_body_size:
            self._too_large()
            return
        target = (
            head.target
            if rewritten.rule is None
            else rewritten.target.encode("latin-1", "surrogateescape")
        )
        self.writer.begin(upstream_head(head, target, host=route.origin.authority))
        if head.continue_expected:
            self.client.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # Whether the pool answers at once (an idle connection) or later: attach tells.
        self._in_acquire = True
        route.pool.acquire(self)
        self._in_acquire = False

    def decline(self, failure: Failure, message: str) -> None:
        """Refused before it starts: the proxy is shutting down."""
        self.started = True
        self.exchange.start()
        self.fail(failure, message)

    def body(self, raw: bytes, pieces: list[bytes]) -> None:
        """Body bytes as the client framed them (`raw`), and their content (`pieces`)."""
        if self.finished or self._over:
            return
        exchange = self.exchange
        exchange.request_bytes += sum(map(len, pieces))
        if exchange.request_bytes > self.route.limits.max_body_size:
            # Nothing past the limit is ever sent: the answer is a 413 (see flush_request).
            self._over = True
            self.writer.drop()
            return
        self.writer.add(raw)
        bodies = exchange.bodies
        if bodies is not None:
            for piece in pieces:
                bodies.request.add(piece)

    def body_complete(self) -> None:
        self.body_done = True
        self.writer.finish()

    def flush_request(self) -> None:
        """Send what the client's last read brought; without a connection yet, hold it
        (and stop reading from the client once that is too much)."""
        if self._over:
            self._too_large()
            return
        upstream = self.upstream
        if upstream is None:
            if not self.finished and self.writer.held > PENDING_LIMIT:
                self.client.pause_reading()
            return
        self._last_heard = self.route.loop.time()
        self.writer.send(upstream)

    # --- The pool's side.

    def attach(self, upstream: UpstreamConnection) -> None:
        route = self.route
        if self.finished:
            route.pool.release(upstream)
            return
        exchange = self.exchange
        self.upstream = upstream
        upstream.user = self
        limits = route.limits
        self.reader = ResponseReader(
            self.head,
            head_limit=limits.max_head_size,
            line_limit=limits.max_header_size,
            closing=self._closing,
        )
        # How it came: reused (it served before), warm (opened ahead of this request) or
        # new (opened for it); what opening it took, on its first use; and how long this
        # request waited for it (nothing, when one was ready).
        self._reused = bool(upstream.served)
        if upstream.served:
            exchange.connection = "reused"
        else:
            opened = upstream.opened
            exchange.connection = "warm" if upstream.warm else "new"
            exchange.opened_ms, exchange.tls_ms = opened.connect_ms, opened.tls_ms
            if opened.tls_ms is not None:
                exchange.tls_resumed = opened.resumed
        upstream.served += 1
        if exchange.connect_ms is None:
            exchange.connect_ms = 0.0 if self._in_acquire else exchange.elapsed_ms()
        route.deadlines.watch(self)
        self.client.resume_reading()
        self.flush_request()

    def connect_failed(self, error: ConnectError) -> None:
        self.fail(error.failure, error.message, detail=error.detail)

    def _closing(self) -> bool:
        """Whether the client connection ends with this answer (asked when its head goes)."""
        close = not self.keep_alive or not self.body_done or not self.client.may_keep_alive()
        if close:
            self.keep_alive = False
        return close

    # --- The upstream's side.

    def upstream_data(self, data: bytes) -> None:
        self._last_heard = self.route.loop.time()
        reader = self.reader
        assert reader is not None
        answered = reader.answered
        out: list[bytes] = []
        pieces: list[bytes] = []
        failed: Exception | None = None
        switched = -1
        try:
            switched = reader.feed(data, out, pieces)
        except (BadResponseError, FramingError) as exc:
            failed = exc
        if not answered and (reader.answered or reader.phase is Answer.UPGRADED):
            self._answered(reader)
        if out and not (failed and not reader.answered):
            self._write(out)
        if pieces:
            self._observe(pieces)
        if failed is not None:
            self._upstream_broken(failed)
        elif reader.phase is Answer.DONE:
            self._complete()
        elif reader.phase is Answer.UPGRADED:
            self._upgraded(reader, data[switched:])

    def upstream_lost(self, exc: BaseException | None) -> None:
        if self.finished:
            return
        reader = self.reader
        out: list[bytes] = []
        if reader is not None and exc is None and reader.upstream_closed(out):
            # The body ends with the connection (the upstream sent no framing).
            self._write(out)
            self._complete()
            return
        if reader is not None and reader.answered:
            self.fail(Failure.CUT_MID_BODY, "")
            return
        if self._may_retry():
            self._retry()
            return
        self.fail(
            Failure.DISCONNECTED,
            f"{self.route.origin.url} closed the connection before answering",
        )

    def upstream_write_paused(self) -> None:
        self.client.pause_reading()

    def upstream_write_resumed(self) -> None:
        self._last_heard = self.route.loop.time()
        self.client.resume_reading()

    def _answered(self, reader: ResponseReader) -> None:
        if reader.closes:
            self.keep_alive = False
        exchange = self.exchange
        exchange.headers_ms = exchange.elapsed_ms()
        exchange.respond(reader.status, reader.reason.decode("latin-1"), reader.headers)
        if reader.event_stream:
            exchange.sse = self._new_tap().summary
            if exchange.bodies is not None and not self.route.record_streams:
                exchange.bodies.response = Body(0)  # counted, not kept

    def _write(self, out: list[bytes]) -> None:
        if len(out) == 1:
            self.client.write(out[0])
        else:
            self.client.writelines(out)

    def _observe(self, pieces: list[bytes]) -> None:
        """After the write: the tap never delays the bytes it reads, and one that fails is
        switched off for this exchange, the bytes going on."""
        exchange = self.exchange
        if exchange.first_byte_ms is None:
            exchange.first_byte_ms = exchange.elapsed_ms()
        exchange.response_bytes += sum(map(len, pieces))
        tap, bodies = self.tap, exchange.bodies
        try:
            for piece in pieces:
                if tap is not None:
                    tap.feed(piece)
                if bodies is not None:
                    bodies.response.add(piece)
        except Exception as exc:  # noqa: BLE001 - an observer's fault must not cut the stream
            self.tap = None
            exchange.observer_failed("the event stream tap", exc)
        if tap is None:
            exchange.change()  # a plain body: its byte count moves

    def _new_tap(self) -> SSETap:
        exchange = self.exchange
        watcher = exchange.watcher

        def changed(_kind: str, _summary: object) -> None:
            exchange.change()

        if watcher is None:
            self.tap = SSETap(changed)
        else:
            self.tap = SSETap(changed, keep=watcher.keep, on_data=watcher.event)
        return self.tap

    # --- The end.

    def _complete(self) -> None:
        """The answer is through: give the connection back if it can serve another."""
        reader = self.reader
        assert reader is not None
        reusable = (
            reader.reusable
            and not reader.junk
            and self.writer.phase is Sending.SENT
            and self.upstream is not None
            and not self.upstream.eof
        )
        if not self.body_done:
            # The upstream answered before the client finished sending: the rest of the
            # body cannot be told from a next request, so this connection ends here.
            self.keep_alive = False
        if self.tap is not None:
            self.tap.close()
        self._release(reusable=reusable)
        self.finish()

    def fail(
        self,
        failure: Failure,
        message: str,
        *,
        detail: str | None = None,
        limit: str | None = None,
    ) -> None:
        """The one decision of how a failed exchange ends: the proxy's own JSON error while
        no answer has reached the client, a cut once one has."""
        if self.finished:
            return
        exchange = self.exchange
        reader = self.reader
        if reader is not None and reader.answered:
            exchange.fail(failure, detail=detail)
            self.keep_alive = False
            self._release(reusable=False)
            self.client.cut(reset=reader.delivery in (Delivery.UNTIL_CLOSE, Delivery.UNCHUNKED))
            self.finish()
            return
        exchange.fail(failure, detail=detail, limit=limit)
        status = failure.status
        assert status is not None
        exchange.status = status
        close = (
            not self.keep_alive
            or not self.body_done
            or failure.outcome == "rejected"
            or self.head.websocket
            or not self.client.may_keep_alive()
        )
        if close:
            self.keep_alive = False
        self.writer.drop()
        self.client.write(error_response(status, failure.code, message, close=close))
        self._release(reusable=False)
        self.finish()

    def _too_large(self) -> None:
        limit = self.route.limits.max_body_size
        self.keep_alive = False
        self.fail(
            Failure.TOO_LARGE,
            f"the request body is larger than limits.max_body_size ({limit} bytes)",
            limit="limits.max_body_size",
        )

    def _upstream_broken(self, exc: Exception) -> None:
        reason = str(exc) if not isinstance(exc, FramingError) else f"its response {exc}"
        if isinstance(exc, BadResponseError) and exc.handshake:
            self.fail(
                Failure.BAD_HANDSHAKE, f"the upstream's WebSocket handshake is invalid: {reason}"
            )
        elif self.reader is not None and self.reader.answered:
            self.fail(Failure.CUT_MID_BODY, "", detail=reason)
        else:
            self.fail(
                Failure.BAD_RESPONSE,
                f"{self.route.origin.url} sent a malformed response: {reason}",
                detail=reason,
            )

    def _may_retry(self) -> bool:
        """A kept-alive connection that turned out closed before any byte of an answer:
        one more try on a fresh connection, for a request it is safe to send again
        (RFC 9110 §9.2.2) and that is still held whole."""
        reader = self.reader
        return (
            self._reused
            and not self._retried
            and self.head.idempotent
            and self.writer.replayable
            and (reader is None or not reader.started)
        )

    def _retry(self) -> None:
        self._retried = True
        self.exchange.retried = True
        self.route.deadlines.unwatch(self)
        self.upstream = None
        self.reader = None
        self.writer.rewind()
        structlog.get_logger("proxy.upstream").debug(
            "a kept-alive upstream connection was closed before answering: trying a fresh one",
            request_id=self.exchange.request_id,
        )
        self.route.pool.acquire(self, fresh=True)

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

    # --- Timing out a silent upstream (the route's deadlines ask).

    def deadline(self) -> float | None:
        """The upstream may stay silent for at most upstream.idle_timeout from the moment
        it has the request; a stream may go on as long as it keeps talking. Not timed
        while the client holds it back."""
        if self._client_paused or self.upstream is None:
            return None
        return self._last_heard + self.route.limits.idle_timeout

    def expired(self) -> None:
        self.route.deadlines.unwatch(self)
        reader = self.reader
        if reader is not None and reader.answered:
            self.fail(Failure.SILENT_MID_BODY, "")
        else:
            idle_timeout = self.route.limits.idle_timeout
            self.fail(
                Failure.NO_RESPONSE,
                f"{self.route.origin.url} sent no response within {idle_timeout:g} s",
            )

    def client_write_paused(self) -> None:
        """The client reads slower than the upstream sends: stop reading the upstream."""
        self._client_paused = True
        if self.upstream is not None:
            self.upstream.pause_reading()

    def client_write_resumed(self) -> None:
        self._client_paused = False
        self._last_heard = self.route.loop.time()
        if self.upstream is not None:
            self.upstream.resume_reading()

    def _upgraded(self, reader: ResponseReader, rest: bytes) -> None:
        """The upstream switched to WebSocket: from here on, bytes pass both ways."""
        from proxy.tunnel import Tunnel  # noqa: PLC0415 - only sessions need it

        upstream = self.upstream
        assert upstream is not None
        self.route.deadlines.unwatch(self)
        self.finished = True
        self.upstream = None
        Tunnel.open(
            self.route,
            self.client,
            upstream,
            self.exchange,
            reason=reader.reason,
            headers=reader.headers,
            early=rest,
        )

    def _release(self, *, reusable: bool) -> None:
        self.route.deadlines.unwatch(self)
        upstream, self.upstream = self.upstream, None
        if upstream is None:
            self.route.pool.forget(self)
            return
        upstream.user = None
        if reusable:
            self.route.pool.release(upstream)
        elif self.writer.phase is Sending.SENT and self.reader and self.reader.phase is Answer.DONE:
            upstream.close()
        else:
            # The upstream may not be reading (an early answer): nothing waits for it.
            upstream.abort()

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.writer.drop()
        exchange = self.exchange
        route = self.route
        exchange.diagnosis = diagnose(exchange, upstream_host=route.origin.host, rules=route.rules)
        exchange.end()
        self.client.request_done(self)
