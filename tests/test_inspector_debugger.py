"""The inspector as a debugger, in a real browser (headless Debian Chromium, Playwright):
what was asked and what came back, live, without a secret in the page, its DOM or any
response it fetched."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
from pathlib import Path

import aiohttp
from aiohttp import WSMsgType, web
from playwright.async_api import Browser, Response, expect

from tests.fake_upstream import FakeUpstream
from tests.harness import StartProxy, recorder
from tests.test_inspector import ACCOUNT, CLIENT_HEADERS, LEGACY, TOKEN, GatedStream
from tests.test_inspector_browser import LIVE_MS, View, browser, open_inspector
from tests.test_inspector_content import MARKER, REQUEST, answer_sse, answer_stream, png

__all__ = ["browser"]  # the fixture, shared with the other browser tests


BLOCKED = (
    b"<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title>"
    b"<script>document.title = 'pwned'</script><style>.cf-wrapper{}</style></head>"
    b'<body><div id="cf-error-details" class="cf-wrapper"><h1>Sorry, you have been blocked</h1>'
    b'<h2>You are unable to access <b>chatgpt.com</b></h2><img src="x" onerror="alert(1)">'
    b"<p>Cloudflare Ray ID: 8f00</p></div></body></html>"
)


class Fetched:
    """Every response the page fetched from the proxy, with its body."""

    def __init__(self, view: View) -> None:
        self.bodies: list[bytes] = []
        self.pending: set[asyncio.Task[None]] = set()
        view.page.on("response", self.on_response)

    def on_response(self, response: Response) -> None:
        if "/_proxy/events" in response.url:
            return  # the event stream never ends; its payloads are View.payloads

        async def read() -> None:
            try:
                self.bodies.append(await response.body())
            except Exception as exc:  # noqa: BLE001 - a body gone with its page is not ours to judge
                self.bodies.append(repr(exc).encode())

        task = asyncio.get_running_loop().create_task(read())
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def check_secret_free(self, view: View) -> None:
        await asyncio.gather(*self.pending)
        assert any(b'"curl"' in body for body in self.bodies), "no content fetched: broken"
        view.check_secret_free(await view.page.content())
        for body in self.bodies:
            for secret in (TOKEN, *TOKEN.split("."), ACCOUNT):
                assert secret.encode() not in body


async def test_the_request_the_live_answer_the_image_and_the_end_of_an_image_stream(
    start_proxy: StartProxy,
    fake: FakeUpstream,
    client: aiohttp.ClientSession,
    browser: Browser,
    tmp_path: Path,
) -> None:
    """The issue's user: a request with its model and tools, the image, the stream's end,
    all while it streams; the screenshot is the README's picture."""
    inspected = await start_proxy(inspector={"enabled": True})
    stream = GatedStream(fake).install()
    view = await open_inspector(browser, inspected, width=1600)
    fetched = Fetched(view)
    page = view.page
    body = {**REQUEST, "metadata": {"note": f"Bearer {TOKEN} {ACCOUNT}"}}
    sending = asyncio.create_task(
        client.post(inspected.make_url(LEGACY), headers=CLIENT_HEADERS, json=body)
    )
    row = page.locator("#rows tr").first
    await expect(row.locator(".c-outcome")).to_have_text("live", timeout=LIVE_MS)
    await row.click()
    detail = page.locator("#detail")
    # The tree opens two levels deep; the reader opens the rest, and it stays open.
    for path in ("request.input.0", "request.input.0.content", "request.input.0.content.0"):
        await detail.locator(f'details[data-path="{path}"] > summary').click()
    await expect(detail.locator(".tree").first).to_contain_text(f'text: "{MARKER}"')
    summary = detail.locator("section", has=page.locator("h3", has_text=re.compile("^request$")))
    await expect(summary).to_contain_text("modelgpt-5.4")
    await expect(summary).to_contain_text("toolsimage_generation, function: shell")

    stream.push("response.created", response={"id": "resp_1", "model": "gpt-5.4"})
    stream.push(
        "response.output_item.added",
        output_index=0,
        item={"id": "ig_1", "type": "image_generation_call"},
    )
    partial = png(8, 8, noise=4)
    stream.push(
        "response.image_generation_call.partial_image",
        output_index=0,
        item_id="ig_1",
        partial_image_b64=base64.b64encode(partial).decode(),
    )
    thumbnail = detail.locator("img.thumbnail")
    await expect(thumbnail).to_have_count(1, timeout=LIVE_MS)
    await expect(detail.locator("figcaption")).to_contain_text("image/png 8x8, ", timeout=LIVE_MS)
    await expect(detail.locator("figcaption")).to_contain_text("partial")
    image = png(96, 64, noise=30)
    stream.push(
        "response.output_item.done",
        output_index=0,
        item={
            "id": "ig_1",
            "type": "image_generation_call",
            "status": "completed",
            "result": base64.b64encode(image).decode(),
        },
    )
    await expect(detail.locator("figcaption")).to_contain_text("image/png 96x64, ", timeout=LIVE_MS)
    await expect(thumbnail).to_have_js_property("naturalWidth", 96)
    await expect(thumbnail).to_have_js_property("naturalHeight", 64)
    sent = []
    stream.push(
        "response.output_item.added", output_index=1, item={"id": "msg_1", "type": "message"}
    )
    for part in ("Here ", "is ", "your ", "image."):
        stream.push("response.output_text.delta", output_index=1, item_id="msg_1", delta=part)
        sent.append(part)
        await expect(detail.locator(".answer-text")).to_have_text("".join(sent), timeout=LIVE_MS)
    await expect(detail.locator("h3", has_text="answer (so far)")).to_have_count(1)
    stream.complete()
    await expect(row.locator(".c-outcome")).to_have_text("completed", timeout=LIVE_MS)
    await expect(detail.locator("h3", has_text=re.compile(r"^answer$"))).to_have_count(1)
    await expect(detail).to_contain_text("input_tokens11")
    await expect(detail.locator("dd .ok").first).to_have_text("response.completed")
    await expect(detail.locator(".timeline li").last).to_have_text(re.compile("response.completed"))
    response = await sending
    await response.read()
    await expect(page.locator("#count")).to_have_text("1 exchange")
    await page.screenshot(path=tmp_path / "inspector.png", full_page=False)
    if os.environ.get("INSPECTOR_SCREENSHOT"):
        shutil.copy(tmp_path / "inspector.png", os.environ["INSPECTOR_SCREENSHOT"])
    await fetched.check_secret_free(view)
    view.check_clean()


