"""The proxy's own endpoints under the reserved /_proxy/ prefix: answered here, never forwarded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from proxy.errors import error_response
from proxy.lifecycle import LIFECYCLE
from proxy.metrics import Metrics

if TYPE_CHECKING:
    from proxy.inspector import Inspector

PREFIX = "/_proxy/"


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[LIFECYCLE].ready:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "draining"}, status=503)


async def not_found(request: web.Request) -> web.Response:
    return error_response(404, "not_found", f"{PREFIX} is reserved for the proxy's own endpoints")


def add_routes(
    router: web.UrlDispatcher, *, metrics: Metrics | None, inspector: Inspector | None
) -> None:
    router.add_get(PREFIX + "healthz", healthz, allow_head=True)
    router.add_get(PREFIX + "readyz", readyz, allow_head=True)
    if metrics is not None:
        router.add_get(PREFIX + "metrics", metrics.serve)
    if inspector is not None:
        inspector.add_routes(router)
    router.add_route("*", PREFIX + r"{tail:[\s\S]*}", not_found)
