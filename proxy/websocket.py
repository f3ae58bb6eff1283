"""WebSocket pass-through: the upgrade rewritten like HTTP, frames relayed both ways.

End-to-end handshake headers pass as for HTTP; the per-hop ones (Sec-WebSocket-Key,
-Accept, -Version, -Extensions) are negotiated on each hop, in the positions the client
had them. A refused upgrade reaches the client as the upstream's own status and body.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from proxy.errors import error_response
from proxy.exchange import Exchange, Outcome, WebSocketStats
from proxy.handshake import Handshake, expecting
from proxy.headers import Pairs, connection_listed, end_to_end
from proxy.relay import PassthroughResponse
from proxy.upstream import SESSION, UPSTREAM, Upstream, upstream_failed

# Set by this hop's own 101: never copied from the upstream's.
OWN_101 = frozenset({"sec-websocket-accept", "sec-websocket-extensions", "sec-websocket-protocol"})
# Close codes that must never appear in a close frame (RFC 6455 §7.4.1).
_UNSENDABLE = frozenset({1005, 1006, 1015})
GOING_AWAY = 1001
BAD_GATEWAY = 1014  # RFC 6455 registry: "Bad Gateway"

ClientSocket = aiohttp.ClientWebSocketResponse[Literal[False]]
ServerSocket = web.WebSocketResponse[Literal[False]]


def is_upgrade(request: web.Request) -> bool:
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").strip().lower() == "websocket"
        and "upgrade" in connection_listed(request.headers.items())
    )


@dataclass(slots=True, eq=False)
class Session:
    """One relayed WebSocket session: both sockets and the exchange that records it."""

    client: ServerSocket
    upstream: ClientSocket
    exchange: Exchange
    stats: WebSocketStats

    async def shutdown(self) -> None:
        """The shutdown grace is over: a 1001 close to both sides."""
        self.stats.closed_by = self.stats.closed_by or "proxy"
        if self.stats.close_code is None:
            self.stats.close_code = GOING_AWAY
        await asyncio.gather(
            self.client.close(code=GOING_AWAY, message=b"proxy shutting down"),
            self.upstream.close(code=GOING_AWAY, message=b"proxy shutting down"),
            return_exceptions=True,
        )


SESSIONS = web.AppKey("websocket_sessions", set[Session])


async def on_shutdown(app: web.Application) -> None:
    sessions: set[Session] = app[SESSIONS]
    await asyncio.gather(*(session.shutdown() for session in list(sessions)))


async def relay_websocket(
    request: web.Request, exchange: Exchange, pairs: Pairs, upstream_target: str
) -> web.StreamResponse:
    """Handshake upstream, then hand the client a 101 and relay frames until both close."""
    upstream = request.app[UPSTREAM]
    stats = exchange.websocket = WebSocketStats()
    offered = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    deflate = "permessage-deflate" in request.headers.get("Sec-WebSocket-Extensions", "").lower()
    probe = web.WebSocketResponse(protocols=offered)
    if not probe.can_prepare(request).ok:
        exchange.fail(Outcome.REJECTED, "bad_websocket_handshake")
        return error_response(400, "bad_request", "the WebSocket handshake is invalid")

    try:
        with expecting(Handshake(pairs)) as handshake:
            upstream_ws: ClientSocket = await request.app[SESSION].ws_connect(
                upstream.url(upstream_target),
                protocols=offered,
                compress=15 if deflate else 0,
                max_msg_size=upstream.max_body_size,
                autoclose=False,
                autoping=True,
                # A session may idle between turns for as long as the client likes.
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
                decode_text=False,
                proxy=upstream.proxy,
            )
    except (TimeoutError, aiohttp.ClientError) as exc:
        return await _refused(request, exchange, upstream, handshake, exc)
    return await _relay_session(
        request,
        exchange,
        upstream=upstream,
        upstream_ws=upstream_ws,
        handshake=handshake,
        stats=stats,
        deflate=deflate,
    )


async def _refused(
    request: web.Request,
    exchange: Exchange,
    upstream: Upstream,
    handshake: Handshake,
    exc: BaseException,
) -> web.StreamResponse:
    """The upstream's refusal as it answered it (status, headers, body), or a 502/504."""
    if handshake.refusal is None:
        if isinstance(exc, aiohttp.WSServerHandshakeError):
            exchange.fail(Outcome.UPSTREAM_CUT, "upstream_bad_handshake")
            return error_response(
                502,
                "upstream_bad_handshake",
                f"the upstream's WebSocket handshake is invalid: {exc.message}",
            )
        return upstream_failed(exchange, upstream, exc)
    status, reason, raw, body = handshake.refusal
    headers = end_to_end(raw, request=False)
    exchange.response_headers = headers
    exchange.response_bytes = len(body)
    exchange.status = status
    response = PassthroughResponse(status=status, reason=reason, headers=CIMultiDict(headers))
    await response.prepare(request)
    await response.write(body)
    await response.write_eof()
    return response


