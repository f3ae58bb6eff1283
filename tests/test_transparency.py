"""What no rule rewrites passes unchanged: each transparency rule, one test, real sockets."""

from __future__ import annotations

import asyncio
import gzip
import os

import aiohttp
import pytest
import zstandard
from aiohttp import web
from yarl import URL

from tests.fake_upstream import CLOUDFLARE_403, MINIMAL_SSE, FakeUpstream
from tests.harness import RunningProxy, StartProxy, parse_response, raw_request

CODEX = "/backend-api/codex/responses"


@pytest.mark.parametrize(
    ("path", "upstream_path"),
    [
        ("/backend-api/responses", CODEX),
        ("/backend-api/responses?x=1&y=%2F", CODEX + "?x=1&y=%2F"),
        ("/backend-api/responses/compact?x=1", CODEX + "/compact?x=1"),
        ("/backend-api/v1/responses?a=b", CODEX + "?a=b"),
        ("/backend-api/codex/v1/responses/r1?z", CODEX + "/r1?z"),
        ("/backend-api/v1/codex/responses?stream=true", CODEX + "?stream=true"),
    ],
)
async def test_every_default_form_is_rewritten_with_query_kept(
    proxy: RunningProxy,
    fake: FakeUpstream,
    client: aiohttp.ClientSession,
    path: str,
    upstream_path: str,
) -> None:
    url = URL(f"http://127.0.0.1:{proxy.port}{path}", encoded=True)
    async with client.post(url, data=b"{}") as response:
        body = await response.read()
    assert fake.last.target == upstream_path
    assert response.status == 200
    assert body == MINIMAL_SSE


