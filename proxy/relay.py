"""The relay: one request forwarded and its answer relayed, between the request writer
(request_writer.py) and the response reader (response_reader.py), and the one decision
of how a failure ends: `fail` answers with the proxy's JSON error while no answer has
reached the client, and cuts the connection once one has."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from proxy.diagnose import diagnose
from proxy.exchange import Bodies, Exchange, WebSocketStats
from proxy.failures import Failure, error_response
from proxy.forward import Head, outgoing, refusal, request_id
from proxy.framing import FramingError
from proxy.request_writer import S_SENT, RequestWriter
from proxy.response_reader import A_DONE, A_UPGRADED, BadResponseError, ResponseReader

if TYPE_CHECKING:
    from proxy.connector import ConnectError
    from proxy.route import Route
    from proxy.sides import ClientSide
    from proxy.upstream import UpstreamConnection

# Request bytes held while no upstream connection is ready yet, before the client pauses.
PENDING_LIMIT = 256 * 1024


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
        "upstream",
        "writer",
    )

    def __init__(self, route: Route, client: ClientSide, head: Head) -> None:
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
        self.writer = RequestWriter(
            route.limits.max_body_size,
            self.exchange.bodies.request if self.exchange.bodies is not None else None,
        )
        self.reader: ResponseReader | None = None
        self.upstream: UpstreamConnection | None = None
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
        exchange.upstream_target, exchange.rule, up = outgoing(
            head, route.rules, host=route.origin.authority
        )
        if self._over or (head.length or 0) > route.limits.max_body_size:
            self._too_large()
            return
        self.writer.begin(up)
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
        # Nothing past the limit is ever sent: the answer is a 413 (see flush_request). The
        # count stops at the limit, wherever the read that crossed it ended.
        self._over = not self.writer.add(raw, pieces)
        self.exchange.request_bytes = min(self.writer.size, self.route.limits.max_body_size)

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
        self.reader = ResponseReader(self.head, self.client, exchange, route, self._closing)
        self._reused = bool(upstream.served)
        exchange.took(upstream.served, upstream.warm, upstream.opened, waited=not self._in_acquire)
        upstream.served += 1
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
        try:
            switched = reader.read(data)
        except (BadResponseError, FramingError) as exc:
            self._upstream_broken(exc)
            return
        if reader.closes:
            self.keep_alive = False
        if reader.phase is A_DONE:
            self._complete()
        elif reader.phase is A_UPGRADED:
            self._upgraded(reader, data[switched:])

    def upstream_lost(self, exc: BaseException | None) -> None:
        if self.finished:
            return
        reader = self.reader
        if reader is not None and exc is None and reader.upstream_closed():
            self._complete()  # the body ends with the connection (it came unframed)
        elif reader is not None and reader.answered:
            self.fail(Failure.CUT_MID_BODY, "", detail=str(exc) if exc else None)
        elif self._may_retry():
            self._retry()
        else:
            origin = self.route.origin.url
            self.fail(Failure.DISCONNECTED, f"{origin} closed the connection before answering")

    def upstream_write_paused(self) -> None:
        self.client.pause_reading()

    def upstream_write_resumed(self) -> None:
        self._last_heard = self.route.loop.time()
        self.client.resume_reading()

    # --- The end.

    def _complete(self) -> None:
        """The answer is through: give the connection back if it can serve another."""
        reader = self.reader
        assert reader is not None
        reusable = (
            reader.reusable
            and not reader.junk
            and self.writer.phase is S_SENT
            and self.upstream is not None
            and not self.upstream.eof
        )
        if not self.body_done:
            # The upstream answered before the client finished sending: the rest of the
            # body cannot be told from a next request, so this connection ends here.
            self.keep_alive = False
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
        exchange, reader = self.exchange, self.reader
        exchange.fail(failure, detail=detail, limit=limit)
        if reader is not None and reader.answered:
            self.keep_alive = False
            self._release(reusable=False)
            self.client.cut(reset=reader.close_delimited)
            self.finish()
            return
        status = exchange.status = failure.status or 502
        self.keep_alive = (
            self.keep_alive
            and self.body_done
            and failure.outcome != "rejected"
            and not self.head.websocket
            and self.client.may_keep_alive()
        )
        self.writer.drop()
        close, head_only = not self.keep_alive, self.head.method == b"HEAD"
        self.client.write(
            error_response(status, failure.code, message, close=close, head_only=head_only)
        )
        self._release(reusable=False)
        self.finish()

    def _too_large(self) -> None:
        self.keep_alive = False
        size = self.route.limits.max_body_size
        message = f"the request body is larger than limits.max_body_size ({size} bytes)"
        self.fail(Failure.TOO_LARGE, message, limit="limits.max_body_size")

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
        """A kept-alive connection closed before any byte of an answer: one more try on a
        fresh one, for a request safe to send again (RFC 9110 §9.2.2) and held whole."""
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
        """upstream.idle_timeout from the upstream's last sign of life; not timed while
        the client holds it back."""
        if self._client_paused or self.upstream is None:
            return None
        return self._last_heard + self.route.limits.idle_timeout

    def expired(self) -> None:
        self.route.deadlines.unwatch(self)
        reader = self.reader
        said = f"sent no response within {self.route.limits.idle_timeout:g} s"
        answered = reader is not None and reader.answered
        failure = Failure.SILENT_MID_BODY if answered else Failure.NO_RESPONSE
        self.fail(failure, f"{self.route.origin.url} {said}")

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

        upstream, self.upstream = self.upstream, None
        assert upstream is not None
        self.route.deadlines.unwatch(self)
        self.finished = True
        head = (reader.reason, reader.headers)
        Tunnel.open(self.route, self.client, upstream, self.exchange, head=head, early=rest)

    def _release(self, *, reusable: bool) -> None:
        self.route.deadlines.unwatch(self)
        upstream, self.upstream = self.upstream, None
        if upstream is None:
            self.route.pool.forget(self)
            return
        upstream.user = None
        if reusable:
            self.route.pool.release(upstream)
        elif self.writer.phase is S_SENT and self.reader and self.reader.phase is A_DONE:
            upstream.close()
        else:
            # The upstream may not be reading (an early answer): nothing waits for it.
            upstream.abort()

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.writer.drop()
        if self.reader is not None:
            self.reader.done()
        exchange, route = self.exchange, self.route
        exchange.diagnosis = diagnose(exchange, upstream_host=route.origin.host, rules=route.rules)
        exchange.end()
        self.client.request_done(self)
