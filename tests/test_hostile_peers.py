"""Hostile peers against the real proxy process, over real sockets (issues 21 and 26): what
a client or an upstream announces is never believed into memory, a byte count or a log
line, and a session that falls silent is ended.

- `/_proxy` takes no uploads: a POST announcing more than 64 KiB to any of its paths is
  a 413 at once, memory stays flat while the rest of the body is read and dropped, and a
  request pipelined behind it is not read; a small one does not hold up the request
  pipelined after it.
- WebSocket byte counts are the bytes that passed, whatever a frame header announces
  (2^63, 2^64-1), and such a session still ends with its log line and metrics.
- A close frame announcing 128 MiB, from either side, passes without the proxy holding it.
- A session silent for limits.websocket_idle_timeout gets a 1001 close both ways, and the
  sockets of a session carry TCP keepalive (the kernel's keepalive timer, read from
  /proc/<pid>/net/tcp for the proxy's own sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import struct
from pathlib import Path

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from tests.fake_upstream import FakeUpstream
from tests.harness import parse_response, raw_request, read_head_and_body, read_until_closed
from tests.outside import KEEPALIVE_TIMER, proxy_process, rss_kib, tcp_sockets
from tests.proc import ProxyProcess
from tests.ws_wire import (
    BINARY,
    CLOSE,
    PING,
    TEXT,
    RawUpstream,
    close_payload,
    connect,
    frame,
    frame_head,
    masked,
    read_frame,
)

MIB = 1 << 20
# What RSS may grow by while a hostile peer pushes far more than this through.
BOUNDED_KIB = 8 * 1024
CONTROL_BODY_LIMIT = 64 * 1024


async def scrape(proxy: ProxyProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    raw = await raw_request(
        proxy.port, b"GET /_proxy/metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    response = parse_response(raw)
    assert response.status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.body.decode())
        for sample in family.samples
    }


def metric(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# --- The control plane takes no uploads (issue 26, item 1).


async def upload(proxy: ProxyProcess, head: bytes, chunks: list[bytes]) -> tuple[bytes, int]:
    """Send a head and then body chunks as fast as the proxy reads them, sampling its RSS
    every 8 MiB; what the proxy answered (until it closed), and the most RSS grew by."""
    pid = proxy.process.pid
    before = rss_kib(pid)
    grown = 0
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    answer = asyncio.ensure_future(reader.read())
    try:
        writer.write(head)
        sent = 0
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
            if sent % (8 * MIB) < len(chunk):
                grown = max(grown, rss_kib(pid) - before)
        async with asyncio.timeout(10):
            said = await answer
        return said, max(grown, rss_kib(pid) - before)
    finally:
        answer.cancel()
        writer.close()


@pytest.mark.parametrize("path", ["/_proxy/metrics", "/_proxy/nothing-here", "/_proxy"])
async def test_a_big_post_to_the_control_plane_is_a_413_and_memory_stays_flat(
    fake: FakeUpstream, path: str
) -> None:
    size = 64 * MIB
    head = f"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n"
    chunks = [os.urandom(MIB)] * (size // MIB)
    async with proxy_process("--upstream", fake.url) as (proxy, _):
        # The control plane's first request loads aiohttp: not what is measured here.
        await raw_request(
            proxy.port, b"GET /_proxy/healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        try:
            said, grown = await upload(proxy, head.encode(), chunks)
        except ConnectionResetError:
            pytest.fail("the proxy reset the connection before the client could read its 413")
    response = parse_response(said)
    assert response.status == 413
    assert response.header("Connection") == "close"
    error = json.loads(response.body)["error"]
    assert error["code"] == "request_too_large"
    assert str(CONTROL_BODY_LIMIT) in error["message"]
    # The answer, then the end of the connection: nothing after it.
    assert said.endswith(response.body)
    assert grown <= BOUNDED_KIB, f"RSS grew by {grown} KiB while {size >> 20} MiB came"
    assert fake.received == []


@pytest.mark.parametrize(
    "first",
    [
        b"POST /_proxy/nothing-here HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /_proxy/nothing-here HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /_proxy/healthz HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s"
        % (CONTROL_BODY_LIMIT, b"x" * CONTROL_BODY_LIMIT),
    ],
    ids=["content-length", "chunked", "at-the-limit"],
)
async def test_a_request_pipelined_after_a_small_control_post_is_answered_at_once(
    fake: FakeUpstream, first: bytes
) -> None:
    async with proxy_process("--upstream", fake.url) as (proxy, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            # One write: the body's end and the next head arrive in the same read.
            writer.write(
                first
                + b"GET /_proxy/healthz HTTP/1.1\r\nHost: a\r\n\r\n"
                + b"GET /backend-api/models HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
            # Far less than limits.keepalive_timeout (75 s), which a stuck read would wait.
            async with asyncio.timeout(5):
                refused = await read_head_and_body(reader)
                health = await read_head_and_body(reader)
                forwarded = await read_head_and_body(reader)
                assert await reader.read() == b""
        finally:
            writer.close()
    assert refused.status in (404, 405)
    assert health.status == 200
    assert json.loads(health.body) == {"status": "ok"}
    assert forwarded.status == 200
    assert json.loads(forwarded.body)["target"] == "/backend-api/models"
    assert [seen.target for seen in fake.received] == ["/backend-api/models"]


async def test_a_big_control_post_with_a_request_behind_it_is_a_413_at_once_then_the_end(
    fake: FakeUpstream,
) -> None:
    body = b"x" * (2 * MIB)
    post = b"POST /_proxy/nothing-here HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s"
    post %= (len(body), body)
    async with proxy_process("--upstream", fake.url) as (proxy, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            writer.write(post + b"GET /backend-api/models HTTP/1.1\r\nHost: a\r\n\r\n")
            # Far less than limits.keepalive_timeout (75 s), which a stuck read would wait.
            async with asyncio.timeout(5):
                refused = await read_head_and_body(reader)
                # The connection ends with the refusal: what followed is not a request.
                assert await reader.read() == b""
        finally:
            writer.close()
    assert refused.status == 413
    assert refused.header("Connection") == "close"
    assert json.loads(refused.body)["error"]["code"] == "request_too_large"
    assert fake.received == []


# --- WebSocket byte accounting (issue 26, item 5).


async def until_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """An upstream session that reads everything until the connection ends: how much."""
    del writer
    total = 0
    while data := await reader.read(MIB):
        total += len(data)
    return total


@pytest.mark.parametrize(
    ("side", "announced", "small_first", "inspector"),
    [
        ("client", 1 << 63, False, False),
        ("upstream", 1 << 63, False, False),
        ("client", (1 << 64) - 1, True, True),
        ("upstream", (1 << 64) - 1, True, True),
    ],
    ids=[
        "client-2^63",
        "upstream-2^63",
        "client-2^64-1-after-a-frame",
        "upstream-2^64-1-after-a-frame",
    ],
)
async def test_websocket_bytes_are_those_that_passed_not_those_announced(
    side: str, announced: int, small_first: bool, inspector: bool
) -> None:
    passed = 1000
    small = b"hi" if small_first else b""
    from_client = side == "client"
    mask = os.urandom(4) if from_client else None
    hostile = (frame(TEXT, small, client=from_client) if small_first else b"") + frame_head(
        BINARY, announced, mask=mask
    )
    payload = masked(b"p" * passed, mask) if mask is not None else b"p" * passed

    async def upstream_script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        if from_client:
            return await until_closed(reader, writer)
        writer.write(hostile + payload)
        await writer.drain()
        return 0  # then it vanishes, mid-frame

    upstream = await RawUpstream(upstream_script).start()
    args = ("--upstream", upstream.url, *(("--inspector",) if inspector else ()))
    try:
        async with proxy_process(*args) as (proxy, log):
            reader, writer = await connect(proxy.port)
            try:
                if from_client:
                    writer.write(hostile + payload)
                    await writer.drain()
                    writer.close()
                    async with asyncio.timeout(10):
                        received = await upstream.ended.get()
                    assert received == len(hostile) + passed
                else:
                    async with asyncio.timeout(10):
                        received = len(await reader.read())
                    assert received == len(hostile) + passed
            finally:
                writer.close()
            [line] = await log.wait("websocket", timeout=10)
            samples = await scrape(proxy)
    finally:
        await upstream.close()
    counted = "request_bytes" if from_client else "response_bytes"
    other = "response_bytes" if from_client else "request_bytes"
    assert line[counted] == len(small) + passed
    assert line[other] == 0
    assert line["frames_in" if from_client else "frames_out"] == 1 + small_first
    assert line["closed_by"] == side
    assert line["close_code"] == 1006
    direction = "request" if from_client else "response"
    assert (
        metric(samples, "codex_path_proxy_bytes_total", direction=direction) == len(small) + passed
    )
    assert (
        metric(
            samples,
            "codex_path_proxy_requests_total",
            kind="websocket",
            method="GET",
            rule="none",
            status_class="1xx",
        )
        == 1
    )


# --- A close frame announcing 128 MiB (issue 21, item 2).

CLOSE_SIZE = 128 * MIB


def close_frame_chunks(mask: bytes | None) -> tuple[bytes, bytes, int]:
    """A close frame announcing 128 MiB, as its first MiB (header, code 1000 and the start
    of a reason) and the MiB that follows it again and again (masking repeats every 4
    bytes, so every later MiB is the same bytes)."""
    reason = b"r" * MIB
    first = close_payload(1000, reason[: MIB - 2])
    head = frame_head(CLOSE, CLOSE_SIZE, mask=mask)
    if mask is None:
        return head + first, reason, CLOSE_SIZE // MIB - 1
    return head + masked(first, mask), masked(reason, mask), CLOSE_SIZE // MIB - 1


async def test_a_client_close_frame_announcing_128_mib_passes_without_growing_memory() -> None:
    upstream = await RawUpstream(until_closed).start()
    first, rest, count = close_frame_chunks(os.urandom(4))
    try:
        async with proxy_process("--upstream", upstream.url) as (proxy, log):
            pid = proxy.process.pid
            _reader, writer = await connect(proxy.port)
            before = rss_kib(pid)
            grown = 0
            try:
                writer.write(first)
                for number in range(count):
                    writer.write(rest)
                    await writer.drain()
                    if number % 8 == 0:
                        grown = max(grown, rss_kib(pid) - before)
                grown = max(grown, rss_kib(pid) - before)
            finally:
                # The session ends with the client: all it sent passes first.
                writer.close()
            async with asyncio.timeout(30):
                received = await upstream.ended.get()
            [line] = await log.wait("websocket", timeout=10)
    finally:
        await upstream.close()
    assert received == len(first) + count * len(rest)
    assert grown <= BOUNDED_KIB, f"RSS grew by {grown} KiB while a 128 MiB close frame passed"
    assert line["closed_by"] == "client"
    assert line["close_code"] == 1000
    # RFC 6455 §5.5: a control frame's payload is at most 125 bytes; no more is kept.
    assert line["close_reason"] == "r" * 123
    assert line["request_bytes"] == 0


async def test_an_upstream_close_frame_announcing_128_mib_passes_without_growing_memory() -> None:
    first, rest, count = close_frame_chunks(None)

    async def announce(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(first)
        for _ in range(count):
            writer.write(rest)
            await writer.drain()
        await reader.read()  # until the proxy ends the session

    upstream = await RawUpstream(announce).start()
    try:
        async with proxy_process("--upstream", upstream.url) as (proxy, log):
            pid = proxy.process.pid
            reader, writer = await connect(proxy.port)
            before = rss_kib(pid)
            grown = received = 0
            try:
                async with asyncio.timeout(30):
                    while received < len(first) + count * len(rest):
                        data = await reader.read(MIB)
                        assert data, f"the session ended after {received} bytes"
                        if received % (8 * MIB) + len(data) >= 8 * MIB:
                            grown = max(grown, rss_kib(pid) - before)
                        received += len(data)
                grown = max(grown, rss_kib(pid) - before)
            finally:
                writer.close()
            [line] = await log.wait("websocket", timeout=10)
    finally:
        await upstream.close()
    assert grown <= BOUNDED_KIB, f"RSS grew by {grown} KiB while a 128 MiB close frame passed"
    assert line["closed_by"] == "upstream"
    assert line["close_code"] == 1000
    assert line["close_reason"] == "r" * 123
    assert line["response_bytes"] == 0


# --- A silent session (issue 26, item 11).


async def test_a_silent_websocket_session_is_closed_1001_both_ways_at_the_idle_timeout() -> None:
    idle = 1.0
    heard: list[tuple[int, bytes]] = []

    async def listen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(frame(TEXT, b"hello", client=False))
        while True:
            heard.append(await read_frame(reader))
            if heard[-1][0] == CLOSE:
                break
        heard.append((-1, await reader.read()))  # what follows the close: the end

    upstream = await RawUpstream(listen).start()
    env = {"CODEX_PATH_PROXY_LIMITS_WEBSOCKET_IDLE_TIMEOUT": str(idle)}
    loop = asyncio.get_running_loop()
    try:
        async with proxy_process("--upstream", upstream.url, env=env) as (proxy, log):
            reader, writer = await connect(proxy.port)
            try:
                assert await read_frame(reader) == (TEXT, b"hello")
                # Traffic one way keeps it open past the timeout: silence is counted
                # from the last frame either way.
                for _ in range(6):
                    writer.write(frame(PING, b"still here"))
                    await asyncio.sleep(idle / 4)
                last = loop.time()
                async with asyncio.timeout(idle + 5):
                    opcode, payload = await read_frame(reader)
                    closed_after = loop.time() - last
                    assert await reader.read() == b""
            finally:
                writer.close()
            async with asyncio.timeout(5):
                await upstream.ended.get()
            [line] = await log.wait("websocket", timeout=10)
    finally:
        await upstream.close()
    assert (opcode, payload) == (CLOSE, struct.pack("!H", 1001) + b"idle timeout")
    assert closed_after >= idle - idle / 4
    assert heard == [
        *[(PING, b"still here")] * 6,
        (CLOSE, struct.pack("!H", 1001) + b"idle timeout"),
        (-1, b""),
    ]
    assert line["outcome"] == "timeout"
    assert line["cause"] == "websocket_idle_timeout"
    assert line["closed_by"] == "proxy"
    assert line["close_code"] == 1001
    assert line["close_reason"] == "idle timeout"


async def timers(
    pid: int, sockets: dict[str, tuple[int, int]], *, keepalive: set[str]
) -> dict[str, tuple[int, float] | None]:
    """The pending timer (kind, seconds left) of each named socket of the proxy's, by its
    local and remote port: once those named in `keepalive` show the keepalive timer (a
    timer of another kind may stand first a moment, while a segment awaits its ACK), or
    after 2 s."""
    loop = asyncio.get_running_loop()
    until = loop.time() + 2
    while True:
        table = {(s.local_port, s.remote_port): s for s in tcp_sockets(pid)}
        found = {name: table.get(pair) for name, pair in sockets.items()}
        shown = {name: None if s is None else (s.timer, s.expires_in) for name, s in found.items()}
        if loop.time() > until or all(
            (timer := shown[name]) is not None and timer[0] == KEEPALIVE_TIMER for name in keepalive
        ):
            return shown
        # Nothing to await: the kernel's table is all there is.
        await asyncio.sleep(0.02)


async def test_both_sockets_of_a_websocket_session_have_tcp_keepalive() -> None:
    session_port: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session_port.set_result(writer.get_extra_info("peername")[1])
        await reader.read()

    upstream = await RawUpstream(hold).start()
    try:
        async with proxy_process("--upstream", upstream.url) as (proxy, _):
            pid = proxy.process.pid
            # A plain kept-alive connection, for contrast: no keepalive timer.
            plain_reader, plain_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            plain_writer.write(b"GET /_proxy/healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            assert (await read_head_and_body(plain_reader)).status == 200
            _reader, writer = await connect(proxy.port)
            try:
                async with asyncio.timeout(5):
                    upstream_side = await session_port
                shown = await timers(
                    pid,
                    {
                        "client": (proxy.port, writer.get_extra_info("sockname")[1]),
                        "upstream": (upstream_side, upstream.port),
                        "plain": (proxy.port, plain_writer.get_extra_info("sockname")[1]),
                    },
                    keepalive={"client", "upstream"},
                )
            finally:
                writer.close()
                plain_writer.close()
    finally:
        await upstream.close()
    # flow.py: the first probe after 60 s of silence.
    for side in ("client", "upstream"):
        timer = shown[side]
        assert timer is not None, shown
        assert timer[0] == KEEPALIVE_TIMER, shown
        assert 0 < timer[1] <= 60, shown
    plain = shown["plain"]
    assert plain is not None, shown
    assert plain[0] != KEEPALIVE_TIMER, shown


async def test_a_chunked_control_post_past_the_limit_is_a_413_and_the_end_however_it_is_read(
    fake: FakeUpstream,
) -> None:
    """The control plane gets a request once its body is whole, so a chunked upload past
    64 KiB is refused (413, the connection ends) before any endpoint answers, whatever
    the reads (issue 26, item 1)."""
    chunk = b"%x\r\n%s\r\n" % (MIB, os.urandom(MIB))
    async with proxy_process("--upstream", fake.url) as (proxy, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            writer.write(
                b"POST /_proxy/nothing-here HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            await writer.drain()
            with contextlib.suppress(ConnectionError):
                for _ in range(16):  # 256 times the limit
                    writer.write(chunk)
                    await writer.drain()
            async with asyncio.timeout(5):
                answer = await read_until_closed(reader)
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert answer.count(b"HTTP/1.1 ") == 1


@pytest.mark.parametrize("close_notify", [True, False])
async def test_a_close_delimited_body_over_tls_is_complete_only_with_close_notify(
    tmp_path: Path, close_notify: bool
) -> None:
    """RFC 9112 §9.8: a body the upstream ends by closing is complete only if TLS says so
    (close_notify); a bare FIN is a cut, and the client sees one (issue 26, item 6). The
    real proxy runs (uvloop's TLS, which tells the two apart otherwise than asyncio's)."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nthe whole body")
        await writer.drain()
        if close_notify:
            writer.close()
        else:
            # A bare FIN under the TLS layer: the TCP half-close, no close_notify.
            raw = socket.socket(fileno=os.dup(writer.get_extra_info("socket").fileno()))
            raw.shutdown(socket.SHUT_WR)
            raw.close()
            await asyncio.sleep(0.5)
            writer.transport.abort()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        async with proxy_process(
            "--upstream",
            f"https://127.0.0.1:{port}",
            env={"CODEX_PATH_PROXY_UPSTREAM_CA_BUNDLE": str(bundle)},
        ) as (proxy, log):
            raw_answer = await raw_request(
                proxy.port, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
            kept = await log.wait("request")
            lines = [line for line in kept if line.get("event") == "request"]
    finally:
        server.close()
    response = parse_response(raw_answer)
    assert response.body == b"the whole body"
    assert response.complete is close_notify
    assert lines[-1]["outcome"] == ("completed" if close_notify else "upstream_cut")
