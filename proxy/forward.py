"""Forwarding: one client request to the fixed upstream and its response back, streamed.

What no rule rewrites passes unchanged: method, raw target, header names, values, order
and repeats (minus hop-by-hop), body bytes, status, reason, response headers and bytes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web
from aiohttp.client_middlewares import ClientHandlerType
from multidict import CIMultiDict
from yarl import URL

from proxy.errors import error_response
from proxy.exchange import Exchange, Outcome
from proxy.headers import HeaderNotUTF8Error, Pairs, decode, end_to_end, with_host
from proxy.rules import Rule, rewrite


@dataclass(frozen=True, slots=True, kw_only=True)
class Upstream:
    """Where every forwarded request goes, fixed at start-up."""

    origin: str
    host: str
    rules: tuple[Rule, ...]
    max_body_size: int
    connect_timeout: float
    idle_timeout: float

    @classmethod
    def from_url(cls, url: str, **kwargs: object) -> Upstream:
        origin = URL(url).origin()
        host = origin.host_port_subcomponent
        assert host is not None
        return cls(origin=str(origin), host=host, **kwargs)  # type: ignore[arg-type]


UPSTREAM = web.AppKey("upstream", Upstream)
SESSION = web.AppKey("session", aiohttp.ClientSession)


class PassthroughResponse(web.StreamResponse):
    """A response whose headers are the upstream's: aiohttp adds no Date, Server or Content-Type."""

    async def _prepare_headers(self) -> None:
        present = {name for name in _SERVER_DEFAULTS if name in self.headers}
        await super()._prepare_headers()
        for name in _SERVER_DEFAULTS - present:
            self.headers.popall(name, None)


_SERVER_DEFAULTS = frozenset({"Date", "Server", "Content-Type"})


def send_exactly(pairs: Pairs) -> aiohttp.ClientMiddlewareType:
    """A per-request client middleware that puts the given headers on the wire as they are.

    aiohttp's session merges header names case-sensitively (so `X-A` then `x-a` collapse
    into one) and adds its own; this replaces its result with the exact list, keeping only
    the Transfer-Encoding it chose for the body framing.
    """

    async def middleware(
        req: aiohttp.ClientRequest, handler: ClientHandlerType
    ) -> aiohttp.ClientResponse:
        framing = req.headers.get("Transfer-Encoding")
        req.headers = CIMultiDict(pairs)
        if framing is not None:
            req.headers["Transfer-Encoding"] = framing
        return await handler(req)

    return middleware


class _Upload:
    """The request body streamed upstream as it arrives, counted against the limit."""

    def __init__(self, request: web.Request, exchange: Exchange, limit: int) -> None:
        self.request = request
        self.exchange = exchange
        self.limit = limit
        self.too_large = False
        self.client_failed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self.request.content
        while True:
            try:
                chunk = await content.readany()
            except (
                aiohttp.ClientError,
                ConnectionError,
                aiohttp.http_exceptions.HttpProcessingError,
            ):
                self.client_failed = True
                raise
            if not chunk:
                return
            self.exchange.request_bytes += len(chunk)
            if self.exchange.request_bytes > self.limit:
                self.too_large = True
                raise _BodyTooLargeError
            yield chunk


class _BodyTooLargeError(Exception):
    pass


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
    exchange = Exchange(method=request.method, target=request.raw_path)
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        try:
            response = await _forward(request, exchange)
            exchange.status = response.status
        except asyncio.CancelledError:
            exchange.fail(Outcome.CLIENT_DISCONNECTED, "client closed the connection")
            raise
        finally:
            exchange.log()
    return response


def _reject(exchange: Exchange, status: int, code: str, message: str) -> web.Response:
    exchange.fail(Outcome.REJECTED, code)
    return error_response(status, code, message)


async def _forward(request: web.Request, exchange: Exchange) -> web.StreamResponse:
    upstream = request.app[UPSTREAM]
    target = request.raw_path
    length = request.content_length
    if length is not None and length > upstream.max_body_size:
        return _too_large(exchange, upstream.max_body_size)

    rewritten = rewrite(upstream.rules, target)
    exchange.upstream_target = rewritten.target
    exchange.rule = rewritten.rule.name if rewritten.rule else None
    # encoded=True: the raw target goes upstream byte for byte, never re-quoted.
    url = URL(upstream.origin + rewritten.target, encoded=True)
    try:
        pairs = with_host(end_to_end(decode(request.raw_headers), request=True), upstream.host)
    except HeaderNotUTF8Error as exc:
        return _reject(exchange, 400, "bad_request", f"{exc}: it cannot be forwarded unchanged")
    upload = _Upload(request, exchange, upstream.max_body_size)

    session = request.app[SESSION]
    try:
        upstream_response = await session.request(
            request.method,
            url,
            data=upload.chunks() if request.body_exists else None,
            # Only the framing header here, so aiohttp frames the body as the client did;
            # send_exactly puts the client's full header list on the wire.
            headers=_framing(pairs),
            allow_redirects=False,
            middlewares=(send_exactly(pairs),),
        )
    except (TimeoutError, aiohttp.ClientError) as exc:
        if upload.too_large:
            return _too_large(exchange, upstream.max_body_size)
        if upload.client_failed:
            exchange.fail(Outcome.CLIENT_DISCONNECTED, "client stopped sending the body")
            return error_response(400, "incomplete_request", "the request body ended early")
        return _upstream_failed(exchange, upstream, exc)
    return await _relay(request, exchange, upstream_response)


