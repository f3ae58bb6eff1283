"""The first middleware: requests that must never be forwarded stop here, logged.

aiohttp accepts an absolute-form target (`GET http://other/x`) and takes the request's
host and URL from it, and CONNECT names a host outright: neither is forwarded, so the
bearer token in a request only ever reaches the configured upstream. Framing and
versions the proxy cannot relay faithfully are refused rather than altered.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.errors import error_response
from proxy.exchange import Outcome
from proxy.track import begin, finish


def refusal(request: web.Request) -> tuple[int, str, str] | None:
    """(status, code, message) when this request must not be forwarded, else None."""
    if request.version not in ((1, 0), (1, 1)):
        major, minor = request.version
        return 505, "http_version_not_supported", f"HTTP/{major}.{minor} is not supported"
    if request.method == "CONNECT":
        return 405, "method_not_allowed", "CONNECT is not supported: this is a reverse proxy"
    target = request.raw_path
    if not target.startswith("/") or "#" in target:
        return 400, "bad_request", "the request target must be a path (origin-form), not a URL"
    codings = [
        coding.strip().lower()
        for value in request.headers.getall("Transfer-Encoding", ())
        for coding in value.split(",")
    ]
    if codings and request.version == (1, 0):
        return 400, "bad_request", "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)"
    if codings and codings != ["chunked"]:
        return 501, "not_implemented", "only the chunked transfer coding is supported"
    return None


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    refused = refusal(request)
    if refused is None:
        return await handler(request)
    status, code, message = refused
    exchange = begin(request)
    exchange.fail(Outcome.REJECTED, code)
    exchange.status = status
    finish(request, exchange)
    response = error_response(status, code, message)
    # What follows on this connection (a tunnel, an unknown framing) cannot be trusted.
    response.force_close()
    return response
