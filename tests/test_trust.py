"""Regression tests for the defects the hostile trial found in the forwarding path (issue
21), one each, over real sockets; docs/reliability.md names each beside its row. The
split-invariance and h11 model tests (test_split.py, test_h11_model.py) cover the same
shapes for every position a read may end at."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from proxy.exchange import Exchange, Observer
from proxy.settings import Settings
from tests.fake_upstream import FakeUpstream
from tests.harness import (
    RunningProxy,
    StartProxy,
    parse_response,
    read_head_and_body,
    read_until_closed,
    settings_for,
)
from tests.wire_cases import ok
from tests.wire_script import Script, ScriptedUpstream, replay


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream()
    await upstream.start()
    yield upstream
    await upstream.close()


async def test_a_body_end_and_the_next_head_in_one_read_are_both_answered(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    """Defect 1: `hello`, 300 ms later `world` and a GET head at once; both answered."""
    proxy = await start_proxy()
    for framing, first, second in (
        (b"Content-Length: 10", b"hello", b"world"),
        (b"Transfer-Encoding: chunked", b"5\r\nhello\r\n", b"5\r\nworld\r\n0\r\n\r\n"),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"POST /a HTTP/1.1\r\nHost: a\r\n" + framing + b"\r\n\r\n" + first)
        await asyncio.sleep(0.3)
        writer.write(second + b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(5):
            one = await read_head_and_body(reader)
            two = parse_response(await reader.read())
        writer.close()
        assert (one.status, two.status) == (200, 200)
        assert json.loads(one.body)["target"] == "/a"
        assert json.loads(two.body)["target"] == "/b"
    posted = [seen for seen in fake.received if seen.target == "/a"]
    assert [seen.body for seen in posted] == [b"helloworld", b"helloworld"]


async def test_a_head_in_two_reads_with_a_big_body_is_not_taken_for_a_big_head(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    """Defect 3: with limits.max_header_size = 8192, an ordinary request split after its
    first line, the rest of the head arriving with a 200 KB body: answered 200."""
    proxy = await start_proxy(limits={"max_header_size": 8192})
    body = b"x" * 200_000
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"POST /big HTTP/1.1\r\n")
    await asyncio.sleep(0.05)
    writer.write(b"Host: a\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    async with asyncio.timeout(10):
        response = parse_response(await reader.read())
    writer.close()
    assert response.status == 200
    assert fake.last.body == body


async def test_an_answer_head_in_two_reads_with_a_big_body_is_relayed(
    start_proxy: StartProxy, scripted: ScriptedUpstream
) -> None:
    """Defect 3, the upstream's side: no 502 'response head larger than the limits'."""
    proxy = await start_proxy(scripted.url, limits={"max_header_size": 8192})
    body = b"y" * 200_000
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-A: 1\r\n\r\n" % len(body) + body
    seen = await replay(
        proxy.port,
        scripted,
        Script(
            "split-answer", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", (answer,)
        ),
        answer_cuts={0: (17,)},
    )
    response = parse_response(seen.client)
    assert (response.status, response.body) == (200, body)


