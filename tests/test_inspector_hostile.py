"""The inspector against hostile peers: what it reads never stalls the streams it watches
(issue 26, items 4 and 7).

A WebSocket frame with RSV1 set is inflated only when the 101 agreed on
permessage-deflate, and a flood of deflate bombs costs the event loop a bounded slice;
a search over many large bodies folds them off the loop. Both are measured as a stream's
per-event delay while it happens: the fake sends each event only when the test has read
the one before.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from proxy.exchange import Exchange
from proxy.inspector.inflate import RATIO, SLACK, Budget, Inflater, agreed
from proxy.inspector.kept import Kept
from tests.fake_upstream import FakeUpstream, sse_event
from tests.harness import StartProxy, recorder
from tests.proc import ProxyProcess, start_proxy_process
from tests.test_inspector_content import content_of

ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Paced events measured while the inspector is made to work; their delay must stay this small
# (a stalled loop showed seconds).
SMALL_DELAY = 0.25


def deflated(data: bytes) -> bytes:
    """A permessage-deflate payload: raw deflate, the 00 00 ff ff tail cut (RFC 7692)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return (packer.compress(data) + packer.flush(zlib.Z_SYNC_FLUSH))[:-4]


def client_frame(payload: bytes, *, rsv1: bool = True, opcode: int = 0x1) -> bytes:
    """One masked client frame, FIN set."""
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", first, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    mask = os.urandom(4)
    key = (mask * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")
    return head + mask + masked


@dataclass
class RawUpstream:
    """chatgpt.com at the byte level: an upgrade is answered 101 (agreeing on
    permessage-deflate when `deflate`) and what follows is read and dropped (no frame is
    parsed, let alone inflated, in the test's own loop); any other request gets an event
    stream, one event per item put in `events` (None ends it)."""

    deflate: str | None  # the Sec-WebSocket-Extensions the 101 agrees on
    events: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    received: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            writer.close()  # a spare connection the proxy kept warm, closed unused
            return
        try:
            if b"upgrade: websocket" in head.lower():
                found = re.search(rb"(?i)sec-websocket-key:\s*(\S+)", head)
                assert found is not None
                accept = base64.b64encode(hashlib.sha1(found.group(1) + ACCEPT_GUID).digest())
                writer.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                    + accept
                    + b"\r\n"
                    + (
                        f"Sec-WebSocket-Extensions: {self.deflate}\r\n".encode()
                        if self.deflate
                        else b""
                    )
                    + b"\r\n"
                )
                while chunk := await reader.read(1 << 16):
                    self.received += len(chunk)
                    self.progress.set()
                return
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            while (event := await self.events.get()) is not None:
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def inspecting_process(upstream: str) -> AsyncIterator[ProxyProcess]:
    """The real command with the inspector on: the loop measured is the proxy's own,
    apart from the test's (and from its collector's pauses over pytest's heap)."""
    running = await start_proxy_process("--inspector", "--upstream", upstream)
    try:
        yield running
        running.process.send_signal(signal.SIGTERM)
        await running.rest()
    finally:
        running.stop()


