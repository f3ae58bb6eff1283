"""The application factory: wires settings, the pooled client session, observers, routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from proxy import endpoints
from proxy.canonical import CanonicalLog
from proxy.exchange import Observer
from proxy.forward import expect_continue, forward
from proxy.guard import guard
from proxy.lifecycle import LIFECYCLE, Lifecycle
from proxy.metrics import Metrics
from proxy.settings import Settings
from proxy.track import OBSERVERS
from proxy.upstream import UPSTREAM, Upstream, client_session_context
from proxy.websocket import SESSIONS, Session, on_shutdown

if TYPE_CHECKING:
    from proxy.capture import Capture

SETTINGS = web.AppKey("settings", Settings)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[guard])
    app[SETTINGS] = settings
    app[UPSTREAM] = upstream = Upstream.from_settings(settings)
    app[LIFECYCLE] = lifecycle = Lifecycle()
    observers: list[Observer] = [
        lifecycle,
        CanonicalLog(debug=settings.log.level == "debug", bodies=settings.log.bodies),
    ]
    if settings.capture.dir:
        # Opt-in features are imported only when on: start-up stays short (sidecars restart).
        from proxy.capture import Capture  # noqa: PLC0415

        capture = Capture(
            settings.capture.dir, total_limit=settings.capture.total_limit, upstream=upstream.origin
        )
        observers.append(capture)
        app.cleanup_ctx.append(_capture_context(capture))
    sessions: set[Session] = set()
    app[SESSIONS] = sessions
    metrics = None
    if settings.metrics.enabled:
        metrics = Metrics(in_flight=lambda: lifecycle.in_flight, sessions=lambda: len(sessions))
        observers.append(metrics)
    inspector = None
    if settings.inspector.enabled:
        from proxy.inspector import Inspector  # noqa: PLC0415

        inspector = Inspector(ring_size=settings.inspector.ring_size)
        observers.append(inspector)
        app.on_shutdown.append(inspector.on_shutdown)
    app[OBSERVERS] = tuple(observers)
    app.on_shutdown.append(on_shutdown)
    app.cleanup_ctx.append(client_session_context(settings))
    endpoints.add_routes(app.router, metrics=metrics, inspector=inspector)
    # [\s\S]: the route matches the decoded path, and a %0a in it must still be forwarded.
    app.router.add_route("*", r"/{tail:[\s\S]*}", forward, expect_handler=expect_continue)
    return app


def _capture_context(capture: Capture) -> Callable[[web.Application], AsyncIterator[None]]:
    async def capture_files(_: web.Application) -> AsyncIterator[None]:
        capture.prepare()
        yield
        await capture.drain()
        capture.close()

    return capture_files
