"""Memory and file descriptors of the real proxy process over long runs (issue 21): after a
warm-up, its RSS (read from /proc/<pid>/status) stays flat whatever passes through it, and
every descriptor an exchange opens is closed (counted in /proc/<pid>/fd).

The upstream is the test's own, over TLS with a CA of the test's own (trustme), given to
the proxy as upstream.ca_bundle: chatgpt.com is HTTPS, and the HTTPS path once leaked
6.5 KB a request. Clients are raw kept-alive connections, several at once, so that 20,000
requests take seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import WSMsgType, web

from tests.outside import (
    fd_count,
    no_client_connections,
    proxy_process,
    rss_kib,
    tcp_sockets,
)
from tests.ws_wire import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    close_payload,
    connect,
    frame,
    read_frame,
)

# "Flat": what RSS may grow by after the warm-up (issue 21).
FLAT_KIB = 5 * 1024
CLIENTS = 8
PIPELINE = 8
REQUEST = b"GET /backend-api/models HTTP/1.1\r\nHost: a\r\n\r\n"
ANSWER = b'{"object":"list","data":[]}'
_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)\r\n")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@dataclass(slots=True)
class TlsUpstream:
    port: int
    ca_file: str

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {"CODEX_PATH_PROXY_UPSTREAM_CA_BUNDLE": self.ca_file}


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
async def tls_upstream(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[TlsUpstream]:
    """A small JSON answer to any request, an echo to any WebSocket, over TLS (aiohttp's
    low-level server: nothing a router adds between the bytes and the handler)."""

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(body=ANSWER, content_type="application/json")
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws

    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    handler = web.Server(answer)
    server = await asyncio.get_running_loop().create_server(
        handler, "127.0.0.1", 0, ssl=server_context(ca)
    )
    yield TlsUpstream(int(server.sockets[0].getsockname()[1]), str(ca_file))
    server.close()
    await handler.shutdown(1)
    await server.wait_closed()


def unusual(line: dict[str, Any]) -> bool:
    """Log lines worth keeping in a long run: all but completed requests on a reused
    upstream connection."""
    return not (
        line["event"] == "request"
        and line.get("outcome") == "completed"
        and line.get("connection") == "reused"
    )


async def keep_alive_client(port: int, count: int) -> None:
    """`count` requests on one kept-alive connection, PIPELINE written at a time."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        done = 0
        while done < count:
            batch = min(PIPELINE, count - done)
            writer.write(REQUEST * batch)
            for _ in range(batch):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 "), head
                length = _LENGTH.search(head)
                assert length is not None, head
                assert await reader.readexactly(int(length[1])) == ANSWER
            done += batch
    finally:
        writer.close()


