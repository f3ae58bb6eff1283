"""The way out, over real sockets on 127.0.0.1: TCP, TLS with and without upstream.ca_bundle,
CONNECT tunnels (plain and TLS, with and without the right credentials), the answers to an
unauthenticated request classified, and DNS failing in a network namespace."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from pytest_aiohttp import AiohttpServer
from yarl import URL

from proxy.doctor import wayout
from proxy.doctor.connect import Target
from proxy.doctor.findings import Finding, Status
from proxy.doctor.wire import Answer, NoAnswerError, parse, reason
from tests.connect_proxy import ConnectProxy
from tests.doctor_homes import answer_like_chatgpt, doctor_environ, line
from tests.fake_upstream import FakeUpstream, sse_event

FIX_CA = (
    "on a TLS-intercepting network, put its CA certificate (PEM) in upstream.ca_bundle; "
    "otherwise check the date and time of this machine"
)


def target(url: str, *, proxy: str = "", ca_bundle: str = "", timeout: float = 5) -> Target:
    return Target(
        url=URL(url), proxy=URL(proxy) if proxy else None, ca_bundle=ca_bundle, timeout=timeout
    )


def summary(found: list[Finding]) -> list[tuple[str, str]]:
    return [(f.status.mark, f.where) for f in found]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
async def tls_fake(aiohttp_server: AiohttpServer, ca: trustme.CA) -> FakeUpstream:
    upstream = FakeUpstream()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = await aiohttp_server(upstream.app(), ssl=context)
    assert server.port is not None
    upstream.port = server.port
    answer_like_chatgpt(upstream)
    return upstream


class TLSConnectProxy(ConnectProxy):
    """The tests' CONNECT proxy, spoken to over TLS (an https:// upstream.proxy)."""

    context: ssl.SSLContext | None = None

    async def start(self) -> TLSConnectProxy:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.context)
        return self


@pytest.fixture
async def connect_proxy() -> AsyncIterator[ConnectProxy]:
    proxy = await ConnectProxy(credentials=("user", "s3cret-pass")).start()
    yield proxy
    await proxy.close()


async def test_a_live_upstream_over_plain_http(fake: FakeUpstream) -> None:
    answer_like_chatgpt(fake)
    found = await wayout.check(target(fake.url))
    assert summary(found) == [
        ("✔", "DNS"),
        ("✔", "TCP"),
        (Status.INFO.mark, "TLS"),
        ("✔", f"POST {fake.url}/backend-api/codex/responses"),
        ("✔", f"POST {fake.url}/backend-api/responses"),
    ]
    assert line(found, "DNS").says == "127.0.0.1 → 127.0.0.1"
    assert line(found, "TCP").says.startswith(f"connected to 127.0.0.1:{fake.port} in ")
    assert line(found, "codex/responses").says == (
        "401 application/json without credentials: reachable and alive"
    )
    assert line(found, "api/responses").says == (
        "403 text/html, cf-ray 8f00fake0000-AMS: retired, as expected; the rules rewrite it"
    )
    # No credential of any kind went out.
    for received in fake.received:
        assert received.body == b"{}"
        names = {name.lower() for name, _ in received.headers}
        assert names == {
            "host",
            "user-agent",
            "accept",
            "connection",
            "content-type",
            "content-length",
        }


@pytest.mark.parametrize(
    ("answer", "status", "says", "fix"),
    [
        (
            (403, "text/html; charset=UTF-8", b"<html>Just a moment...</html>"),
            Status.PROBLEM,
            "403 text/html: the Cloudflare page on the live path",
            "this network (or its exit address) is blocked: try another; no setting changes that",
        ),
        (
            (502, "text/plain", b"upstream connect error or disconnect/reset before headers"),
            Status.PROBLEM,
            "502 text/plain: upstream connect error or disconnect/reset before headers",
            "the upstream is failing: try again later",
        ),
        (
            (200, "text/event-stream", sse_event("response.created", {})),
            Status.INFO,
            '200 text/event-stream: event: response.created data: {"type":"response.created"} '
            "(not the usual 401; shown as it came)",
            "",
        ),
        (
            (
                401,
                "application/problem+json",
                b'{"detail": "Bearer eyJhbGciOiJub25lIn0.eyJleHAiOjF9.c2ln"}',
            ),
            Status.OK,
            "401 application/problem+json without credentials: reachable and alive",
            "",
        ),
    ],
)
async def test_the_live_path_answers_classified(
    fake: FakeUpstream, answer: tuple[int, str, bytes], status: Status, says: str, fix: str
) -> None:
    answer_like_chatgpt(fake, live=answer)
    live = line(await wayout.check(target(fake.url)), "codex/responses")
    assert (live.status, live.says, live.fix) == (status, says, fix)


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (
            Answer(401, "Unauthorized", [("Content-Type", "application/json")], b"{}"),
            "401 application/json: still answers like the live path from here",
        ),
        (
            Answer(404, "Not Found", [], b"nothing   here\n at all"),
            "404 without a Content-Type: nothing here at all (shown as it came)",
        ),
        (
            Answer(500, "", [("Content-Type", "text/plain")], b"x" * 500),
            f"500 text/plain: {'x' * 99}… (shown as it came)",
        ),
    ],
)
def test_the_retired_path_answers_classified(answer: Answer, says: str) -> None:
    assert wayout.judge_retired(answer) == (Status.INFO, says, "")


