"""The upstream side: the one pooled client session, and requests put on the wire exactly."""

from __future__ import annotations

import asyncio
import contextvars
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web
from aiohttp.client_middlewares import ClientHandlerType
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.tracing import Trace
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
        if target[-1:] == "?" and target.index("?") == len(target) - 1:
            # yarl drops an empty query, and aiohttp writes the request line from
            # raw_path_qs: the '?' goes in the (already encoded) path instead.
            return URL(self.origin, encoded=True).with_path(target, encoded=True)
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


# The exchange this task is forwarding, for the connector to time its connect.
CURRENT: contextvars.ContextVar[Exchange | None] = contextvars.ContextVar("exchange", default=None)


class TimedConnector(aiohttp.TCPConnector):
    """A connector that records how long a new upstream connection took, and says when a
    request waits for a free one. (A TraceConfig would do it too, but tracing makes
    aiohttp await a signal for every request event and every body chunk.)"""

    async def _create_connection(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature, overridden
    ) -> ResponseHandler:
        started = time.perf_counter()
        protocol = await super()._create_connection(req, traces, timeout)
        if (exchange := CURRENT.get()) is not None:
            exchange.connect_ms = round((time.perf_counter() - started) * 1000, 3)
        return protocol

    async def _wait_for_available_connection(self, key: ConnectionKey, traces: list[Trace]) -> None:
        log = structlog.get_logger("proxy.upstream")
        log.warning("waiting for a free upstream connection: upstream.pool_size is reached")
        started = time.perf_counter()
        await super()._wait_for_available_connection(key, traces)
        waited = round((time.perf_counter() - started) * 1000, 3)
        log.info("got an upstream connection", waited_ms=waited)


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
        connector = TimedConnector(
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
            # No header the client did not send: send_exactly replaces aiohttp's list, but
            # the default Content-Type is added after it, unless skipped here.
            skip_auto_headers=("Content-Type",),
            # Big cookies and quota headers come back from chatgpt.com.
            max_line_size=settings.limits.max_header_size,
            max_field_size=settings.limits.max_header_size,
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
