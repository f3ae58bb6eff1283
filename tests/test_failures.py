"""Failures: JSON errors with a distinct status before headers, a visible cut after them."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import struct
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from tests.fake_upstream import FakeUpstream, sse_event
from tests.harness import (
    RunningProxy,
    StartProxy,
    parse_response,
    raw_request,
    read_head_and_body,
    run_isolated,
)

SSE_HEADERS = {"Content-Type": "text/event-stream"}


@pytest.fixture(autouse=True)
async def nothing_left_behind() -> AsyncIterator[None]:
    """Every fault below leaves no socket, file descriptor or task behind, counted from
    this process once the test and its servers are done (this fixture is set up first,
    so it is torn down last)."""
    before = open_fds()
    yield
    # Closing transports finishes over the next loop iterations: allow a few seconds.
    for _ in range(500):
        gc.collect()
        leaked, tasks = open_fds() - before, asyncio.all_tasks() - {asyncio.current_task()}
        if not leaked and not tasks:
            break
        await asyncio.sleep(0.01)
    assert not leaked, f"file descriptors left open: {sorted(leaked)}"
    assert not tasks, f"tasks left running: {tasks}"


def open_fds() -> set[str]:
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.add(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
        except FileNotFoundError:  # the listing's own descriptor, already closed
            continue
    return fds


def request_lines(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["event"] == "request"]


async def expect_error(
    proxy: RunningProxy, status: int, code: str, data: bytes | None = None
) -> dict[str, Any]:
    request = (
        data
        or b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    response = parse_response(await raw_request(proxy.port, request))
    assert response.status == status
    assert response.header("Content-Type") == "application/json"
    error: dict[str, Any] = json.loads(response.body)["error"]
    assert error["type"] == "proxy_error"
    assert error["code"] == code
    assert error["message"]
    return error


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_unreachable_upstream_is_502_json(start_proxy: StartProxy) -> None:
    port = closed_port()
    proxy = await start_proxy(f"http://127.0.0.1:{port}")
    with capture_logs() as logs:
        error = await expect_error(proxy, 502, "upstream_unreachable")
    assert f"127.0.0.1:{port}" in error["message"]
    [line] = request_lines(logs)
    assert line["outcome"] == "upstream_unreachable"
    assert line["status"] == 502
    assert line["detail"] == f"connection refused by 127.0.0.1:{port}"


async def test_connect_timeout_is_504_json(start_proxy: StartProxy) -> None:
    """A TLS upstream whose handshake never answers: the connect timeout fires."""
    accepted: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda _, w: accepted.append(w), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    async with silent:
        proxy = await start_proxy(f"https://127.0.0.1:{port}", upstream={"connect_timeout": 0.3})
        with capture_logs() as logs:
            error = await expect_error(proxy, 504, "upstream_connect_timeout")
        for writer in accepted:
            writer.close()
    assert "0.3 s" in error["message"]
    assert request_lines(logs)[0]["outcome"] == "timeout"
    assert request_lines(logs)[0]["detail"] == (
        f"no connection to 127.0.0.1:{port} within upstream.connect_timeout"
    )


async def test_no_response_within_idle_timeout_is_504_json(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    fake.handler = stall
    proxy = await start_proxy(upstream={"idle_timeout": 0.3})
    with capture_logs() as logs:
        await expect_error(proxy, 504, "upstream_timeout")
    assert request_lines(logs)[0]["outcome"] == "timeout"


async def test_body_over_limit_by_content_length_is_413_before_upstream(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(limits={"max_body_size": 10})
    data = (
        b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nConnection: close\r\n\r\n"
        + b"x" * 11
    )
    with capture_logs() as logs:
        await expect_error(proxy, 413, "request_too_large", data)
    assert fake.received == []
    assert request_lines(logs)[0]["outcome"] == "rejected"


async def test_chunked_body_over_limit_is_413_and_upstream_sees_no_more(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    limit = 64 * 1024
    seen = bytearray()

    async def count(request: web.Request) -> web.StreamResponse:
        try:
            async for chunk in request.content.iter_any():
                seen.extend(chunk)
        except aiohttp.ClientPayloadError:
            pass
        return web.Response()

    fake.handler = count
    proxy = await start_proxy(limits={"max_body_size": limit})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    piece = b"y" * 16384
    try:
        for _ in range(8):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.01)
    except ConnectionError:
        pass
    response = await read_head_and_body(reader)
    writer.close()
    assert response.status == 413
    assert response.header("Connection") == "close"
    assert len(seen) <= limit


def reset(request: web.Request) -> None:
    """Close the connection with a TCP reset (SO_LINGER 0), not an orderly FIN."""
    assert request.transport is not None
    sock = request.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    request.transport.abort()


@pytest.mark.parametrize("ending", ["close", "reset"])
async def test_upstream_cut_mid_stream_reaches_client_as_a_cut(
    proxy: RunningProxy, fake: FakeUpstream, ending: str
) -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        await response.write(sse_event("response.created", {}))
        await response.drain()
        await asyncio.sleep(0.05)
        if ending == "reset":
            reset(request)
        else:
            assert request.transport is not None
            request.transport.close()
        return response

    fake.handler = cut
    with capture_logs() as logs:
        raw = await raw_request(
            proxy.port,
            b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        )
    response = parse_response(raw)
    assert response.status == 200
    assert response.body == sse_event("response.created", {})
    assert not response.complete
    assert request_lines(logs)[0]["outcome"] == "upstream_cut"


async def test_upstream_short_content_length_reaches_client_as_a_cut(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    fake.answer_raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
    response = parse_response(await raw_request(proxy.port, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"))
    assert response.status == 200
    assert response.header("Content-Length") == "100"
    assert response.body == b"only part"
    assert not response.complete


async def test_upstream_silent_mid_stream_reaches_client_as_a_cut(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        await response.write(sse_event("response.created", {}))
        await asyncio.sleep(30)
        return response

    fake.handler = stall
    proxy = await start_proxy(upstream={"idle_timeout": 0.3})
    with capture_logs() as logs:
        response = parse_response(
            await raw_request(proxy.port, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        )
    assert response.body == sse_event("response.created", {})
    assert not response.complete
    assert request_lines(logs)[0]["outcome"] == "timeout"


@pytest.mark.parametrize(
    ("script", "code"),
    [
        (b"", "upstream_disconnected"),
        (b"NOT HTTP AT ALL\r\n\r\n", "upstream_bad_response"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "upstream_bad_response",
        ),
    ],
)
async def test_broken_upstream_before_headers_is_502_json(
    proxy: RunningProxy, fake: FakeUpstream, script: bytes, code: str
) -> None:
    fake.answer_raw(script)
    await expect_error(proxy, 502, code)


async def streaming_fake(fake: FakeUpstream, *, before_headers: bool) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        if before_headers:
            await asyncio.sleep(30)
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        for n in range(3000):
            await response.write(sse_event("response.output_text.delta", {"n": n}))
            await asyncio.sleep(0.01)
        return response

    fake.handler = endless


@pytest.mark.parametrize("before_headers", [True, False])
async def test_client_disconnect_cancels_upstream_at_once(
    proxy: RunningProxy, fake: FakeUpstream, before_headers: bool
) -> None:
    await streaming_fake(fake, before_headers=before_headers)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    with capture_logs() as logs:
        writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        if before_headers:
            await fake.arrived.wait()
        else:
            await reader.readuntil(b"\n\n")
        writer.close()
        async with asyncio.timeout(5):
            await fake.cancelled.wait()
        for _ in range(100):
            if request_lines(logs):
                break
            await asyncio.sleep(0.01)
    assert request_lines(logs)[0]["outcome"] == "client_disconnected"


async def test_client_leaving_mid_upload_cancels_the_upstream_request(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    upstream_got = bytearray()

    async def slow_reader(request: web.Request) -> web.StreamResponse:
        fake.arrived.set()
        try:
            async for chunk in request.content.iter_any():
                upstream_got.extend(chunk)
        except aiohttp.ClientPayloadError:
            fake.cancelled.set()
        return web.Response()

    fake.handler = slow_reader
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    with capture_logs() as logs:
        writer.write(
            b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n"
            + b"z" * 5000
        )
        await writer.drain()
        await fake.arrived.wait()
        writer.close()
        async with asyncio.timeout(5):
            await fake.cancelled.wait()
        for _ in range(100):
            if request_lines(logs):
                break
            await asyncio.sleep(0.01)
    assert len(upstream_got) < 1000000
    assert request_lines(logs)[0]["outcome"] == "client_disconnected"


async def test_upstream_header_that_cannot_be_relayed_unchanged_is_502(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    fake.answer_raw(b"HTTP/1.1 200 OK\r\nX-Name: caf\xe9\r\nContent-Length: 0\r\n\r\n")
    error = await expect_error(proxy, 502, "upstream_bad_response")
    assert "X-Name" in error["message"]


async def test_oversized_body_announced_with_expect_gets_413_instead_of_100(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(limits={"max_body_size": 10})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
        b"Content-Length: 11\r\n\r\n"
    )
    response = await read_head_and_body(reader)
    writer.close()
    assert response.status == 413
    assert json.loads(response.body)["error"]["code"] == "request_too_large"
    assert fake.received == []


async def test_dns_failure_is_502_json_with_the_cause_logged() -> None:
    """Resolution fails for real, inside a network namespace with only loopback (so no
    query can leave this machine); needs root, as CI has."""
    result = await run_isolated("-n", "ip link set lo up", "tests.dns_failure_driver")
    assert result["status"] == 502
    error = json.loads(result["body"])["error"]
    assert error["code"] == "upstream_unreachable"
    assert "cannot resolve the upstream host of https://upstream.invalid" in error["message"]
    assert (result["line"]["outcome"], result["line"]["cause"]) == (
        "upstream_unreachable",
        "upstream_unreachable",
    )
    assert result["line"]["detail"].startswith("DNS name not found: upstream.invalid (")


async def test_upstream_reset_before_headers_is_502_json(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    async def resets(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        reset(request)
        return web.Response()

    fake.handler = resets
    with capture_logs() as logs:
        await expect_error(proxy, 502, "upstream_disconnected")
    assert request_lines(logs)[0]["outcome"] == "upstream_cut"


async def test_broken_chunked_framing_mid_body_reaches_client_as_a_cut(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        assert request.transport is not None
        request.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"6\r\nevent:\r\n"
        )
        # Headers and a first chunk are through; then the framing breaks.
        await asyncio.sleep(0.1)
        request.transport.write(b"zz\r\nnot a chunk\r\n")
        await asyncio.sleep(0.05)
        request.transport.close()
        return web.Response()

    fake.handler = broken
    with capture_logs() as logs:
        response = parse_response(
            await raw_request(proxy.port, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        )
    assert response.status == 200
    assert response.body == b"event:"
    assert not response.complete
    [line] = request_lines(logs)
    assert (line["outcome"], line["cause"]) == ("upstream_cut", "upstream_cut_mid_body")
