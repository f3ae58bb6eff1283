"""The secret sweep (issue 26): the same secrets through every path, then every byte the
proxy serves or writes searched for them.

The secrets: a bearer token (a JWT, and each of its parts), an account id, cookies (the
client's and the upstream's), the query's `access_token` and `api_key`, and the token
the outbound proxy's URL carries as its user name. They travel in headers (one the log
may show, too), in the query, in request bodies, in an event stream's events, in a JSON
answer that echoes the request's headers, in an error, and in WebSocket messages
(compressed), through a real CONNECT proxy. Searched: all the real command writes (its
log in console and JSON format, at debug level, with body excerpts), its HAR captures,
`check-config`, every `/_proxy` endpoint (metrics, version, health, the inspector's page,
assets, event stream, each exchange's content and each event, search for each secret,
each capture file) and the inspector page's DOM in Chromium with every row opened, every
tree node expanded and every event shown.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from playwright.async_api import Browser, Page, Response

from proxy.redact import marker
from tests.connect_proxy import ConnectProxy
from tests.fake_upstream import FakeUpstream, sse_event
from tests.proc import run_cli, writing_process
from tests.test_inspector_browser import browser

__all__ = ["browser"]  # the fixture, shared with the other browser tests

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzd2VlcC11c2VyIn0.c3dlZXAtc2lnbmF0dXJlLTk5"
ACCOUNT = "5c4d3e2f-aaaa-bbbb-cccc-ddddeeeeffff"
COOKIE = "cf-bm-client-cookie-8d7e6f"
SET_COOKIE = "cf-bm-upstream-cookie-2a3b4c"
ACCESS_TOKEN = "query-access-token-61fe"
API_KEY = "query-api-key-0b9d"
PROXY_TOKEN = "outbound-proxy-token-7c2a"
SECRETS = (
    TOKEN,
    *TOKEN.split("."),
    ACCOUNT,
    COOKIE,
    SET_COOKIE,
    ACCESS_TOKEN,
    API_KEY,
    PROXY_TOKEN,
    # The proxy's credential as the CONNECT request carries it (Basic user:).
    base64.b64encode(f"{PROXY_TOKEN}:".encode()).decode(),
)
QUERY = f"?access_token={ACCESS_TOKEN}&api_key={API_KEY}"
HEADERS = {
    "Authorization": f"Bearer {TOKEN}",
    "ChatGPT-Account-Id": ACCOUNT,
    "Cookie": f"__cf_bm={COOKIE}; theme=dark",
    "originator": "codex_exec",
    # A header the log may show, holding a secret: masked by value.
    "x-client-request-id": f"req-{ACCOUNT}",
}
ECHO = f"account {ACCOUNT}, token {TOKEN}, key {ACCESS_TOKEN}, cookie {COOKIE}"
REQUEST = {
    "model": "gpt-5.4",
    "input": [{"role": "user", "content": [{"type": "input_text", "text": ECHO}]}],
    "metadata": {"account": ACCOUNT, ACCOUNT: TOKEN},
    "stream": True,
}
EXCHANGES = 4
# The echo as the inspector shows it: "account [redacted #…], token [redacted #…], …".
ECHO_SHOWN = b"token [redacted #"


def fake_chatgpt(fake: FakeUpstream) -> None:
    """An event stream that echoes the secrets, a 401 that names the token, a WebSocket
    that echoes each message; the rest as the fake does (a JSON echo of the headers)."""

    async def answer(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            await fake.record(request)
            ws = web.WebSocketResponse(compress=True)
            ws.headers["Set-Cookie"] = f"__cf_bm={SET_COOKIE}; Path=/"
            await ws.prepare(request)
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    await ws.send_str(message.data)
                    await ws.close(code=1000, message=b"done")
            return ws
        seen = await fake.record(request)
        path = seen.target.partition("?")[0]
        if path == "/backend-api/codex/responses":
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Set-Cookie": f"__cf_bm={SET_COOKIE}; HttpOnly",
                    "x-codex-primary-used-percent": "12",
                }
            )
            await response.prepare(request)
            events: list[tuple[str, dict[str, object]]] = [
                ("response.created", {"response": {"id": "resp_s"}}),
                ("response.output_text.delta", {"item_id": "m", "delta": ECHO}),
                ("response.completed", {"response": {"id": "resp_s", "usage": {"n": 1}}}),
            ]
            for kind, payload in events:
                await response.write(sse_event(kind, payload))
            await response.write_eof()
            return response
        if path == "/backend-api/me":
            return web.json_response(
                {"error": {"message": f"token {TOKEN} for {ACCOUNT} expired"}}, status=401
            )
        return await fake.default(request)

    fake.handler = answer


async def ended_records(response: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    """The inspector's final record of each of the first `count` exchanges, as they end."""
    ended: dict[int, dict[str, Any]] = {}
    kind = "message"
    async with asyncio.timeout(30):
        while len(ended) < count:
            line = (await response.content.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "exchange":
                record = json.loads(line[6:])
                if not record["live"]:
                    ended[record["seq"]] = record
    return [ended[seq] for seq in sorted(ended)]


async def exercise(client: aiohttp.ClientSession, origin: str) -> None:
    """Every path a secret can take through the proxy."""
    async with client.post(
        f"{origin}/backend-api/responses{QUERY}", headers=HEADERS, json=REQUEST
    ) as response:
        assert response.status == 200
        assert ECHO.encode() in await response.read()
    async with client.get(f"{origin}/backend-api/models{QUERY}", headers=HEADERS) as response:
        assert response.status == 200
        assert TOKEN in await response.text()  # the fake echoes the headers it received
    async with client.get(f"{origin}/backend-api/me{QUERY}", headers=HEADERS) as response:
        assert response.status == 401
        await response.read()
    async with client.ws_connect(
        f"{origin}/backend-api/responses{QUERY}", headers=HEADERS, compress=15
    ) as ws:
        assert ws.compress == 15  # permessage-deflate: the inspector inflates the messages
        await ws.send_str(json.dumps({"type": "response.create", **REQUEST}))
        echoed = [message.data async for message in ws if message.type is WSMsgType.TEXT]
    assert echoed
    assert ECHO in echoed[0]


async def every_endpoint(
    client: aiohttp.ClientSession, origin: str, records: list[dict[str, Any]]
) -> list[bytes]:
    """Each /_proxy endpoint's answer, every exchange's content and event, each capture."""
    paths = [
        "/_proxy",
        "/_proxy/",
        "/_proxy/inspector.js",
        "/_proxy/inspector.css",
        "/_proxy/healthz",
        "/_proxy/readyz",
        "/_proxy/metrics",
        "/_proxy/version",
        "/_proxy/nothing-here",
        "/_proxy/exchanges/99",
    ]
    for record in records:
        seq = record["seq"]
        paths.append(f"/_proxy/exchanges/{seq}")
        paths += [f"/_proxy/exchanges/{seq}/events/{n}" for n in range(record.get("events", 0))]
        if record["har"] is not None and record["har"]["url"] is not None:
            paths.append(record["har"]["url"])
    served = []
    for path in paths:
        async with client.get(origin + path, allow_redirects=False) as response:
            assert response.status < 500, path
            served.append(await response.read())
    for secret in SECRETS:
        async with client.get(f"{origin}/_proxy/search", params={"q": secret}) as response:
            body = await response.read()
            served.append(body)
            if len(secret) <= 200:
                assert json.loads(body) == {"matches": []}, secret
    return served


async def page_sweep(browser: Browser, origin: str) -> list[bytes]:
    """The inspector page with every row opened, every tree node expanded and every event
    shown: its DOM after each, its event stream's payloads and every body it fetched."""
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(5000)
    page = await context.new_page()
    seen: list[bytes] = []
    pending: set[asyncio.Task[None]] = set()

    def on_response(response: Response) -> None:
        if "/_proxy/events" in response.url:
            return  # never ends: its payloads come through the devtools protocol

        async def read() -> None:
            with contextlib.suppress(Exception):  # a body gone with its page
                seen.append(await response.body())

        task = asyncio.ensure_future(read())
        pending.add(task)
        task.add_done_callback(pending.discard)

    page.on("response", on_response)
    devtools = await context.new_cdp_session(page)
    devtools.on(
        "Network.eventSourceMessageReceived", lambda event: seen.append(event["data"].encode())
    )
    await devtools.send("Network.enable")
    await page.goto(f"{origin}/_proxy/")
    rows = page.locator("#rows tr")
    await rows.nth(EXCHANGES - 1).wait_for()
    for index in range(await rows.count()):
        await rows.nth(index).click()
        await page.locator("#detail").wait_for()
        await expand_everything(page)
        events = page.locator("#detail .timeline li[data-position]")
        for position in range(await events.count()):
            await events.nth(position).click()
            await page.locator("#detail .event-json .tree").wait_for()
            await expand_everything(page)
            seen.append((await page.content()).encode())
        seen.append((await page.content()).encode())
    await asyncio.gather(*pending)
    await context.close()
    return seen


async def expand_everything(page: Page) -> None:
    closed = page.locator("#detail details:not([open]) > summary")
    for _ in range(200):
        if not await closed.count():
            return
        await closed.first.click()
    raise AssertionError("still closed tree nodes after 200 clicks")


@pytest.mark.parametrize("log_format", ["json", "console"])
async def test_no_secret_in_any_byte_the_proxy_serves_or_writes(
    fake: FakeUpstream, tmp_path: Path, browser: Browser, log_format: str
) -> None:
    fake_chatgpt(fake)
    outbound = await ConnectProxy(credentials=(PROXY_TOKEN, "")).start()
    captures = tmp_path / "captures"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_PATH_PROXY_")}
    environ["CODEX_PATH_PROXY_UPSTREAM_PROXY"] = f"http://{PROXY_TOKEN}@127.0.0.1:{outbound.port}"
    args = ["--upstream", fake.url, "--log-format", log_format, "--log-level", "debug"]
    args += ["--log-bodies", "--capture-dir", str(captures), "--inspector"]
    served: list[bytes] = []
    try:
        async with (
            writing_process(*args, environ=environ) as running,
            aiohttp.ClientSession(auto_decompress=False) as client,
        ):
            async with client.get(f"{running.origin}/_proxy/events") as page_feed:
                await exercise(client, running.origin)
                records = await ended_records(page_feed, EXCHANGES)
            served += await every_endpoint(client, running.origin, records)
            served += await page_sweep(browser, running.origin)
            written = await running.stop()
    finally:
        await outbound.close()
    code, checked, _ = await run_cli("check-config", environ=environ)
    assert code == 0
    # The secrets went where they had to: the outbound proxy's credential to it, the
    # client's to the upstream.
    assert outbound.connects
    assert all(
        headers["proxy-authorization"] == "Basic " + SECRETS[-1] for _, headers in outbound.connects
    )
    assert {"authorization": f"Bearer {TOKEN}"}.items() <= {
        name.lower(): value for name, value in fake.received[0].headers
    }.items()
    hars = sorted(captures.glob("*.har"))
    assert len(hars) == EXCHANGES
    # What was searched shows the secrets' places, masked: the page drew the views.
    doms = [body for body in served if body.startswith(b"<!DOCTYPE html><html")]
    assert len(doms) > EXCHANGES
    assert any(b"access_token=$ACCESS_TOKEN" in dom for dom in doms)
    assert any(marker(ACCOUNT).encode() in dom and ECHO_SHOWN in dom for dom in doms)
    sources = {
        "the log": written,
        "check-config": checked.encode(),
        **{f"capture {har.name}": har.read_bytes() for har in hars},
        **{f"served #{n}": body for n, body in enumerate(served)},
    }
    for where, data in sources.items():
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret} in {where}"
