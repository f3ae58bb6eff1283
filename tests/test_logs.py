"""The canonical request line, diagnoses, redaction and body capture, on real exchanges."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import signal
import socket
import stat
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import zstandard
from aiohttp import web
from structlog.testing import capture_logs

from proxy.log import ExchangeLine
from proxy.redact import fingerprint, redact_text
from tests.fake_upstream import CLOUDFLARE_403, FakeUpstream, sse_event
from tests.harness import (
    RunningProxy,
    StartProxy,
    capture_of,
    parse_response,
    raw_request,
    recorder,
)

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0b2tlbi1vd25lciJ9.dG9rZW4tc2lnbmF0dXJl"
COOKIE = "cf-bm-cookie-value-1234567890"
ACCOUNT = "9a8b7c6d-1111-2222-3333-444455556666"
SSE = {"Content-Type": "text/event-stream; charset=utf-8"}
Line = MutableMapping[str, Any]


def only_request(logs: list[Line]) -> Line:
    [line] = [line for line in logs if line["event"] in ("request", "websocket")]
    return line


POST_LEGACY = (
    b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


async def logged_request(proxy: RunningProxy, data: bytes = POST_LEGACY) -> Line:
    """Send one raw request, wait for its exchange to end, and return its log line."""
    with capture_logs() as logs:
        await raw_request(proxy.port, data)
        await recorder(proxy).wait_ended()
    return only_request(logs)


def completed_stream(*extra: bytes) -> bytes:
    return (
        sse_event("response.created", {"response": {"id": "r1"}})
        + sse_event("response.output_text.delta", {"delta": "hi"})
        + b"".join(extra)
        + sse_event(
            "response.completed",
            {
                "response": {
                    "id": "r1",
                    "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
                }
            },
        )
    )


def streaming(
    fake: FakeUpstream, body: bytes, headers: dict[str, str] | None = None, status: int = 200
) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        response = web.StreamResponse(status=status, headers={**SSE, **(headers or {})})
        await response.prepare(request)
        for start in range(0, len(body), 7):  # events split across chunk borders
            await response.write(body[start : start + 7])
        await response.write_eof()
        return response

    fake.handler = answer


async def test_every_field_of_a_rewritten_event_stream(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    streaming(
        fake,
        completed_stream(),
        {
            "cf-ray": "8f00abc-AMS",
            "x-request-id": "req_upstream_1",
            "openai-processing-ms": "412",
            "x-codex-primary-used-percent": "37",
            "x-codex-primary-reset-after-seconds": "3600",
        },
    )
    body = zstandard.ZstdCompressor().compress(b'{"model":"gpt-5","stream":true}')
    head = (
        "POST /backend-api/responses?trace=1 HTTP/1.1\r\nHost: a\r\nX-Request-Id: client-chosen-42\r\n"
        f"Authorization: Bearer {TOKEN}\r\naccept: text/event-stream\r\ncontent-type: application/json\r\n"
        f"content-encoding: zstd\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with capture_logs() as logs:
        response = parse_response(await raw_request(proxy.port, head.encode() + body))
        await recorder(proxy).wait_ended()
    assert response.status == 200
    line = only_request(logs)
    assert line["log_level"] == "info"
    assert line["request_id"] == "client-chosen-42"
    assert line["client"] == "127.0.0.1"
    assert (line["method"], line["path"]) == ("POST", "/backend-api/responses?trace=1")
    assert line["upstream_path"] == "/backend-api/codex/responses?trace=1"
    assert line["rule"] == "legacy-responses"
    assert (line["status"], line["outcome"], line["cause"]) == (200, "completed", None)
    assert line["request_bytes"] == len(body)
    assert line["response_bytes"] == len(completed_stream())
    assert line["request_encoding"] == "zstd"
    assert line["response_encoding"] is None
    assert line["content_type"] == "text/event-stream; charset=utf-8"
    assert (
        0
        <= line["connect_ms"]
        <= line["headers_ms"]
        <= line["first_byte_ms"]
        <= line["duration_ms"]
    )
    # The first request finds the spare the proxy opened when it started.
    assert (line["connection"], line["connect_ms"]) == ("warm", 0.0)
    assert line["opened_ms"] > 0
    assert (line["events"], line["first_event"], line["last_event"]) == (
        3,
        "response.created",
        "response.completed",
    )
    assert (line["stream_end"], line["completed"]) == ("response.completed", True)
    assert line["usage"] == {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
    assert line["cf_ray"] == "8f00abc-AMS"
    assert line["upstream_request_id"] == "req_upstream_1"
    assert line["openai_processing_ms"] == "412"
    assert line["quota"] == {
        "x-codex-primary-used-percent": "37",
        "x-codex-primary-reset-after-seconds": "3600",
    }
    assert "diagnosis" not in line
    assert TOKEN not in repr(logs)


async def test_request_id_is_generated_and_a_reused_connection_costs_no_connect(
    proxy: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    with capture_logs() as logs:
        for _ in range(2):
            async with client.get(proxy.make_url("/x")) as response:
                await response.read()
        await recorder(proxy).wait_ended(2)
    first, second = (line for line in logs if line["event"] == "request")
    assert re.fullmatch(r"[0-9a-f]{32}", first["request_id"])
    assert first["request_id"] != second["request_id"]
    assert (first["connection"], second["connection"]) == ("warm", "reused")
    assert first["opened_ms"] > 0
    assert second["opened_ms"] is None
    assert first["connect_ms"] == second["connect_ms"] == 0.0
    assert "events" not in first


async def test_compressed_response_encoding_is_logged(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    async def gzipped(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        return web.Response(
            body=gzip.compress(b"{}"),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    fake.handler = gzipped
    line = await logged_request(proxy, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert (line["response_encoding"], line["content_type"]) == ("gzip", "application/json")


async def test_a_200_stream_without_response_completed_is_a_warning(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    streaming(fake, sse_event("response.created", {}) + sse_event("response.output_text.delta", {}))
    line = await logged_request(proxy)
    assert line["log_level"] == "warning"
    assert line["outcome"] == "completed"
    assert (line["completed"], line["stream_end"], line["last_event"]) == (
        False,
        None,
        "response.output_text.delta",
    )
    assert (
        line["diagnosis"]
        == "the event stream ended without response.completed (last: response.output_text.delta)"
    )


@pytest.mark.parametrize(
    ("closing", "code", "message"),
    [
        (
            sse_event(
                "response.failed",
                {"response": {"error": {"code": "server_is_overloaded", "message": "busy"}}},
            ),
            "server_is_overloaded",
            "busy",
        ),
        (
            sse_event(
                "error", {"code": "context_length_exceeded", "message": f"token {TOKEN} too long"}
            ),
            "context_length_exceeded",
            f"token [redacted #{fingerprint(TOKEN)}] too long",
        ),
    ],
)
async def test_errors_inside_a_200_stream_are_named(
    proxy: RunningProxy, fake: FakeUpstream, closing: bytes, code: str, message: str
) -> None:
    streaming(fake, sse_event("response.created", {}) + closing)
    line = await logged_request(proxy)
    assert line["log_level"] == "warning"
    assert (line["error_code"], line["error_message"]) == (code, message)


async def test_diagnosis_html_page_where_json_was_expected(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    async def blocked(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        return web.Response(
            status=403,
            body=CLOUDFLARE_403,
            headers={"Content-Type": "text/html", "cf-ray": "8f00fake0000-AMS"},
        )

    fake.handler = blocked
    with capture_logs() as logs:
        response = parse_response(
            await raw_request(
                proxy.port,
                b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\naccept: text/event-stream\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
        )
        await recorder(proxy).wait_ended()
    assert response.status == 403
    line = only_request(logs)
    assert line["log_level"] == "warning"
    assert line["diagnosis"] == (
        "127.0.0.1 answered an HTML page (status 403, cf-ray 8f00fake0000-AMS) where the client "
        "expected an event stream: the path is retired or the request was blocked; rule table: "
        "legacy-responses, legacy-v1-responses, legacy-codex-v1-responses, legacy-v1-codex-responses"
    )


async def test_diagnosis_retired_path_unrewritten(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    async def not_found(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        return web.json_response({"detail": "Not Found"}, status=404)

    fake.handler = not_found
    proxy = await start_proxy(rewrite={"disabled": ("legacy-v1-responses",)})
    with capture_logs() as logs:
        await raw_request(
            proxy.port,
            b"POST /backend-api/v1/responses?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        await recorder(proxy).wait_ended()
    assert only_request(logs)["diagnosis"] == (
        "POST /backend-api/v1/responses reached 127.0.0.1 unrewritten: that path was retired in "
        "2026-04 and answers 403; no active rule covers it (see rewrite.rules and rewrite.disabled)"
    )


@pytest.mark.parametrize("status", [401, 403])
async def test_diagnosis_auth_refused_with_json(
    proxy: RunningProxy, fake: FakeUpstream, status: int
) -> None:
    async def refused(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        return web.json_response(
            {"detail": "Could not parse your authentication token."}, status=status
        )

    fake.handler = refused
    with_token = POST_LEGACY.replace(
        b"Host: a\r\n", f"Host: a\r\nAuthorization: Bearer {TOKEN}\r\n".encode()
    )
    line = await logged_request(proxy, with_token)
    assert line["log_level"] == "warning"
    assert line["diagnosis"] == (
        f"127.0.0.1 answered {status} with JSON: the access token is expired or invalid, or the "
        "account lacks the Codex entitlement; sign in again"
    )
    # No token at all is not an expired one: the sentence names the header to send.
    for without in (
        POST_LEGACY,
        POST_LEGACY.replace(b"Host: a\r\n", b"Host: a\r\nAuthorization:\r\n"),
    ):
        line = await logged_request(proxy, without)
        assert line["diagnosis"] == (
            f"no token was sent: the request had no Authorization header and 127.0.0.1 answered "
            f"{status}; the client should send Authorization: Bearer <access token> (its "
            "ChatGPT sign-in) and ChatGPT-Account-Id: <account id>"
        )
        # Nothing in it looks like a credential: the rendered line shows it as written.
        assert redact_text(line["diagnosis"]) == line["diagnosis"]


async def test_rejected_outcome_names_the_limit(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    proxy = await start_proxy(limits={"max_body_size": 1})
    line = await logged_request(
        proxy,
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab",
    )
    assert (line["outcome"], line["cause"], line["limit"]) == (
        "rejected",
        "request_too_large",
        "limits.max_body_size",
    )


def test_console_line_for_a_person_at_a_terminal() -> None:
    fields: dict[str, Any] = {
        "method": "POST",
        "path": "/backend-api/responses",
        "upstream_path": "/backend-api/codex/responses",
        "rule": "legacy-responses",
        "status": 200,
        "content_type": "text/event-stream; charset=utf-8",
        "events": 41,
        "stream_end": "response.completed",
        "outcome": "completed",
        "duration_ms": 3200.0,
    }
    assert ExchangeLine.render(fields) == (
        "POST   /backend-api/responses → /backend-api/codex/responses  200  text/event-stream  "
        "41 events  response.completed  3.2 s"
    )
    failed = {
        **fields,
        "stream_end": None,
        "outcome": "upstream_cut",
        "cause": "upstream_cut_mid_body",
        "duration_ms": 12.0,
        "diagnosis": "it broke",
    }
    line = ExchangeLine(colors=True)(
        None, "warning", {"event": "request", "level": "warning", **failed}
    )
    assert line["event"] == (
        "\x1b[31mPOST   /backend-api/responses → /backend-api/codex/responses  200  text/event-stream  "
        "41 events  no response.completed  upstream_cut (upstream_cut_mid_body)  12 ms\n       it broke\x1b[0m"
    )
    assert set(line) == {"event", "level"}


async def test_the_console_line_of_a_failure_says_why(start_proxy: StartProxy) -> None:
    """The JSON line's detail is on the console line too; a cause that only repeats the
    outcome is not shown twice."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    proxy = await start_proxy(f"http://127.0.0.1:{port}", upstream={"warm_connections": 0})
    line = await logged_request(proxy)
    assert line["detail"] == f"connection refused by 127.0.0.1:{port}"
    shown = ExchangeLine.render(line)
    assert re.fullmatch(
        r"POST   /backend-api/responses → /backend-api/codex/responses  502  "
        rf"upstream_unreachable  connection refused by 127\.0\.0\.1:{port}  \d+ ms",
        shown,
    ), shown


