"""The inspector page in a real browser: headless Chromium (Debian) driven by Playwright.

Every test also checks that the page asked nothing of any origin but the proxy's, and
logged no console error. Nothing here is skipped: without Chromium or Playwright the
tests fail and say how to install them.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy import redact
from tests.fake_upstream import FakeUpstream, sse_event
from tests.harness import RunningProxy, StartProxy, capture_of, recorder
from tests.test_inspector import (
    ACCOUNT,
    CANONICAL,
    CLIENT_HEADERS,
    CUT,
    LEGACY,
    TOKEN,
    USAGE,
    GatedStream,
    inspector_of,
)

try:
    from playwright.async_api import (
        Browser,
        ConsoleMessage,
        Page,
        Request,
        async_playwright,
        expect,
    )
    from playwright.async_api import Error as PlaywrightError
except ImportError as missing:
    PLAYWRIGHT_MISSING: ImportError | None = missing
else:
    PLAYWRIGHT_MISSING = None

CHROMIUM = Path("/usr/bin/chromium")
INSTALL = (
    "the inspector's browser tests need Chromium from Debian and Playwright for Python: "
    "`apt-get install -y --no-install-recommends chromium` and "
    "`pip install -e '.[test]'` (the test extra carries playwright). "
    "Never `playwright install`: it downloads browsers from the web."
)
# Headless as root with no display; the resolver rule keeps Chromium's own background
# lookups (Google hosts) off the network, where the page's request events never show them.
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
]
WAIT_MS = 5000  # the most any step waits; the live updates themselves must come within 1 s
LIVE_MS = 1000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if PLAYWRIGHT_MISSING is not None:
        pytest.fail(f"Playwright is not installed ({PLAYWRIGHT_MISSING}): {INSTALL}")
    if not CHROMIUM.is_file():  # noqa: ASYNC240 - one stat before the browser starts
        pytest.fail(f"{CHROMIUM} is missing: {INSTALL}")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=ARGS, timeout=30_000
        )
        yield launched
        await launched.close()


@dataclass(slots=True)
class View:
    """An open inspector page and what it did: requests, console errors, event-stream payloads."""

    page: Page
    origin: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    payloads: list[str] = field(default_factory=list)

    def check_clean(self) -> None:
        assert self.requests, "no request recorded: the recorder is broken"
        assert [url for url in self.requests if not url.startswith(self.origin + "/")] == []
        assert self.errors == []

    def check_secret_free(self, html: str) -> None:
        assert self.payloads, "no event-stream payload recorded: the recorder is broken"
        for text in (html, *self.payloads):
            for secret in (TOKEN, *TOKEN.split("."), ACCOUNT):
                assert secret not in text


async def open_inspector(
    browser: Browser,
    server: RunningProxy,
    width: int = 1440,
    address: str = "",
    timezone: str | None = None,
) -> View:
    context = await browser.new_context(
        viewport={"width": width, "height": 860}, timezone_id=timezone
    )
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    view = View(page=page, origin=f"http://127.0.0.1:{server.port}")

    def on_request(request: Request) -> None:
        view.requests.append(request.url)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            view.errors.append(message.text)

    def on_page_error(error: PlaywrightError) -> None:
        view.errors.append(str(error))

    def on_message(event: dict[str, Any]) -> None:
        view.payloads.append(event["data"])

    context.on("request", on_request)
    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    page.on("dialog", lambda dialog: view.errors.append(f"dialog: {dialog.message}"))
    # The page's own event-stream messages, as Chromium's network layer received them.
    devtools = await context.new_cdp_session(page)
    devtools.on("Network.eventSourceMessageReceived", on_message)
    await devtools.send("Network.enable")
    await page.goto(f"{view.origin}/_proxy/{address}")
    await expect(page.locator("#connection")).to_have_text("live")
    return view


class Streams:
    """Several gated upstream streams at once, chosen by the request's x-test-stream header."""

    def __init__(self, fake: FakeUpstream) -> None:
        self.fake = fake
        self.streams: dict[str, GatedStream] = {}
        fake.handler = self.answer

    def __getitem__(self, name: str) -> GatedStream:
        return self.streams.setdefault(name, GatedStream(self.fake))

    async def answer(self, request: web.Request) -> web.StreamResponse:
        name = request.headers.get("x-test-stream")
        if name is None:
            return await self.fake.default(request)
        return await self[name].answer(request)


