"""Only the configured upstream is ever contacted, whatever the target, Host or path says."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from tests.fake_upstream import FakeUpstream
from tests.harness import RunningProxy, parse_response, raw_request


@pytest.fixture
async def other(aiohttp_server: AiohttpServer) -> FakeUpstream:
    """A second server that must never see a request through the proxy."""
    second = FakeUpstream()
    server = await aiohttp_server(second.app(), auto_decompress=False)
    assert server.port is not None
    second.port = server.port
    return second


@pytest.mark.parametrize(
    ("request_line", "path"),
    [
        ("GET http://127.0.0.1:{other}/steal HTTP/1.1", "/steal"),
        (
            "POST http://127.0.0.1:{other}/backend-api/responses HTTP/1.1",
            "/backend-api/codex/responses",
        ),
        ("GET https://127.0.0.1:{other}/steal?q=1 HTTP/1.1", "/steal?q=1"),
        ("GET HTTP://user@127.0.0.1:{other} HTTP/1.1", "/"),
    ],
)
async def test_absolute_form_targets_go_to_the_configured_upstream_only(
    proxy: RunningProxy, fake: FakeUpstream, other: FakeUpstream, request_line: str, path: str
) -> None:
    """RFC 9112 §3.2.2: a server must accept absolute-form. Its path (and query) is used,
    rewritten like any other; its authority never: only the configured upstream is asked."""
    line = request_line.format(other=other.port)
    data = f"{line}\r\nHost: 127.0.0.1:{other.port}\r\nAuthorization: Bearer t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    response = parse_response(await raw_request(proxy.port, data.encode()))
    assert response.status == 200
    assert other.received == []
    [seen] = fake.received
    assert seen.target == path
    assert dict(seen.headers)["Host"] == f"127.0.0.1:{fake.port}"


@pytest.mark.parametrize(
    "request_line",
    [b"GET ftp://127.0.0.1/x HTTP/1.1", b"GET //127.0.0.1/x#f HTTP/1.1"],
)
async def test_targets_other_than_a_path_or_an_http_url_are_refused(
    proxy: RunningProxy, fake: FakeUpstream, request_line: bytes
) -> None:
    data = request_line + b"\r\nHost: a\r\nConnection: close\r\n\r\n"
    response = parse_response(await raw_request(proxy.port, data))
    assert response.status == 400
    assert json.loads(response.body)["error"]["code"] == "bad_request"
    assert fake.received == []


async def test_connect_is_refused(
    proxy: RunningProxy, fake: FakeUpstream, other: FakeUpstream
) -> None:
    data = f"CONNECT 127.0.0.1:{other.port} HTTP/1.1\r\nHost: 127.0.0.1:{other.port}\r\n\r\n"
    response = parse_response(await raw_request(proxy.port, data.encode()))
    assert response.status == 405
    assert json.loads(response.body)["error"]["code"] == "method_not_allowed"
    assert other.received == []
    assert fake.received == []


@pytest.mark.parametrize(
    "target",
    ["//127.0.0.1:{other}/steal", "/\\127.0.0.1:{other}/steal", "//evil.example/x?y=//z"],
)
async def test_host_like_paths_are_plain_paths_on_the_upstream(
    proxy: RunningProxy, fake: FakeUpstream, other: FakeUpstream, target: str
) -> None:
    path = target.format(other=other.port)
    data = f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    response = parse_response(await raw_request(proxy.port, data.encode()))
    assert response.status == 200
    assert fake.last.target == path
    assert other.received == []


async def test_host_header_naming_another_host_goes_to_the_upstream(
    proxy: RunningProxy, fake: FakeUpstream, other: FakeUpstream
) -> None:
    data = f"GET /x HTTP/1.1\r\nHost: 127.0.0.1:{other.port}\r\nX-Forwarded-Host: 127.0.0.1:{other.port}\r\nConnection: close\r\n\r\n"
    await raw_request(proxy.port, data.encode())
    assert other.received == []
    assert fake.last.headers[0] == ("Host", f"127.0.0.1:{fake.port}")


async def test_redirect_to_another_host_is_not_followed(
    proxy: RunningProxy, fake: FakeUpstream, other: FakeUpstream
) -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{other.port}/steal")

    fake.handler = redirect
    data = b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    response = parse_response(await raw_request(proxy.port, data))
    assert response.status == 307
    assert other.received == []


async def test_duplicate_host_headers_collapse_to_the_upstream(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    data = b"GET /x HTTP/1.1\r\nX-Before: 1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n"
    response = parse_response(await raw_request(proxy.port, data))
    if response.status == 400:  # the C parser may refuse the request outright
        assert fake.received == []
    else:
        assert [v for k, v in fake.last.headers if k.lower() == "host"] == [
            f"127.0.0.1:{fake.port}"
        ]


async def test_header_that_cannot_be_forwarded_unchanged_is_refused(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    data = b"GET /x HTTP/1.1\r\nHost: a\r\nX-Latin: caf\xe9\r\nConnection: close\r\n\r\n"
    response = parse_response(await raw_request(proxy.port, data))
    assert response.status == 400
    assert "X-Latin" in json.loads(response.body)["error"]["message"]
    assert fake.received == []


async def test_own_endpoints_are_answered_here_and_never_forwarded(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    health = parse_response(
        await raw_request(
            proxy.port, b"GET /_proxy/healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
    )
    assert health.status == 200
    assert json.loads(health.body) == {"status": "ok"}
    unknown = parse_response(
        await raw_request(
            proxy.port,
            b"POST /_proxy/anything HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
    )
    assert unknown.status == 404
    assert json.loads(unknown.body)["error"]["code"] == "not_found"
    assert fake.received == []
