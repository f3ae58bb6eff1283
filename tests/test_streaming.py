"""Streaming: events leave as they arrive, huge lines pass intact, many streams at once."""

from __future__ import annotations

import asyncio
import base64
import os

import aiohttp
from aiohttp import web

from tests.fake_upstream import FakeUpstream, sse_event
from tests.harness import RunningProxy, stall_count

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8"}


async def test_sse_is_streamed_by_construction(
    proxy: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    """The fake sends event n+1 only after the test has read event n: a buffering proxy
    would deadlock here instead of passing."""
    read = [asyncio.Event() for _ in range(5)]

    async def gated(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        for n, seen in enumerate(read):
            await response.write(sse_event("response.output_text.delta", {"n": n}))
            await seen.wait()
        await response.write_eof()
        return response

    fake.handler = gated
    async with asyncio.timeout(10):
        async with client.post(proxy.make_url("/backend-api/responses"), data=b"{}") as response:
            for n, seen in enumerate(read):
                event = await response.content.readuntil(b"\n\n")
                assert event == sse_event("response.output_text.delta", {"n": n})
                seen.set()
            assert await response.read() == b""


async def test_multi_megabyte_single_line_event_passes_intact(
    proxy: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    image = base64.b64encode(os.urandom(6 * 1024 * 1024)).decode()  # an 8 MiB line
    stream = (
        sse_event("response.created", {"response": {"id": "r1"}})
        + sse_event(
            "response.output_item.done",
            {"item": {"type": "image_generation_call", "result": image}},
        )
        + sse_event("response.completed", {"response": {"id": "r1"}})
    )

    async def big(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        for start in range(0, len(stream), 100_000):
            await response.write(stream[start : start + 100_000])
        await response.write_eof()
        return response

    fake.handler = big
    async with client.post(proxy.make_url("/backend-api/responses"), data=b"{}") as response:
        assert await response.read() == stream


async def test_hundred_concurrent_streams(
    proxy: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    streams = 100
    all_open = asyncio.Event()
    opened = 0

    async def held(request: web.Request) -> web.StreamResponse:
        nonlocal opened
        await fake.record(request)
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        await response.write(sse_event("response.created", {"id": request.raw_path}))
        opened += 1
        if opened == streams:
            all_open.set()
        # Every stream is open upstream at the same time before any finishes.
        await all_open.wait()
        await response.write(sse_event("response.completed", {"id": request.raw_path}))
        await response.write_eof()
        return response

    fake.handler = held
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as many:

        async def one(index: int) -> bytes:
            url = proxy.make_url(f"/backend-api/responses?i={index}")
            async with many.post(url, data=b"{}") as response:
                return await response.read()

        async with asyncio.timeout(30):
            bodies = await asyncio.gather(*(one(i) for i in range(streams)))
    for index, body in enumerate(bodies):
        target = f"/backend-api/codex/responses?i={index}"
        assert body == sse_event("response.created", {"id": target}) + sse_event(
            "response.completed", {"id": target}
        )


async def test_slow_reader_backpressure_reaches_the_upstream(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    """A client that stops reading makes the upstream's writes wait; the proxy holds a
    bounded amount, never the whole stream."""
    chunk = os.urandom(256 * 1024)
    chunks = 400  # 100 MiB in all
    sent = 0
    progress = asyncio.Event()

    async def firehose(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        await fake.record(request)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        for _ in range(chunks):
            await response.write(chunk)
            sent += 1
            progress.set()
        await response.write_eof()
        return response

    fake.handler = firehose
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port, limit=64 * 1024)
    writer.write(b"GET /firehose HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    stalled_at = await stall_count(progress, lambda: sent)
    # Socket buffers on three hops hold some megabytes; 100 MiB must not have gone out.
    assert stalled_at * len(chunk) < 32 * 1024 * 1024, f"{stalled_at} chunks left the upstream"
    received = 0
    async with asyncio.timeout(60):
        while data := await reader.read(1 << 20):
            received += len(data)
    writer.close()
    assert sent == chunks
    assert received >= chunks * len(chunk)