async def test_bytes_after_a_complete_answer_never_reach_the_client(
    start_proxy: StartProxy, scripted: ScriptedUpstream
) -> None:
    """Defect 4: a complete `Content-Length: 2` answer and more bytes in one segment."""
    proxy = await start_proxy(scripted.url)
    answer = ok(b"ok") + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra and more"
    seen = await replay(
        proxy.port,
        scripted,
        Script("junk", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", (answer,)),
    )
    response = parse_response(seen.client)
    assert (response.status, response.body, response.complete) == (200, b"ok", True)
    assert b"extra" not in seen.client


async def test_trailers_reach_the_upstream_as_trailers(
    start_proxy: StartProxy, scripted: ScriptedUpstream
) -> None:
    """Defect 5: a chunked request with a trailer, in one read: the trailer stays after
    the body (RFC 9110 §6.5.1: never merged into the header section)."""
    proxy = await start_proxy(scripted.url)
    request = (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n"
    )
    seen = await replay(proxy.port, scripted, Script("trailer", request, (ok(),)))
    [arrived] = seen.requests
    head, _, body = arrived.partition(b"\r\n\r\n")
    assert b"X-Checksum" not in head
    assert body == b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n"


async def test_an_event_the_tap_cannot_read_does_not_cut_the_stream(
    start_proxy: StartProxy, scripted: ScriptedUpstream
) -> None:
    """Defect 6: an event whose JSON nests 5,000 deep once raised RecursionError in the
    tap, cutting a healthy stream; now the tap is switched off and the bytes go on."""
    proxy = await start_proxy(scripted.url)
    deep = b"data: " + b'{"type":"response.completed","x":' + b"[" * 5000 + b"]" * 5000 + b"}\n\n"
    events = [b'data: {"type":"response.created"}\n\n', deep]
    body = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    request = b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    seen = await replay(proxy.port, scripted, Script("deep", request, (answer + body,)))
    response = parse_response(seen.client)
    assert (response.status, response.complete) == (200, True)
    assert response.body == b"".join(events)
    [line] = seen.lines
    assert line["outcome"] == "completed"
    assert any(line.get("observer") == "the event stream tap" for line in seen.logs)


class Broken(Observer):
    def changed(self, exchange: Exchange) -> None:
        raise RuntimeError("an observer with a bug")


async def test_an_observer_that_fails_is_switched_off_and_the_bytes_go_on(
    fake: FakeUpstream,
) -> None:
    from proxy.app import create_proxy  # noqa: PLC0415

    listener, _ = create_proxy(settings_for(fake.url), extra=(Broken(),))
    [address] = await listener.start("127.0.0.1", 0)
    port = int(address.rsplit(":", 1)[1])
    try:
        with capture_logs() as logs:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
                b"Connection: close\r\n\r\n{}"
            )
            response = parse_response(await read_until_closed(reader))
            writer.close()
    finally:
        await listener.close()
    assert (response.status, response.complete) == (200, True)
    assert b"response.completed" in response.body
    failed = [line for line in logs if line.get("observer") == "Broken"]
    assert len(failed) == 1  # said once, then switched off for the exchange


async def test_a_kept_alive_connection_the_upstream_dropped_is_never_a_502(
    start_proxy: StartProxy, scripted: ScriptedUpstream
) -> None:
    """Defect 7: an upstream that drops idle connections after a moment; requests sent
    around that moment. The idle connection is looked at before it is reused, and a GET
    whose connection closes before any byte of an answer goes again on a fresh one."""
    proxy = await start_proxy(scripted.url, upstream={"warm_connections": 0})
    request = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    statuses = []
    for gap in (0.0, 0.05, 0.1):
        # The upstream answers, then closes the connection `gap` later (as one that drops
        # idle connections): the next request finds it dropped, or closing.
        seen = await replay(proxy.port, scripted, Script("one", request, (ok(),), close_after=True))
        statuses.append(parse_response(seen.client).status)
        await asyncio.sleep(gap)
    assert statuses == [200, 200, 200]


async def test_a_get_on_a_connection_closed_before_answering_is_sent_again_once(
    start_proxy: StartProxy, scripted: ScriptedUpstream
) -> None:
    """The race the look before reuse cannot see: the connection closes as the request
    arrives. A GET goes once more on a fresh connection; a POST is not sent twice (RFC
    9110 §9.2.2): it gets the 502."""
    proxy = await start_proxy(scripted.url, upstream={"warm_connections": 0})
    get = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
    # First a request that leaves a kept-alive connection in the pool.
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    scripted.script = Script("first", get, (ok(),))
    scripted.requests = []
    writer.write(get)
    await read_head_and_body(reader)
    # The upstream reads the next request on that connection, then closes it unanswered;
    # it answers the same request on the next connection.
    scripted.script = Script("drop", get, (b"", ok(b"again")))
    scripted.requests = []
    with capture_logs() as logs:
        writer.write(get)
        async with asyncio.timeout(5):
            response = await read_head_and_body(reader)
    assert (response.status, response.body) == (200, b"again")
    assert len(scripted.requests) == 2
    [line] = [line for line in logs if line["event"] == "request"]
    assert line.get("retried") is True
    # A POST in the same place is not sent twice.
    post = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"
    scripted.script = Script("first", get, (ok(),))
    scripted.requests = []
    writer.write(get)
    await read_head_and_body(reader)
    scripted.script = Script("drop", post, (b"", ok(b"twice")))
    scripted.requests = []
    writer.write(post)
    async with asyncio.timeout(5):
        refused = await read_head_and_body(reader)
    writer.close()
    assert refused.status == 502
    assert len(scripted.requests) == 1