async def upgrade(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw WebSocket client through the proxy, offering permessage-deflate."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /backend-api/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
            f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    return reader, writer


async def until_received(upstream: RawUpstream, total: int) -> None:
    async with asyncio.timeout(60):
        while upstream.received < total:
            upstream.progress.clear()
            await upstream.progress.wait()


async def paced_delays(
    stream: aiohttp.ClientResponse, events: asyncio.Queue[bytes | None], done: asyncio.Event
) -> list[float]:
    """Send events one at a time, each once the one before was read and 5 ms have passed
    (a steady stream, not a flood), until `done` (at least 10, at most 5,000): how long
    each took to arrive."""
    loop = asyncio.get_running_loop()
    delays = []
    for n in range(5000):
        if done.is_set() and n >= 10:
            break
        sent = loop.time()
        events.put_nowait(sse_event("response.output_text.delta", {"delta": str(n)}))
        await stream.content.readuntil(b"\n\n")
        delays.append(loop.time() - sent)
        await asyncio.sleep(0.005)
    assert done.is_set(), "still at work after 5,000 events"
    return delays


async def test_rsv1_without_an_agreed_permessage_deflate_is_never_inflated(
    start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    upstream = RawUpstream(deflate=None)
    inspected = await start_proxy(await upstream.start(), inspector={"enabled": True})
    try:
        _reader, writer = await upgrade(inspected.port)
        frame = client_frame(deflated(b"a" * 100_000))
        writer.write(frame)
        await until_received(upstream, len(frame))
        writer.close()
        await recorder(inspected).wait_ended()
        [message] = (await content_of(client, inspected))["messages"]
    finally:
        await upstream.close()
    assert message["compressed"] is True
    assert message["note"] == "RSV1 set, but no permessage-deflate was agreed: not inflated"
    assert message["value"] is None


@pytest.mark.parametrize("takeover", [True, False])
async def test_a_flood_of_deflate_bombs_never_stalls_another_stream(
    start_proxy: StartProxy, client: aiohttp.ClientSession, takeover: bool
) -> None:
    """100 frames of 15 KB that each inflate to 15 MiB (within the event limit), in one
    write, while a stream's events are paced: a message inflates to 64 times its size at
    most (with the context carried over, the rest of the session is then unreadable),
    all of them to 16 MiB a second at most, and the events' delay stays small."""
    extension = "permessage-deflate" + ("" if takeover else "; client_no_context_takeover")
    upstream = RawUpstream(deflate=extension)
    bomb = client_frame(deflated(bytes(15 * 1024 * 1024)))
    flood = bomb * 100
    try:
        async with inspecting_process(await upstream.start()) as running:
            origin = f"http://127.0.0.1:{running.port}"
            async with client.post(f"{origin}/backend-api/responses") as stream:
                _reader, writer = await upgrade(running.port)
                writer.write(flood)
                arrived = asyncio.Event()
                waiting = asyncio.ensure_future(until_received(upstream, len(flood)))
                waiting.add_done_callback(lambda _: arrived.set())
                delays = await paced_delays(stream, upstream.events, arrived)
                await waiting
                upstream.events.put_nowait(None)
                await stream.read()
            writer.close()
            await running.wait_for("websocket")
            async with client.get(f"{origin}/_proxy/exchanges/2") as response:
                content = await response.json()
    finally:
        await upstream.close()
    assert max(delays) < SMALL_DELAY, delays
    notes = [message["note"] for message in content["messages"]]
    assert notes[0] == f"compressed, inflates past {SLACK + RATIO * (len(bomb) - 8):,} bytes"
    if takeover:
        assert set(notes[1:]) == {"compressed, unreadable after a message that could not be read"}
    else:
        assert "compressed, not inflated: the inspector's inflating budget is spent" in notes


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ([], None),
        ([("Sec-WebSocket-Extensions", "x-webkit-deflate-frame")], None),
        ([("sec-websocket-extensions", "permessage-deflate")], frozenset()),
        (
            [
                ("Sec-WebSocket-Extensions", "foo, permessage-deflate; Server_No_Context_Takeover"),
                ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits=10"),
            ],
            frozenset({"server_no_context_takeover"}),
        ),
    ],
)
def test_what_the_101_agreed_on(
    headers: list[tuple[str, str]], params: frozenset[str] | None
) -> None:
    assert agreed(headers) == params


def test_a_side_without_context_takeover_reads_on_after_a_message_it_could_not() -> None:
    budget = Budget(0)
    fresh = Inflater(takeover=False, limit=1000, budget=budget)
    carried = Inflater(takeover=True, limit=1000, budget=budget)
    for inflater in (fresh, carried):
        assert inflater.inflate(deflated(b"x" * 2000)) == (
            None,
            "compressed, inflates past 1,000 bytes",
        )
    assert fresh.inflate(deflated(b"hello")) == (b"hello", None)
    assert carried.inflate(deflated(b"hello")) == (
        None,
        "compressed, unreadable after a message that could not be read",
    )
    assert fresh.inflate(b"\xff\xff") == (
        None,
        "compressed, not inflated (Error -3 while decompressing data: invalid block type)",
    )


