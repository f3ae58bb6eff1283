"""The upstream WebSocket handshake: the client's headers, with per-hop values from aiohttp.

aiohttp's ws_connect takes no per-request middleware, so the handler task hands the
client's headers to the session's middleware through a context variable; plain requests
never set it and pass untouched.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp.client_middlewares import ClientHandlerType
from multidict import CIMultiDict

from proxy.headers import Pairs, decode

# Negotiated on each hop: aiohttp chooses these values for the upstream handshake.
PER_HOP = frozenset(
    {
        "connection",
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)
REFUSAL_BODY_LIMIT = 1024 * 1024


@dataclass(slots=True)
class Handshake:
    """What the upstream handshake needs and what it answered, across aiohttp's ws_connect."""

    pairs: Pairs
    refusal: tuple[int, str, Pairs, bytes] | None = None
    accepted: Pairs = field(default_factory=list)


_HANDSHAKE: contextvars.ContextVar[Handshake | None] = contextvars.ContextVar(
    "handshake", default=None
)


async def handshake_middleware(
    req: aiohttp.ClientRequest, handler: ClientHandlerType
) -> aiohttp.ClientResponse:
    """In the client's order: its end-to-end headers, and aiohttp's per-hop values."""
    handshake = _HANDSHAKE.get()
    if handshake is None:
        return await handler(req)
    chosen = req.headers
    headers: CIMultiDict[str] = CIMultiDict()
    used: set[str] = set()
    for name, value in handshake.pairs:
        lowered = name.lower()
        if lowered in PER_HOP:
            if lowered in chosen and lowered not in used:
                headers.add(name, chosen[lowered])
                used.add(lowered)
        else:
            headers.add(name, value)
    for name, value in chosen.items():
        if name.lower() in PER_HOP and name.lower() not in used:
            headers.add(name, value)
    req.headers = headers
    response = await handler(req)
    raw = decode(response.raw_headers)
    if response.status == 101:
        handshake.accepted = raw
    else:
        body = await response.content.read(REFUSAL_BODY_LIMIT)
        handshake.refusal = (response.status, response.reason or "", raw, body)
    return response


@contextlib.contextmanager
def expecting(handshake: Handshake) -> Iterator[Handshake]:
    """Within this block, a ws_connect from this task uses `handshake`."""
    token = _HANDSHAKE.set(handshake)
    try:
        yield handshake
    finally:
        _HANDSHAKE.reset(token)
