"""WebSocket pass-through over real sockets: handshake, frames, closes, refusals, shutdown."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from structlog.testing import capture_logs

from tests.fake_upstream import FakeUpstream
from tests.harness import (
    RunningProxy,
    StartProxy,
    parse_response,
    read_head_and_body,
    read_until_closed,
    recorder,
    stall_count,
)
from tests.proc import start_proxy_process

LEGACY = "/backend-api/responses"
CANONICAL = "/backend-api/codex/responses"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ3cy11c2VyIn0.d3Mtc2lnbmF0dXJl"
CODEX_HEADERS = {
    "authorization": f"Bearer {TOKEN}",
    "chatgpt-account-id": "00000000-1111-2222-3333-444444444444",
    "originator": "codex_exec",
    "openai-beta": "responses_websockets=2026-02-06",
    "version": "0.169.0",
    "session-id": "01a216b8-e361-7de3-bbb1-a6ac9c738350",
    "x-codex-turn-metadata": '{"turn_id":"t1"}',
    "user-agent": "codex_exec/0.169.0",
    "Cookie": "__cf_bm=abc",
}


@pytest.fixture
async def ws_client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def handler_ws(fake: FakeUpstream, script: object) -> None:
    """Answer the upgrade with a WebSocket driven by `script(ws)`."""

    async def answer(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        ws = web.WebSocketResponse(max_msg_size=0, autoclose=False)
        await ws.prepare(request)
        await script(ws)  # type: ignore[operator]
        return ws

    fake.handler = answer


@pytest.mark.parametrize("query", ["?x=1", "?"])
async def test_legacy_upgrade_reaches_the_canonical_path_with_the_client_headers(
    proxy: RunningProxy, fake: FakeUpstream, query: str
) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET {LEGACY}{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in CODEX_HEADERS.items())
        + "X-A: 1\r\nx-a: 2\r\nKeep-Alive: 5\r\n"
        + "sec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(head.encode())
    response = parse_response(await reader.readuntil(b"\r\n\r\n"))
    writer.close()
    assert response.status == 101
    seen = fake.last
    assert seen.method == "GET"
    assert seen.target == f"{CANONICAL}{query}"
    # The handshake passes end to end, in the client's order and case: its key, version
    # and extensions are the upstream's to answer; only Host and Keep-Alive change.
    assert seen.headers == [
        ("Host", f"127.0.0.1:{fake.port}"),
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", key),
        *CODEX_HEADERS.items(),
        ("X-A", "1"),
        ("x-a", "2"),
        ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits"),
    ]


async def test_the_upstream_101_headers_reach_the_client_as_sent(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(
            f"GET {LEGACY} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Protocol: codex.v1, other\r\n\r\n".encode()
        )
        response = parse_response(await reader.readuntil(b"\r\n\r\n"))
    finally:
        writer.close()
    assert response.status == 101
    assert response.header("Sec-WebSocket-Protocol") == "codex.v1"
    assert response.header("x-codex-turn-state") == "turn-state-1"
    assert response.header("Set-Cookie") == "__cf_bm=ws; Path=/"
    expected = base64.b64encode(
        hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    ).decode()
    assert response.header("Sec-WebSocket-Accept") == expected


async def test_text_and_binary_echo_with_subprotocol(
    proxy: RunningProxy, fake: FakeUpstream, ws_client: aiohttp.ClientSession
) -> None:
    async with ws_client.ws_connect(proxy.make_url(LEGACY), protocols=("codex.v1", "other")) as ws:
        assert ws.protocol == "codex.v1"
        await ws.send_str('{"type":"response.create","input":"é"}')
        assert await ws.receive_str() == '{"type":"response.create","input":"é"}'
        await ws.send_bytes(b"\x00\x01\xff")
        assert await ws.receive_bytes() == b"\x00\x01\xff"


async def test_nine_mebibyte_frames_pass_both_ways(
    proxy: RunningProxy, fake: FakeUpstream, ws_client: aiohttp.ClientSession
) -> None:
    text = base64.b64encode(os.urandom(7 * 1024 * 1024)).decode()  # 9.3 MiB
    blob = os.urandom(9 * 1024 * 1024 + 7)
    async with ws_client.ws_connect(proxy.make_url(LEGACY), max_msg_size=0) as ws:
        await ws.send_str(text)
        assert await ws.receive_str() == text
        await ws.send_bytes(blob)
        assert await ws.receive_bytes() == blob


@pytest.mark.parametrize("status", [426, 403])
async def test_refused_upgrade_reaches_the_client_with_its_status_and_body(
    proxy: RunningProxy, fake: FakeUpstream, ws_client: aiohttp.ClientSession, status: int
) -> None:
    fake.refuse_websocket = status
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET {LEGACY} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    )
    with capture_logs() as logs:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(head.encode())
        response = await read_head_and_body(reader)
        writer.close()
        await recorder(proxy).wait_ended()
    assert response.status == status
    assert json.loads(response.body) == {
        "error": {"message": "websockets refused", "code": "upgrade_required"}
    }
    [line] = [line for line in logs if line["event"] == "websocket"]
    assert (line["status"], line["upstream_path"], line["rule"]) == (
        status,
        CANONICAL,
        "legacy-responses",
    )


async def test_unreachable_upstream_is_502_json(
    start_proxy: StartProxy, ws_client: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy("http://127.0.0.1:9")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await ws_client.ws_connect(proxy.make_url(LEGACY))
    assert refused.value.status == 502


@pytest.mark.parametrize("closer", ["upstream", "client"])
async def test_close_code_and_reason_are_relayed(
    proxy: RunningProxy, fake: FakeUpstream, ws_client: aiohttp.ClientSession, closer: str
) -> None:
    upstream_saw: list[tuple[int | None, str]] = []

    async def script(ws: web.WebSocketResponse) -> None:
        if closer == "upstream":
            await ws.receive()
            await ws.close(code=4001, message=b"turn over")
            return
        message = await ws.receive()
        assert message.type is WSMsgType.CLOSE
        upstream_saw.append((message.data, str(message.extra)))
        await ws.close(code=message.data, message=str(message.extra).encode())

    handler_ws(fake, script)
    with capture_logs() as logs:
        async with ws_client.ws_connect(proxy.make_url(LEGACY), autoclose=False) as ws:
            if closer == "upstream":
                await ws.send_str("go")
                message = await ws.receive()
                assert (message.type, message.data, message.extra) == (
                    WSMsgType.CLOSE,
                    4001,
                    "turn over",
                )
                await ws.close(code=4001, message=b"turn over")
            else:
                await ws.close(code=4001, message=b"client done")
        await recorder(proxy).wait_ended()
    if closer == "client":
        assert upstream_saw == [(4001, "client done")]
        assert ws.close_code == 4001
    [line] = [line for line in logs if line["event"] == "websocket"]
    assert (line["close_code"], line["closed_by"], line["status"]) == (4001, closer, 101)
    assert line["close_reason"] == ("turn over" if closer == "upstream" else "client done")


async def test_client_vanishing_closes_upstream(proxy: RunningProxy, fake: FakeUpstream) -> None:
    closed = asyncio.Event()

    async def script(ws: web.WebSocketResponse) -> None:
        await ws.send_str("hello")
        message = await ws.receive()
        assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        closed.set()

    handler_ws(fake, script)
    key = base64.b64encode(os.urandom(16)).decode()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        f"GET {LEGACY} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n".encode()
    )
    await reader.readuntil(b"hello")
    writer.transport.abort()  # no close frame: the client just vanishes
    async with asyncio.timeout(5):
        await closed.wait()
    [exchange] = await recorder(proxy).wait_ended()
    assert exchange.websocket is not None
    assert exchange.websocket.closed_by == "client"
    assert exchange.outcome == "client_disconnected"


async def test_upstream_vanishing_closes_the_client(
    proxy: RunningProxy, fake: FakeUpstream, ws_client: aiohttp.ClientSession
) -> None:
    async def vanish(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("hello")
        assert request.transport is not None
        request.transport.abort()  # no close frame: the upstream just vanishes
        return ws

    fake.handler = vanish
    async with ws_client.ws_connect(proxy.make_url(LEGACY)) as ws:
        assert await ws.receive_str() == "hello"
        async with asyncio.timeout(5):
            message = await ws.receive()
    assert message.type is WSMsgType.CLOSE
    assert message.data == 1014
    [exchange] = await recorder(proxy).wait_ended()
    assert exchange.outcome == "upstream_cut"


async def test_slow_client_makes_the_upstream_wait_instead_of_the_proxy_buffering(
    proxy: RunningProxy, fake: FakeUpstream, ws_client: aiohttp.ClientSession
) -> None:
    frame = os.urandom(1024 * 1024)
    frames = 200
    sent = 0
    progress = asyncio.Event()

    async def script(ws: web.WebSocketResponse) -> None:
        nonlocal sent
        for _ in range(frames):
            await ws.send_bytes(frame)
            sent += 1
            progress.set()
        await ws.close()

    handler_ws(fake, script)
    async with ws_client.ws_connect(proxy.make_url(LEGACY), max_msg_size=0) as ws:
        # Not reading: the upstream's sends must stall well short of all 200 MiB.
        stalled_at = await stall_count(progress, lambda: sent)
        assert stalled_at < 64, f"the upstream sent {stalled_at} MiB to a client that reads nothing"
        received = 0
        async for message in ws:
            assert message.data == frame
            received += 1
    assert received == frames


async def test_sigterm_gives_sessions_the_grace_then_closes_1001(fake: FakeUpstream) -> None:
    proxy = await start_proxy_process(
        "--upstream", fake.url, env={"CODEX_PATH_PROXY_SHUTDOWN_GRACE": "1"}
    )
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{proxy.address}{LEGACY}") as ws,
        ):
            await ws.send_str("before")
            assert await ws.receive_str() == "before"
            proxy.process.send_signal(signal.SIGTERM)
            await proxy.wait_for("shutting down")
            # Within the grace the session still works.
            await ws.send_str("during")
            assert await ws.receive_str() == "during"
            async with asyncio.timeout(10):
                message = await ws.receive()
        lines = await proxy.rest()
    finally:
        proxy.stop()
    assert (message.type, message.data) == (WSMsgType.CLOSE, 1001)
    assert proxy.process.returncode == 0
    [line] = [line for line in lines if line["event"] == "websocket"]
    assert (line["close_code"], line["closed_by"]) == (1001, "proxy")
    assert (line["frames_in"], line["frames_out"]) == (2, 2)
    assert TOKEN not in json.dumps(lines)


async def test_an_invalid_client_handshake_is_400_and_never_reaches_upstream(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    head = (
        f"GET {LEGACY} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: not-base64!\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(head.encode())
    response = await read_head_and_body(reader)
    writer.close()
    assert response.status == 400
    assert json.loads(response.body)["error"]["code"] == "bad_request"
    assert fake.received == []


async def test_an_upstream_101_with_a_wrong_accept_is_a_502(
    proxy: RunningProxy, fake: FakeUpstream, ws_client: aiohttp.ClientSession
) -> None:
    fake.answer_raw(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n"
    )
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await ws_client.ws_connect(proxy.make_url(LEGACY))
    assert refused.value.status == 502
    [exchange] = await recorder(proxy).wait_ended()
    assert exchange.cause == "upstream_bad_handshake"


def masked_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A client frame (masked, as RFC 6455 requires of a client)."""
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    else:
        head += bytes([0x80 | 126]) + size.to_bytes(2, "big")
    return head + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


async def test_frames_sent_with_the_upgrade_wait_for_the_101_and_fragments_count_once(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    """A client that writes its first frames in the same packet as the upgrade: they reach
    the upstream after its 101, and a message in three fragments is one message."""
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET {LEGACY} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    ).encode()
    fragments = (
        masked_frame(0x1, b"frag", fin=False)
        + masked_frame(0x0, b"ment", fin=False)
        + masked_frame(0x0, b"ed", fin=True)
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(head + masked_frame(0x1, b"early") + fragments)
        answer = await reader.readuntil(b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 101 ")
        # The fake echoes each message whole, unmasked.
        assert await reader.readexactly(7) == b"\x81\x05early"
        assert await reader.readexactly(12) == b"\x81\x0afragmented"
        writer.write(masked_frame(0x8, (1000).to_bytes(2, "big") + b"bye"))
        await read_until_closed(reader)
    finally:
        writer.close()
    [exchange] = await recorder(proxy).wait_ended()
    assert exchange.websocket is not None
    assert (exchange.websocket.frames_in, exchange.websocket.frames_out) == (2, 2)
    assert (exchange.websocket.close_code, exchange.websocket.closed_by) == (1000, "client")
    assert exchange.request_bytes == len(b"earlyfragmented")