async def post_legacy(
    client: aiohttp.ClientSession, server: RunningProxy, **headers: str
) -> aiohttp.ClientResponse:
    return await client.post(
        server.make_url(LEGACY), headers={**CLIENT_HEADERS, **headers}, data=b'{"model":"gpt-5"}'
    )


def events_text(count: int) -> re.Pattern[str]:
    return re.compile(rf"^{count} events?$")


async def test_a_legacy_stream_live_then_completed_with_nothing_secret_in_the_page(
    start_proxy: StartProxy,
    fake: FakeUpstream,
    client: aiohttp.ClientSession,
    browser: Browser,
    tmp_path: Path,
) -> None:
    inspected = await start_proxy(inspector={"enabled": True})
    stream = GatedStream(fake).install()
    view = await open_inspector(browser, inspected)
    page = view.page
    sending = asyncio.create_task(post_legacy(client, inspected))
    row = page.locator("#rows tr").first
    await expect(row.locator(".c-path")).to_contain_text(f"{LEGACY} → {CANONICAL}", timeout=LIVE_MS)
    await expect(row.locator(".rule")).to_have_text("legacy-responses", timeout=LIVE_MS)
    await expect(row.locator(".c-outcome")).to_have_text("live")
    stream.push("response.created", response={"id": "resp_1"})
    await expect(row.locator(".c-events .count")).to_have_text(events_text(1), timeout=LIVE_MS)
    await expect(row.locator(".c-status")).to_have_text("200")
    for count in range(2, 5):
        stream.push("response.output_text.delta", delta=f"part {count}")
        await expect(row.locator(".c-events .count")).to_have_text(
            events_text(count), timeout=LIVE_MS
        )
    stream.complete()
    await expect(row.locator(".c-events .last")).to_have_text("response.completed", timeout=LIVE_MS)
    await expect(row.locator(".c-events .count")).to_have_text("5 events")
    await expect(row.locator(".c-outcome")).to_have_text("completed", timeout=LIVE_MS)
    await expect(row.locator(".c-events .last")).to_have_class(re.compile(r"\bok\b"))
    response = await sending
    assert response.status == 200
    await response.read()

    await row.focus()
    await page.keyboard.press("Enter")
    detail = page.locator("#detail")
    await expect(detail).to_be_visible()
    await expect(page.locator("#detail-title")).to_have_text(f"POST {LEGACY}")
    authorization = detail.locator(
        "table[aria-label='request headers'] tr", has_text="Authorization"
    )
    await expect(authorization.locator("td").nth(1)).to_have_text(
        redact.header_value("Authorization", f"Bearer {TOKEN}")
    )
    await expect(authorization.locator("td").nth(1)).to_have_text(
        re.compile(r"^Bearer \[redacted #")
    )
    await expect(detail.locator(".rewrite")).to_contain_text(f"{LEGACY} → {CANONICAL}")
    timeline = detail.locator(".timeline li")
    await expect(timeline).to_have_count(5)
    await expect(timeline.last.locator(".ok")).to_have_text("response.completed")
    await expect(detail).to_contain_text("x-codex-primary-used-percent37")
    await expect(detail).to_contain_text(f"input_tokens{USAGE['input_tokens']}")
    # connect, headers, first byte, first token (the first delta), total
    await expect(detail.locator(".timing span")).to_have_count(5)
    await page.screenshot(path=tmp_path / "inspector-detail.png")

    view.check_secret_free(await page.content())
    assert any('"rule":"legacy-responses"' in payload for payload in view.payloads)
    await page.keyboard.press("Escape")
    await expect(detail).to_be_hidden()
    await expect(row).to_be_focused()
    view.check_clean()


async def test_a_cut_stream_shows_the_cut_badge_and_its_diagnosis(
    start_proxy: StartProxy, fake: FakeUpstream, client: aiohttp.ClientSession, browser: Browser
) -> None:
    inspected = await start_proxy(inspector={"enabled": True})
    stream = GatedStream(fake).install()
    view = await open_inspector(browser, inspected)
    row = view.page.locator("#rows tr").first
    async with await post_legacy(client, inspected) as response:
        stream.push("response.created", response={"id": "resp_1"})
        stream.push("response.output_text.delta", delta="half")
        await expect(row.locator(".c-events .count")).to_have_text(events_text(2), timeout=LIVE_MS)
        stream.queue.put_nowait(CUT)
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    await expect(row.locator(".c-outcome .badge").first).to_have_text("cut", timeout=LIVE_MS)
    await expect(row).to_have_class(re.compile(r"\bfailed\b"))
    await row.click()
    await expect(view.page.locator("#detail .diagnosis")).to_have_text(
        "the event stream ended without response.completed (last: response.output_text.delta)"
    )
    view.check_clean()