async def test_a_stream_that_stays_open_counts_with_what_came(fake: FakeUpstream) -> None:
    done = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse_event("response.created", {}))
        await done.wait()
        return response

    fake.handler = endless
    try:
        answer = await wayout.ask(target(fake.url, timeout=0.5), wayout.LIVE)
    finally:
        done.set()
    assert (answer.status, answer.media_type) == (200, "text/event-stream")
    assert answer.body == sse_event("response.created", {})


async def test_a_chunked_answer_is_read_to_its_last_chunk(fake: FakeUpstream) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        response = web.StreamResponse(status=401, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"detail":')
        await response.write(b' "Unauthorized"}')
        await response.write_eof()
        return response

    fake.handler = chunked
    answer = await wayout.ask(target(fake.url), wayout.LIVE)
    assert answer.body == b'{"detail": "Unauthorized"}'


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "the connection closed without an answer"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "the answer is not HTTP"),
        (b"HTTP/1.1 abc\r\n\r\n", "the answer is not HTTP"),
    ],
)
def test_what_is_not_an_answer(raw: bytes, message: str) -> None:
    with pytest.raises(NoAnswerError) as raised:
        parse(raw)
    assert str(raised.value) == message


def test_a_broken_chunked_body_keeps_what_came() -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"
    assert parse(raw).body == b"abc"


