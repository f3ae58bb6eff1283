"""Relaying a response: the upstream's status, headers and bytes, each chunk as it arrives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import error_response
from proxy.exchange import Exchange, Outcome
from proxy.headers import HeaderNotUTF8Error, decode, end_to_end
from proxy.sse import SSETap


class PassthroughResponse(web.StreamResponse):
    """A response whose headers are the upstream's: aiohttp adds no Date, Server or Content-Type."""

    async def _prepare_headers(self) -> None:
        present = {name for name in _SERVER_DEFAULTS if name in self.headers}
        await super()._prepare_headers()
        for name in _SERVER_DEFAULTS - present:
            self.headers.popall(name, None)


_SERVER_DEFAULTS = frozenset({"Date", "Server", "Content-Type"})


async def relay(
    request: web.Request, exchange: Exchange, upstream_response: aiohttp.ClientResponse
) -> web.StreamResponse:
    """Send the upstream's response on; the upstream connection is closed unless it finished."""
    completed = False
    try:
        try:
            headers = end_to_end(decode(upstream_response.raw_headers), request=False)
        except HeaderNotUTF8Error as exc:
            exchange.fail(Outcome.UPSTREAM_CUT, "upstream_bad_response")
            return error_response(
                502,
                "upstream_bad_response",
                f"the upstream's {exc}: it cannot be relayed unchanged",
            )
        exchange.status = upstream_response.status
        exchange.response_headers = headers
        content_type = upstream_response.headers.get("Content-Type", "")
        tap = (
            SSETap(lambda _kind, _summary: exchange.change())
            if content_type.startswith("text/event-stream")
            else None
        )
        exchange.sse = tap.summary if tap else None
        exchange.change()
        response = PassthroughResponse(
            status=upstream_response.status,
            reason=upstream_response.reason,
            headers=CIMultiDict(headers),
        )
        unwatch = _watch_connection(upstream_response)
        try:
            await response.prepare(request)
            completed = await _copy_body(
                request, exchange, upstream_response.content, response, tap
            )
        except ConnectionError:
            exchange.fail(Outcome.CLIENT_DISCONNECTED, "client closed the connection")
        finally:
            unwatch()
        return response
    finally:
        if completed:
            upstream_response.release()
        else:
            upstream_response.close()


def _watch_connection(upstream_response: aiohttp.ClientResponse) -> Callable[[], None]:
    """Make a body whose connection closes unfinished fail its reader.

    When an upstream's chunked framing breaks mid-body, aiohttp closes the connection but
    leaves the body reader waiting (until the idle timeout); this turns that into the cut
    it is. Returns the undo, so a kept-alive connection gathers no callbacks.
    """
    connection = upstream_response.connection
    protocol = connection.protocol if connection is not None else None
    closed = protocol.closed if protocol is not None else None
    if closed is None:
        return lambda: None  # already closed: its reader knows
    content = upstream_response.content

    def on_closed(future: asyncio.Future[None]) -> None:
        if not future.cancelled():
            future.exception()  # retrieved: it only says how the connection ended
        if not content.is_eof() and content.exception() is None:
            content.set_exception(
                aiohttp.ClientPayloadError("the upstream connection closed mid-body")
            )

    closed.add_done_callback(on_closed)

    def unwatch() -> None:
        closed.remove_done_callback(on_closed)

    return unwatch


async def _copy_body(
    request: web.Request,
    exchange: Exchange,
    content: aiohttp.StreamReader,
    response: web.StreamResponse,
    tap: SSETap | None,
) -> bool:
    """Copy body chunks as they arrive; False when the upstream cut or went silent."""
    bodies = exchange.bodies
    while True:
        try:
            chunk = await content.readany()
        except (TimeoutError, aiohttp.ClientError) as exc:
            if isinstance(exc, asyncio.TimeoutError):
                exchange.fail(Outcome.TIMEOUT, "upstream_idle_timeout")
            else:
                exchange.fail(Outcome.UPSTREAM_CUT, "upstream_cut_mid_body")
            cut(request)
            return False
        if not chunk:
            break
        if exchange.first_byte_ms is None:
            exchange.first_byte_ms = round((time.perf_counter() - exchange.started) * 1000, 3)
        exchange.response_bytes += len(chunk)
        await response.write(chunk)
        # The tap reads after the write: it never delays the bytes it looks at.
        if tap is not None:
            tap.feed(chunk)  # tells observers on each event
        else:
            exchange.change()  # a plain body: its byte count moves
        if bodies is not None:
            bodies.response.add(chunk)
    if tap is not None:
        tap.close()
    await response.write_eof()
    return True


def cut(request: web.Request) -> None:
    """Close the client connection so it sees an incomplete response, never a clean end."""
    transport = request.transport
    if transport is not None:
        transport.close()
