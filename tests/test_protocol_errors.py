"""Requests aiohttp cannot take get the proxy's JSON errors and one redacted log line."""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs

from tests.fake_upstream import FakeUpstream
from tests.harness import RunningProxy, parse_response, raw_request

SECRET = "cookie-secret-value-0123456789"


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (
            b"GET /x HTTP/1.1\r\nHost: a\r\nCookie: " + SECRET.encode() * 3000 + b"\r\n\r\n",
            431,
            "request_header_fields_too_large",
        ),
        (
            b"GET /x HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n",
            431,
            "request_header_fields_too_large",
        ),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, "uri_too_long"),
        (
            b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            b"GET /x HTTP/1.1\r\nHost: a\r\nX-Secret: " + SECRET.encode() + b"\x00\r\n\r\n",
            400,
            "bad_request",
        ),
        (b"F(O /x HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request"),
    ],
)
async def test_malformed_requests_get_json_errors_and_reach_nobody(
    proxy: RunningProxy, fake: FakeUpstream, data: bytes, status: int, code: str
) -> None:
    with capture_logs() as logs:
        response = parse_response(await raw_request(proxy.port, data))
    assert response.status == status
    assert response.header("Content-Type") == "application/json"
    error = json.loads(response.body)["error"]
    assert (error["type"], error["code"]) == ("proxy_error", code)
    assert SECRET not in response.body.decode()
    assert fake.received == []
    [line] = [line for line in logs if line["event"] == "rejected"]
    assert (line["status"], line["cause"]) == (status, code)
    assert SECRET not in repr(logs)


async def test_a_header_at_the_limit_still_passes(proxy: RunningProxy, fake: FakeUpstream) -> None:
    big = "c" * 48 * 1024
    await raw_request(
        proxy.port,
        f"GET /x HTTP/1.1\r\nHost: a\r\nCookie: {big}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert ("Cookie", big) in fake.last.headers
