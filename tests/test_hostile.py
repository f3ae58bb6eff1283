"""Hostile clients: smuggling shapes, odd targets, oversized heads and bodies, slow and idle
connections. Raw bytes on real sockets; the fake upstream says what got through.

aiohttp's C (llhttp) parser refuses every malformed shape below before the proxy's handler
runs; the proxy answers with its JSON error and closes the connection, so bytes after the
bad request are never parsed as a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer
from structlog.testing import capture_logs

from proxy.settings import Settings, keys
from tests.fake_upstream import CANONICAL, MINIMAL_SSE, FakeUpstream
from tests.harness import (
    RawResponse,
    RunningProxy,
    StartProxy,
    parse_response,
    raw_request,
    read_head_and_body,
    read_until_closed,
)
from tests.proc import ProxyProcess, start_proxy_process

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtdXNlciJ9.c2lnbmF0dXJlLXNlY3JldA"
HEADER_LIMIT = Settings().limits.max_header_size
BODY_LIMIT = 1000


Line = Mapping[str, Any]


def request_lines(logs: Sequence[Line]) -> list[Line]:
    return [line for line in logs if line["event"] == "request"]


def rejections(logs: Sequence[Line]) -> list[Line]:
    return [line for line in logs if line.get("outcome") == "rejected"]


def split_responses(raw: bytes) -> list[RawResponse]:
    """Every Content-Length response in what a connection sent before it closed."""
    responses = []
    while raw:
        head, end, rest = raw.partition(b"\r\n\r\n")
        assert end, f"an incomplete response head: {raw[:200]!r}"
        response = parse_response(head + end)
        assert response.header("Transfer-Encoding") is None
        length = int(response.header("Content-Length") or 0)
        response.body, raw = rest[:length], rest[length:]
        response.complete = len(response.body) == length
        responses.append(response)
    return responses


def refused(raw: bytes, status: int) -> dict[str, Any]:
    """The error of a refused request: its only response, JSON, then the connection closed."""
    [response] = split_responses(raw)
    assert response.status == status
    assert response.complete
    assert response.header("Content-Type") == "application/json"
    error: dict[str, Any] = json.loads(response.body)["error"]
    assert error["type"] == "proxy_error"
    assert error["code"]
    assert error["message"]
    return error


@contextlib.asynccontextmanager
async def running(fake: FakeUpstream, **env: str) -> AsyncIterator[ProxyProcess]:
    """The real proxy in front of the fake; keys like `limits_max_body_size` set settings."""
    for key in env:
        section, _, name = key.partition("_")
        if name not in keys(section):
            pytest.fail(f"there is no setting {section}.{name} yet")
    environ = {f"CODEX_PATH_PROXY_{key.upper()}": value for key, value in env.items()}
    proxy = await start_proxy_process("--upstream", fake.url, env=environ)
    try:
        yield proxy
    finally:
        proxy.stop()
        await proxy.rest()


async def stopped(proxy: ProxyProcess) -> list[dict[str, Any]]:
    """SIGTERM, then every log line the process wrote."""
    proxy.process.send_signal(signal.SIGTERM)
    return await proxy.rest()


@pytest.fixture
async def other(aiohttp_server: AiohttpServer) -> FakeUpstream:
    """A second server that must never see a request through the proxy."""
    second = FakeUpstream()
    server = await aiohttp_server(second.app(), auto_decompress=False)
    assert server.port is not None
    second.port = server.port
    return second


@pytest.fixture
async def roomy(aiohttp_server: AiohttpServer) -> FakeUpstream:
    """A fake upstream that accepts header lines far longer than the proxy's limit."""
    upstream = FakeUpstream()
    server = await aiohttp_server(
        upstream.app(), auto_decompress=False, max_line_size=1 << 20, max_field_size=1 << 20
    )
    assert server.port is not None
    upstream.port = server.port
    return upstream


