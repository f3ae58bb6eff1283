"""The control plane's application: the proxy's own endpoints under the reserved prefix,
as aiohttp.web handlers (proxy.control hands requests to it).

`/_proxy/healthz` and `/_proxy/readyz` for orchestrators, `/_proxy/metrics` for
Prometheus, `/_proxy/usage` (the plan usage the answers carried, as JSON: what the
`usage` command and `doctor` ask), `/_proxy/version` (the running version, its rule
table and what the retired path becomes: what `doctor` asks), the inspector's page when
it is on (when it is off, its address says how to turn it on); anything else under the
prefix is a 404 in the proxy's error shape, never forwarded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from proxy import exposition
from proxy.failures import error_body
from proxy.lifecycle import Lifecycle
from proxy.metrics import Metrics
from proxy.settings import CONTROL_PREFIX as PREFIX
from proxy.settings import ENV_PREFIX

if TYPE_CHECKING:
    from proxy.inspector import Inspector

__all__ = ["PREFIX", "create_app", "error_response"]


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status, body=error_body(code, message), content_type="application/json"
    )


def create_app(
    *,
    lifecycle: Lifecycle,
    metrics: Metrics | None,
    inspector: Inspector | None,
    about: dict[str, object] | None = None,
) -> web.Application:
    app = web.Application()
    router = app.router

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        if lifecycle.ready:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "draining"}, status=503)

    async def not_found(_: web.Request) -> web.Response:
        return error_response(
            404, "not_found", f"{PREFIX} is reserved for the proxy's own endpoints"
        )

    async def inspector_off(_: web.Request) -> web.Response:
        return error_response(
            404,
            "not_found",
            f"the inspector is off: start the proxy with --inspector (or set "
            f"inspector.enabled = true, or {ENV_PREFIX}INSPECTOR_ENABLED=true) to see it at "
            f"{PREFIX}",
        )

    async def bare_prefix(request: web.Request) -> web.StreamResponse:
        # `/_proxy` is the page's address too, written without its slash.
        if inspector is None:
            return await inspector_off(request)
        query = request.raw_path.partition("?")[2]
        raise web.HTTPFound(PREFIX + ("?" + query if query else ""))

    async def version(_: web.Request) -> web.Response:
        return web.json_response(about or {})

    router.add_get(PREFIX + "healthz", healthz, allow_head=True)
    router.add_get(PREFIX + "version", version)
    router.add_get(PREFIX + "readyz", readyz, allow_head=True)
    if metrics is not None:
        scraped = exposition.registry(metrics)

        async def serve_metrics(_: web.Request) -> web.Response:
            return web.Response(
                body=exposition.text(scraped),
                headers={"Content-Type": exposition.CONTENT_TYPE_LATEST},
            )

        router.add_get(PREFIX + "metrics", serve_metrics)
        ledger, clock = metrics.usage.ledger, metrics.usage.clock

        async def plan_usage(request: web.Request) -> web.Response:
            # As the inspector's pages: a web page that rebinds its own name to this
            # address reads nothing (the accounts' fingerprints, their plans).
            from proxy.inspector.routes import addressed_to_us  # noqa: PLC0415

            if not addressed_to_us(request):
                return error_response(
                    403,
                    "forbidden",
                    f"{PREFIX}usage answers only requests addressed to a loopback host",
                )
            return web.json_response(ledger.view(clock()))

        router.add_get(PREFIX + "usage", plan_usage)
    else:

        async def no_usage(_: web.Request) -> web.Response:
            return error_response(
                404,
                "not_found",
                "plan usage is read with the metrics, and they are off: set "
                f"metrics.enabled = true (or {ENV_PREFIX}METRICS_ENABLED=true)",
            )

        router.add_get(PREFIX + "usage", no_usage)
    if inspector is not None:
        inspector.add_routes(router)
        app.on_shutdown.append(inspector.on_shutdown)
    else:
        router.add_route("*", PREFIX, inspector_off)
    router.add_route("*", PREFIX.rstrip("/"), bare_prefix)
    router.add_route("*", PREFIX + r"{tail:[\s\S]*}", not_found)
    return app
