"""The control plane behind the same port: aiohttp answers /_proxy requests that the
connection parsed, whatever their framing, however many arrive before it is ready."""

from __future__ import annotations

import asyncio
import json

from tests.fake_upstream import FakeUpstream
from tests.harness import (
    RunningProxy,
    StartProxy,
    parse_response,
    raw_request,
    read_head_and_body,
    read_until_closed,
)

HEALTH = b"GET /_proxy/healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


async def test_requests_that_arrive_while_the_control_plane_starts_are_all_answered(
    start_proxy: StartProxy,
) -> None:
    """aiohttp is imported on the first /_proxy request: those that come meanwhile wait."""
    proxy = await start_proxy()
    answers = await asyncio.gather(*(raw_request(proxy.port, HEALTH) for _ in range(8)))
    assert [parse_response(answer).status for answer in answers] == [200] * 8


async def test_a_control_request_with_a_body_leaves_the_connection_usable(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"POST /_proxy/nothing HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        refused = await read_head_and_body(reader)
        writer.write(b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        after = parse_response(await read_until_closed(reader))
    finally:
        writer.close()
    assert refused.status == 404
    assert json.loads(refused.body)["error"]["code"] == "not_found"
    assert after.status == 200
    assert fake.last.target == "/after"


async def test_a_control_request_whose_chunked_body_breaks_is_refused_and_ends_there(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(
            b"POST /_proxy/nothing HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n"
        )
        await writer.drain()
        await asyncio.sleep(0.1)  # the body is not whole: nothing is answered yet
        writer.write(b"zz\r\nnot a chunk\r\n")
        answer = await read_until_closed(reader)
    finally:
        writer.close()
    # The control plane gets a request once its body is whole; this one breaks first: one
    # answer, the proxy's 400, then the connection ends (what followed could not be told
    # from a next request).
    assert answer.count(b"HTTP/1.1 ") == 1
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert fake.received == []


async def test_a_page_reading_the_event_stream_may_leave_at_any_time(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(inspector={"enabled": True})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /_proxy/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await reader.readuntil(b"event: snapshot")
    writer.transport.abort()
    # The proxy goes on: a forwarded request and its own endpoints answer.
    assert parse_response(await raw_request(proxy.port, HEALTH)).status == 200
    forwarded = await raw_request(
        proxy.port, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    assert parse_response(forwarded).status == 200