async def silent_server(handler_bytes: bytes | None) -> asyncio.Server:
    """Accepts, reads the request, then writes `handler_bytes` and closes, or (None) says
    nothing until the client leaves."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if handler_bytes is not None:
            writer.write(handler_bytes)
            writer.close()
            return
        await reader.read()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


@pytest.mark.parametrize(
    ("sent", "says"),
    [
        (None, "no answer within 0.5 s"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "the answer is not HTTP"),
    ],
)
async def test_an_upstream_that_does_not_answer_http(sent: bytes | None, says: str) -> None:
    server = await silent_server(sent)
    port = server.sockets[0].getsockname()[1]
    try:
        found = await wayout.check(target(f"http://127.0.0.1:{port}", timeout=0.5))
    finally:
        server.close()
    request = line(found, "/backend-api/codex/responses")
    assert (request.status, request.says) == (Status.PROBLEM, says)
    assert request.fix.startswith("run the doctor again")


async def test_nothing_listening_upstream(unused_tcp_port: int) -> None:
    found = await wayout.check(target(f"http://127.0.0.1:{unused_tcp_port}"))
    assert summary(found) == [("✔", "DNS"), ("✘", "TCP")]
    tcp = line(found, "TCP")
    assert tcp.says == "cannot connect to 127.0.0.1: connection refused"
    assert tcp.fix.startswith("check this machine's network and DNS; if only an HTTP proxy")


async def test_tls_trusted_through_the_ca_bundle(tls_fake: FakeUpstream, ca_file: str) -> None:
    url = f"https://127.0.0.1:{tls_fake.port}"
    found = await wayout.check(target(url, ca_bundle=ca_file))
    assert [f.status for f in found] == [Status.OK] * 5
    says = line(found, "TLS").says
    assert says.startswith("TLSv1.3, certificate of 127.0.0.1 from trustme ")  # and its version
    assert says.endswith(" trusted (system store and upstream.ca_bundle)")


async def test_tls_not_trusted_without_the_ca_bundle(tls_fake: FakeUpstream) -> None:
    found = await wayout.check(target(f"https://127.0.0.1:{tls_fake.port}"))
    assert summary(found) == [("✔", "DNS"), ("✔", "TCP"), ("✘", "TLS")]
    tls = line(found, "TLS")
    assert tls.says == (
        "the certificate of 127.0.0.1 is not trusted: unable to get local issuer certificate"
    )
    assert tls.fix == FIX_CA


async def test_tls_to_a_server_that_speaks_plain_http(fake: FakeUpstream) -> None:
    found = await wayout.check(target(f"https://127.0.0.1:{fake.port}"))
    tls = line(found, "TLS")
    assert tls.status is Status.PROBLEM
    assert tls.says.startswith("the handshake with 127.0.0.1 failed: ")


async def test_through_a_connect_proxy_with_credentials(
    tls_fake: FakeUpstream, ca_file: str, connect_proxy: ConnectProxy
) -> None:
    proxy = f"http://user:s3cret-pass@127.0.0.1:{connect_proxy.port}"
    url = f"https://127.0.0.1:{tls_fake.port}"
    found = await wayout.check(target(url, proxy=proxy, ca_bundle=ca_file))
    assert summary(found) == [
        ("✔", "DNS"),
        ("✔", "TCP"),
        ("✔", "CONNECT"),
        ("✔", "TLS"),
        ("✔", f"POST {url}/backend-api/codex/responses"),
        ("✔", f"POST {url}/backend-api/responses"),
    ]
    assert line(found, "CONNECT").says == (
        f"http://user:[redacted]@127.0.0.1:{connect_proxy.port} opened a tunnel to "
        f"127.0.0.1:{tls_fake.port}"
    )
    assert "s3cret-pass" not in repr(found)
    assert [target for target, _ in connect_proxy.connects] == [f"127.0.0.1:{tls_fake.port}"] * 3


@pytest.mark.parametrize(
    ("proxy", "upstream_host", "expected"),
    [
        (
            "http://user:wrong@127.0.0.1:{port}",
            "127.0.0.1",
            (
                "http://user:[redacted]@127.0.0.1:{port} refused the tunnel: "
                "HTTP/1.1 407 Proxy Authentication Required",
                "put the user and password in upstream.proxy (http://user:password@host:port)",
            ),
        ),
        (
            "http://user:s3cret-pass@127.0.0.1:{port}",
            "localhost",
            (
                "http://user:[redacted]@127.0.0.1:{port} refused the tunnel: HTTP/1.1 403 Forbidden",
                "ask whoever runs http://user:[redacted]@127.0.0.1:{port} to allow localhost:{fake}",
            ),
        ),
    ],
)
async def test_a_connect_proxy_that_refuses(
    fake: FakeUpstream,
    connect_proxy: ConnectProxy,
    proxy: str,
    upstream_host: str,
    expected: tuple[str, str],
) -> None:
    port = connect_proxy.port
    found = await wayout.check(
        target(f"http://{upstream_host}:{fake.port}", proxy=proxy.format(port=port))
    )
    assert summary(found) == [("✔", "DNS"), ("✔", "TCP"), ("✘", "CONNECT")]
    refused = line(found, "CONNECT")
    says, fix = expected
    assert refused.says == says.format(port=port)
    assert refused.fix == fix.format(port=port, fake=fake.port)


async def test_a_connect_proxy_that_is_not_running(
    fake: FakeUpstream, unused_tcp_port: int
) -> None:
    found = await wayout.check(target(fake.url, proxy=f"http://127.0.0.1:{unused_tcp_port}"))
    assert line(found, "TCP").fix == "check upstream.proxy: host, port, and that it is running"


async def test_a_connect_proxy_that_hangs_up(fake: FakeUpstream) -> None:
    server = await silent_server(b"")
    port = server.sockets[0].getsockname()[1]
    try:
        found = await wayout.check(target(fake.url, proxy=f"http://127.0.0.1:{port}"))
    finally:
        server.close()
    assert line(found, "CONNECT").says.startswith(f"http://127.0.0.1:{port} gave no answer: ")


async def test_through_a_connect_proxy_spoken_to_over_tls(
    tls_fake: FakeUpstream, ca: trustme.CA, ca_file: str
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    tunnel = TLSConnectProxy()
    tunnel.context = context
    await tunnel.start()
    try:
        url = f"https://127.0.0.1:{tls_fake.port}"
        proxy = f"https://127.0.0.1:{tunnel.port}"
        found = await wayout.check(target(url, proxy=proxy, ca_bundle=ca_file))
    finally:
        await tunnel.close()
    assert [f.where for f in found][:5] == ["DNS", "TCP", "TLS to the proxy", "CONNECT", "TLS"]
    assert all(f.status is Status.OK for f in found), found


def test_dns_failing_in_a_network_namespace_with_only_loopback(tmp_path: Path) -> None:
    """The real command, where no name resolves: the DNS line names the host and the fix."""
    command = (
        f"ip link set lo up && exec {sys.executable} -m proxy doctor --json "
        "--upstream https://upstream.invalid"
    )
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        env=doctor_environ(tmp_path),
        check=False,
    )
    assert result.returncode == 1, result.stderr
    checks = json.loads(result.stdout)["checks"]
    dns = next(c for c in checks if c["where"] == "DNS")
    assert dns["status"] == "problem"
    assert dns["says"].startswith("cannot resolve upstream.invalid: ")
    assert dns["fix"].startswith("check this machine's network and DNS")


async def test_an_upstream_that_resets_the_connection() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        found = await wayout.check(target(f"http://127.0.0.1:{port}"))
    finally:
        server.close()
    said = line(found, "/backend-api/codex/responses").says
    assert said == "the connection broke: Connection reset by peer"


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (TimeoutError(), "timed out"),
        (ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 9)"), "connection refused"),
        (OSError(113, "No route to host"), "No route to host"),
        (ValueError("no such thing"), "no such thing"),
        (OSError(), "OSError"),
    ],
)
def test_network_errors_in_a_few_words(error: BaseException, said: str) -> None:
    assert reason(error) == said
