"""Diagnoses: the most specific cause wins, and a wrong base URL names the one to set."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from proxy.diagnose import diagnose
from proxy.exchange import Exchange
from proxy.rules import DEFAULT_RULES
from tests.fake_upstream import FakeUpstream
from tests.harness import RunningProxy, StartProxy, raw_request, recorder

Line = MutableMapping[str, Any]


async def logged(proxy: RunningProxy, method: str, path: str, **kwargs: Any) -> tuple[int, Line]:
    with capture_logs() as logs:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, proxy.make_url(path), **kwargs) as response,
        ):
            await response.read()
            status = response.status
        await recorder(proxy).wait_ended()
    [line] = [line for line in logs if line["event"] == "request"]
    return status, line


def not_found(fake: FakeUpstream) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        return web.json_response({"detail": "Not Found"}, status=404)

    fake.handler = answer


async def test_a_retired_path_sent_unrewritten_is_named_before_the_html_page(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    # The rule is off; the fake answers the retired path as chatgpt.com does: 403, HTML.
    proxy = await start_proxy(rewrite={"disabled": ("legacy-responses",)})
    status, line = await logged(
        proxy, "POST", "/backend-api/responses", json={}, headers={"Accept": "text/event-stream"}
    )
    assert status == 403
    assert line["log_level"] == "warning"
    assert line["diagnosis"] == (
        "POST /backend-api/responses reached 127.0.0.1 unrewritten: that path was retired in "
        "2026-04 and answers 403; no active rule covers it (see rewrite.rules and "
        "rewrite.disabled); 127.0.0.1 answered an HTML page (status 403, cf-ray "
        "8f00fake0000-AMS) where the client expected an event stream"
    )


@pytest.mark.parametrize(
    ("path", "used"),
    [("/responses", ""), ("/v1/responses", "/v1"), ("/codex/responses", ""), ("/v1/models", "/v1")],
)
async def test_a_wrong_base_url_is_named_with_the_one_to_set(
    proxy: RunningProxy, fake: FakeUpstream, path: str, used: str
) -> None:
    not_found(fake)
    method = "GET" if path.endswith("models") else "POST"
    status, line = await logged(proxy, method, path + "?x=1")
    assert status == 404
    origin = f"http://127.0.0.1:{proxy.port}"
    assert line["log_level"] == "warning"
    assert line["diagnosis"] == (
        f"{method} {path} is outside /backend-api: the client's base URL is {origin}{used}; "
        f"set it to {origin}/backend-api"
    )


async def test_a_wrong_base_url_without_a_host_header_still_says_what_to_set(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    not_found(fake)
    with capture_logs() as logs:
        await raw_request(proxy.port, b"POST /v1/responses HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        await recorder(proxy).wait_ended()
    [line] = [line for line in logs if line["event"] == "request"]
    assert line["diagnosis"] == (
        "POST /v1/responses is outside /backend-api: the client's base URL is "
        "http://<this proxy>/v1; set it to http://<this proxy>/backend-api"
    )


async def test_the_right_base_url_gets_no_base_url_diagnosis(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    not_found(fake)
    _, line = await logged(proxy, "GET", "/backend-api/codex/nothing-here")
    assert "diagnosis" not in line
    fake.handler = None
    _, line = await logged(proxy, "GET", "/v1/models")  # answered 200: nothing to explain
    assert "diagnosis" not in line


def exchange(
    target: str,
    status: int,
    *,
    rule: str | None = None,
    upstream_target: str | None = None,
    request: list[tuple[str, str]] | None = None,
    response: list[tuple[str, str]] | None = None,
) -> Exchange:
    return Exchange(
        request_id="r",
        method="POST",
        target=target,
        upstream_target=upstream_target or target,
        rule=rule,
        status=status,
        raw_request_headers=encoded(request or [("Host", "127.0.0.1:8780")]),
        raw_response_headers=encoded(response or []),
    )


def encoded(pairs: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in pairs]


HTML = [("Content-Type", "text/html"), ("cf-ray", "abc")]
JSON = [("Content-Type", "application/json")]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (
            exchange("/responses", 403, response=HTML),
            "POST /responses is outside /backend-api: the client's base URL is "
            "http://127.0.0.1:8780; set it to http://127.0.0.1:8780/backend-api; "
            "h answered an HTML page (status 403, cf-ray abc) where the client expected JSON",
        ),
        (
            exchange("/backend-api/v1/responses/x", 403, response=HTML),
            "POST /backend-api/v1/responses/x reached h unrewritten: that path was retired in "
            "2026-04 and answers 403; no active rule covers it (see rewrite.rules and "
            "rewrite.disabled); h answered an HTML page (status 403, cf-ray abc) where the "
            "client expected JSON",
        ),
        (
            exchange(
                "/backend-api/responses",
                403,
                rule="legacy-responses",
                upstream_target="/backend-api/codex/responses",
                response=HTML,
            ),
            "h answered an HTML page (status 403, cf-ray abc) where the client expected JSON: "
            "the path is retired or the request was blocked; rule table: legacy-responses, "
            "legacy-v1-responses, legacy-codex-v1-responses, legacy-v1-codex-responses",
        ),
        (
            exchange("/responses", 404, request=[("Host", "evil\r\nx")]),
            "POST /responses is outside /backend-api: the client's base URL is "
            "http://<this proxy>; set it to http://<this proxy>/backend-api",
        ),
        (
            exchange("/responses", 404, request=[("Host", "[::1]:8780")]),
            "POST /responses is outside /backend-api: the client's base URL is "
            "http://[::1]:8780; set it to http://[::1]:8780/backend-api",
        ),
        (
            exchange("/backend-api/codex/responses", 401, response=JSON),
            "no token was sent: the request had no Authorization header and h answered 401; "
            "the client should send Authorization: Bearer <access token> (its ChatGPT "
            "sign-in) and ChatGPT-Account-Id: <account id>",
        ),
        (
            exchange(
                "/backend-api/codex/responses",
                401,
                request=[("Authorization", "Bearer x")],
                response=JSON,
            ),
            "h answered 401 with JSON: the access token is expired or invalid, or the account "
            "lacks the Codex entitlement; sign in again",
        ),
        (exchange("/responses", 200), None),
        (exchange("/responsesx", 404), None),
        (exchange("/v1/responses", 404, rule="custom"), None),
    ],
)
def test_diagnoses_table(case: Exchange, expected: str | None) -> None:
    assert diagnose(case, upstream_host="h", rules=DEFAULT_RULES) == expected
