"""Forwarding: one client request to the fixed upstream, its response relayed back.

What no rule rewrites passes unchanged: method, raw target, header names, values, order
and repeats (minus hop-by-hop), body bytes, status, reason, response headers and bytes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from proxy.errors import error_response
from proxy.exchange import Bodies, Exchange, Outcome
from proxy.handshake import PER_HOP
from proxy.headers import HeaderNotUTF8Error, Pairs, decode, end_to_end, with_host
from proxy.relay import relay
from proxy.rules import rewrite
from proxy.track import begin, finish
from proxy.upstream import (
    CURRENT,
    SESSION,
    UPSTREAM,
    Upstream,
    framing,
    send_exactly,
    upstream_failed,
)
from proxy.websocket import is_upgrade, relay_websocket


async def expect_continue(request: web.Request) -> None:
    """Answer `Expect: 100-continue` at this hop (Expect is never forwarded).

    A body announced larger than the limit gets no 100: forward() answers 413 before the
    client sends it. Other expectations are ignored, as the header is not forwarded.
    """
    too_large = (request.content_length or 0) > request.app[UPSTREAM].max_body_size
    expect = request.headers.get("Expect", "").lower()
    if expect == "100-continue" and request.version >= (1, 1) and not too_large:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # The interim response is not part of the response proper.
        request.writer.output_size = 0


async def forward(request: web.Request) -> web.StreamResponse:
    exchange = begin(request)
    CURRENT.set(exchange)
    with structlog.contextvars.bound_contextvars(request_id=exchange.request_id):
        try:
            response = await _forward(request, exchange)
            exchange.status = response.status
        except asyncio.CancelledError:
            if exchange.outcome is Outcome.COMPLETED and not exchange.settled:
                exchange.fail(Outcome.CLIENT_DISCONNECTED, "client closed the connection")
            raise
        finally:
            finish(request, exchange)
    return response


class _Upload:
    """The request body streamed upstream as it arrives, counted against the limit."""

    def __init__(self, request: web.Request, exchange: Exchange, limit: int) -> None:
        self.request = request
        self.exchange = exchange
        self.limit = limit
        self.too_large = False
        self.client_failed = False

    def body(self, *, sized: bool) -> bytes | AsyncIterator[bytes] | None:
        """What aiohttp sends: nothing, the body when it all came with the head (a small
        POST: already in memory, no need to stream it), else the stream as it arrives."""
        request = self.request
        if not request.body_exists:
            return None
        content = request.content
        if sized and content.is_eof():
            data = content.read_nowait()
            self.exchange.request_bytes = len(data)
            if len(data) > self.limit:
                self.too_large = True
            elif self.exchange.bodies is not None:
                self.exchange.bodies.request.add(data)
            return data
        return self.chunks()

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self.request.content
        bodies = self.exchange.bodies
        while True:
            try:
                chunk = await content.readany()
            except (aiohttp.ClientError, ConnectionError, HttpProcessingError):
                self.client_failed = True
                raise
            if not chunk:
                return
            self.exchange.request_bytes += len(chunk)
            if self.exchange.request_bytes > self.limit:
                self.too_large = True
                raise _BodyTooLargeError
            if bodies is not None:
                bodies.request.add(chunk)
            yield chunk


class _BodyTooLargeError(Exception):
    pass


async def _forward(request: web.Request, exchange: Exchange) -> web.StreamResponse:
    upstream = request.app[UPSTREAM]
    length = request.content_length
    if length is not None and length > upstream.max_body_size:
        return _too_large(exchange, upstream.max_body_size)

    rewritten = rewrite(upstream.rules, exchange.target)
    exchange.upstream_target = rewritten.target
    exchange.rule = rewritten.rule.name if rewritten.rule else None
    websocket = is_upgrade(request)
    try:
        # A WebSocket upgrade keeps its per-hop handshake headers, renegotiated upstream.
        kept = PER_HOP if websocket else frozenset()
        pairs = with_host(
            end_to_end(decode(request.raw_headers), request=True, keep=kept), upstream.host
        )
    except HeaderNotUTF8Error as exc:
        return _reject(exchange, 400, "bad_request", f"{exc}: it cannot be forwarded unchanged")
    if websocket:
        return await relay_websocket(request, exchange, pairs, rewritten.target)
    if upstream.record_bodies:
        exchange.bodies = Bodies.capped(upstream.record_bodies)
    return await _send(request, exchange, upstream, pairs, rewritten.target)


async def _send(
    request: web.Request, exchange: Exchange, upstream: Upstream, pairs: Pairs, target: str
) -> web.StreamResponse:
    """The request upstream with its body streamed; the response relayed back."""
    upload = _Upload(request, exchange, upstream.max_body_size)
    # Only the framing header goes to aiohttp, so it frames the body as the client did;
    # send_exactly puts the client's full header list on the wire.
    sized = framing(pairs)
    body = upload.body(sized=bool(sized))
    if upload.too_large:
        return _too_large(exchange, upstream.max_body_size)
    # A pooled connection costs no connect; TimedConnector overwrites this for a new one.
    exchange.connect_ms = 0.0
    try:
        upstream_response = await request.app[SESSION].request(
            request.method,
            upstream.url(target),
            data=body,
            headers=sized,
            allow_redirects=False,
            middlewares=(send_exactly(pairs),),
            proxy=upstream.proxy,
        )
    except (TimeoutError, aiohttp.ClientError) as exc:
        if upload.too_large:
            return _too_large(exchange, upstream.max_body_size)
        if upload.client_failed:
            exchange.fail(Outcome.CLIENT_DISCONNECTED, "client stopped sending the body")
            return error_response(400, "incomplete_request", "the request body ended early")
        return upstream_failed(exchange, upstream, exc)
    exchange.headers_ms = round((time.perf_counter() - exchange.started) * 1000, 3)
    return await relay(request, exchange, upstream_response)


def _reject(
    exchange: Exchange, status: int, code: str, message: str, *, limit: str | None = None
) -> web.Response:
    exchange.fail(Outcome.REJECTED, code, limit=limit)
    return error_response(status, code, message)


def _too_large(exchange: Exchange, limit: int) -> web.Response:
    response = _reject(
        exchange,
        413,
        "request_too_large",
        f"the request body is larger than limits.max_body_size ({limit} bytes)",
        limit="limits.max_body_size",
    )
    # Close rather than read the rest of an oversized body to keep the connection.
    response.force_close()
    return response
