"""The application factory: wires settings, the one pooled client session and the routes."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from proxy import endpoints
from proxy.forward import SESSION, UPSTREAM, Upstream, expect_continue, forward
from proxy.guard import guard
from proxy.settings import Settings

SETTINGS = web.AppKey("settings", Settings)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[guard])
    app[SETTINGS] = settings
    app[UPSTREAM] = Upstream.from_url(
        settings.upstream.url,
        rules=settings.rewrite.active,
        max_body_size=settings.limits.max_body_size,
        connect_timeout=settings.upstream.connect_timeout,
        idle_timeout=settings.upstream.idle_timeout,
    )
    app.cleanup_ctx.append(client_session)
    endpoints.add_routes(app.router)
    app.router.add_route("*", "/{tail:.*}", forward, expect_handler=expect_continue)
    return app


async def client_session(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    connector = aiohttp.TCPConnector(
        limit=settings.upstream.pool_size,
        # The system trust store, with SNI and hostname checks.
        ssl=ssl.create_default_context(),
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
    ) as session:
        app[SESSION] = session
        yield
