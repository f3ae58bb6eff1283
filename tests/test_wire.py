"""The forwarding path at the wire: interim answers, framings the upstream chooses, HTTP/1.0
clients, upgrades other than WebSocket, connections mixing the proxy's own endpoints with
forwarded requests, and upstream connections that must never be used again."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from proxy.connector import Connector
from proxy.pool import Pool
from tests.fake_upstream import MINIMAL_SSE, FakeUpstream, sse_event
from tests.harness import (
    RunningProxy,
    StartProxy,
    Taker,
    parse_response,
    raw_request,
    read_head_and_body,
    read_until_closed,
    recorder,
    settings_for,
)

SSE_HEADERS = {"Content-Type": "text/event-stream"}


async def test_an_early_hints_answer_is_relayed_before_the_answer(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    fake.answer_raw(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Final: 1\r\n\r\nok"
    )
    raw = await raw_request(proxy.port, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    interim, _, final = raw.partition(b"\r\n\r\n")
    # The 100 was this hop's to send (it answers Expect itself): only the 103 is relayed.
    assert interim == b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload"
    response = parse_response(final)
    assert response.status == 200
    assert response.header("X-Final") == "1"
    assert response.body == b"ok"


async def test_a_body_the_upstream_ends_by_closing_reaches_a_client_chunked_and_complete(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    fake.answer_raw(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nno framing at all")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.readuntil(b"0\r\n\r\n")
        # The client's connection stays usable: the body was framed for it.
        writer.write(b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        rest = await read_until_closed(reader)
    finally:
        writer.close()
    response = parse_response(head + body)
    assert response.header("Transfer-Encoding") == "chunked"
    assert (response.body, response.complete) == (b"no framing at all", True)
    assert rest.startswith(b"HTTP/1.1 ")
    [first, second] = fake.received
    assert first.peer != second.peer  # the first ended with its connection


async def test_an_http_1_0_client_gets_a_chunked_body_as_a_close_delimited_one(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        await response.write(b"data: one\n\n")
        await response.write(b"data: two\n\n")
        await response.write_eof()
        return response

    fake.handler = chunked
    raw = await raw_request(proxy.port, b"GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ")
    assert b"Transfer-Encoding" not in head
    assert b"Connection: keep-alive" not in head
    assert body == b"data: one\n\ndata: two\n\n"


async def test_an_http_1_0_client_asking_keep_alive_keeps_its_connection(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        for path in ("/one", "/two"):
            writer.write(f"GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
            response = await read_head_and_body(reader)
            assert response.status_line.startswith("HTTP/1.0 200 ")
            assert response.header("Connection") == "keep-alive"
    finally:
        writer.close()
    assert [seen.target for seen in fake.received] == ["/one", "/two"]


async def test_an_upgrade_other_than_websocket_is_forwarded_as_a_plain_request(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    """curl --http2 on an http:// URL asks for h2c: the answer is plain HTTP/1.1, and the
    connection goes on."""
    raw = await raw_request(
        proxy.port,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
        b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    assert raw.count(b"HTTP/1.1 200 ") == 2
    first, second = fake.received
    assert first.headers == [("Host", f"127.0.0.1:{fake.port}")]
    assert second.target == "/after"


async def test_an_upgrade_other_than_websocket_with_a_body_is_refused(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    response = parse_response(
        await raw_request(
            proxy.port,
            b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
            b"Content-Length: 2\r\n\r\n{}",
        )
    )
    assert response.status == 400
    assert fake.received == []


async def test_one_connection_mixes_the_proxys_endpoints_and_forwarded_requests(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    """Each request on a kept-alive connection reaches its own side, in order, pipelined
    or not: the control plane's answers never swallow a forwarded one, or the reverse."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        answers = []
        for path in ("/_proxy/healthz", "/first", "/_proxy/readyz", "/second"):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            answers.append(await read_head_and_body(reader))
        writer.write(
            b"GET /third HTTP/1.1\r\nHost: a\r\n\r\n"
            b"HEAD /_proxy/healthz HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /_proxy/nothing HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n"
            b"GET /fourth HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        rest = await read_until_closed(reader)
    finally:
        writer.close()
    assert [json.loads(a.body).get("status") for a in answers[::2]] == ["ok", "ready"]
    assert [json.loads(a.body)["target"] for a in answers[1::2]] == ["/first", "/second"]
    third, after = rest.split(b"HTTP/1.1 200 OK\r\n", 2)[1:]
    assert b'"/third"' in third
    assert after.startswith(b"Content-Type: application/json")  # the HEAD: no body
    assert b"HTTP/1.1 404 Not Found" in after
    assert after.rstrip().endswith(b'"/fourth", "headers": [["Host", "127.0.0.1:%d"]]}' % fake.port)
    assert [seen.target for seen in fake.received] == ["/first", "/second", "/third", "/fourth"]


@pytest.mark.parametrize(("inspector", "status"), [(False, 404), (True, 302)])
async def test_the_bare_prefix_is_the_proxys_own(
    start_proxy: StartProxy, fake: FakeUpstream, inspector: bool, status: int
) -> None:
    proxy = await start_proxy(inspector={"enabled": inspector})
    response = parse_response(
        await raw_request(
            proxy.port, b"GET /_proxy?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
    )
    assert response.status == status
    if inspector:
        assert response.header("Location") == "/_proxy/?x=1"
    else:
        assert json.loads(response.body)["error"]["code"] == "not_found"
    assert fake.received == []


async def test_a_connection_that_sent_bytes_after_its_answer_is_not_reused(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    async def trailing_junk(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        assert request.transport is not None
        request.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokJUNK")
        return web.Response()

    fake.handler = trailing_junk
    first = parse_response(
        await raw_request(proxy.port, b"GET /1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    )
    fake.handler = None
    second = parse_response(
        await raw_request(proxy.port, b"GET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    )
    assert first.body == b"ok"
    assert second.status == 200
    assert fake.received[0].peer != fake.received[1].peer


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
            "unsupported Transfer-Encoding",
        ),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "101"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * 70000 + b"\r\n\r\n", "limits"),
    ],
)
async def test_an_answer_that_cannot_be_relayed_as_it_is_is_a_502(
    proxy: RunningProxy, fake: FakeUpstream, script: bytes, reason: str
) -> None:
    fake.answer_raw(script)
    with capture_logs() as logs:
        response = parse_response(
            await raw_request(
                proxy.port, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
        )
    assert response.status == 502
    error = json.loads(response.body)["error"]
    assert error["code"] == "upstream_bad_response"
    assert reason in error["message"]
    [line] = [line for line in logs if line["event"] == "request"]
    assert reason in line["detail"]


async def test_a_body_held_while_the_pool_is_full_goes_up_whole_once_a_connection_frees(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    release = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        seen = await fake.record(request)
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        if seen.target == "/first":
            await release.wait()
        await response.write_eof()
        return response

    fake.handler = held
    proxy = await start_proxy(upstream={"pool_size": 1})
    body = bytes(range(256)) * 4096  # 1 MiB: more than is held before reading pauses
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    second = None
    try:
        writer.write(b"GET /first HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        second = asyncio.create_task(
            raw_request(
                proxy.port,
                b"POST /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
            )
        )
        await asyncio.sleep(0.2)  # the second waits for the pool; nothing to await on
        assert [seen.target for seen in fake.received] == ["/first"]
        release.set()
        await read_until_closed(reader)
        assert parse_response(await second).status == 200
    finally:
        writer.close()
        if second is not None and not second.done():
            second.cancel()
    assert fake.last.body == body


async def test_a_client_that_leaves_while_waiting_for_the_pool_is_forgotten(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    release = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        await release.wait()
        return web.Response(text="done")

    fake.handler = held
    proxy = await start_proxy(upstream={"pool_size": 1})
    _, first = await asyncio.open_connection("127.0.0.1", proxy.port)
    first.write(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
    await fake.arrived.wait()
    _, waiting = await asyncio.open_connection("127.0.0.1", proxy.port)
    waiting.write(b"GET /never HTTP/1.1\r\nHost: a\r\n\r\n")
    await waiting.drain()
    await asyncio.sleep(0.1)  # it queues for the pool; nothing to await on
    waiting.close()
    [gone] = await recorder(proxy).wait_ended()
    assert gone.outcome == "client_disconnected"
    release.set()
    first.close()
    fake.handler = None
    fake.arrived.clear()
    third = parse_response(
        await raw_request(
            proxy.port, b"GET /third HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
    )
    assert third.status == 200
    assert [seen.target for seen in fake.received] == ["/first", "/third"]


async def test_a_stream_held_back_by_a_slow_reader_is_not_taken_for_a_silent_upstream(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    """upstream.idle_timeout measures the upstream's silence, not the time the proxy
    spent waiting for its client to read."""
    events = [
        sse_event("response.output_text.delta", {"n": n, "pad": "x" * 4000}) for n in range(400)
    ]

    async def fast(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        for event in events:
            await response.write(event)
        await response.write(MINIMAL_SSE)
        await response.write_eof()
        return response

    fake.handler = fast
    proxy = await start_proxy(upstream={"idle_timeout": 0.3})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(1.0)  # reading nothing, three idle timeouts long
        body = await read_until_closed(reader, timeout=10)
    finally:
        writer.close()
    [exchange] = await recorder(proxy).wait_ended()
    assert exchange.outcome == "completed"
    assert exchange.sse is not None
    assert exchange.sse.completed
    assert body.endswith(b"0\r\n\r\n")


async def test_a_connection_its_slow_reader_paused_goes_back_to_the_pool_reading(
    fake: FakeUpstream,
) -> None:
    """A body can end while its client still holds the upstream back (the last write filled
    the client's buffer): the connection must serve the next request, so it is released
    reading again. (Seen in the benchmark: a 50 MB body to a slow reader, then the next
    request on that connection waited for an answer it would never read.)"""
    pool = Pool(
        settings_for(fake.url).upstream, connector=Connector(settings_for(fake.url).upstream)
    )
    try:
        first = Taker()
        pool.acquire(first)
        connection = await first.given
        connection.pause_reading()
        assert connection.transport is not None
        assert not connection.transport.is_reading()
        pool.release(connection)
        assert connection.transport.is_reading()
        second = Taker()
        pool.acquire(second)
        assert await second.given is connection
    finally:
        pool.close()


async def test_a_malformed_request_pipelined_after_good_ones_is_answered_after_them(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    raw = await raw_request(
        proxy.port,
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /three HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  folded\r\n\r\n"
        b"GET /never HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    statuses = [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]
    assert statuses == [200, 200, 400]
    assert [seen.target for seen in fake.received] == ["/one", "/two"]


async def test_a_head_larger_than_the_limits_allow_in_all_is_431(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    """Each line within limits.max_header_size, but far more bytes than a head may hold."""
    lines = b"".join(b"X-%d: %s\r\n" % (n, b"v" * 8000) for n in range(100))
    response = parse_response(
        await raw_request(proxy.port, b"GET /x HTTP/1.1\r\nHost: a\r\n" + lines + b"\r\n")
    )
    assert response.status == 431
    assert fake.received == []


async def test_an_idle_kept_alive_connection_is_let_go(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(limits={"keepalive_timeout": 0.2})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await read_head_and_body(reader)).status == 200
        # Idle now: closed after limits.keepalive_timeout, with nothing more said.
        assert await read_until_closed(reader, timeout=5) == b""
    finally:
        writer.close()
