"""Outbound network as enterprises need it: private CAs, CONNECT proxies, pool limits, and
client-side limits (header timeout, connection limit), over real TLS and real sockets."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web
from pytest_aiohttp import AiohttpServer
from structlog.testing import capture_logs

from proxy.config import proxy_from_environ
from tests.connect_proxy import ConnectProxy
from tests.fake_upstream import FakeUpstream, sse_event
from tests.harness import StartProxy, parse_response, raw_request, read_head_and_body, recorder

REQUEST = b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_fake(aiohttp_server: AiohttpServer, ca: trustme.CA) -> FakeUpstream:
    """The fake chatgpt.com over TLS, with a certificate for 127.0.0.1 from a private CA."""
    upstream = FakeUpstream()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = await aiohttp_server(upstream.app(), auto_decompress=False, ssl=context)
    assert server.port is not None
    upstream.port = server.port
    return upstream


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
async def connect_proxy() -> AsyncIterator[ConnectProxy]:
    proxy = await ConnectProxy(credentials=("user", "s3cret-pass")).start()
    yield proxy
    await proxy.close()


async def test_tls_upstream_trusted_through_ca_bundle(
    start_proxy: StartProxy, tls_fake: FakeUpstream, ca_file: str
) -> None:
    proxy = await start_proxy(f"https://127.0.0.1:{tls_fake.port}", upstream={"ca_bundle": ca_file})
    response = parse_response(await raw_request(proxy.port, REQUEST))
    assert response.status == 200
    assert tls_fake.last.target == "/backend-api/codex/responses"
    assert tls_fake.last.headers[0] == ("Host", f"127.0.0.1:{tls_fake.port}")


async def test_untrusted_tls_upstream_is_a_502_naming_the_tls_error(
    start_proxy: StartProxy, tls_fake: FakeUpstream, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    for extra in ({}, {"ca_bundle": str(other)}):
        proxy = await start_proxy(f"https://127.0.0.1:{tls_fake.port}", upstream=extra)
        with capture_logs() as logs:
            response = parse_response(await raw_request(proxy.port, REQUEST))
            await recorder(proxy).wait_ended()
        assert response.status == 502
        error = json.loads(response.body)["error"]
        assert error["code"] == "upstream_tls_error"
        assert "certificate" in error["message"]
        assert "upstream.ca_bundle" in error["message"]
        [line] = [line for line in logs if line["event"] == "request"]
        assert line["cause"] == "upstream_tls_error"
        # The reason in words, with the certificate the network put in the way.
        assert line["detail"].startswith("TLS verification failed: ")
        assert "(subject O=trustme" in line["detail"]
        assert "; issuer O=trustme" in line["detail"]
    assert tls_fake.received == []


async def test_tunnel_through_a_connect_proxy_with_credentials_never_logged(
    start_proxy: StartProxy, tls_fake: FakeUpstream, ca_file: str, connect_proxy: ConnectProxy
) -> None:
    proxy = await start_proxy(
        f"https://127.0.0.1:{tls_fake.port}",
        upstream={
            "ca_bundle": ca_file,
            "proxy": f"http://user:s3cret-pass@127.0.0.1:{connect_proxy.port}",
        },
    )
    with capture_logs() as logs:
        response = parse_response(await raw_request(proxy.port, REQUEST))
        await recorder(proxy).wait_ended()
    assert response.status == 200
    [(target, headers)] = connect_proxy.connects
    assert target == f"127.0.0.1:{tls_fake.port}"
    assert headers["proxy-authorization"].startswith("Basic ")
    # The tunnel's credentials go to the proxy only, never to the upstream.
    assert "proxy-authorization" not in {name.lower() for name, _ in tls_fake.last.headers}
    assert "s3cret-pass" not in repr(logs)


async def test_websocket_through_a_connect_proxy(
    start_proxy: StartProxy, tls_fake: FakeUpstream, ca_file: str, connect_proxy: ConnectProxy
) -> None:
    proxy = await start_proxy(
        f"https://127.0.0.1:{tls_fake.port}",
        upstream={
            "ca_bundle": ca_file,
            "proxy": f"http://user:s3cret-pass@127.0.0.1:{connect_proxy.port}",
        },
    )
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(proxy.make_url("/backend-api/responses")) as ws,
    ):
        await ws.send_str("through the tunnel")
        assert await ws.receive_str() == "through the tunnel"
    assert connect_proxy.connects[0][0] == f"127.0.0.1:{tls_fake.port}"


async def test_a_proxy_refusing_the_tunnel_is_a_502(
    start_proxy: StartProxy, tls_fake: FakeUpstream, ca_file: str, connect_proxy: ConnectProxy
) -> None:
    proxy = await start_proxy(
        f"https://127.0.0.1:{tls_fake.port}",
        upstream={
            "ca_bundle": ca_file,
            "proxy": f"http://user:wrong-pass@127.0.0.1:{connect_proxy.port}",
        },
    )
    with capture_logs() as logs:
        response = parse_response(await raw_request(proxy.port, REQUEST))
        await recorder(proxy).wait_ended()
    assert response.status == 502
    error = json.loads(response.body)["error"]
    assert error["code"] == "upstream_proxy_error"
    assert "407" in error["message"]
    assert "wrong-pass" not in response.body.decode() + repr(logs)
    [line] = [line for line in logs if line["event"] == "request"]
    assert line["detail"] == "the outbound proxy answered 407 Proxy Authentication Required"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"HTTPS_PROXY": "http://p:3128"}, ("HTTPS_PROXY", "http://p:3128")),
        ({"https_proxy": "http://p:3128"}, ("https_proxy", "http://p:3128")),
        ({"HTTP_PROXY": "http://p:3128"}, None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "example.org,.chatgpt.com"}, None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "*"}, None),
        ({"HTTPS_PROXY": "http://p:3128", "no_proxy": "gpt.com"}, ("HTTPS_PROXY", "http://p:3128")),
        ({}, None),
    ],
)
def test_proxy_from_the_standard_variables(
    environ: dict[str, str], expected: tuple[str, str] | None
) -> None:
    assert proxy_from_environ("https://chatgpt.com", environ) == expected


async def test_pool_exhaustion_waits_and_says_so(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    release = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse_event("response.created", {}))
        if request.raw_path.endswith("first"):
            await release.wait()
        await response.write_eof()
        return response

    fake.handler = held
    proxy = await start_proxy(upstream={"pool_size": 1})
    with capture_logs() as logs:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /first HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        await reader.readuntil(b"\n\n")
        second = asyncio.create_task(
            raw_request(proxy.port, b"GET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        )
        async with asyncio.timeout(5):
            # The warning is the subject here, and no event marks it: poll the capture.
            while not any(  # noqa: ASYNC110
                line["event"].startswith("waiting for a free upstream connection") for line in logs
            ):
                await asyncio.sleep(0.01)
        assert not second.done()
        release.set()
        await reader.read()
        writer.close()
        assert parse_response(await second).status == 200
    waited = [line for line in logs if line["event"] == "got an upstream connection"]
    assert waited
    assert waited[0]["waited_ms"] > 0


async def test_slowloris_headers_are_cut_at_the_header_timeout(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(limits={"header_timeout": 0.3})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    with capture_logs() as logs:
        for piece in (b"GET /x HTTP/1.1\r\n", b"Host: a\r\n", b"X-Slow: 1\r\n"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05)
        async with asyncio.timeout(5):
            assert await reader.read() == b""
    writer.close()
    assert fake.received == []
    assert any("header_timeout" in line["event"] for line in logs)


async def test_at_the_limit_a_client_gets_a_json_503_when_every_connection_is_busy(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(limits={"max_connections": 2})
    with capture_logs() as logs:
        held = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(2)]
        for _, writer in held:  # each busy: a head under way
            writer.write(b"GET /ok HTTP/1.1\r\nHost: a\r\n")
            await writer.drain()
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        async with asyncio.timeout(5):
            refused = parse_response(await reader.read())
        writer.close()
    assert refused.status == 503
    assert refused.header("Connection") == "close"
    assert json.loads(refused.body)["error"]["code"] == "too_many_connections"
    [line] = [line for line in logs if line["event"].startswith("connection refused")]
    assert line["max_connections"] == 2
    # The held connections still work.
    for reader_, writer_ in held:
        writer_.write(b"Connection: close\r\n\r\n")
        assert parse_response(await reader_.read()).status == 200
        writer_.close()


async def test_at_the_limit_the_oldest_idle_connection_makes_room_for_a_new_client(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(limits={"max_connections": 2})
    oldest = await asyncio.open_connection("127.0.0.1", proxy.port)
    oldest[1].write(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (await read_head_and_body(oldest[0])).status == 200
    await asyncio.sleep(0.05)
    newer = await asyncio.open_connection("127.0.0.1", proxy.port)
    newer[1].write(b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (await read_head_and_body(newer[0])).status == 200
    with capture_logs() as logs:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /three HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert parse_response(await reader.read()).status == 200
        async with asyncio.timeout(5):
            assert await oldest[0].read() == b""  # closed to make room
    writer.close()
    assert not [line for line in logs if line["event"].startswith("connection refused")]
    newer[1].write(b"GET /four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert parse_response(await newer[0].read()).status == 200
    for _, other in (oldest, newer):
        other.close()


async def test_idle_pooled_connections_are_not_reused_after_they_expire(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(upstream={"keepalive_timeout": 0.2})
    await raw_request(proxy.port, REQUEST)
    await raw_request(proxy.port, REQUEST)
    # Longer than the pool keeps an idle connection: as after a laptop sleeps.
    await asyncio.sleep(0.6)
    await raw_request(proxy.port, REQUEST)
    first, second, third = (seen.peer for seen in fake.received)
    assert first == second
    assert third != first


async def test_a_connection_the_upstream_closed_while_idle_is_not_reused(
    aiohttp_server: AiohttpServer, start_proxy: StartProxy
) -> None:
    upstream = FakeUpstream()
    # The upstream closes idle keep-alive connections after 0.1 s.
    server = await aiohttp_server(upstream.app(), auto_decompress=False, keepalive_timeout=0.1)
    upstream.port = server.port or 0
    proxy = await start_proxy(upstream.url)
    assert parse_response(await raw_request(proxy.port, REQUEST)).status == 200
    await asyncio.sleep(0.4)
    assert parse_response(await raw_request(proxy.port, REQUEST)).status == 200
    assert len({seen.peer for seen in upstream.received}) == 2


async def test_tls_to_an_upstream_that_speaks_plain_http_is_a_502_naming_tls(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(f"https://127.0.0.1:{fake.port}")
    with capture_logs() as logs:
        response = parse_response(await raw_request(proxy.port, REQUEST))
        await recorder(proxy).wait_ended()
    assert response.status == 502
    assert json.loads(response.body)["error"]["code"] == "upstream_tls_error"
    [line] = [line for line in logs if line["event"] == "request"]
    assert line["detail"].startswith("TLS failed: ")


async def test_an_outbound_proxy_that_cannot_be_reached_is_a_502(
    start_proxy: StartProxy, tls_fake: FakeUpstream, ca_file: str
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    proxy = await start_proxy(
        f"https://127.0.0.1:{tls_fake.port}",
        upstream={"ca_bundle": ca_file, "proxy": f"http://user:pw@127.0.0.1:{closed}"},
    )
    with capture_logs() as logs:
        response = parse_response(await raw_request(proxy.port, REQUEST))
        await recorder(proxy).wait_ended()
    assert response.status == 502
    error = json.loads(response.body)["error"]
    assert error["code"] == "upstream_proxy_error"
    assert "cannot connect to the proxy upstream.proxy" in error["message"]
    [line] = [line for line in logs if line["event"] == "request"]
    assert "[redacted]" in line["detail"]
    assert ":pw@" not in repr(logs)


async def test_an_untrusted_certificate_behind_a_connect_proxy_is_named_so(
    start_proxy: StartProxy, tls_fake: FakeUpstream, connect_proxy: ConnectProxy
) -> None:
    proxy = await start_proxy(
        f"https://127.0.0.1:{tls_fake.port}",
        upstream={"proxy": f"http://user:s3cret-pass@127.0.0.1:{connect_proxy.port}"},
    )
    with capture_logs() as logs:
        response = parse_response(await raw_request(proxy.port, REQUEST))
        await recorder(proxy).wait_ended()
    assert response.status == 502
    [line] = [line for line in logs if line["event"] == "request"]
    assert line["cause"] == "upstream_tls_error"
    assert line["detail"].endswith("(the certificate came through upstream.proxy)")


async def test_an_idle_pooled_connection_is_closed_once_it_expires(
    start_proxy: StartProxy,
) -> None:
    """Not only never reused: closed, so no descriptor waits for the far side."""
    closed = asyncio.Event()

    async def answer_then_wait(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if not await reader.read():
            closed.set()
        writer.close()

    server = await asyncio.start_server(answer_then_wait, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        proxy = await start_proxy(f"http://127.0.0.1:{port}", upstream={"keepalive_timeout": 0.2})
        response = parse_response(
            await raw_request(
                proxy.port, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
        )
        assert response.body == b"ok"
        async with asyncio.timeout(5):
            await closed.wait()


async def test_the_log_line_says_how_the_connection_came_and_what_opening_it_took(
    start_proxy: StartProxy, tls_fake: FakeUpstream, ca_file: str
) -> None:
    proxy = await start_proxy(
        f"https://127.0.0.1:{tls_fake.port}",
        upstream={"ca_bundle": ca_file, "warm_connections": 0},
    )
    with capture_logs() as logs:
        for _ in range(2):
            assert parse_response(await raw_request(proxy.port, REQUEST)).status == 200
        await recorder(proxy).wait_ended(2)
    new, reused = (line for line in logs if line["event"] == "request")
    assert new["connection"] == "new"
    assert new["opened_ms"] > 0
    assert new["tls_ms"] > 0
    assert new["connect_ms"] >= new["opened_ms"] + new["tls_ms"]
    assert (reused["connection"], reused["connect_ms"]) == ("reused", 0.0)
    assert reused["opened_ms"] is reused["tls_ms"] is None


async def test_a_new_tls_connection_resumes_the_session_of_an_earlier_one(
    start_proxy: StartProxy, tls_fake: FakeUpstream, ca_file: str
) -> None:
    """Each request on a connection of its own (the client asks to close, the upstream
    agrees): from the second on, TLS resumes the first's session, verification intact."""
    proxy = await start_proxy(
        f"https://127.0.0.1:{tls_fake.port}",
        upstream={"ca_bundle": ca_file, "warm_connections": 0, "keepalive_timeout": 0.05},
    )
    with capture_logs() as logs:
        for _ in range(3):
            assert parse_response(await raw_request(proxy.port, REQUEST)).status == 200
            await asyncio.sleep(0.1)  # the idle connection expires: the next opens anew
        await recorder(proxy).wait_ended(3)
    lines = [line for line in logs if line["event"] == "request"]
    assert [line["connection"] for line in lines] == ["new", "new", "new"]
    assert [line["tls_resumed"] for line in lines] == [False, True, True]
