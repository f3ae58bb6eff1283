"""The real CLI as a subprocess: start-up line, logs, signals and drain, refusals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from pathlib import Path

import pytest
from aiohttp import web

from proxy.redact import fingerprint
from tests.fake_upstream import FakeUpstream, sse_event
from tests.harness import parse_response, raw_request, read_head_and_body
from tests.proc import run_cli, start_proxy_process

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtdXNlciJ9.c2lnbmF0dXJlLXNlY3JldA"
SSE_HEADERS = {"Content-Type": "text/event-stream"}


def gated_stream(fake: FakeUpstream) -> asyncio.Event:
    """The fake sends one event, then waits for the returned event before finishing."""
    release = asyncio.Event()

    async def gated(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        await response.write(sse_event("response.created", {}))
        await release.wait()
        await response.write(sse_event("response.completed", {}))
        await response.write_eof()
        return response

    fake.handler = gated
    return release


async def test_startup_line_request_line_and_no_secrets_in_logs(fake: FakeUpstream) -> None:
    proxy = await start_proxy_process("--upstream", fake.url)
    try:
        assert proxy.lines[-1]["upstream"] == fake.url
        assert proxy.address.startswith("http://127.0.0.1:")
        assert proxy.lines[-1]["rules"] == 4
        data = (
            f"POST /backend-api/responses?access_token={TOKEN}&x=1 HTTP/1.1\r\nHost: a\r\n"
            f"Authorization: Bearer {TOKEN}\r\nCookie: __cf_bm=cookie-secret\r\n"
            "Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        )
        response = parse_response(await raw_request(proxy.port, data.encode()))
        assert response.status == 200
        line = await proxy.wait_for("request")
        assert line["method"] == "POST"
        mask = f"[redacted #{fingerprint(TOKEN)}]"
        assert line["path"] == f"/backend-api/responses?access_token={mask}&x=1"
        assert line["upstream_path"] == f"/backend-api/codex/responses?access_token={mask}&x=1"
        assert line["rule"] == "legacy-responses"
        assert line["status"] == 200
        assert isinstance(line["duration_ms"], float)
        proxy.process.send_signal(signal.SIGTERM)
        lines = await proxy.rest()
    finally:
        proxy.stop()
    assert proxy.process.returncode == 0
    text = repr(lines)
    assert TOKEN not in text
    assert "cookie-secret" not in text
    assert [line["event"] for line in lines][-2:] == ["shutting down", "stopped"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_drains_in_flight_streams_then_exits_0(
    fake: FakeUpstream, signum: int
) -> None:
    release = gated_stream(fake)
    proxy = await start_proxy_process("--upstream", fake.url)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(
            b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
        )
        await reader.readuntil(sse_event("response.created", {}))
        proxy.process.send_signal(signum)
        await proxy.wait_for("shutting down")
        # While it drains, the port still answers, but no new exchange starts: a new
        # request gets a 503 it can act on, and its connection ends.
        refused = await raw_request(
            proxy.port,
            b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        )
        assert proxy.process.returncode is None
        release.set()
        rest = await reader.read()
        writer.close()
        lines = await proxy.rest()
    finally:
        proxy.stop()
    assert rest.startswith(b"\r\n")  # the rest of the chunk framing, then the next event
    assert sse_event("response.completed", {}) in rest
    assert rest.endswith(b"0\r\n\r\n")
    assert proxy.process.returncode == 0
    answer = parse_response(refused)
    assert (answer.status, answer.header("Connection")) == (503, "close")
    assert json.loads(answer.body)["error"]["code"] == "proxy_shutting_down"
    assert [line["outcome"] for line in lines if line["event"] == "request"] == [
        "rejected",
        "completed",
    ]


async def test_ctrl_c_says_what_it_waits_for_and_a_second_one_stops_at_once(
    fake: FakeUpstream,
) -> None:
    gated_stream(fake)  # never released: only the second Ctrl-C ends it
    proxy = await start_proxy_process("--upstream", fake.url)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(
            b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
        )
        await reader.readuntil(sse_event("response.created", {}))
        proxy.process.send_signal(signal.SIGINT)
        shutting = await proxy.wait_for("shutting down")
        proxy.process.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):  # far short of shutdown.grace (30 s)
            rest = await reader.read()
        lines = await proxy.rest()
        writer.close()
    finally:
        proxy.stop()
    assert shutting["waiting"] == (
        "waiting up to 30 s for 1 exchange in flight to finish; press Ctrl-C again to stop now"
    )
    assert not rest.endswith(b"0\r\n\r\n")  # cut, never a clean end
    assert proxy.process.returncode == 0
    [request] = [line for line in lines if line["event"] == "request"]
    assert (request["outcome"], request["cause"]) == ("proxy_shutdown", "proxy_shutdown")
    assert lines[-1]["event"] == "stopped"
    assert (lines[-1]["drained"], lines[-1]["cut"]) == (0, 1)


async def test_readiness_flips_to_503_while_a_stream_drains(fake: FakeUpstream) -> None:
    release = gated_stream(fake)
    proxy = await start_proxy_process("--upstream", fake.url)
    probe = b"GET /_proxy/readyz HTTP/1.1\r\nHost: a\r\n"
    try:
        stream_reader, stream_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        probe_reader, probe_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        probe_writer.write(probe + b"\r\n")
        assert (await read_head_and_body(probe_reader)).status == 200
        stream_writer.write(
            b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
        )
        await stream_reader.readuntil(sse_event("response.created", {}))
        proxy.process.send_signal(signal.SIGTERM)
        draining = await proxy.wait_for("shutting down")
        # The probe's idle kept-alive connection closes at once; a new probe (as
        # Kubernetes' kubelet makes one per probe) is answered while the stream drains.
        assert await probe_reader.read() == b""
        not_ready = parse_response(
            await raw_request(proxy.port, probe + b"Connection: close\r\n\r\n")
        )
        release.set()
        rest = await stream_reader.read()
        stream_writer.close()
        probe_writer.close()
        lines = await proxy.rest()
    finally:
        proxy.stop()
    assert draining["in_flight"] == 1
    assert not_ready.status == 503
    assert sse_event("response.completed", {}) in rest
    assert rest.endswith(b"0\r\n\r\n")
    assert proxy.process.returncode == 0
    assert lines[-1]["event"] == "stopped"
    assert (lines[-1]["drained"], lines[-1]["cut"]) == (1, 0)


async def test_streams_past_the_grace_are_cut_and_the_process_exits_0(fake: FakeUpstream) -> None:
    gated_stream(fake)
    proxy = await start_proxy_process(
        "--upstream", fake.url, env={"CODEX_PATH_PROXY_SHUTDOWN_GRACE": "0.5"}
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(
            b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
        )
        await reader.readuntil(sse_event("response.created", {}))
        proxy.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            rest = await reader.read()
        writer.close()
        lines = await proxy.rest()
    finally:
        proxy.stop()
    assert not rest.endswith(b"0\r\n\r\n")
    assert proxy.process.returncode == 0
    assert (lines[-1]["drained"], lines[-1]["cut"]) == (0, 1)


async def test_non_loopback_bind_warns_that_tokens_cross_the_port(fake: FakeUpstream) -> None:
    proxy = await start_proxy_process("--upstream", fake.url, "--host", "0.0.0.0")
    try:
        warning = await proxy.next_line()
        proxy.process.send_signal(signal.SIGTERM)
        await proxy.rest()
    finally:
        proxy.stop()
    assert warning["level"] == "warning"
    # As written: the masker once took "bearer tokens" for a credential.
    assert warning["event"] == (
        "listening beyond this machine: bearer tokens and conversations cross this port; "
        "anyone who can reach it can use the tokens sent through it"
    )
    assert warning["host"] == "0.0.0.0"


async def run_to_exit(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    code, _, err = await run_cli(*args, environ={**os.environ, **(env or {})}, timeout=30)
    return code, err


async def test_requests_are_parsed_by_llhttp_whatever_aiohttp_is_told(
    fake: FakeUpstream,
) -> None:
    """The forwarding path parses with llhttp itself (httptools has no pure-Python
    fallback): aiohttp without its C extensions changes nothing there, and a smuggling
    shape is still refused before anything reaches the upstream."""
    proxy = await start_proxy_process("--upstream", fake.url, env={"AIOHTTP_NO_EXTENSIONS": "1"})
    try:
        smuggling = parse_response(
            await raw_request(
                proxy.port,
                b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            )
        )
        health = parse_response(
            await raw_request(
                proxy.port, b"GET /_proxy/healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
        )
        proxy.process.send_signal(signal.SIGTERM)
        await proxy.rest()
    finally:
        proxy.stop()
    assert smuggling.status == 400
    assert health.status == 200
    assert fake.received == []


async def test_busy_port_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = await run_to_exit("--port", str(port), "--log-format", "json")
    assert code == 1
    assert f"cannot start: cannot listen on 127.0.0.1:{port}:" in err
    assert "Traceback" not in err


async def test_inspector_is_refused_on_a_non_loopback_bind() -> None:
    code, err = await run_to_exit("--port", "0", "--host", "0.0.0.0", "--inspector")
    # A setting refused, as every other: exit 2, one line.
    assert code == 2
    [line] = err.splitlines()
    assert line.startswith(
        "codex-path-proxy: config error: the inspector would be reachable beyond this machine "
        "on 0.0.0.0"
    )
    assert "inspector.allow_non_loopback" in line


@pytest.mark.parametrize(("blocked", "loop"), [(False, "uvloop"), (True, "asyncio")])
async def test_runs_on_uvloop_and_falls_back_to_asyncio_without_it(
    fake: FakeUpstream, tmp_path: Path, blocked: bool, loop: str
) -> None:
    env = {}
    if blocked:
        # An importable 'uvloop' that fails to import, as on a platform without it.
        (tmp_path / "uvloop.py").write_text("raise ImportError('no uvloop here')\n")
        env["PYTHONPATH"] = str(tmp_path)
    proxy = await start_proxy_process("--upstream", fake.url, env=env)
    try:
        listening = proxy.lines[-1]
        response = parse_response(
            await raw_request(
                proxy.port, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
            )
        )
        proxy.process.send_signal(signal.SIGTERM)
        await proxy.rest()
    finally:
        proxy.stop()
    assert listening["loop"] == loop
    assert response.status == 200
    assert proxy.process.returncode == 0
