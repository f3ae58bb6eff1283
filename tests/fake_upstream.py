"""A fake chatgpt.com on 127.0.0.1: records what it receives, answers as a test tells it.

By default it behaves like the real service where it matters here: the retired paths
answer 403 with a Cloudflare-style HTML page, `/backend-api/codex/responses` streams
the Responses SSE events, and anything else echoes what arrived as JSON.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import WSMsgType, web

FIXTURES = Path(__file__).parent / "fixtures"
CANONICAL = "/backend-api/codex/responses"
RETIRED = (
    "/backend-api/responses",
    "/backend-api/v1/responses",
    "/backend-api/codex/v1/responses",
    "/backend-api/v1/codex/responses",
)
CLOUDFLARE_403 = (
    b"<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
    b"<body>Attention Required! | Cloudflare</body></html>"
)
MINIMAL_SSE = (FIXTURES / "sse_minimal_accepted_by_codex.txt").read_bytes()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class Received:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    peer: tuple[str, int]


@dataclass(slots=True)
class FakeUpstream:
    """The app plus what it saw; set `handler` to answer differently."""

    received: list[Received] = field(default_factory=list)
    handler: Handler | None = None
    port: int = 0
    # None: accept WebSocket upgrades; a status: refuse them with it (426 makes Codex fall back).
    refuse_websocket: int | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", r"/{tail:[\s\S]*}", self._dispatch)
        return app

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def last(self) -> Received:
        return self.received[-1]

    async def record(self, request: web.Request) -> Received:
        """Read the whole body as raw bytes (the server runs with auto_decompress off)."""
        body = await request.content.read()
        peer = request.transport.get_extra_info("peername") if request.transport else ("", 0)
        seen = Received(
            method=request.method,
            target=request.raw_path,
            headers=[(k.decode(), v.decode()) for k, v in request.raw_headers],
            body=body,
            peer=(peer[0], peer[1]),
        )
        self.received.append(seen)
        self.arrived.set()
        return seen

    def answer_raw(self, data: bytes) -> None:
        """Answer each request with these bytes written as they are, then close: a status
        line, headers or framing that aiohttp's server would never produce."""

        async def raw(request: web.Request) -> web.StreamResponse:
            await self.record(request)
            assert request.transport is not None
            request.transport.write(data)
            request.transport.close()
            return web.Response()

        self.handler = raw

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            if self.handler is not None:
                return await self.handler(request)
            return await self.default(request)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        finally:
            self.finished.set()

    async def default(self, request: web.Request) -> web.StreamResponse:
        seen = await self.record(request)
        path = seen.target.partition("?")[0]
        if any(path == p or path.startswith(p + "/") for p in RETIRED):
            return web.Response(
                status=403,
                body=CLOUDFLARE_403,
                headers={"Content-Type": "text/html; charset=UTF-8", "cf-ray": "8f00fake0000-AMS"},
            )
        if path.startswith(CANONICAL) and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.websocket_echo(request)
        if path.startswith(CANONICAL) and request.method == "POST":
            return web.Response(
                body=MINIMAL_SSE, headers={"Content-Type": "text/event-stream; charset=utf-8"}
            )
        return web.json_response(
            {"method": seen.method, "target": seen.target, "headers": seen.headers}
        )

    async def websocket_echo(self, request: web.Request) -> web.StreamResponse:
        """Each text or binary message comes back as it went; a close is answered in kind."""
        if self.refuse_websocket is not None:
            return web.json_response(
                {"error": {"message": "websockets refused", "code": "upgrade_required"}},
                status=self.refuse_websocket,
            )
        ws = web.WebSocketResponse(protocols=("codex.v1",), max_msg_size=0)
        ws.headers["x-codex-turn-state"] = "turn-state-1"
        ws.headers.add("Set-Cookie", "__cf_bm=ws; Path=/")
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws


def sse_event(kind: str, payload: dict[str, object]) -> bytes:
    data = json.dumps({"type": kind, **payload}, separators=(",", ":"))
    return f"event: {kind}\ndata: {data}\n\n".encode()
