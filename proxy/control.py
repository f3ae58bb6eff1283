"""The control plane: the proxy's own endpoints under `/_proxy`, served by aiohttp.web on
the same port as the forwarding path.

A connection's requests are parsed once, by the connection itself; a request for
`/_proxy…` is handed whole to aiohttp's low-level server (`web.Server`, reached through
`AppRunner.server`, is a protocol factory): a fresh aiohttp protocol per request, given
the request as bytes and a transport of its own that writes to the client's. When that
response is through (read off what aiohttp writes), the aiohttp protocol is let go and
the connection goes on with its next request, whichever side that belongs to. So a
kept-alive connection may mix both freely, in order.

aiohttp is imported only when the first such request arrives: forwarding never needs
it, and importing it is most of what a start-up would otherwise cost.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from httptools import HttpParserError, HttpResponseParser

from proxy.failures import Failure, error_response
from proxy.flow import APP
from proxy.forward import Head
from proxy.route import CONTROL_BODY_LIMIT

if TYPE_CHECKING:
    from aiohttp import web

    from proxy.sides import ClientSide


class Control:
    """Builds the aiohttp application on first use, and serves control requests with it."""

    def __init__(
        self,
        create_app: Callable[[], web.Application],
        *,
        keepalive_timeout: float,
        max_header_size: int,
    ) -> None:
        self._create_app = create_app
        self._keepalive_timeout = keepalive_timeout
        self._max_header_size = max_header_size
        self._runner: web.AppRunner | None = None
        self._server: web.Server | None = None
        self._starting: asyncio.Task[None] | None = None
        self._waiting: deque[ControlRequest] = deque()

    def serve(self, request: ControlRequest) -> None:
        server = self._server
        if server is not None:
            request.begin(server())
            return
        self._waiting.append(request)
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        from aiohttp import web  # noqa: PLC0415 - see the module's docstring

        runner = web.AppRunner(
            self._create_app(),
            handle_signals=False,
            # Each request ends its line in the proxy's own log; no access log.
            access_log=None,
            # A page that leaves cancels its event stream's handler at once.
            handler_cancellation=True,
            keepalive_timeout=self._keepalive_timeout,
            # The client's socket is the connection's; its options are not aiohttp's to set.
            tcp_keepalive=False,
            # The connection read the head within limits.max_header_size already: aiohttp
            # must not refuse it with a plain-text 400 of its own (which repeats the
            # target, query credentials and all).
            max_line_size=self._max_header_size + 64,
            max_field_size=self._max_header_size + 64,
        )
        await runner.setup()
        self._runner = runner
        self._server = runner.server
        waiting, self._waiting = self._waiting, deque()
        for request in waiting:
            if not request.finished:
                self.serve(request)

    async def close(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()


class ControlRequest:
    """One `/_proxy` request on a client connection, while aiohttp answers it. The
    control plane takes no uploads: it gets a request once its body is whole, so the
    answer never depends on how much of a body had come; a body past CONTROL_BODY_LIMIT
    is a 413, and the connection ends."""

    __slots__ = (
        "_body",
        "_complete",
        "_control",
        "_handler",
        "_size",
        "_window",
        "client",
        "finished",
        "head",
        "keep_alive",
        "started",
    )

    forwarded = False

    def __init__(self, client: ClientSide, head: Head, control: Control) -> None:
        self.client = client
        self.head = head
        self._control = control
        self.keep_alive = head.keep_alive
        self.started = False
        self.finished = False
        self._handler: asyncio.Protocol | None = None
        self._window: _Window | None = None
        self._size = 0
        self._complete = False
        # The request as aiohttp will read it: the head, then the body (at most the limit).
        self._body: list[bytes] = [_serialise(head)]

    def start(self) -> None:
        self.started = True
        if (self.head.length or 0) > CONTROL_BODY_LIMIT or self._size > CONTROL_BODY_LIMIT:
            self._too_large()
        elif self._complete:
            self._control.serve(self)

    def begin(self, handler: asyncio.Protocol) -> None:
        if self.finished:
            return
        self._handler = handler
        self._window = _Window(self)
        handler.connection_made(self._window)
        self.flush_request()

    def body(self, raw: bytes, pieces: list[bytes]) -> None:
        self._size += sum(map(len, pieces))
        if self._size <= CONTROL_BODY_LIMIT:
            self._body.append(raw)
            return
        self._body.clear()
        if self.started:
            self._too_large()

    def body_complete(self) -> None:
        """The body is whole (its framing, chunked or not, travels in the raw bytes)."""
        self._complete = True
        if self.started and not self.finished and self._size <= CONTROL_BODY_LIMIT:
            self._control.serve(self)

    def flush_request(self) -> None:
        handler = self._handler
        if handler is not None and self._body:
            data, self._body = b"".join(self._body), []
            handler.data_received(data)

    def _too_large(self) -> None:
        self.fail(
            Failure.TOO_LARGE,
            f"the proxy's own endpoints take no uploads: a body of at most "
            f"{CONTROL_BODY_LIMIT} bytes",
        )

    def response_complete(self) -> None:
        """The answer is through: let aiohttp's protocol go, and the connection go on."""
        if self.finished:
            return
        self.finished = True
        self._let_go(None)
        self.client.request_done(self)

    def app_closed(self) -> None:
        """aiohttp closed the connection (an error, or `Connection: close`)."""
        if self.finished:
            return
        self.keep_alive = False
        self.finished = True
        self._let_go(None)
        self.client.request_done(self)

    def client_lost(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._let_go(ConnectionResetError("the client closed the connection"))

    def cut(self) -> None:
        """The proxy is stopping: aiohttp's own shutdown ends this request."""

    def fail(self, failure: Failure, message: str) -> None:
        """The request cannot be served (its body broke, is too large, or the proxy is
        stopping): the proxy's error if aiohttp wrote nothing yet, and the connection ends."""
        if self.finished:
            return
        self.keep_alive = False
        self.finished = True
        self._body.clear()
        self._let_go(ConnectionResetError(message))
        status = failure.status
        assert status is not None
        if self._window is None or not self._window.wrote:
            head_only = self.head.method == b"HEAD"
            self.client.write(
                error_response(status, failure.code, message, close=True, head_only=head_only)
            )
        self.client.request_done(self)

    def decline(self, failure: Failure, message: str) -> None:
        self.started = True
        self.fail(failure, message)

    def _let_go(self, exc: Exception | None) -> None:
        handler, self._handler = self._handler, None
        if self._window is not None:
            self._window.detached = True
        if handler is not None:
            handler.connection_lost(exc)

    def client_write_paused(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def client_write_resumed(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()


def _serialise(head: Head) -> bytes:
    parts = [head.method, b" ", head.target, b" HTTP/", head.version.encode(), b"\r\n"]
    for name, value in head.headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class _Window(asyncio.Transport):
    """The transport aiohttp's protocol sees for one request: writes go to the client's
    connection, and are read as they pass to tell when the answer is complete."""

    def __init__(self, request: ControlRequest) -> None:
        super().__init__()
        self._request = request
        self._client: ClientSide = request.client
        self._parser = HttpResponseParser(self)
        self._status = 0
        self._head_only = request.head.method == b"HEAD"
        self.detached = False
        self.wrote = False

    # What aiohttp calls.

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.detached or self._client.closed:
            return
        self.wrote = True
        self._client.write(bytes(data))
        try:
            self._parser.feed_data(data)
        except HttpParserError:
            # Not HTTP after all (cannot happen with aiohttp's own writer): stop here.
            self._done(closed=True)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        if not self.detached:
            self._done(closed=True)

    def abort(self) -> None:
        """A page that stopped reading: its connection is dropped, pending writes and all."""
        if not self.detached:
            self.detached = True
            self._client.abort()

    def is_closing(self) -> bool:
        return self.detached or self._client.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._client.extra_info(name, default)

    def pause_reading(self) -> None:
        self._client.pause_reading(APP)

    def resume_reading(self) -> None:
        self._client.resume_reading(APP)

    # The response parser's callbacks.

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        if self._head_only and self._status >= 200:
            self._done(closed=False)

    def on_message_complete(self) -> None:
        if self._status >= 200:
            self._done(closed=False)

    def _done(self, *, closed: bool) -> None:
        if self.detached:
            return
        self.detached = True
        request = self._request
        # Called from inside aiohttp's write: finish once it has returned.
        loop = asyncio.get_running_loop()
        loop.call_soon(request.app_closed if closed else request.response_complete)
