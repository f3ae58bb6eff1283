"""The first middleware: targets that could point anywhere but the upstream stop here.

aiohttp accepts an absolute-form target (`GET http://other/x`) and takes the request's
host and URL from it, and CONNECT names a host outright. Neither is ever forwarded, so
the bearer token in the request can only go to the configured upstream.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.errors import error_response


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "CONNECT":
        refused = error_response(
            405, "method_not_allowed", "CONNECT is not supported: this is a reverse proxy"
        )
        # Whatever follows a CONNECT on this connection would be tunnel bytes: close it.
        refused.force_close()
        return refused
    if not request.raw_path.startswith("/"):
        return error_response(
            400, "bad_request", "the request target must be a path (origin-form), not a URL"
        )
    return await handler(request)