MALFORMED = {
    "cl-and-te": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-and-cl": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n",
    "duplicate-cl-same": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
    "duplicate-cl-different": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}",
    "cl-list": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n\r\n{}",
    "cl-non-numeric": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
    "cl-negative": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    "cl-plus-sign": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\n\r\n{}",
    "cl-hex": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0x2\r\n\r\n{}",
    "cl-inner-space": b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n{}",
    "obs-fold": b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n",
    "obs-fold-te": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "bare-lf": b"GET /x HTTP/1.1\nHost: a\n\n",
    "bare-lf-one-header": b"GET /x HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n",
    "bare-cr-one-header": b"GET /x HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n",
    "te-chunked-identity": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "te-identity": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n{}",
    "te-identity-with-cl": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\n{}",
    "te-gzip-alone": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n{}",
    "te-xchunked": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "te-chunked-twice": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "te-space-before-colon": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "chunk-size-overflow": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nab\r\n0\r\n\r\n",
    "chunk-size-invalid-char": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2g\r\nab\r\n0\r\n\r\n",
    "chunk-size-0x": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n",
    "chunk-size-negative": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\nab\r\n0\r\n\r\n",
    "chunk-size-trailing-space": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nab\r\n0\r\n\r\n",
    "chunk-size-bare-lf": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\nab\r\n0\r\n\r\n",
    "chunk-data-without-crlf": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",
    "chunk-extension-nul": b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2;\x00\r\nab\r\n0\r\n\r\n",
    "nul-in-value": b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n",
    "cr-in-value": b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n",
    "ctl-in-value": b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\x01b\r\n\r\n",
    "space-before-colon": b"GET /x HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n",
    "tab-before-colon": b"GET /x HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n",
    "header-without-colon": b"GET /x HTTP/1.1\r\nHost: a\r\nX-A b\r\n\r\n",
    "empty-header-name": b"GET /x HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n",
    "method-with-paren": b"G(ET /x HTTP/1.1\r\nHost: a\r\n\r\n",
    "method-with-space": b"GE T /x HTTP/1.1\r\nHost: a\r\n\r\n",
    "method-with-nul": b"G\x00ET /x HTTP/1.1\r\nHost: a\r\n\r\n",
    "method-not-a-token": b"GE[T /x HTTP/1.1\r\nHost: a\r\n\r\n",
    "space-in-target": b"GET /x y HTTP/1.1\r\nHost: a\r\n\r\n",
    "ctl-in-target": b"GET /x\x01y HTTP/1.1\r\nHost: a\r\n\r\n",
    "version-1.2": b"GET /x HTTP/1.2\r\nHost: a\r\n\r\n",
    "missing-host": b"GET /x HTTP/1.1\r\nX-A: b\r\n\r\n",
    "tls-hello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40,
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_request_is_refused_and_what_follows_is_never_a_request(
    proxy: RunningProxy, fake: FakeUpstream, data: bytes
) -> None:
    with capture_logs() as logs:
        raw = await raw_request(proxy.port, data + SMUGGLED)
    error = refused(raw, 400)
    assert fake.received == []
    [line] = rejections(logs)
    assert (line["status"], line["cause"]) == (400, error["code"])
    assert request_lines(logs) == []


