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
from proxy.forward import Head

if TYPE_CHECKING:
    from aiohttp import web

    from proxy.connection import ClientConnection

# Why reading from the client is paused while aiohttp holds the request.
_APP_PAUSED = 4


class Control:
    """Builds the aiohttp application on first use, and serves control requests with it."""

    def __init__(self, create_app: Callable[[], web.Application], *, keepalive_timeout: float):
        self._create_app = create_app
        self._keepalive_timeout = keepalive_timeout
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
    """One `/_proxy` request on a client connection, while aiohttp answers it."""

    __slots__ = (
        "_body",
        "_handler",
        "_window",
        "client",
        "finished",
        "head",
        "keep_alive",
        "started",
    )

    def __init__(self, client: ClientConnection, head: Head) -> None:
        self.client = client
        self.head = head
        self.keep_alive = head.keep_alive
        self.started = False
        self.finished = False
        self._handler: asyncio.Protocol | None = None
        self._window: _Window | None = None
        # The request as aiohttp will read it: the head, then the body as it comes.
        self._body: list[bytes] = [_serialise(head)]

    def start(self) -> None:
        self.started = True
        self.client.listener.control.serve(self)

    def begin(self, handler: asyncio.Protocol) -> None:
        if self.finished:
            return
        self._handler = handler
        self._window = _Window(self)
        handler.connection_made(self._window)
        self.flush_request()

    def body(self, piece: bytes) -> None:
        if self.head.chunked:
            self._body += (b"%x\r\n" % len(piece), piece, b"\r\n")
        else:
            self._body.append(piece)

    def body_complete(self) -> None:
        if self.head.chunked:
            self._body.append(b"0\r\n\r\n")

    def flush_request(self) -> None:
        handler = self._handler
        if handler is not None and self._body:
            data, self._body = b"".join(self._body), []
            handler.data_received(data)

    def response_complete(self) -> None:
        """The answer is through: let aiohttp's protocol go, and the connection go on."""
        if self.finished:
            return
        self.finished = True
        self._let_go(None)
        self.client.relay_done(self)

    def app_closed(self) -> None:
        """aiohttp closed the connection (an error, or `Connection: close`)."""
        if self.finished:
            return
        self.keep_alive = False
        self.finished = True
        self._let_go(None)
        self.client.relay_done(self)

    def client_lost(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._let_go(ConnectionResetError("the client closed the connection"))

    def cut(self) -> None:
        """The proxy is stopping: aiohttp's own shutdown ends this request."""

    def fail(self, failure: Failure, message: str) -> None:
        """The request's body broke before aiohttp had all of it."""
        if self.finished:
            return
        self.keep_alive = False
        self.finished = True
        self._let_go(ConnectionResetError(message))
        status = failure.status
        assert status is not None
        if self._window is None or not self._window.wrote:
            self.client.transport.write(error_response(status, failure.code, message, close=True))
        self.client.relay_done(self)

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
        self._client = request.client
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
        self._client.transport.write(data)
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
            self._client.transport.abort()

    def is_closing(self) -> bool:
        return self.detached or self._client.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._client.transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._client.pause_reading(_APP_PAUSED)

    def resume_reading(self) -> None:
        self._client.resume_reading(_APP_PAUSED)

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
