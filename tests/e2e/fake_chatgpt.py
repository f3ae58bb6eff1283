"""A fake chatgpt.com on 127.0.0.1 that behaves like the real one where the clients notice.

- The retired paths (and their subpaths, any method, WebSocket upgrades too) answer 403
  with a Cloudflare-style HTML page.
- `POST /backend-api/codex/responses` answers the Responses event stream (SSE), or the
  final response as JSON unless `"stream": true`; 401 without a bearer token. Request
  bodies are recorded as they arrived (zstd included) and decoded only to choose the
  answer. `stream_error` puts a JSON error inside the 200 stream.
- `GET /backend-api/codex/responses` with `Upgrade: websocket`: the same events as JSON
  text frames for every `response.create`; `refuse_websocket` answers 426 instead (the
  clients then fall back to HTTP).
- `lockstep`: each SSE event waits until the client says it got the previous one (`ack`),
  so a buffering hop shows up as a missed acknowledgement instead of passing.
- Codex's side calls: `wham/accounts/check` answers one account; anything else is 404.
- Plan usage, when a test sets it: `usage_headers` on every Responses answer (the SSE
  stream, the WebSocket 101, a 429), `rate_limits` as a `codex.rate_limits` message
  before each WebSocket response, and `usage_limit`: every POST answered 429 with it as
  the body's `error` (`usage_limit_reached`).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import zstandard
from aiohttp import WSMsgType, web

from tests.e2e.events import make_png, response_events, sse
from tests.e2e.http1 import header_value
from tests.fake_upstream import CANONICAL, RETIRED

ANSWER = "hi from fake upstream"
ACCOUNT_ID = "00000000-1111-2222-3333-444444444444"
LOCKSTEP_WAIT = 30.0


@dataclass(slots=True, eq=False)
class Received:
    """One request as it arrived: raw path, header pairs in wire order and case, raw body."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    status: int | None = None
    websocket: bool = False
    frames_in: list[Any] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)

    def decoded_body(self) -> bytes:
        encoding = (self.header("content-encoding") or "identity").lower()
        if encoding == "zstd":  # streaming encoders leave out the frame's content size
            with zstandard.ZstdDecompressor().stream_reader(self.body) as reader:
                return reader.read()
        if encoding != "identity":
            raise ValueError(f"unexpected content-encoding {encoding!r}")
        return self.body

    def summary(self) -> str:
        encoding = self.header("content-encoding")
        kind = " websocket" if self.websocket else ""
        body = f" body {len(self.body)} B" + (f" {encoding}" if encoding else "")
        return f"{self.method} {self.target} -> {self.status}{kind}{body if self.body else ''}"


def cloudflare_403() -> web.Response:
    ray = secrets.token_hex(8)
    page = (
        '<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title></head><body>'
        "<h1>Sorry, you have been blocked</h1><p>You are unable to access chatgpt.com</p>"
        f"<p>Cloudflare Ray ID: {ray}</p></body></html>"
    )
    headers = {"cf-ray": f"{ray}-SJC", "server": "cloudflare", "cf-mitigated": "challenge"}
    return web.Response(
        status=403, text=page, content_type="text/html", charset="UTF-8", headers=headers
    )


def has_bearer(request: web.Request) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def json_error(status: int, message: str) -> web.Response:
    error = {"message": message, "type": "invalid_request_error", "code": None, "param": None}
    return web.json_response({"error": error}, status=status)