async def test_filters_pause_and_keyboard(
    start_proxy: StartProxy, fake: FakeUpstream, client: aiohttp.ClientSession, browser: Browser
) -> None:
    inspected = await start_proxy(inspector={"enabled": True}, limits={"max_body_size": 16})
    view = await open_inspector(browser, inspected)
    page = view.page
    async with client.get(inspected.make_url("/backend-api/models")) as response:
        await response.read()
    async with client.post(
        inspected.make_url(LEGACY), headers=CLIENT_HEADERS, data=b"{}"
    ) as response:
        await response.read()
    async with client.post(inspected.make_url("/backend-api/files"), data=b"x" * 64) as response:
        assert response.status == 413
    await recorder(inspected).wait_ended(3)
    rows = page.locator("#rows tr")
    visible = page.locator("#rows tr:visible")
    await expect(rows).to_have_count(3)
    await expect(rows.nth(0).locator(".c-outcome")).to_have_text("rejected")
    await expect(rows.nth(0)).to_have_class(re.compile(r"\bfailed\b"))
    await expect(rows.nth(1)).to_have_class(re.compile(r"\brewritten\b"))
    await expect(rows.nth(1).locator(".c-events")).to_have_text(re.compile(r"response\.completed$"))

    await page.locator("body").press("/")
    await expect(page.locator("#filter")).to_be_focused()
    await page.keyboard.type("codex")
    await expect(visible).to_have_count(1)
    await expect(visible.locator(".rule")).to_have_text("legacy-responses")
    await expect(page.locator("#count")).to_have_text("3 exchanges, 1 shown")
    await page.locator("#filter").fill("")
    await page.locator("#status-filter").select_option("4xx")
    await expect(visible).to_have_count(1)
    await expect(visible.locator(".c-status")).to_have_text("413")
    await page.locator("#status-filter").select_option("")
    await page.locator("#outcome-filter").select_option("failures")
    await expect(visible).to_have_count(1)
    await page.locator("#outcome-filter").select_option("completed")
    await expect(visible).to_have_count(2)
    await page.locator("#outcome-filter").select_option("")
    await expect(visible).to_have_count(3)

    pause = page.locator("#pause")
    await pause.click()
    await expect(pause).to_have_attribute("aria-pressed", "true")
    async with client.get(inspected.make_url("/backend-api/after-pause")) as response:
        await response.read()
    await expect(pause).to_have_text(re.compile(r"Resume \(\d+ waiting\)"))
    await expect(rows).to_have_count(3)
    await pause.click()
    await expect(rows).to_have_count(4)
    await expect(rows.first.locator(".c-path")).to_have_text("/backend-api/after-pause")

    await rows.first.focus()
    await page.keyboard.press("ArrowDown")
    await expect(rows.nth(1)).to_be_focused()
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("ArrowUp")
    await expect(rows.nth(1)).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("#detail")).to_be_visible()
    await expect(page.locator("#detail-title")).to_have_text("POST /backend-api/files")
    await expect(page.locator("#detail")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(page.locator("#detail")).to_be_hidden()
    await expect(rows.nth(1)).to_be_focused()
    view.check_clean()


async def test_a_page_whose_stream_ended_reconnects_and_starts_afresh(
    start_proxy: StartProxy, client: aiohttp.ClientSession, browser: Browser
) -> None:
    inspected = await start_proxy(inspector={"enabled": True})
    view = await open_inspector(browser, inspected)
    rows = view.page.locator("#rows tr")
    for n in range(2):
        async with client.get(inspected.make_url(f"/backend-api/models?n={n}")) as response:
            await response.read()
    await expect(rows).to_have_count(2)
    # The proxy ends the page's stream (as when it drops a page that fell behind); what
    # happens before the page is back arrives in the snapshot it starts from.
    await inspector_of(inspected).on_shutdown()
    async with client.get(inspected.make_url("/backend-api/models?n=2")) as response:
        await response.read()
    await recorder(inspected).wait_ended(3)
    await expect(rows).to_have_count(3)
    await expect(rows.first.locator(".c-path")).to_have_text("/backend-api/models?n=2")
    await expect(view.page.locator("#connection")).to_have_text("live")
    assert sum('"exchanges":[' in payload for payload in view.payloads) == 2
    view.check_clean()


async def test_text_from_the_wire_is_shown_as_text_never_as_markup(
    start_proxy: StartProxy, fake: FakeUpstream, client: aiohttp.ClientSession, browser: Browser
) -> None:
    inspected = await start_proxy(inspector={"enabled": True})
    markup = "<img src=x onerror=alert(document.domain)>"
    stream = GatedStream(fake).install()
    stream.queue.put_nowait(sse_event(markup, {}))
    stream.queue.put_nowait(None)
    view = await open_inspector(browser, inspected)
    page = view.page
    title = await page.title()
    headers = {"User-Agent": markup, "X-Request-Id": f"<script>alert(1)</script>{markup}"}
    async with await post_legacy(client, inspected, **headers) as response:
        await response.read()
    row = page.locator("#rows tr").first
    await expect(row.locator(".c-events .last")).to_have_text(markup, timeout=LIVE_MS)
    await row.click()
    detail = page.locator("#detail")
    await expect(detail.locator("table[aria-label='request headers']")).to_contain_text(markup)
    await expect(detail).to_contain_text("<script>alert(1)</script>")
    await expect(detail.locator(".timeline li")).to_have_text(re.compile(re.escape(markup)))
    assert await page.locator("main img, aside img, main script, aside script").count() == 0
    assert await page.title() == title
    view.check_clean()


async def test_the_har_capture_downloads_from_the_detail(
    start_proxy: StartProxy, client: aiohttp.ClientSession, browser: Browser, tmp_path: Path
) -> None:
    captures = tmp_path / "captures"
    inspected = await start_proxy(inspector={"enabled": True}, capture={"dir": str(captures)})
    headers = {**CLIENT_HEADERS, "X-Request-Id": "har-in-the-page"}
    async with client.get(inspected.make_url("/backend-api/models"), headers=headers) as response:
        await response.read()
    await recorder(inspected).wait_ended()
    await capture_of(inspected).drain()
    view = await open_inspector(browser, inspected)
    page = view.page
    await page.locator("#rows tr").first.click()
    link = page.locator("#detail a[download]")
    await expect(link).to_have_text(
        re.compile(r"^download \d{8}T\d{6}\.\d{6}-har-in-the-page\.har$")
    )
    async with page.expect_download() as downloading:
        await link.click()
    download = await downloading.value
    saved = tmp_path / "downloaded.har"
    await download.save_as(saved)
    har = json.loads(saved.read_text())
    assert har["log"]["entries"][0]["comment"].startswith("request_id har-in-the-page;")
    assert download.suggested_filename == next(captures.glob("*.har")).name
    view.check_clean()


async def test_overview_of_outcomes_with_a_live_stream_and_a_websocket(
    start_proxy: StartProxy,
    fake: FakeUpstream,
    client: aiohttp.ClientSession,
    browser: Browser,
    tmp_path: Path,
) -> None:
    """Every badge a single proxy can show at once; the screenshot is the README's picture."""
    inspected = await start_proxy(inspector={"enabled": True}, limits={"max_body_size": 4096})
    streams = Streams(fake)
    view = await open_inspector(browser, inspected)
    page = view.page
    rows = page.locator("#rows tr")

    streams["done"].push("response.created", response={"id": "resp_1"})
    for n in range(6):
        streams["done"].push("response.output_text.delta", delta=f"token {n}")
    streams["done"].complete()
    async with await post_legacy(client, inspected, **{"x-test-stream": "done"}) as response:
        await response.read()
    async with client.get(inspected.make_url("/backend-api/models")) as response:
        await response.read()
    async with client.ws_connect(inspected.make_url(LEGACY), headers=CLIENT_HEADERS) as ws:
        for text in ("turn 1", "turn 2"):
            await ws.send_str(text)
            await ws.receive_str()
    streams["cut"].push("response.created", response={"id": "resp_2"})
    streams["cut"].queue.put_nowait(CUT)
    async with await post_legacy(client, inspected, **{"x-test-stream": "cut"}) as response:
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    async with client.post(inspected.make_url(LEGACY), data=b"x" * 8192) as response:
        assert response.status == 413
    leaving = await post_legacy(client, inspected, **{"x-test-stream": "left"})
    streams["left"].push("response.created", response={"id": "resp_3"})
    await expect(rows.first.locator(".c-events .count")).to_have_text(
        events_text(1), timeout=LIVE_MS
    )
    leaving.close()
    await expect(rows.first.locator(".c-outcome")).to_have_text("disconnected", timeout=LIVE_MS)
    streaming = asyncio.create_task(post_legacy(client, inspected, **{"x-test-stream": "live"}))
    streams["live"].push("response.created", response={"id": "resp_4"})
    streams["live"].push("response.output_text.delta", delta="still")
    await expect(rows.first.locator(".c-events .count")).to_have_text(
        events_text(2), timeout=LIVE_MS
    )

    badges = [await badge.inner_text() for badge in await page.locator(".c-outcome .badge").all()]
    assert [badge for badge in badges if badge != "!"] == [
        "live",
        "disconnected",
        "rejected",
        "cut",
        "completed",
        "completed",
        "completed",
    ]
    await expect(rows.nth(4).locator(".c-events .count")).to_have_text("↑2 ↓2 frames")
    await rows.nth(6).click()
    await expect(page.locator("#detail .timeline li")).to_have_count(8)
    await page.screenshot(path=tmp_path / "inspector.png")
    view.check_secret_free(await page.content())
    view.check_clean()

    streams["live"].complete()
    response = await streaming
    await response.read()
    response.close()


def answers_by_path(fake: FakeUpstream) -> None:
    """The fake answers a path ending in a number with that status (JSON); others as usual."""

    async def answer(request: web.Request) -> web.StreamResponse:
        last = request.path.rsplit("/", 1)[-1]
        if not last.isdigit():
            return await fake.default(request)
        await fake.record(request)
        return web.json_response({"detail": f"status {last}"}, status=int(last))

    fake.handler = answer


async def test_error_statuses_are_said_in_words_and_flagged_rows_show_their_diagnosis(
    start_proxy: StartProxy, fake: FakeUpstream, client: aiohttp.ClientSession, browser: Browser
) -> None:
    inspected = await start_proxy(inspector={"enabled": True})
    answers_by_path(fake)
    view = await open_inspector(browser, inspected)
    page = view.page
    paths = [
        "/backend-api/x/401",
        "/backend-api/x/403",
        "/backend-api/x/404",
        "/v1/responses/404",
        "/backend-api/x/500",
    ]
    for path in paths:
        async with client.post(inspected.make_url(path), data=b"{}") as response:
            await response.read()
    await recorder(inspected).wait_ended(len(paths))
    rows = page.locator("#rows tr")
    await expect(rows).to_have_count(len(paths))
    # Newest first: each outcome says the failure in words, not only in colour.
    await expect(rows.locator(".c-outcome .badge:not(.warning)")).to_have_text(
        ["server error", "not found", "not found", "forbidden", "unauthorized"]
    )
    for index in range(1, 5):
        await expect(rows.nth(index)).to_have_class(re.compile(r"\bwarned\b"))
    await expect(rows.nth(0)).to_have_class(re.compile(r"\bfailed\b"))
    # The row of a client with the wrong base URL says so itself, in words.
    base_url = f"http://127.0.0.1:{inspected.port}"
    wrong_base = (
        f"POST /v1/responses/404 is outside /backend-api: the client's base URL is "
        f"{base_url}/v1; set it to {base_url}/backend-api"
    )
    await expect(rows.nth(1).locator(".row-diagnosis")).to_have_text(wrong_base)
    await expect(rows.nth(1).locator(".row-diagnosis")).to_be_visible()
    await expect(rows.nth(3).locator(".row-diagnosis")).to_contain_text("no token was sent")
    # A flagged 404 with no diagnosis of the proxy's still says why it is flagged.
    await expect(rows.nth(2).locator(".row-diagnosis")).to_have_count(0)
    await rows.nth(2).click()
    await expect(page.locator("#detail .diagnosis")).to_have_text(
        "the upstream answered 404 (not found)"
    )
    await expect(page.locator("#detail dl").first).to_contain_text("not found")
    await rows.nth(1).click()
    await expect(page.locator("#detail .diagnosis")).to_have_text(wrong_base)
    await page.keyboard.press("Escape")
    visible = page.locator("#rows tr:visible")
    await page.locator("#outcome-filter").select_option("error-status")
    await expect(visible).to_have_count(len(paths))
    await page.locator("#outcome-filter").select_option("completed")
    await expect(visible).to_have_count(0)
    await page.locator("#outcome-filter").select_option("")
    await page.locator("#filter").fill("forbidden")
    await expect(visible).to_have_count(1)
    view.check_clean()


async def no_horizontal_overflow(page: Page) -> None:
    overflow = await page.evaluate(
        """() => {
          const main = document.querySelector("main");
          return [document.documentElement.scrollWidth - window.innerWidth,
                  main.scrollWidth - main.clientWidth];
        }"""
    )
    assert overflow == [0, 0], (
        f"wider than the window by {overflow[0]} px, the list by {overflow[1]} px"
    )


async def within_width(page: Page, selector: str, width: int) -> None:
    boxes = [await cell.bounding_box() for cell in await page.locator(selector).all()]
    assert boxes, selector
    for box in boxes:
        assert box is not None, f"{selector} is not shown"
        assert box["x"] >= 0, (selector, box)
        assert box["x"] + box["width"] <= width, (selector, box)


@pytest.mark.parametrize("width", [360, 800, 1280, 2560])
async def test_the_page_fits_every_width_from_a_phone_to_a_wide_screen(
    start_proxy: StartProxy, fake: FakeUpstream, browser: Browser, tmp_path: Path, width: int
) -> None:
    inspected = await start_proxy(inspector={"enabled": True})
    answers_by_path(fake)
    view = await open_inspector(browser, inspected, width=width)
    page = view.page
    long_path = "/backend-api/files/file-" + "0123456789abcdef" * 4 + "/content?download=true"
    async with aiohttp.ClientSession() as client:
        for method, path in [
            ("GET", long_path),
            ("POST", "/v1/responses/404"),
            ("POST", "/backend-api/x/403"),
        ]:
            async with client.request(method, inspected.make_url(path), data=b"{}") as response:
                await response.read()
        async with await post_legacy(client, inspected) as response:
            await response.read()
    await recorder(inspected).wait_ended(4)
    rows = page.locator("#rows tr")
    await expect(rows).to_have_count(4)
    await expect(rows.first.locator(".c-events .last")).to_have_text("response.completed")
    await no_horizontal_overflow(page)
    for column in ("c-method", "c-path", "c-status", "c-outcome", "c-duration", "c-bytes"):
        await within_width(page, f"#rows td.{column}", width)
    await expect(rows.first.locator(".c-bytes")).to_have_text(re.compile(r"^\d.* ↑ ?\d.* ↓$"))
    await expect(rows.first.locator(".c-duration")).to_have_text(re.compile(r"\d (ms|s)$"))
    await page.screenshot(path=tmp_path / f"list-{width}.png")

    await rows.nth(2).click()
    detail = page.locator("#detail")
    await expect(detail.locator(".diagnosis")).to_be_visible()
    await within_width(page, "#detail", width)
    await within_width(page, "#close", width)
    await no_horizontal_overflow(page)
    await page.screenshot(path=tmp_path / f"detail-{width}.png")
    await page.locator("#close").click()
    await expect(detail).to_be_hidden()
    view.check_clean()


# Where the lines of an element break: the character before each break.
BREAKS_IN = """(element) => {
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
  const characters = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (let at = 0; at < node.length; at += 1) {
      const range = document.createRange();
      range.setStart(node, at);
      range.setEnd(node, at + 1);
      const box = range.getBoundingClientRect();
      if (box.width) characters.push([node.data[at], Math.round(box.top)]);
    }
  }
  return characters.filter((item, at) => at + 1 < characters.length && characters[at + 1][1] > item[1] + 2)
    .map(([character]) => character);
}"""
BREAKS = f"(selector) => [...document.querySelectorAll(selector)].map({BREAKS_IN})"


async def test_at_390_px_paths_break_after_a_slash_long_values_scroll_and_back_closes(
    start_proxy: StartProxy, fake: FakeUpstream, browser: Browser, tmp_path: Path
) -> None:
    """A phone's width: a path wraps only after a "/" (never at the hyphen of
    backend-api), a long header value scrolls in its cell instead of breaking mid-word,
    and the detail has an address of its own (/_proxy/#/exchange/N) that the browser's
    back and forward close and open, and that a reload or another tab opens again."""
    inspected = await start_proxy(inspector={"enabled": True})
    answers_by_path(fake)
    long_path = "/backend-api/wham/tasks/task-e-7c1d2b/turns/turn-4567-a/sibling-turns/404"
    request_id = "req-" + "0123456789abcdef" * 8
    view = await open_inspector(browser, inspected, width=390)
    page = view.page
    async with aiohttp.ClientSession() as client:
        async with client.get(
            inspected.make_url(long_path), headers={"x-client-request-id": request_id}
        ) as response:
            await response.read()
        async with await post_legacy(client, inspected) as response:
            await response.read()
    await recorder(inspected).wait_ended(2)
    rows = page.locator("#rows tr")
    await expect(rows).to_have_count(2)
    await expect(rows.first.locator(".c-events .last")).to_have_text("response.completed")
    for selector in ("#rows td.c-path .path", "#rows td.c-path .upstream"):
        breaks = await page.evaluate(BREAKS, selector)
        assert any(breaks), (selector, "nothing wrapped: the test shows nothing")
        assert {character for found in breaks for character in found} == {"/"}, breaks
    await no_horizontal_overflow(page)

    # The detail: its own address, and the browser's back and forward.
    await rows.nth(1).click()
    detail = page.locator("#detail")
    await expect(detail).to_be_visible()
    assert page.url == f"{view.origin}/_proxy/#/exchange/1"
    value = detail.locator("table.headers .value", has_text=request_id)
    await expect(value).to_have_text(request_id)
    size = await value.evaluate("(element) => [element.scrollWidth, element.clientWidth]")
    assert size[0] > size[1], f"the long value does not scroll: {size}"
    assert await value.evaluate(BREAKS_IN) == [], "the long value is broken over lines"
    await within_width(page, "#detail", 390)
    title_breaks = await page.evaluate(BREAKS, "#detail-title")
    assert set(title_breaks[0]) <= {"/", " "}, title_breaks
    await page.screenshot(path=tmp_path / "detail-390.png")

    await page.go_back()
    await expect(detail).to_be_hidden()
    assert page.url == f"{view.origin}/_proxy/"
    await page.go_forward()
    await expect(detail).to_be_visible()
    await expect(page.locator("#detail-title")).to_contain_text(long_path)
    await page.locator("#close").click()
    await expect(detail).to_be_hidden()
    assert page.url == f"{view.origin}/_proxy/"
    await rows.first.click()
    await expect(page.locator("#detail-title")).to_contain_text(LEGACY)
    assert page.url == f"{view.origin}/_proxy/#/exchange/2"
    await page.reload()
    await expect(page.locator("#connection")).to_have_text("live")
    await expect(detail).to_be_visible()
    await expect(page.locator("#detail-title")).to_contain_text(LEGACY)
    await page.locator("#close").click()
    await expect(detail).to_be_hidden()
    assert page.url == f"{view.origin}/_proxy/"

    # Side by side (a wide window), one exchange after another is one history entry:
    # back returns to the list.
    wide = await open_inspector(browser, inspected)
    await wide.page.locator("#rows tr").nth(1).click()
    await wide.page.locator("#rows tr").first.click()
    assert wide.page.url == f"{view.origin}/_proxy/#/exchange/2"
    await wide.page.go_back()
    await expect(wide.page.locator("#detail")).to_be_hidden()
    assert wide.page.url == f"{view.origin}/_proxy/"

    shared = await open_inspector(browser, inspected, width=390, address="#/exchange/1")
    await expect(shared.page.locator("#detail")).to_be_visible()
    await expect(shared.page.locator("#detail-title")).to_contain_text(long_path)
    await shared.page.keyboard.press("Escape")
    await expect(shared.page.locator("#detail")).to_be_hidden()
    assert shared.page.url == f"{view.origin}/_proxy/"
    gone = await open_inspector(browser, inspected, width=390, address="#/exchange/99")
    await expect(gone.page.locator("#detail")).to_be_hidden()
    for opened in (view, wide, shared, gone):
        opened.check_clean()
