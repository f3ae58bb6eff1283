"""The upstream side: the one pooled client session, and requests put on the wire exactly."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import SimpleNamespace

import aiohttp
import structlog
from aiohttp import web
from aiohttp.client_middlewares import ClientHandlerType
from multidict import CIMultiDict
from yarl import URL

from proxy.errors import error_response
from proxy.exchange import Exchange, Outcome
from proxy.handshake import handshake_middleware
from proxy.headers import Pairs
from proxy.rules import Rule
from proxy.settings import Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class Upstream:
    """Where every forwarded request goes, and the limits that apply, fixed at start-up."""

    origin: str
    host: str
    rules: tuple[Rule, ...]
    max_body_size: int
    connect_timeout: float
    idle_timeout: float
    record_bodies: int
    proxy: URL | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Upstream:
        origin = URL(settings.upstream.url).origin()
        host = origin.host_port_subcomponent
        assert host is not None
        capture = settings.capture.dir or settings.log.bodies
        return cls(
            origin=str(origin),
            host=host,
            rules=settings.rewrite.active,
            max_body_size=settings.limits.max_body_size,
            connect_timeout=settings.upstream.connect_timeout,
            idle_timeout=settings.upstream.idle_timeout,
            record_bodies=settings.capture.body_limit if capture else 0,
            proxy=URL(settings.upstream.proxy) if settings.upstream.proxy else None,
        )

    def url(self, target: str) -> URL:
        # encoded=True: the raw target goes upstream byte for byte, never re-quoted.
        return URL(self.origin + target, encoded=True)


UPSTREAM = web.AppKey("upstream", Upstream)
SESSION = web.AppKey("session", aiohttp.ClientSession)


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


def framing(pairs: Pairs) -> Pairs:
    """Only the header that tells aiohttp how the client framed its body."""
    return [(name, value) for name, value in pairs if name.lower() == "content-length"][:1]


def connect_timing() -> aiohttp.TraceConfig:
    """Records on each exchange (its trace_request_ctx) how long the upstream connect took.

    ws_connect passes no trace context: a WebSocket session's connect is not timed.
    """
    trace = aiohttp.TraceConfig()

    async def created(_: aiohttp.ClientSession, context: SimpleNamespace, __: object) -> None:
        exchange: Exchange | None = context.trace_request_ctx
        if exchange is not None:
            exchange.connect_ms = round((time.perf_counter() - context.connect_started) * 1000, 3)

    async def creating(_: aiohttp.ClientSession, context: SimpleNamespace, __: object) -> None:
        context.connect_started = time.perf_counter()

    async def reused(_: aiohttp.ClientSession, context: SimpleNamespace, __: object) -> None:
        exchange: Exchange | None = context.trace_request_ctx
        if exchange is not None:
            exchange.connect_ms = 0.0

    async def queued(_: aiohttp.ClientSession, context: SimpleNamespace, __: object) -> None:
        context.queued = time.perf_counter()
        structlog.get_logger("proxy.upstream").warning(
            "waiting for a free upstream connection: upstream.pool_size is reached"
        )

    async def dequeued(_: aiohttp.ClientSession, context: SimpleNamespace, __: object) -> None:
        waited = round((time.perf_counter() - context.queued) * 1000, 3)
        structlog.get_logger("proxy.upstream").info("got an upstream connection", waited_ms=waited)

    trace.on_connection_create_start.append(creating)
    trace.on_connection_create_end.append(created)
    trace.on_connection_reuseconn.append(reused)
    trace.on_connection_queued_start.append(queued)
    trace.on_connection_queued_end.append(dequeued)
    return trace


def tls_context(settings: Settings) -> ssl.SSLContext | bool:
    """The system trust store (with SNI and hostname checks), plus upstream.ca_bundle.

    True is aiohttp's own verified default context, already built when aiohttp was
    imported: building another would add ~90 ms to start-up.
    """
    if not settings.upstream.ca_bundle:
        return True
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=settings.upstream.ca_bundle)
    return context


def client_session_context(
    settings: Settings,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def client_session(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(
            limit=settings.upstream.pool_size,
            limit_per_host=settings.upstream.pool_size,
            ssl=tls_context(settings),
            # An idle connection older than this is closed, never reused: after a laptop
            # sleeps, no request goes out on a connection the far side has forgotten.
            keepalive_timeout=settings.upstream.keepalive_timeout,
        )
        async with aiohttp.ClientSession(
            connector=connector,
            # total=None: a stream may last an hour; only silence between bytes is limited.
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=settings.upstream.connect_timeout,
                sock_read=settings.upstream.idle_timeout,
            ),
            # Bodies pass as bytes: never inflate what the client will decode itself.
            auto_decompress=False,
            # Nothing learnt from one response may reach another client's request.
            cookie_jar=aiohttp.DummyCookieJar(),
            # Proxies and ~/.netrc from the environment would change where tokens go.
            trust_env=False,
            # No header the client did not send (send_exactly replaces the rest).
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            # Big cookies and quota headers come back from chatgpt.com.
            max_line_size=settings.limits.max_header_size,
            max_field_size=settings.limits.max_header_size,
            trace_configs=[connect_timing()],
            # Puts a WebSocket upgrade's headers on the wire as the client sent them.
            middlewares=(handshake_middleware,),
        ) as session:
            app[SESSION] = session
            yield

    return client_session


def _tls_reason(exc: aiohttp.ClientConnectorError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"the certificate is not trusted ({exc.certificate_error}); see upstream.ca_bundle"
    return str(exc.os_error)


def upstream_failed(exchange: Exchange, upstream: Upstream, exc: BaseException) -> web.Response:
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
    elif isinstance(exc, aiohttp.ClientProxyConnectionError):
        code, message = (
            "upstream_proxy_error",
            f"cannot connect to the proxy upstream.proxy: {exc.strerror}",
        )
    elif isinstance(exc, aiohttp.ClientHttpProxyError):
        code = "upstream_proxy_error"
        message = (
            f"the proxy upstream.proxy refused the tunnel to {origin}: {exc.status} {exc.message}"
        )
    elif isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientConnectorSSLError):
        code = "upstream_tls_error"
        message = f"TLS with {origin} failed: {_tls_reason(exc)}"
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