@dataclass(eq=False)
class FakeChatGPT:
    png: bytes = field(default_factory=make_png)
    answer: str = ANSWER
    refuse_websocket: bool = False
    stream_error: str | None = None
    lockstep: bool = False
    usage_headers: dict[str, str] = field(default_factory=dict)
    rate_limits: dict[str, Any] | None = None
    usage_limit: dict[str, Any] | None = None
    received: list[Received] = field(default_factory=list)
    acked: set[int] = field(default_factory=set)
    missed_acks: list[int] = field(default_factory=list)
    port: int = 0
    _acked_changed: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)  # Codex posts megabytes
        app.router.add_route("*", r"/{tail:[\s\S]*}", self.handle)
        # auto_decompress=False: record zstd bodies as sent (aiohttp would refuse them);
        # Codex's x-codex-turn-metadata outgrows the default 8190-byte field limit.
        self._runner = web.AppRunner(
            app, access_log=None, auto_decompress=False, max_field_size=65536, max_line_size=65536
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def ack(self, sequence_number: int) -> None:
        """The client reports that it has the event with this sequence number."""
        self.acked.add(sequence_number)
        self._acked_changed.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        seen = Received(
            request.method,
            request.raw_path,
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers],
            await request.read(),
        )
        self.received.append(seen)
        response = await self.answer_to(request, seen)
        seen.status = 101 if isinstance(response, web.WebSocketResponse) else response.status
        return response

    async def answer_to(self, request: web.Request, seen: Received) -> web.StreamResponse:
        path = request.raw_path.partition("?")[0]
        if any(path == p or path.startswith(p + "/") for p in RETIRED):
            return cloudflare_403()
        if path.startswith(("/backend-api/codex/", "/backend-api/wham/")) and not has_bearer(
            request
        ):
            return json_error(401, "Missing bearer or basic authentication in header")
        if path == CANONICAL:
            return await self.live(request, seen)
        if path == "/backend-api/wham/accounts/check":
            account = {"id": ACCOUNT_ID, "workspace_backend_origin": None}
            return web.json_response(
                {"accounts": [dict(account, account_routing_override="NO_CONSTRAINT")]}
            )
        return web.json_response({"detail": "Not Found"}, status=404)

    async def live(self, request: web.Request, seen: Received) -> web.StreamResponse:
        if request.method == "POST":
            return await self.stream(request, seen)
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.json_response({"detail": "Method Not Allowed"}, status=405)
        if self.refuse_websocket:
            return web.Response(status=426, text="Upgrade Required")
        return await self.websocket(request, seen)

    async def stream(self, request: web.Request, seen: Received) -> web.StreamResponse:
        if self.usage_limit is not None:
            return web.json_response(
                {"error": self.usage_limit}, status=429, headers=self.usage_headers
            )
        try:
            body = json.loads(seen.decoded_body() or b"{}")
        except ValueError as exc:
            return json_error(400, f"bad request body: {exc}")
        events = response_events(
            body, answer=self.answer, png=self.png, error_code=self.stream_error
        )
        if not body.get("stream"):  # the Responses API streams only when asked
            return web.json_response(events[-1]["response"])
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                **self.usage_headers,
            }
        )
        await response.prepare(request)
        for event in events:
            await self.wait_for_ack(event["sequence_number"] - 1)
            await response.write(sse(event))
        await response.write_eof()
        return response

    async def wait_for_ack(self, sequence_number: int) -> None:
        """In lockstep, hold the next event until the client has this one; after one miss
        stop waiting (the run then finishes and the test reports the miss)."""
        if not self.lockstep or sequence_number < 0 or self.missed_acks:
            return
        try:
            async with asyncio.timeout(LOCKSTEP_WAIT):
                while sequence_number not in self.acked:
                    self._acked_changed.clear()
                    await self._acked_changed.wait()
        except TimeoutError:
            self.missed_acks.append(sequence_number)

    async def websocket(self, request: web.Request, seen: Received) -> web.WebSocketResponse:
        seen.websocket = True
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
        ws.headers.update(self.usage_headers)
        await ws.prepare(request)
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                seen.frames_in.append({"non_text": message.type.name})
                continue
            frame = json.loads(message.data)
            seen.frames_in.append(frame)
            if frame.get("type") == "response.create":
                if self.rate_limits is not None:
                    await ws.send_str(json.dumps({"type": "codex.rate_limits", **self.rate_limits}))
                for event in response_events(frame, answer=self.answer, png=self.png):
                    await ws.send_str(json.dumps(event, separators=(",", ":")))
        return ws