async def test_malformed_request_after_a_good_one_on_the_same_connection(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
        first = await read_head_and_body(reader)
        writer.write(MALFORMED["cl-and-te"] + SMUGGLED)
        async with asyncio.timeout(10):
            rest = await reader.read()
    finally:
        writer.close()
    assert first.status == 200
    refused(rest, 400)
    assert [seen.target for seen in fake.received] == ["/one"]


async def test_pipelined_requests_reach_the_upstream_intact_and_in_order(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    body = b'{"model":"gpt-5","input":"two"}'
    data = (
        b"GET /first?a=1 HTTP/1.1\r\nHost: a\r\nX-N: 1\r\n\r\n"
        b"POST /backend-api/responses?stream=1 HTTP/1.1\r\nHost: a\r\n"
        b"Content-Length: %d\r\n\r\n%s"
        b"POST /third HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nthree\r\n0\r\n\r\n"
        b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    ) % (len(body), body)
    with capture_logs() as logs:
        responses = split_responses(await raw_request(proxy.port, data))
    assert [(seen.method, seen.target, seen.body) for seen in fake.received] == [
        ("GET", "/first?a=1", b""),
        ("POST", CANONICAL + "?stream=1", body),
        ("POST", "/third", b"three"),
        ("GET", "/last", b""),
    ]
    assert [response.status for response in responses] == [200, 200, 200, 200]
    assert json.loads(responses[0].body)["target"] == "/first?a=1"
    assert responses[1].body == MINIMAL_SSE
    assert json.loads(responses[2].body)["target"] == "/third"
    assert json.loads(responses[3].body)["target"] == "/last"
    assert [line["outcome"] for line in request_lines(logs)] == ["completed"] * 4


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param(b"Content-Length: %d\r\n\r\n%s" % (len(SMUGGLED), SMUGGLED), id="length"),
        pytest.param(
            b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED),
            id="chunked",
        ),
    ],
)
async def test_a_request_inside_a_body_stays_body(
    proxy: RunningProxy, fake: FakeUpstream, framing: bytes
) -> None:
    data = b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n" + framing
    [response] = split_responses(await raw_request(proxy.port, data))
    assert response.status == 200
    assert [(seen.target, seen.body) for seen in fake.received] == [("/x", SMUGGLED)]


LEGACY = "/backend-api/responses"


@pytest.mark.parametrize(
    ("target", "rule"),
    [
        ("/a%2Fb", None),
        ("/%2e%2e/x", None),
        ("/%2e%2e/%2e%2e/etc/passwd", None),
        ("/backend-api/%2e%2e/backend-api/responses", None),
        ("/backend-api/responses%2Fcompact", None),
        ("/backend-api/responses%2fcompact", None),
        ("/backend-api/responses%5Ccompact", None),
        ("/backend-api/responses\\compact", None),
        ("/backend-api%2Fresponses", None),
        ("/backend-api/%72esponses", None),
        ("/backend-api//responses", None),
        ("/backend-api/responses;v=1", None),
        ("/backend-api/responses/../../x", "legacy-responses"),
        ("/backend-api/responses/%2e%2e/%2e%2e/x", "legacy-responses"),
        ("/backend-api/responses//x", "legacy-responses"),
        ("/backend-api/responses?next=http://127.0.0.1:{other}/", "legacy-responses"),
        ("//127.0.0.1:{other}/x", None),
        ("//127.0.0.1:{other}", None),
        ("/\\127.0.0.1:{other}/x", None),
        ("/%2F127.0.0.1:{other}/x", None),
        ("/%2F%2F127.0.0.1:{other}/x", None),
        ("/%5C127.0.0.1:{other}/x", None),
        ("/@127.0.0.1:{other}/x", None),
        ("/x?@127.0.0.1:{other}", None),
        ("/..//127.0.0.1:{other}/x", None),
    ],
)
async def test_odd_paths_pass_raw_and_never_pick_a_host(
    proxy: RunningProxy, fake: FakeUpstream, other: FakeUpstream, target: str, rule: str | None
) -> None:
    target = target.format(other=other.port)
    # Only the legacy prefix itself is ever replaced; the rest goes on byte for byte.
    expected = CANONICAL + target.removeprefix(LEGACY) if rule else target
    data = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{other.port}\r\nConnection: close\r\n\r\n"
    with capture_logs() as logs:
        [response] = split_responses(await raw_request(proxy.port, data.encode()))
    assert response.status == 200
    assert [seen.target for seen in fake.received] == [expected]
    assert other.received == []
    [line] = request_lines(logs)
    assert line["path"] == target
    assert line["upstream_path"] == expected
    assert line["rule"] == rule


