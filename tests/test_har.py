"""A capture shows the request as forwarded: the upstream's URL and the headers it got."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from proxy.blobs import BLOB_MIN
from proxy.redact import header_value
from tests.fake_upstream import FakeUpstream
from tests.harness import StartProxy, capture_of, raw_request, recorder

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0b2tlbi1vd25lciJ9.dG9rZW4tc2lnbmF0dXJl"
README = (Path(__file__).parent.parent / "README.md").read_text()


async def captured(start_proxy: StartProxy, tmp_path: Path, data: bytes) -> dict[str, Any]:
    captures = tmp_path / "captures"
    proxy = await start_proxy(capture={"dir": str(captures)})
    await raw_request(proxy.port, data)
    await recorder(proxy).wait_ended()
    await capture_of(proxy).drain()
    [path] = captures.glob("*.har")
    entry: dict[str, Any] = json.loads(path.read_text())["log"]["entries"][0]
    return entry


HEAD = (
    "POST /backend-api/responses?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8780\r\n"
    f"Authorization: Bearer {TOKEN}\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n"
    "Keep-Alive: timeout=5\r\nTE: trailers\r\nx-codex-turn-state: t1\r\n"
    "Content-Type: application/json\r\n"
)


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param("Content-Length: 2\r\n\r\n{}", id="content-length"),
        pytest.param("Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", id="chunked"),
    ],
)
async def test_the_har_request_is_what_the_upstream_got(
    start_proxy: StartProxy, fake: FakeUpstream, tmp_path: Path, framing: str
) -> None:
    entry = await captured(start_proxy, tmp_path, (HEAD + framing).encode())
    request = entry["request"]
    assert request["url"] == f"{fake.url}/backend-api/codex/responses?x=1"
    shown = [(header["name"], header["value"]) for header in request["headers"]]
    assert shown == [(name, header_value(name, value)) for name, value in fake.last.headers]
    assert ("Host", f"127.0.0.1:{fake.port}") in shown
    assert TOKEN not in json.dumps(entry)
    # The client's own target stays in the comment.
    assert "path sent by the client /backend-api/responses?x=1;" in entry["comment"]


@pytest.mark.parametrize(
    ("status", "text"), [(200, "OK"), (404, "Not Found"), (403, "Forbidden"), (599, "")]
)
async def test_the_har_response_has_its_status_text(
    start_proxy: StartProxy, fake: FakeUpstream, tmp_path: Path, status: int, text: str
) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        return web.json_response({}, status=status)

    fake.handler = answer
    entry = await captured(
        start_proxy,
        tmp_path,
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    assert (entry["response"]["status"], entry["response"]["statusText"]) == (status, text)


def test_the_readme_says_above_which_size_base64_is_summarised() -> None:
    assert f"base64 runs of {BLOB_MIN:,} characters or more" in " ".join(README.split())