@pytest.mark.parametrize(
    "path",
    [
        CODEX,
        CODEX + "/compact?x=1",
        "/backend-api/responsesX",
        "/backend-api/%72esponses",
        "/backend-api%2Fresponses?q=%2e%2e",
        "/backend-api/models?client_version=0.169.0",
        "/a/../backend-api/responses",
        "/backend-api/./responses",
        "/backend-api/models?",  # an empty query is not the same target as no query
        "/backend-api/models??",
    ],
)
async def test_canonical_and_look_alike_paths_reach_upstream_unchanged(
    proxy: RunningProxy, fake: FakeUpstream, path: str
) -> None:
    raw = await raw_request(
        proxy.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert parse_response(raw).status in (200, 403)
    assert fake.last.target == path


async def test_a_rewritten_target_keeps_an_empty_query(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    raw = await raw_request(
        proxy.port,
        b"POST /backend-api/responses? HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert parse_response(raw).status == 200
    assert fake.last.target == CODEX + "?"


async def test_request_headers_pass_byte_equal_in_order_with_case_and_repeats(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    sent = [
        ("version", "0.169.0"),
        ("X-A", "1"),
        ("x-a", "2"),
        ("X-A", "3"),
        ("authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2ln"),
        ("ChatGPT-Account-Id", "00000000-1111-2222-3333-444444444444"),
        ("originator", "codex_exec"),
        ("x-codex-turn-metadata", '{"session_id":"s1","turn":"t 1"}'),
        ("session_id", "with_underscore"),
        ("Cookie", "__cf_bm=abc; _cfuvid=def"),
        ("Cookie", "second=1"),
        ("accept", "text/event-stream"),
        ("content-type", "application/json"),
        ("x-empty", ""),
        ("x-unicode", "café ☕"),
        ("host", "127.0.0.1:1"),
        ("content-length", "2"),
    ]
    head = "".join(f"{k}: {v}\r\n" for k, v in sent)
    data = f"POST /backend-api/responses HTTP/1.1\r\n{head}Connection: close\r\n\r\n{{}}"
    await raw_request(proxy.port, data.encode())
    expected = [(k, v) if k != "host" else (k, f"127.0.0.1:{fake.port}") for k, v in sent]
    assert fake.last.headers == expected
    assert fake.last.body == b"{}"


async def test_no_header_is_added_to_a_bare_request(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    await raw_request(proxy.port, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert fake.last.headers == [("Host", f"127.0.0.1:{fake.port}")]


async def test_bodyless_post_gets_no_body_headers(proxy: RunningProxy, fake: FakeUpstream) -> None:
    await raw_request(proxy.port, b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert fake.last.headers == [("Host", f"127.0.0.1:{fake.port}")]
    assert fake.last.body == b""


async def test_host_is_added_first_when_the_client_sent_none(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    await raw_request(proxy.port, b"GET /x HTTP/1.0\r\nX-One: 1\r\n\r\n")
    assert fake.last.headers == [("Host", f"127.0.0.1:{fake.port}"), ("X-One", "1")]


async def test_hop_by_hop_headers_are_stripped(proxy: RunningProxy, fake: FakeUpstream) -> None:
    data = (
        b"GET /x HTTP/1.1\r\nHost: a\r\n"
        b"Connection: keep-alive, X-Hop, x-other-hop\r\n"
        b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n"
        b"Trailer: X-T\r\nUpgrade: h2c\r\nProxy-Authorization: Basic dTpw\r\n"
        b"X-Hop: 1\r\nX-Other-Hop: 2\r\nX-Kept: 3\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(data)
    await reader.readuntil(b"\r\n\r\n")
    writer.close()
    assert fake.last.headers == [("Host", f"127.0.0.1:{fake.port}"), ("X-Kept", "3")]


async def test_expect_100_continue_is_answered_here_and_not_forwarded(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
        b"Content-Length: 5\r\nConnection: close\r\n\r\n"
    )
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    response = parse_response(await reader.read())
    writer.close()
    assert response.status == 200
    assert fake.last.body == b"hello"
    assert [k for k, _ in fake.last.headers] == ["Host", "Content-Length"]


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
async def test_compressed_request_bodies_pass_byte_equal(
    proxy: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession, encoding: str
) -> None:
    plain = b'{"model":"gpt-5","input":"' + os.urandom(1000).hex().encode() + b'"}'
    body = (
        zstandard.ZstdCompressor(level=3).compress(plain)
        if encoding == "zstd"
        else gzip.compress(plain)
    )
    headers = {"content-encoding": encoding, "content-type": "application/json"}
    async with client.post(
        proxy.make_url("/backend-api/responses"), data=body, headers=headers
    ) as r:
        assert r.status == 200
    assert fake.last.body == body
    assert ("content-encoding", encoding) in fake.last.headers
    assert ("Content-Length", str(len(body))) in fake.last.headers


async def test_chunked_request_body_stays_chunked(proxy: RunningProxy, fake: FakeUpstream) -> None:
    data = (
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    await raw_request(proxy.port, data)
    assert fake.last.body == b"hello world"
    assert fake.last.headers == [
        ("Host", f"127.0.0.1:{fake.port}"),
        ("Transfer-Encoding", "chunked"),
    ]


async def test_compressed_response_bytes_pass_unchanged(
    proxy: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    compressed = gzip.compress(b"x" * 10000)

    async def gzipped(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        return web.Response(
            body=compressed,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    fake.handler = gzipped
    async with client.get(proxy.make_url("/x")) as response:
        assert await response.read() == compressed
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Length"] == str(len(compressed))


async def test_response_headers_pass_in_order_with_case_repeats_and_no_additions(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    raw_upstream = (
        b"HTTP/1.1 299 Custom Reason\r\nx-request-id: req_1\r\nSet-Cookie: a=1; Path=/\r\n"
        b"cf-ray: 8f00-AMS\r\nset-cookie: b=2; HttpOnly\r\nSet-Cookie: __cf_bm=x; Secure\r\n"
        b"X-Codex-Primary-Used-Percent: 12\r\nContent-Length: 2\r\n\r\nok"
    )
    fake.answer_raw(raw_upstream)
    raw = await raw_request(proxy.port, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    response = parse_response(raw)
    assert response.status_line == "HTTP/1.1 299 Custom Reason"
    assert response.headers == [
        ("x-request-id", "req_1"),
        ("Set-Cookie", "a=1; Path=/"),
        ("cf-ray", "8f00-AMS"),
        ("set-cookie", "b=2; HttpOnly"),
        ("Set-Cookie", "__cf_bm=x; Secure"),
        ("X-Codex-Primary-Used-Percent", "12"),
        ("Content-Length", "2"),
        ("Connection", "close"),
    ]
    assert response.body == b"ok"


async def test_cookies_are_never_replayed(
    proxy: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    async def set_cookie(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        return web.Response(headers={"Set-Cookie": "__cf_bm=secret; Path=/"})

    fake.handler = set_cookie
    await raw_request(proxy.port, b"GET /first HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    await raw_request(proxy.port, b"GET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert fake.last.target == "/second"
    assert fake.last.headers == [("Host", f"127.0.0.1:{fake.port}")]


async def test_redirects_are_returned_not_followed(
    proxy: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        raise web.HTTPFound("http://127.0.0.1:9/elsewhere")

    fake.handler = redirect
    async with client.post(
        proxy.make_url("/backend-api/responses"), data=b"{}", allow_redirects=False
    ) as response:
        assert response.status == 302
        assert response.headers["Location"] == "http://127.0.0.1:9/elsewhere"
    assert len(fake.received) == 1


async def test_429_with_retry_after_passes_through(
    proxy: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    async def limited(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        return web.json_response(
            {"error": {"type": "usage_limit_reached"}}, status=429, headers={"Retry-After": "17"}
        )

    fake.handler = limited
    async with client.post(proxy.make_url("/backend-api/responses"), data=b"{}") as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "17"
        assert await response.json() == {"error": {"type": "usage_limit_reached"}}


async def test_403_html_page_passes_through(
    start_proxy: StartProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(rewrite={"rules": ()})
    async with client.post(proxy.make_url("/backend-api/responses"), data=b"{}") as response:
        assert response.status == 403
        assert response.headers["Content-Type"] == "text/html; charset=UTF-8"
        assert response.headers["cf-ray"] == "8f00fake0000-AMS"
        assert await response.read() == CLOUDFLARE_403


@pytest.mark.parametrize(
    ("method", "status"), [("HEAD", 200), ("GET", 204), ("GET", 304), ("DELETE", 204)]
)
async def test_head_204_and_304_carry_no_body(
    proxy: RunningProxy, fake: FakeUpstream, method: str, status: int
) -> None:
    async def empty(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        if status == 200:
            return web.Response(body=b"x" * 123, headers={"Content-Type": "text/plain"})
        return web.Response(status=status, headers={"ETag": '"v1"'})

    fake.handler = empty
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(f"{method} /x HTTP/1.1\r\nHost: a\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    # The connection stays usable: the next response follows with nothing in between.
    writer.write(b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    rest = await reader.read()
    writer.close()
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    if method == "HEAD":
        assert b"Content-Length: 123\r\n" in head
    assert rest.startswith(b"HTTP/1.1 ")
    assert fake.last.target == "/next"


async def test_keep_alive_reuses_both_connections(proxy: RunningProxy, fake: FakeUpstream) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    for index in range(3):
        writer.write(f"GET /{index} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
    writer.close()
    assert [r.target for r in fake.received] == ["/0", "/1", "/2"]
    assert len({r.peer for r in fake.received}) == 1


async def test_large_request_body_streams_byte_equal(
    proxy: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    body = os.urandom(32 * 1024 * 1024)

    async def chunks() -> object:
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    async with client.post(proxy.make_url("/backend-api/responses"), data=chunks()) as response:
        assert response.status == 200
    assert fake.last.body == body


async def test_unknown_expectation_is_ignored_and_not_forwarded(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    data = b"POST /x HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    response = parse_response(await raw_request(proxy.port, data))
    assert response.status == 200
    assert fake.last.headers == [("Host", f"127.0.0.1:{fake.port}"), ("Content-Length", "2")]
    assert fake.last.body == b"hi"