async def test_big_cookie_and_token_pass_unchanged(
    start_proxy: StartProxy, roomy: FakeUpstream
) -> None:
    proxy = await start_proxy(roomy.url)
    cookie = "__Secure-next-auth.session-token=" + "c" * (48 * 1024)
    token = "Bearer eyJ" + "t" * (16 * 1024)
    data = f"GET /backend-api/me HTTP/1.1\r\nHost: a\r\nCookie: {cookie}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
    [response] = split_responses(await raw_request(proxy.port, data.encode()))
    assert response.status == 200
    assert roomy.last.headers == [
        ("Host", f"127.0.0.1:{roomy.port}"),
        ("Cookie", cookie),
        ("Authorization", token),
    ]


async def test_big_response_headers_pass_unchanged(proxy: RunningProxy, fake: FakeUpstream) -> None:
    cookies = ["a=" + "x" * (48 * 1024), "b=" + "y" * (40 * 1024)]

    async def big_cookies(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        response = web.Response(body=b"ok")
        for cookie in cookies:
            response.headers.add("Set-Cookie", cookie)
        return response

    fake.handler = big_cookies
    [response] = split_responses(
        await raw_request(proxy.port, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    )
    assert response.status == 200
    assert [value for name, value in response.headers if name == "Set-Cookie"] == cookies
    assert response.body == b"ok"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        pytest.param(
            b"GET /x HTTP/1.1\r\nHost: a\r\nX-Big: %s\r\n\r\n" % (b"v" * (HEADER_LIMIT + 1)),
            431,
            id="value",
        ),
        pytest.param(
            b"GET /x HTTP/1.1\r\nHost: a\r\n%s: 1\r\n\r\n" % (b"N" * (HEADER_LIMIT + 1)),
            431,
            id="name",
        ),
        pytest.param(
            b"GET /x HTTP/1.1\r\nHost: a\r\n%s\r\n\r\n"
            % b"\r\n".join(b"X-%d: 1" % n for n in range(128)),
            431,
            id="129-headers",
        ),
        pytest.param(
            b"GET /%s HTTP/1.1\r\nHost: a\r\n\r\n" % (b"p" * HEADER_LIMIT), 414, id="target"
        ),
    ],
)
async def test_head_over_the_limits_gets_its_own_status_before_the_upstream(
    start_proxy: StartProxy, roomy: FakeUpstream, data: bytes, status: int
) -> None:
    proxy = await start_proxy(roomy.url)
    with capture_logs() as logs:
        error = refused(await raw_request(proxy.port, data), status)
    assert roomy.received == []
    [line] = rejections(logs)
    assert (line["status"], line["cause"]) == (status, error["code"])


async def test_head_at_the_limits_passes(start_proxy: StartProxy, roomy: FakeUpstream) -> None:
    proxy = await start_proxy(roomy.url)
    value = "v" * (HEADER_LIMIT - len("X-Big"))
    path = "/" + "p" * (HEADER_LIMIT - 1)
    many = [(f"X-{n}", str(n)) for n in range(125)]
    head = "".join(f"{name}: {value}\r\n" for name, value in many)
    data = f"GET {path} HTTP/1.1\r\nX-Big: {value}\r\nHost: a\r\n{head}Connection: close\r\n\r\n"
    [response] = split_responses(await raw_request(proxy.port, data.encode()))
    assert response.status == 200
    assert roomy.last.target == path
    assert roomy.last.headers == [("X-Big", value), ("Host", f"127.0.0.1:{roomy.port}"), *many]


