"""Tracking one exchange from the request's arrival to its end: ids, observers, diagnosis."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from aiohttp import web

from proxy.diagnose import diagnose
from proxy.exchange import Exchange, Observer
from proxy.headers import decode_lossy
from proxy.upstream import UPSTREAM

OBSERVERS = web.AppKey("observers", tuple[Observer, ...])
_MAX_REQUEST_ID = 200


def begin(request: web.Request) -> Exchange:
    """A new exchange for this request, announced to every observer."""
    incoming = request.headers.get("X-Request-Id", "")
    exchange = Exchange(
        request_id=incoming[:_MAX_REQUEST_ID]
        if incoming.isprintable() and incoming
        else os.urandom(16).hex(),
        method=request.method,
        target=request.raw_path,
        client=request.remote,
        request_headers=decode_lossy(request.raw_headers),
        observers=request.app[OBSERVERS],
    )
    exchange.start()
    return exchange


def finish(request: web.Request, exchange: Exchange) -> None:
    upstream = request.app[UPSTREAM]
    host = urlsplit(upstream.origin).hostname or upstream.origin
    exchange.diagnosis = diagnose(exchange, upstream_host=host, rules=upstream.rules)
    exchange.end()