async def requests(port: int, count: int) -> None:
    async with asyncio.timeout(60):
        await asyncio.gather(*(keep_alive_client(port, count // CLIENTS) for _ in range(CLIENTS)))


async def test_rss_is_flat_over_20000_requests_through_an_https_upstream(
    tls_upstream: TlsUpstream,
) -> None:
    warm_up, measured = 2_000, 20_000
    async with proxy_process(
        "--upstream", tls_upstream.url, env=tls_upstream.env, keep=unusual
    ) as (proxy, log):
        pid = proxy.process.pid
        await requests(proxy.port, warm_up)
        await log.wait("request", warm_up)
        await no_client_connections(proxy)
        before, fds_before = rss_kib(pid), fd_count(pid)
        await requests(proxy.port, measured)
        await log.wait("request", warm_up + measured)
        await no_client_connections(proxy)
        after, fds_after = rss_kib(pid), fd_count(pid)
    lines = [line for line in log.kept if line["event"] == "request"]
    # Every request answered, nearly all on a kept-alive connection opened over TLS once.
    assert all(line["outcome"] == "completed" for line in lines)
    assert 0 < len(lines) <= 4 * CLIENTS
    assert all(line["tls_ms"] is not None for line in lines)
    assert after - before <= FLAT_KIB, f"RSS {before} → {after} KiB"
    assert fds_after <= fds_before, f"descriptors {fds_before} → {fds_after}"


# Every length below and around each length encoding's edges (7 bits, 16, 64), and around
# each power of two up to 4 MiB.
SIZES = sorted({*range(130), *(2**k + d for k in range(7, 23) for d in (-1, 0, 1))})
BLOB = os.urandom(max(SIZES))


async def frames_of_every_size(port: int) -> None:
    """One session: a binary frame of each size echoed, pings of each control size
    answered, pongs nobody answers, a message in fragments with a ping between them, and
    a close with the longest reason a control frame holds."""
    reader, writer = await connect(port)
    try:
        for size in SIZES:
            writer.write(frame(BINARY, BLOB[:size]))
            assert await read_frame(reader) == (BINARY, BLOB[:size])
        for size in range(126):
            writer.write(frame(PONG, BLOB[:size]))
            writer.write(frame(PING, BLOB[:size]))
            assert await read_frame(reader) == (PONG, BLOB[:size])
        writer.write(frame(TEXT, b"a" * 1000, fin=False))
        writer.write(frame(PING, b"between"))
        writer.write(frame(CONTINUATION, b"b" * 1000, fin=False))
        writer.write(frame(CONTINUATION, b"c" * 1000))
        assert await read_frame(reader) == (PONG, b"between")
        assert await read_frame(reader) == (TEXT, b"a" * 1000 + b"b" * 1000 + b"c" * 1000)
        writer.write(frame(CLOSE, close_payload(1000, b"r" * 123)))
        assert (await read_frame(reader))[0] == CLOSE
        assert await reader.read() == b""
    finally:
        writer.close()


async def test_rss_is_flat_over_frames_of_every_size(tls_upstream: TlsUpstream) -> None:
    rounds = 3
    async with proxy_process("--upstream", tls_upstream.url, env=tls_upstream.env) as (proxy, log):
        pid = proxy.process.pid
        async with asyncio.timeout(30):
            await frames_of_every_size(proxy.port)
        [warmed] = await log.wait("websocket")
        await no_client_connections(proxy)
        before, fds_before = rss_kib(pid), fd_count(pid)
        async with asyncio.timeout(60):
            for _ in range(rounds):
                await frames_of_every_size(proxy.port)
        lines = await log.wait("websocket", 1 + rounds)
        await no_client_connections(proxy)
        after, fds_after = rss_kib(pid), fd_count(pid)
    # Each frame counted, each byte that passed counted once.
    assert warmed["frames_in"] == len(SIZES) + 1
    assert warmed["request_bytes"] == sum(SIZES) + 3000
    assert warmed["close_code"] == 1000
    assert warmed["close_reason"] == "r" * 123
    assert all(line["outcome"] == "completed" for line in lines)
    assert after - before <= FLAT_KIB, f"RSS {before} → {after} KiB"
    assert fds_after <= fds_before, f"descriptors {fds_before} → {fds_after}"


class EarlyAnswer(asyncio.Protocol):
    """An upstream that reads a request's head, stops reading, and answers 413 when told
    (while the client is still uploading)."""

    ANSWER = (
        b"HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\n"
        b"Content-Length: 20\r\nConnection: close\r\n\r\n"
        b'{"error":"too much"}'
    )

    def __init__(self, heads: asyncio.Queue[EarlyAnswer], accepted: list[EarlyAnswer]) -> None:
        self.heads = heads
        accepted.append(self)
        self.transport: asyncio.Transport | None = None
        self.head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" not in self.head:
            self.head += data
            if b"\r\n\r\n" in self.head:
                assert self.transport is not None
                self.transport.pause_reading()
                self.heads.put_nowait(self)

    def answer(self) -> None:
        assert self.transport is not None
        self.transport.write(self.ANSWER)


async def stalled_upload(pid: int, proxy_port: int, upstream_port: int) -> None:
    """Wait until the proxy holds the upload back both ways: bytes wait unsent towards
    the upstream (which reads nothing) and unread from the client, and neither moves
    between two looks. Then the proxy's own write buffer holds some too."""
    last = None
    async with asyncio.timeout(20):
        while True:
            sockets = tcp_sockets(pid)
            toward = [s.tx_queue for s in sockets if s.remote_port == upstream_port and s.tx_queue]
            unread = [s.rx_queue for s in sockets if s.local_port == proxy_port and s.rx_queue]
            now = (toward, unread)
            if toward and unread and now == last:
                return
            last = now
            # Nothing to await: the kernel's table is all there is.
            await asyncio.sleep(0.05)


async def upstream_let_go(pid: int, upstream_port: int, timeout: float = 10) -> None:
    """Wait until the proxy has let go of the upstream connection it can no longer use:
    no socket of the proxy's holds bytes for the upstream. (The upstream cannot tell: it
    reads nothing, so it hears no close.)"""
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while held := [s.tx_queue for s in tcp_sockets(pid) if s.remote_port == upstream_port]:
        if not any(held):
            return
        assert loop.time() < until, (
            f"after {timeout:g} s the proxy still holds {held} bytes unsent to the upstream"
        )
        # Nothing to await: the kernel's table is all there is.
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_an_early_413_while_the_upstream_stops_reading_leaks_no_descriptor(
    ca: trustme.CA, tmp_path: Path, tls: bool
) -> None:
    exchanges, body = 6, 64 << 20
    heads: asyncio.Queue[EarlyAnswer] = asyncio.Queue()
    accepted: list[EarlyAnswer] = []
    server = await asyncio.get_running_loop().create_server(
        lambda: EarlyAnswer(heads, accepted),
        "127.0.0.1",
        0,
        ssl=server_context(ca) if tls else None,
    )
    upstream_port = int(server.sockets[0].getsockname()[1])
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    scheme = "https" if tls else "http"
    head = b"POST /backend-api/files HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % body
    try:
        async with proxy_process(
            "--upstream",
            f"{scheme}://127.0.0.1:{upstream_port}",
            env={"CODEX_PATH_PROXY_UPSTREAM_CA_BUNDLE": str(ca_file)},
        ) as (proxy, log):
            pid = proxy.process.pid
            fds_before = fd_count(pid)
            for number in range(exchanges):
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
                writer.write(head + bytes(body))
                async with asyncio.timeout(10):
                    upstream = await heads.get()
                await stalled_upload(pid, proxy.port, upstream_port)
                upstream.answer()
                async with asyncio.timeout(10):
                    answer = await reader.readuntil(b"\r\n\r\n")
                    assert answer.startswith(b"HTTP/1.1 413 "), answer
                    assert await reader.readexactly(20) == b'{"error":"too much"}'
                writer.transport.abort()
                await upstream_let_go(pid, upstream_port)
                lines = await log.wait("request", number + 1)
                assert lines[-1]["status"] == 413
            await no_client_connections(proxy)
            fds_after = fd_count(pid)
        assert fds_after <= fds_before, f"descriptors {fds_before} → {fds_after}"
    finally:
        server.close()
        for connection in accepted:
            if connection.transport is not None:
                connection.transport.abort()
        await server.wait_closed()