def chunked(body: bytes, size: int) -> bytes:
    pieces = [body[at : at + size] for at in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


@pytest.mark.parametrize("encoding", ["length", "chunked"])
async def test_body_at_the_limit_passes(
    start_proxy: StartProxy, fake: FakeUpstream, encoding: str
) -> None:
    proxy = await start_proxy(limits={"max_body_size": BODY_LIMIT})
    body = bytes(range(256)) * (BODY_LIMIT // 256) + b"z" * (BODY_LIMIT % 256)
    framing = (
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        if encoding == "length"
        else b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, 100)
    )
    data = b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nConnection: close\r\n" + framing
    with capture_logs() as logs:
        [response] = split_responses(await raw_request(proxy.port, data))
    assert response.status == 200
    assert fake.last.body == body
    assert request_lines(logs)[0]["request_bytes"] == BODY_LIMIT


async def test_body_over_the_limit_by_content_length_is_413_json_before_the_upstream(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(limits={"max_body_size": BODY_LIMIT})
    data = b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (
        BODY_LIMIT + 1,
        b"x" * (BODY_LIMIT + 1),
    )
    with capture_logs() as logs:
        raw = await raw_request(proxy.port, data + SMUGGLED)
    error = refused(raw, 413)
    assert split_responses(raw)[0].header("Connection") == "close"
    assert error["code"] == "request_too_large"
    assert str(BODY_LIMIT) in error["message"]
    assert fake.received == []
    [line] = request_lines(logs)
    assert (line["outcome"], line["cause"], line["status"]) == (
        "rejected",
        "request_too_large",
        413,
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(chunked(b"x" * (BODY_LIMIT + 1), BODY_LIMIT + 1), id="one-chunk"),
        pytest.param(chunked(b"x" * (BODY_LIMIT + 1), 100), id="small-chunks"),
        pytest.param(b"ffffffffffffffff\r\n" + b"x" * (BODY_LIMIT + 1), id="huge-announced-chunk"),
    ],
)
async def test_chunked_body_over_the_limit_is_413_json_and_upstream_sees_at_most_the_limit(
    start_proxy: StartProxy, fake: FakeUpstream, body: bytes
) -> None:
    seen = bytearray()

    async def count(request: web.Request) -> web.StreamResponse:
        fake.arrived.set()
        with contextlib.suppress(Exception):
            async for chunk in request.content.iter_any():
                seen.extend(chunk)
        return web.Response()

    fake.handler = count
    proxy = await start_proxy(limits={"max_body_size": BODY_LIMIT})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        with capture_logs() as logs:
            writer.write(
                b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                + body
            )
            response = await read_head_and_body(reader)
    finally:
        writer.close()
    assert response.status == 413
    assert response.header("Connection") == "close"
    assert json.loads(response.body)["error"]["code"] == "request_too_large"
    assert len(seen) <= BODY_LIMIT
    [line] = request_lines(logs)
    assert (line["outcome"], line["cause"], line["status"]) == (
        "rejected",
        "request_too_large",
        413,
    )


@pytest.mark.parametrize(
    "shape", ["cl-and-te", "duplicate-cl-different", "obs-fold", "chunk-size-invalid-char"]
)
async def test_real_process_refuses_malformed_requests_with_one_warning(
    fake: FakeUpstream, shape: str
) -> None:
    async with running(fake) as proxy:
        error = refused(await raw_request(proxy.port, MALFORMED[shape] + SMUGGLED), 400)
        lines = await stopped(proxy)
    [line] = rejections(lines)
    assert (line["status"], line["cause"], line["level"]) == (400, error["code"], "warning")
    # A client's malformed request is not an error of the proxy, and carries no traceback.
    assert [line for line in lines if line["level"] == "error" or "exc_info" in line] == []
    assert fake.received == []


async def test_malformed_request_never_writes_its_secrets_to_the_log(fake: FakeUpstream) -> None:
    malformed = [
        (f"GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\x00\r\n\r\n", 400),
        (f"GET /x HTTP/1.1\r\nHost: a\r\nX-Api-Token: {TOKEN}\x01\r\n\r\n", 400),
        ("GET /x HTTP/1.1\r\nHost: a\r\nCookie: __cf_bm=cookie-secret-value\x01\r\n\r\n", 400),
        ("GET /x?access_token=query-secret-value\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        (f"GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\n  folded\r\n\r\n", 400),
        (f"GET /x HTTP/1.1\r\nHost: a\r\nCookie: {TOKEN * 1000}\r\n\r\n", 431),
        (f"GET /{TOKEN * 1000} HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    ]
    async with running(fake) as proxy:
        for data, status in malformed:
            refused(await raw_request(proxy.port, data.encode()), status)
        written = json.dumps(await stopped(proxy))
    for secret in (TOKEN, "cookie-secret-value", "query-secret-value"):
        assert secret not in written


async def test_a_client_trickling_its_head_does_not_hold_up_others(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    head = b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"s" * 10000
    started = asyncio.Event()
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)

    async def trickle() -> None:
        for sent, byte in enumerate(head):
            writer.write(bytes([byte]))
            await writer.drain()
            if sent == 20:
                started.set()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(10):
            await started.wait()
        data = b"GET /fast HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        [response] = split_responses(await raw_request(proxy.port, data))
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await task
        writer.close()
    assert response.status == 200
    assert [seen.target for seen in fake.received] == ["/fast"]


async def test_idle_and_half_open_connections_do_not_block_a_real_request(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    writers: list[asyncio.StreamWriter] = []
    try:
        for n in range(50):
            _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writers.append(writer)
            if n % 2:
                writer.write(b"GET /never HTTP/1.1\r\nHost: a\r\n")
                await writer.drain()
        data = b"GET /real HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        [response] = split_responses(await raw_request(proxy.port, data))
    finally:
        for writer in writers:
            writer.close()
    assert response.status == 200
    assert [seen.target for seen in fake.received] == ["/real"]


async def test_head_trickled_slowly_is_cut_at_the_header_timeout(fake: FakeUpstream) -> None:
    head = b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"s" * 1000
    async with running(fake, limits_header_timeout="0.5") as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)

        async def trickle() -> None:
            for byte in head:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.02)

        task = asyncio.create_task(trickle())
        try:
            # The trickle alone would take 20 s; the proxy must hang up well before.
            answer = await read_until_closed(reader)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
            writer.close()
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")
    assert fake.received == []


async def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(
    fake: FakeUpstream,
) -> None:
    async with running(fake, limits_header_timeout="0.5") as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            answer = await read_until_closed(reader)
        finally:
            writer.close()
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")


async def test_header_timeout_does_not_cut_a_slow_body(fake: FakeUpstream) -> None:
    body = b"0123456789"
    async with running(fake, limits_header_timeout="0.5") as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            writer.write(b"POST /slow-body HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n")
            for byte in body:
                await asyncio.sleep(0.15)
                writer.write(bytes([byte]))
                await writer.drain()
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
        finally:
            writer.close()
    assert head.startswith(b"HTTP/1.1 200 ")
    assert fake.last.body == body


async def test_connections_over_the_limit_are_refused_and_logged(fake: FakeUpstream) -> None:
    data = b"GET /real HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    async with running(fake, limits_max_connections="4") as proxy:
        idle = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(4)]
        for _, writer in idle:  # each busy with a head under way: none can make room
            writer.write(b"GET /slow HTTP/1.1\r\n")
            await writer.drain()
        await asyncio.sleep(0.2)
        try:
            raw = await raw_request(proxy.port, data)
            assert refused(raw, 503)["code"] == "too_many_connections"
            assert fake.received == []
        finally:
            for _, writer in idle:
                writer.close()
        # Once the idle connections are gone, a request gets through again.
        async with asyncio.timeout(10):
            while not fake.received:
                with contextlib.suppress(ConnectionError):
                    await raw_request(proxy.port, data)
                # Polled: nothing tells the client when the proxy has seen the others close.
                await asyncio.sleep(0.05)
        lines = await stopped(proxy)
    assert any(
        line["level"] == "warning" and "max_connections" in json.dumps(line) for line in lines
    )