def test_the_budget_fits_the_largest_message_and_once_spent_nothing_is_inflated() -> None:
    budget = Budget(0)
    assert budget.rate == 16 * 1024 * 1024
    assert Budget(32 * 1024 * 1024).rate == 32 * 1024 * 1024  # the largest message fits
    budget.spend(budget.rate)
    one = Inflater(takeover=False, limit=1 << 20, budget=budget)
    assert one.inflate(deflated(b"{}"))[1] == (
        "compressed, not inflated: the inspector's inflating budget is spent"
    )


def large_request(marker: str) -> bytes:
    """A request body just under a mebibyte of many short strings: the slowest kind to
    fold (about 100 ms), kept whole at the default body limit."""
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": f"turn {n}"}]}
        for n in range(12_500)
    ]
    body = json.dumps({"model": "gpt-5.4", "input": items, "instructions": marker}).encode()
    assert 900_000 < len(body) < 1024 * 1024
    return body


async def test_a_search_over_many_large_bodies_never_stalls_another_stream(
    start_proxy: StartProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    """32 request bodies of a mebibyte in the ring, none shown yet: the first search
    folds every one (seconds of work) while a stream's events are paced, and the events'
    delay stays small."""
    events: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def answer(request: web.Request) -> web.StreamResponse:
        seen = await fake.record(request)
        if not seen.target.endswith("/responses"):
            return web.json_response({"size": len(seen.body)})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        while (event := await events.get()) is not None:
            await response.write(event)
        await response.write_eof()
        return response

    fake.handler = answer
    async with inspecting_process(fake.url) as running:
        origin = URL(f"http://127.0.0.1:{running.port}")
        count = 32
        for n in range(count):
            data = large_request("needle-1f2e" if n == 17 else "hay")
            async with client.post(origin / "backend-api/files", data=data) as response:
                assert response.status == 200
            await running.wait_for("request")
        async with client.post(origin / "backend-api/responses") as stream:
            searched = asyncio.Event()

            async def search() -> list[int]:
                url = (origin / "_proxy/search").with_query(q="NEEDLE-1f2e")
                try:
                    async with client.get(url) as response:
                        found: list[int] = (await response.json())["matches"]
                        return found
                finally:
                    searched.set()

            found = asyncio.ensure_future(search())
            delays = await paced_delays(stream, events, searched)
            events.put_nowait(None)
            await stream.read()
    assert await found == [18]
    assert max(delays) < SMALL_DELAY, delays


@pytest.mark.parametrize("length", [201, 8000])
async def test_a_search_query_past_200_characters_is_refused_before_any_search(
    start_proxy: StartProxy, client: aiohttp.ClientSession, length: int
) -> None:
    inspected = await start_proxy(inspector={"enabled": True})
    url = inspected.make_url("/_proxy/search").with_query(q="x" * length)
    async with client.get(url) as response:
        assert response.status == 400
        assert (await response.json())["error"] == {
            "message": "q: 1 to 200 characters",
            "type": "proxy_error",
            "code": "bad_request",
        }


def test_a_client_s_messages_past_the_body_limit_are_not_inflated() -> None:
    """Nothing more of the client's side is kept then, nor read for the answer: its
    compressed messages cost nothing more (the upstream's are still read)."""
    exchange = Exchange(request_id="r", method="GET", target="/", client="127.0.0.1")
    exchange.respond(
        101, "Switching Protocols", [(b"Sec-WebSocket-Extensions", b"permessage-deflate")]
    )
    kept = Kept(exchange, body_limit=200, event_limit=1 << 20)
    message = deflated(json.dumps({"text": "x" * 300}).encode())
    for _ in range(3):
        kept.message("client", 0x1, message, len(message), True)
    delta = {"type": "response.output_text.delta", "item_id": "m", "delta": "on"}
    kept.message("upstream", 0x1, deflated(json.dumps(delta).encode()), 60, True)
    assert len(kept.messages) == 1
    assert kept.answer.view([], str)["items"][0]["text"] == "on"