async def test_each_event_s_json_and_a_cloudflare_page_as_text(
    start_proxy: StartProxy, fake: FakeUpstream, client: aiohttp.ClientSession, browser: Browser
) -> None:
    inspected = await start_proxy(inspector={"enabled": True})

    async def blocked(request: web.Request) -> web.Response:
        await fake.record(request)
        return web.Response(status=403, body=BLOCKED, content_type="text/html")

    fake.handler = blocked
    view = await open_inspector(browser, inspected)
    fetched = Fetched(view)
    page = view.page
    title = await page.title()
    async with client.post(
        inspected.make_url(LEGACY), headers=CLIENT_HEADERS, json=REQUEST
    ) as response:
        assert response.status == 403
        await response.read()
    answer_sse(fake, answer_stream(png(32, 32, noise=40), ["ok"]))
    async with client.post(
        inspected.make_url("/backend-api/codex/responses"), headers=CLIENT_HEADERS, json=REQUEST
    ) as response:
        await response.read()
    await recorder(inspected).wait_ended(2)
    rows = page.locator("#rows tr")
    await expect(rows).to_have_count(2)

    await rows.nth(1).click()
    detail = page.locator("#detail")
    html = detail.locator(".html-page")
    await expect(html).to_contain_text("an HTML page, shown as text")
    await expect(html.locator("strong")).to_have_text("Attention Required! | Cloudflare")
    await expect(html.locator("pre")).to_have_text(
        "Sorry, you have been blocked\nYou are unable to access chatgpt.com\nCloudflare Ray ID: 8f00"
    )
    # Nothing of the page's markup became an element: the page's own four are all there is.
    assert await detail.locator(".html-page *").count() == 4
    assert await page.locator("#cf-error-details, .cf-wrapper, img[src='x']").count() == 0
    assert await page.title() == title

    await rows.nth(0).click()
    timeline = detail.locator(".timeline li")
    await expect(timeline).to_have_count(13)
    await timeline.nth(3).click()
    shown = detail.locator(".event-json")
    await expect(shown.locator("h4")).to_have_text("event 4")
    await expect(shown).to_contain_text("response.output_item.done")
    await expect(shown).to_contain_text(
        re.compile(r"\[base64: image/png 32x32, [\d,]+ bytes, sha256 [0-9a-f]{64}\]")
    )
    await expect(timeline.nth(3)).to_have_attribute("aria-pressed", "true")
    await fetched.check_secret_free(view)
    view.check_clean()