class _Upgrade(web.WebSocketResponse[Literal[False]]):
    """The proxy's 101 carries the upstream's 101 headers, and no Date or Server of its own."""

    async def _prepare_headers(self) -> None:
        present = {name for name in ("Date", "Server") if name in self.headers}
        await super()._prepare_headers()
        for name in {"Date", "Server"} - present:
            self.headers.popall(name, None)


async def _relay_session(
    request: web.Request,
    exchange: Exchange,
    *,
    upstream: Upstream,
    upstream_ws: ClientSocket,
    handshake: Handshake,
    stats: WebSocketStats,
    deflate: bool,
) -> web.StreamResponse:
    protocol = upstream_ws.protocol
    client_ws: ServerSocket = _Upgrade(
        protocols=(protocol,) if protocol else (),
        compress=deflate,
        max_msg_size=upstream.max_body_size,
        autoclose=False,
        autoping=True,
        decode_text=False,
    )
    extra = [
        (name, value)
        for name, value in end_to_end(handshake.accepted, request=False)
        if name.lower() not in OWN_101
    ]
    exchange.response_headers = handshake.accepted
    exchange.status = 101
    client_ws.headers.extend(extra)
    session = Session(client_ws, upstream_ws, exchange, stats)
    sessions = request.app[SESSIONS]
    try:
        await client_ws.prepare(request)
        exchange.change()
        sessions.add(session)
        await _pump_both(session)
    except (ConnectionError, asyncio.CancelledError) as exc:
        # The client's connection went away (aiohttp cancels the handler when it does).
        if stats.closed_by is None:
            stats.closed_by, stats.close_code = "client", 1006
            exchange.fail(Outcome.CLIENT_DISCONNECTED, "client vanished")
        if isinstance(exc, asyncio.CancelledError):
            raise
    finally:
        sessions.discard(session)
        await upstream_ws.close(code=GOING_AWAY)
    return client_ws


async def _pump_both(session: Session) -> None:
    """Both directions until each has seen its close; a side that fails closes the other."""
    pumps = {
        asyncio.create_task(_pump(session, from_client=True)): "client",
        asyncio.create_task(_pump(session, from_client=False)): "upstream",
    }
    try:
        done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        raise
    failed = [task for task in done if task.exception() is not None]
    if failed:
        await _abandon(session, failed_side=pumps[failed[0]])
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def _abandon(session: Session, *, failed_side: str) -> None:
    """A side could not be written to: record it, and close the other side."""
    stats = session.stats
    if stats.closed_by is None:
        stats.closed_by, stats.close_code = failed_side, 1006
        if failed_side == "client":
            session.exchange.fail(Outcome.CLIENT_DISCONNECTED, "client vanished")
        else:
            session.exchange.fail(Outcome.UPSTREAM_CUT, "upstream vanished")
    other = session.upstream if failed_side == "client" else session.client
    await other.close(code=GOING_AWAY if failed_side == "client" else BAD_GATEWAY)


async def _pump(session: Session, *, from_client: bool) -> None:
    """Relay messages one way until this side closes, or until the other side's close."""
    stats, exchange = session.stats, session.exchange
    source: ServerSocket | ClientSocket = session.client if from_client else session.upstream
    sink: ServerSocket | ClientSocket = session.upstream if from_client else session.client
    side = "client" if from_client else "upstream"
    while True:
        message = await source.receive()
        if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            data = message.data
            await sink.send_frame(data, message.type)
            if from_client:
                stats.frames_in += 1
                exchange.request_bytes += len(data)
            else:
                stats.frames_out += 1
                exchange.response_bytes += len(data)
            exchange.change()
            continue
        if message.type is WSMsgType.CLOSING:
            return  # this side is being closed by the other pump (or by shutdown)
        if message.type is WSMsgType.CLOSE:
            code = int(message.data) if message.data not in (None, *_UNSENDABLE) else 1000
            reason = message.extra.encode() if isinstance(message.extra, str) else b""
            if stats.closed_by is None:
                stats.closed_by = side
                stats.close_code, stats.close_reason = code, reason.decode("utf-8", "replace")
            await sink.close(code=code, message=reason)
            await source.close(code=code, message=reason)
            return
        # CLOSED or ERROR: this side vanished without a close frame.
        if stats.closed_by is None:
            await _abandon(session, failed_side=side)
        return
