"""Hostile clients, part two: later request heads timed, encoded line breaks, targets and
framings refused and logged, unsupported versions, rule results that stay origin-form."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_aiohttp import AiohttpServer
from structlog.testing import capture_logs

from proxy.rules import Rule, rewrite
from tests.fake_upstream import FakeUpstream
from tests.harness import (
    RunningProxy,
    StartProxy,
    raw_request,
    read_head_and_body,
    read_until_closed,
)
from tests.test_hostile import refused, rejections, running, split_responses

# --- Slow and idle connections.


async def test_head_of_a_later_request_on_the_connection_is_timed_too(
    fake: FakeUpstream,
) -> None:
    async with running(fake, limits_header_timeout="0.5") as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            writer.write(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
            first = await read_head_and_body(reader)
            # The second head never completes; the keep-alive timeout is far longer.
            writer.write(b"GET /second HTTP/1.1\r\nHost: a\r\n")
            answer = await read_until_closed(reader)
        finally:
            writer.close()
    assert first.status == 200
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 ")
    assert [seen.target for seen in fake.received] == ["/first"]


# --- Targets the proxy alters or misroutes today.


@pytest.fixture
async def lenient(aiohttp_server: AiohttpServer) -> FakeUpstream:
    """A fake upstream whose route takes any path (FakeUpstream's `.*` stops at a newline)."""
    upstream = FakeUpstream()
    app = web.Application()
    app.router.add_route("*", r"/{tail:[\s\S]*}", upstream.default)
    server = await aiohttp_server(app, auto_decompress=False)
    assert server.port is not None
    upstream.port = server.port
    return upstream


@pytest.mark.parametrize(
    "target", ["/x%0a", "/x%0A", "/x%0d%0aX-Injected:%201", "/backend-api/responses%0a"]
)
async def test_encoded_line_breaks_in_the_path_pass_raw(
    start_proxy: StartProxy, lenient: FakeUpstream, target: str
) -> None:
    proxy = await start_proxy(lenient.url)
    data = f"GET {target} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode()
    [response] = split_responses(await raw_request(proxy.port, data))
    assert response.status == 200
    assert [seen.target for seen in lenient.received] == [target]


@pytest.mark.parametrize(
    "request_line",
    [
        pytest.param(b"GET /x#frag HTTP/1.1", id="fragment"),
        pytest.param(b"GET /backend-api/responses#x HTTP/1.1", id="rule"),
        pytest.param(b"GET /x?a=1#f HTTP/1.1", id="query"),
        pytest.param(b"GET ftp://127.0.0.1:9/x HTTP/1.1", id="absolute-not-http"),
        pytest.param(b"OPTIONS * HTTP/1.1", id="asterisk"),
    ],
)
async def test_target_that_is_not_a_path_is_refused_and_logged(
    proxy: RunningProxy, fake: FakeUpstream, request_line: bytes
) -> None:
    data = request_line + b"\r\nHost: a\r\nConnection: close\r\n\r\n"
    with capture_logs() as logs:
        error = refused(await raw_request(proxy.port, data), 400)
    assert error["code"] == "bad_request"
    assert fake.received == []
    [line] = rejections(logs)
    assert (line["cause"], line["status"]) == ("bad_request", 400)


async def test_connect_refusal_is_logged(proxy: RunningProxy, fake: FakeUpstream) -> None:
    with capture_logs() as logs:
        refused(await raw_request(proxy.port, b"CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n"), 405)
    [line] = rejections(logs)
    assert (line["cause"], line["status"]) == ("method_not_allowed", 405)
    assert fake.received == []


# --- Framing and versions aiohttp lets through.


async def test_transfer_coding_other_than_chunked_is_501(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    data = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    with capture_logs() as logs:
        error = refused(await raw_request(proxy.port, data), 501)
    assert fake.received == []
    [line] = rejections(logs)
    assert (line["cause"], line["status"]) == (error["code"], 501)


async def test_http10_request_with_transfer_encoding_is_refused(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
    data = b"POST /x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    refused(await raw_request(proxy.port, data), 400)
    assert fake.received == []


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET /x HTTP/2.0\r\nHost: a\r\n\r\n", id="2.0"),
        pytest.param(b"GET /x\r\n\r\n", id="0.9"),
    ],
)
async def test_unsupported_http_version_is_505(
    proxy: RunningProxy, fake: FakeUpstream, data: bytes
) -> None:
    refused(await raw_request(proxy.port, data), 505)
    assert fake.received == []


# --- Rules whose result is not an origin-form path.

PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None)
SEGMENTS = st.lists(st.sampled_from(["a", "b", "backend-api", "codex", ""]), max_size=3)


@pytest.mark.parametrize("target", ["/backend-api/codex", "/backend-api/codex?x=1"])
def test_prefix_rule_to_root_never_yields_an_empty_path(target: str) -> None:
    rule = Rule.build(name="root", kind="prefix", match="/backend-api/codex", target="/")
    assert rewrite((rule,), target).target.startswith("/")


@PROPERTY
@given(st.sampled_from(["/", "/new/", "/n"]), SEGMENTS, SEGMENTS)
def test_any_rule_result_starts_with_exactly_one_slash(
    target: str, match: list[str], rest: list[str]
) -> None:
    match_path = "/" + "/".join(["m", *match])
    path = match_path + "".join("/" + part for part in rest)
    rules = (
        Rule.build(name="prefix", kind="prefix", match=match_path, target=target),
        Rule.build(name="regex", kind="regex", match=re.escape(match_path) + "(.*)", target=r"/\1"),
    )
    for rule in rules:
        result = rewrite((rule,), path).target
        assert result.startswith("/")
        assert not result.startswith("//")


@pytest.mark.parametrize(
    ("kind", "target"),
    [
        ("prefix", "/a b"),
        ("prefix", "/a\tb"),
        ("prefix", "/a\r\nX-Injected: 1"),
        ("prefix", "/a\x00"),
        ("prefix", "/a#b"),
        ("regex", "/a b/\\1"),
        ("regex", "/a#\\1"),
        # A prefix rule appends the rest of the path: after a '?' it would land in the query.
        ("prefix", "/a?b"),
    ],
)
def test_build_refuses_a_target_that_is_not_a_plain_path(kind: str, target: str) -> None:
    with pytest.raises(ValueError, match="target"):
        Rule.build(name="bad", kind=kind, match="/x", target=target)