async def test_console_format_from_the_real_command(fake: FakeUpstream) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_PATH_PROXY_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "--port",
        "0",
        "--upstream",
        fake.url,
        "--log-format",
        "console",
        stderr=asyncio.subprocess.PIPE,
        env=environ,
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(20):
            first = (await process.stderr.readline()).decode()
        port = int(re.search(r"address=http://127\.0\.0\.1:(\d+)", first).group(1))  # type: ignore[union-attr]
        await raw_request(
            port,
            b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        async with asyncio.timeout(20):
            line = (await process.stderr.readline()).decode()
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
    assert (
        "POST   /backend-api/responses → /backend-api/codex/responses  200  text/event-stream  3 events  response.completed"
        in line
    )
    assert "\x1b[" not in line  # not a terminal: no colours


def check_har(document: dict[str, Any]) -> dict[str, Any]:
    """The structure HAR 1.2 requires (http://www.softwareishard.com/blog/har-12-spec/)."""
    log = document["log"]
    assert log["version"] == "1.2"
    assert isinstance(log["creator"]["name"], str)
    assert isinstance(log["creator"]["version"], str)
    [entry] = log["entries"]
    assert isinstance(entry["startedDateTime"], str)
    assert isinstance(entry["time"], int | float)
    request, response = entry["request"], entry["response"]
    for key, kind in [
        ("method", str),
        ("url", str),
        ("httpVersion", str),
        ("cookies", list),
        ("headers", list),
        ("queryString", list),
        ("headersSize", int),
        ("bodySize", int),
    ]:
        assert isinstance(request[key], kind), key
    for key, kind in [
        ("status", int),
        ("statusText", str),
        ("httpVersion", str),
        ("cookies", list),
        ("headers", list),
        ("content", dict),
        ("redirectURL", str),
        ("headersSize", int),
        ("bodySize", int),
    ]:
        assert isinstance(response[key], kind), key
    assert isinstance(response["content"]["size"], int)
    assert isinstance(response["content"]["mimeType"], str)
    for header in request["headers"] + response["headers"] + request["queryString"]:
        assert set(header) == {"name", "value"}
    if "postData" in request:
        assert isinstance(request["postData"]["mimeType"], str)
        assert isinstance(request["postData"]["text"], str)
    assert isinstance(entry["cache"], dict)
    for key in ("send", "wait", "receive"):
        assert isinstance(entry["timings"][key], int | float)
        assert entry["timings"][key] >= 0
    assert isinstance(entry, dict)
    return entry


async def test_capture_writes_a_redacted_decoded_har_per_exchange(
    start_proxy: StartProxy, fake: FakeUpstream, tmp_path: Path
) -> None:
    image = __import__("base64").b64encode(os.urandom(30000)).decode()
    streaming(
        fake,
        completed_stream(sse_event("response.output_item.done", {"item": {"result": image}})),
        {"Set-Cookie": f"__cf_bm={COOKIE}; Path=/"},
    )
    captures = tmp_path / "captures"
    proxy = await start_proxy(capture={"dir": str(captures)})
    plain = json.dumps(
        {"model": "gpt-5", "input": f"my token is {TOKEN} and account {ACCOUNT}"}
    ).encode()
    body = zstandard.ZstdCompressor().compress(plain)
    head = (
        f"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"ChatGPT-Account-Id: {ACCOUNT}\r\nCookie: __cf_bm={COOKIE}\r\ncontent-type: application/json\r\n"
        f"content-encoding: zstd\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    await raw_request(proxy.port, head.encode() + body)
    await recorder(proxy).wait_ended()
    await capture_of(proxy).drain()
    [path] = captures.glob("*.har")
    text = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(captures.stat().st_mode) == 0o700
    for secret in (TOKEN, COOKIE, ACCOUNT, image[:100]):
        assert secret not in text
    entry = check_har(json.loads(text))
    request = entry["request"]
    assert request["url"] == f"{fake.url}/backend-api/codex/responses"
    assert {
        "name": "Authorization",
        "value": f"Bearer [redacted #{fingerprint(TOKEN)}]",
    } in request["headers"]
    assert {"name": "content-encoding", "value": "zstd"} in request["headers"]
    assert json.loads(request["postData"]["text"]) == {
        "model": "gpt-5",
        "input": f"my token is [redacted #{fingerprint(TOKEN)}] and account [redacted #{fingerprint(ACCOUNT)}]",
    }
    assert request["bodySize"] == len(body)
    content = entry["response"]["content"]
    assert "response.completed" in content["text"]
    assert "[base64: 30,000 bytes, sha256 " in content["text"]
    assert "rule legacy-responses" in entry["comment"]


async def test_capture_keeps_a_cap_per_body_and_rotates_oldest_first(
    start_proxy: StartProxy, fake: FakeUpstream, tmp_path: Path
) -> None:
    captures = tmp_path / "captures"
    proxy = await start_proxy(
        capture={"dir": str(captures), "body_limit": 100, "total_limit": 6000}
    )
    for index in range(8):
        await raw_request(
            proxy.port,
            f"POST /r{index} HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n".encode()
            + b"q" * 1000,
        )
        await recorder(proxy).wait_ended(index + 1)
        await capture_of(proxy).drain()
    files = sorted(captures.glob("*.har"))
    assert sum(path.stat().st_size for path in files) <= 6000
    assert 1 <= len(files) < 8
    kept = [json.loads(path.read_text())["log"]["entries"][0] for path in files]
    assert kept[-1]["request"]["url"].endswith("/r7")
    assert kept[-1]["request"]["postData"]["text"] == "q" * 100
    assert kept[-1]["request"]["postData"]["comment"] == "truncated: 100 of 1000 bytes kept"


async def test_capture_counts_files_already_there_and_writes_in_place_once_closed(
    start_proxy: StartProxy, fake: FakeUpstream, tmp_path: Path
) -> None:
    captures = tmp_path / "captures"
    captures.mkdir()
    old = captures / "20000101T000000.000000-old.har"
    old.write_bytes(b"x" * 5000)
    proxy = await start_proxy(
        capture={"dir": str(captures), "body_limit": 100, "total_limit": 6000}
    )
    request = b"POST /r HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nConnection: close\r\n\r\nq"
    await raw_request(proxy.port, request)
    await recorder(proxy).wait_ended(1)
    await capture_of(proxy).drain()
    # The file from before start-up was counted: with it, the budget is exceeded.
    assert not old.exists()
    assert len(list(captures.glob("*.har"))) == 1

    capture_of(proxy).close()  # as at shutdown: a later capture is still written
    await raw_request(proxy.port, request)
    await recorder(proxy).wait_ended(2)
    assert len(list(captures.glob("*.har"))) == 2


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
async def test_no_secret_anywhere_at_any_level_with_every_feature_on(
    fake: FakeUpstream, tmp_path: Path, level: str
) -> None:
    streaming(
        fake,
        completed_stream(),
        {"Set-Cookie": f"__cf_bm={COOKIE}; HttpOnly", "x-codex-turn-state": "s1"},
    )
    captures = tmp_path / "captures"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_PATH_PROXY_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "--port",
        str(port),
        "--upstream",
        fake.url,
        "--log-format",
        "json",
        "--log-level",
        level,
        "--log-bodies",
        "--capture-dir",
        str(captures),
        "--inspector",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
    )
    try:
        # Above info the start-up line is not written: wait for the port instead.
        async with asyncio.timeout(20):
            while True:
                try:
                    _, probe_writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                probe_writer.close()
                break
        head = (
            f"POST /backend-api/responses?access_token={TOKEN} HTTP/1.1\r\nHost: a\r\n"
            f"Authorization: Bearer {TOKEN}\r\nChatGPT-Account-Id: {ACCOUNT}\r\n"
            f"Cookie: __cf_bm={COOKIE}; other=1\r\nx-api-key: sk-proj-abcdefghijklmnop1234\r\n"
            "Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        )
        response = parse_response(await raw_request(port, head.encode()))
        page = await raw_request(
            port, b"GET /_proxy/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        # Shutting down waits for capture files still being written.
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
    assert response.status == 200
    assert process.returncode == 0
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    events = {entry["event"] for entry in lines}
    if level == "debug":
        assert {"request headers", "response headers", "bodies", "request"} <= events
        headers = next(entry for entry in lines if entry["event"] == "request headers")["headers"]
        assert ["Authorization", f"Bearer [redacted #{fingerprint(TOKEN)}]"] in headers
        assert ["ChatGPT-Account-Id", f"[redacted #{fingerprint(ACCOUNT)}]"] in headers
    if level in ("debug", "info"):
        assert "request" in events
    everything = (
        stderr.decode()
        + stdout.decode()
        + page.decode("utf-8", "replace")
        + "".join(path.read_text() for path in captures.glob("*.har"))
    )
    assert list(captures.glob("*.har"))
    for secret in (TOKEN, COOKIE, ACCOUNT, "sk-proj-abcdefghijklmnop1234"):
        assert secret not in everything


async def test_the_debug_response_headers_line_is_written_when_the_headers_arrive(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    """A stream that runs for an hour still shows its response headers at once."""
    release = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "x-request-id": "req_42"}
        )
        await response.prepare(request)
        await response.write(sse_event("response.created", {}))
        await release.wait()
        await response.write_eof()
        return response

    fake.handler = held
    proxy = await start_proxy(log={"level": "debug"})
    with capture_logs() as logs:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        await reader.readuntil(b"\n\n")
        during = [line["event"] for line in logs]
        release.set()
        await reader.read()
        writer.close()
        await recorder(proxy).wait_ended()
    assert "response headers" in during
    assert "request" not in during
    [line] = [line for line in logs if line["event"] == "response headers"]
    assert ["x-request-id", "req_42"] in [list(pair) for pair in line["headers"]]