def _framing(pairs: Pairs) -> Pairs:
    return [(name, value) for name, value in pairs if name.lower() == "content-length"][:1]


def _too_large(exchange: Exchange, limit: int) -> web.Response:
    response = _reject(
        exchange,
        413,
        "request_too_large",
        f"the request body is larger than limits.max_body_size ({limit} bytes)",
    )
    # Close rather than read the rest of an oversized body to keep the connection.
    response.force_close()
    return response


def _upstream_failed(exchange: Exchange, upstream: Upstream, exc: BaseException) -> web.Response:
    """Map a failure before response headers to its status, code and log cause."""
    origin = upstream.origin
    status, outcome = 502, Outcome.UPSTREAM_UNREACHABLE
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        status, outcome, code = 504, Outcome.TIMEOUT, "upstream_connect_timeout"
        message = f"connecting to {origin} took longer than {upstream.connect_timeout:g} s"
    elif isinstance(exc, asyncio.TimeoutError):
        status, outcome, code = 504, Outcome.TIMEOUT, "upstream_timeout"
        message = f"{origin} sent no response within {upstream.idle_timeout:g} s"
    elif isinstance(exc, aiohttp.ClientConnectorDNSError):
        code, message = "upstream_unreachable", f"cannot resolve the upstream host of {origin}"
    elif isinstance(exc, aiohttp.ClientConnectorCertificateError):
        code, message = (
            "upstream_tls_error",
            f"the TLS certificate of {origin} is not trusted: {exc.certificate_error}",
        )
    elif isinstance(exc, aiohttp.ClientConnectorError):
        code, message = "upstream_unreachable", f"cannot connect to {origin}: {exc.strerror}"
    elif isinstance(exc, aiohttp.ClientResponseError):
        outcome, code = Outcome.UPSTREAM_CUT, "upstream_bad_response"
        message = f"{origin} sent a malformed response: {exc.message}"
    else:
        outcome, code = Outcome.UPSTREAM_CUT, "upstream_disconnected"
        message = f"{origin} closed the connection before answering"
    exchange.fail(outcome, code)
    return error_response(status, code, message)


async def _relay(
    request: web.Request, exchange: Exchange, upstream_response: aiohttp.ClientResponse
) -> web.StreamResponse:
    """Send the upstream's status, headers and body bytes on as each chunk arrives."""
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
        response = PassthroughResponse(
            status=upstream_response.status,
            reason=upstream_response.reason,
            headers=CIMultiDict(headers),
        )
        exchange.status = response.status
        try:
            await response.prepare(request)
            completed = await _relay_body(request, exchange, upstream_response.content, response)
        except ConnectionError:
            exchange.fail(Outcome.CLIENT_DISCONNECTED, "client closed the connection")
        return response
    finally:
        if completed:
            upstream_response.release()
        else:
            upstream_response.close()


async def _relay_body(
    request: web.Request,
    exchange: Exchange,
    content: aiohttp.StreamReader,
    response: web.StreamResponse,
) -> bool:
    """Copy body chunks as they arrive; False when the upstream cut or went silent."""
    while True:
        try:
            chunk = await content.readany()
        except (TimeoutError, aiohttp.ClientError) as exc:
            if isinstance(exc, asyncio.TimeoutError):
                exchange.fail(Outcome.TIMEOUT, "upstream_idle_timeout")
            else:
                exchange.fail(Outcome.UPSTREAM_CUT, "upstream_cut_mid_body")
            _cut(request)
            return False
        if not chunk:
            break
        exchange.response_bytes += len(chunk)
        await response.write(chunk)
    await response.write_eof()
    return True


def _cut(request: web.Request) -> None:
    """Close the client connection so it sees an incomplete response, never a clean end."""
    transport = request.transport
    if transport is not None:
        transport.close()