async def test_copy_as_curl_runs_and_reaches_the_upstream_with_the_same_body(
    start_proxy: StartProxy, fake: FakeUpstream, client: aiohttp.ClientSession, browser: Browser
) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed: apt-get install -y curl"
    inspected = await start_proxy(inspector={"enabled": True})
    view = await open_inspector(browser, inspected)
    fetched = Fetched(view)
    page = view.page
    data = json.dumps(REQUEST).encode()
    async with client.post(
        inspected.make_url(LEGACY), headers=CLIENT_HEADERS, data=data
    ) as response:
        await response.read()
    await recorder(inspected).wait_ended()
    await page.locator("#rows tr").first.click()
    command = await page.locator("#detail pre.curl").inner_text()
    assert "$TOKEN" in command
    assert "$ACCOUNT_ID" in command
    shell = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        command,
        env={"PATH": os.environ["PATH"], "TOKEN": TOKEN, "ACCOUNT_ID": ACCOUNT},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(shell.communicate(), 30)
    assert shell.returncode == 0, err.decode()
    assert b"response.completed" in out
    assert fake.received[1].body == fake.received[0].body == data
    first = {n.lower(): v for n, v in fake.received[0].headers}
    again = {n.lower(): v for n, v in fake.received[1].headers}
    for name in ("authorization", "chatgpt-account-id", "originator", "content-type", "accept"):
        assert again[name] == first[name], name
    await fetched.check_secret_free(view)
    view.check_clean()


async def test_websocket_messages_and_search_in_bodies(
    start_proxy: StartProxy, fake: FakeUpstream, client: aiohttp.ClientSession, browser: Browser
) -> None:
    inspected = await start_proxy(inspector={"enabled": True})

    async def answer(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                for delta in ("over ", "the socket"):
                    event = {"type": "response.output_text.delta", "item_id": "m", "delta": delta}
                    await ws.send_str(json.dumps(event))
                await ws.close()
        return ws

    fake.handler = answer
    view = await open_inspector(browser, inspected)
    fetched = Fetched(view)
    page = view.page
    async with client.ws_connect(inspected.make_url(LEGACY), headers=CLIENT_HEADERS) as ws:
        await ws.send_str(json.dumps({"type": "response.create", **REQUEST}))
        async for _ in ws:
            pass
    fake.handler = None
    async with client.get(inspected.make_url("/backend-api/models")) as response:
        await response.read()
    await recorder(inspected).wait_ended(2)
    rows = page.locator("#rows tr")
    await expect(rows).to_have_count(2)
    await rows.nth(1).click()
    detail = page.locator("#detail")
    messages = detail.locator(".messages > li")
    await expect(messages.first).to_contain_text("↑ client")
    for path in ("message0.input.0", "message0.input.0.content", "message0.input.0.content.0"):
        await detail.locator(f'details[data-path="{path}"] > summary').click()
    await expect(messages.first.locator(".tree")).to_contain_text(MARKER)
    await expect(messages.nth(1)).to_contain_text("↓ upstream")
    await expect(detail.locator(".answer-text")).to_have_text("over the socket")
    await page.keyboard.press("Escape")

    visible = page.locator("#rows tr:visible")
    await page.locator("#filter").fill(MARKER)
    await expect(visible).to_have_count(1)
    await expect(visible.locator(".c-path")).to_contain_text(LEGACY)
    await page.locator("#filter").fill("the socket")
    await expect(visible).to_have_count(1)
    await page.locator("#filter").fill("models")
    await expect(visible).to_have_count(1)
    await expect(visible.locator(".c-path")).to_have_text("/backend-api/models")
    await fetched.check_secret_free(view)
    view.check_clean()