async def test_a_request_after_a_connection_close_request_is_not_read(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    """Defect 9: a valid `Connection: close` request followed by more bytes gets its
    answer; what follows is ignored (RFC 9112 §9.6), not refused."""
    proxy = await start_proxy()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        b"GET /one HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    response = parse_response(await read_until_closed(reader))
    writer.close()
    assert response.status == 200
    assert [seen.target for seen in fake.received] == ["/one"]


async def test_a_stalled_upload_gets_a_408_after_the_body_timeout(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    """Defect 9: a body that stops arriving is timed out (limits.body_timeout)."""
    proxy = await start_proxy(limits={"body_timeout": 0.3})
    with capture_logs() as logs:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
        async with asyncio.timeout(5):
            response = parse_response(await read_until_closed(reader))
        writer.close()
    assert response.status == 408
    assert json.loads(response.body)["error"]["code"] == "request_timeout"
    [line] = [line for line in logs if line["event"] == "request"]
    assert (line["outcome"], line["cause"]) == ("timeout", "request_timeout")


@pytest.mark.parametrize(
    "hosts",
    [
        pytest.param(b"Host: a\r\nHost: b\r\n", id="two"),
        pytest.param(b"Host: a/b\r\n", id="a-path"),
        pytest.param(b"Host: a b\r\n", id="a-space"),
        pytest.param(b"Host: user@a\r\n", id="user-info"),
    ],
)
async def test_a_repeated_or_malformed_host_is_a_400(
    proxy: RunningProxy, fake: FakeUpstream, hosts: bytes
) -> None:
    """Defect 9: RFC 9112 §3.2: 400, nothing forwarded."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /x HTTP/1.1\r\n" + hosts + b"\r\n")
    response = parse_response(await read_until_closed(reader))
    writer.close()
    assert response.status == 400
    assert fake.received == []


@pytest.mark.parametrize("method", [b"X-CUSTOM", b"REPORT", b"get", b"M-SEARCH"])
async def test_any_token_method_passes_as_sent(
    start_proxy: StartProxy, scripted: ScriptedUpstream, method: bytes
) -> None:
    """Defect 9: methods outside llhttp's list pass, as the README says methods do (the
    upstream here reads with h11, which takes any token as a method)."""
    proxy = await start_proxy(scripted.url)
    request = method + b" /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    seen = await replay(proxy.port, scripted, Script("method", request, (ok(),)))
    assert parse_response(seen.client).status == 200
    [arrived] = seen.requests
    assert arrived.startswith(method + b" /x HTTP/1.1\r\n")


async def test_an_http_1_0_answer_cut_upstream_reaches_the_client_as_a_reset(
    start_proxy: StartProxy, scripted: ScriptedUpstream
) -> None:
    """Defect 9: an HTTP/1.0 client can tell a close-delimited body's end only by the
    close: a cut is a reset, never a clean FIN."""
    proxy = await start_proxy(scripted.url)
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nab"
    seen = await replay(
        proxy.port, scripted, Script("cut", b"GET /x HTTP/1.0\r\n\r\n", (answer,), close_after=True)
    )
    assert seen.client.endswith(b"<reset>")
    assert seen.client.startswith(b"HTTP/1.0 200 OK\r\n")


async def test_at_shutdown_idle_connections_close_and_busy_ones_answer_connection_close(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    """From SIGTERM: idle kept-alive connections close at once; a busy one gets its
    answer with `Connection: close`; a new forwarded request gets a 503."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        fake.arrived.set()
        await release.wait()
        return web.Response(text="late")

    fake.handler = slow
    proxy = await start_proxy()
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    busy_writer.write(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
    async with asyncio.timeout(5):
        await fake.arrived.wait()
    proxy.listener.begin_shutdown()
    async with asyncio.timeout(5):
        assert await idle_reader.read() == b""
    late_reader, late_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    late_writer.write(b"GET /new HTTP/1.1\r\nHost: a\r\n\r\n")
    late = parse_response(await read_until_closed(late_reader))
    release.set()
    busy = parse_response(await read_until_closed(busy_reader))
    for writer in (idle_writer, busy_writer, late_writer):
        writer.close()
    assert (busy.status, busy.header("Connection"), busy.body) == (200, "close", b"late")
    assert (late.status, json.loads(late.body)["error"]["code"]) == (503, "proxy_shutting_down")


def test_the_new_limits_have_their_defaults() -> None:
    limits = Settings().limits
    assert (limits.body_timeout, limits.websocket_idle_timeout) == (60.0, 600.0)


async def test_a_pipelined_head_left_unfinished_is_timed_from_when_its_turn_comes(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    """A head that began behind a request in flight is still bound by
    limits.header_timeout: its time starts when the request before it is answered."""
    proxy = await start_proxy(limits={"header_timeout": 0.3})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    with capture_logs() as logs:
        writer.write(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost:")
        first = await read_head_and_body(reader)
        async with asyncio.timeout(5):
            rest = await read_until_closed(reader)
    writer.close()
    assert (first.status, rest) == (200, b"")
    assert [seen.target for seen in fake.received] == ["/one"]
    assert any("header_timeout" in line["event"] for line in logs)


# --- What the stateful fuzz (test_fuzz.py) found, each as its own test.


async def test_the_proxy_s_error_answer_to_head_ends_at_its_head(
    start_proxy: StartProxy, scripted: ScriptedUpstream
) -> None:
    """RFC 9110 §9.3.2: an answer to HEAD has no body, the proxy's own JSON error
    included; a body would be read as the start of the next answer."""
    proxy = await start_proxy(scripted.url, upstream={"warm_connections": 0})
    request = b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\nHEAD /y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    seen = await replay(proxy.port, scripted, Script("head", request, (b"", b"")))
    first, _, rest = seen.client.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 502 ")
    assert rest.startswith(b"HTTP/1.1 502 ")  # the next answer, not a JSON body
    assert rest.endswith(b"\r\n\r\n")


async def test_a_refusal_is_not_written_after_an_answer_that_ended_the_connection(
    proxy: RunningProxy, scripted: ScriptedUpstream, start_proxy: StartProxy
) -> None:
    """An answer that says `Connection: close` (or ends a close-delimited body) is the
    last thing on the connection: a malformed request behind it is logged, not answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    )
    answered = await read_until_closed(reader)
    writer.close()
    assert answered.count(b"HTTP/1.1 ") == 1
    assert answered.startswith(b"HTTP/1.1 400 ")
    # The same behind a body the close delimits (an HTTP/1.0 client, no length).
    through = await start_proxy(scripted.url)
    request = (
        b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n"
    )
    seen = await replay(
        through.port,
        scripted,
        Script("delimited", request, (b"HTTP/1.1 200 OK\r\n\r\nhello",), close_after=True),
    )
    assert seen.client == b"HTTP/1.0 200 OK\r\n\r\nhello"
    assert [line["event"] for line in seen.lines] == ["request", "rejected"]


async def test_closing_a_connection_the_client_just_reset_does_not_break_shutdown(
    start_proxy: StartProxy,
) -> None:
    """A client that resets mid-body, with the proxy closing before its loop has read
    the reset: the half-close fails, the connection is aborted, and the shutdown goes on
    (the pool, the timers and the observers all closed)."""
    proxy = await start_proxy()
    sock = socket.create_connection(("127.0.0.1", proxy.port))
    sock.sendall(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhel")
    await asyncio.sleep(0.2)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    await proxy.listener.close()
    assert proxy.listener.deadlines.watched == set()


async def test_a_body_waiting_its_turn_is_not_timed_out_for_the_proxy_s_wait(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    """A stalled body is the client's doing only while the proxy reads: time a request
    waits behind another (reading paused) does not count against limits.body_timeout."""

    async def slow(request: web.Request) -> web.StreamResponse:
        if request.path == "/slow":
            await asyncio.sleep(0.8)
        await request.read()
        return web.Response(text="ok")

    fake.handler = slow
    proxy = await start_proxy(limits={"body_timeout": 0.5})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /b HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n"
        b"Connection: close\r\n\r\n"
    )
    first = await read_head_and_body(reader)
    async with asyncio.timeout(5):
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    await asyncio.sleep(0.2)
    writer.write(b"hello")
    second = parse_response(await read_until_closed(reader))
    writer.close()
    assert (first.status, second.status) == (200, 200)
