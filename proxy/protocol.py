"""The HTTP edge: aiohttp's per-connection handler, with the proxy's own limits and errors.

aiohttp answers a request it cannot parse (and a handler that fails) with plain text
and logs a traceback holding the raw request bytes. Here those become JSON in OpenAI's
error shape with a distinct status (431 for oversized headers, 414 for an oversized
target, 400 otherwise, 500 for a bug of ours) and one log line that names the cause
without repeating the request's bytes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from proxy.errors import error_response


def classify(exc: BaseException | None, status: int) -> tuple[int, str, str]:
    """(status, code, message) for a request aiohttp could not take; never echoes bytes."""
    if isinstance(exc, LineTooLong):
        if "reading: bytearray(b'/" in exc.message or "reading: b'/" in exc.message:
            return 414, "uri_too_long", "the request target is longer than limits.max_header_size"
        return (
            431,
            "request_header_fields_too_large",
            "a request header line is longer than limits.max_header_size",
        )
    if isinstance(exc, BadHttpMessage) and "Too many headers" in exc.message:
        return 431, "request_header_fields_too_large", "the request has too many header fields"
    if isinstance(exc, HttpProcessingError) and status < 500:
        reason = exc.message.split("\n", 1)[0].strip().rstrip(":") or "malformed request"
        return status, "bad_request", f"malformed HTTP request: {reason}"
    return 500, "internal_error", "the proxy failed while handling this request"


class ConnectionGate:
    """Per server: the connection limit, and a rate-limited log of connections refused."""

    def __init__(self, *, max_connections: int, header_timeout: float) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.refused = 0
        self._logged_at = -1.0

    def refuse(self, loop: asyncio.AbstractEventLoop) -> None:
        self.refused += 1
        now = loop.time()
        if now - self._logged_at >= 1.0:
            self._logged_at = now
            structlog.get_logger("proxy").warning(
                "connection refused: limits.max_connections is reached",
                max_connections=self.max_connections,
                refused_so_far=self.refused,
            )


class ProxyRequestHandler(RequestHandler):
    __slots__ = ("_between_requests", "_gate", "_header_timer")

    def __init__(self, manager: Server, *, gate: ConnectionGate, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gate = gate
        self._header_timer: asyncio.TimerHandle | None = None
        # True while no request is being read or handled: new bytes start a request head.
        self._between_requests = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        loop = asyncio.get_running_loop()
        manager = self._manager
        if manager is not None and len(manager.connections) > self._gate.max_connections:
            self._gate.refuse(loop)
            transport.close()
            return
        # Slowloris: a request's headers must be complete within the header timeout.
        self._header_timer = loop.call_later(self._gate.header_timeout, self._headers_too_slow)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._messages:
            self._between_requests = False
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
        elif self._between_requests and self._header_timer is None and data:
            # A later request on a kept-alive connection has begun: its head is timed too.
            self._header_timer = asyncio.get_running_loop().call_later(
                self._gate.header_timeout, self._headers_too_slow
            )

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._between_requests = not self._messages

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        structlog.get_logger("proxy").warning(
            "connection closed: request headers not complete within limits.header_timeout",
            header_timeout_s=self._gate.header_timeout,
        )
        if self.transport is not None:
            self.transport.close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of a response is out: nothing can follow it but a cut.
            raise ConnectionError("Response is sent already, cannot send another response")
        status, code, text = classify(exc, status)
        log = structlog.get_logger("proxy.request")
        if status == 500:
            log.error("internal error", client=request.remote, exc_info=exc)
        else:
            log.warning(
                "rejected",
                client=request.remote,
                status=status,
                outcome="rejected",
                cause=code,
                detail=text,
            )
        response = error_response(status, code, text)
        response.force_close()
        return response


class ProxyServer(Server):
    __slots__ = ()

    def __call__(self) -> RequestHandler:
        return ProxyRequestHandler(self, loop=self._loop, **self._kwargs)


class ProxyRunner(web.AppRunner):
    """An AppRunner whose connections use ProxyRequestHandler."""

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        # Same server, our handler class per connection (aiohttp offers no other hook).
        server.__class__ = ProxyServer
        return server
