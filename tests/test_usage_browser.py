"""The inspector's plan usage strip in Chromium: each window as a bar with its use and its
reset in the browser's own time zone, the plan and credits, a 429 shown as the limit
reached with when it lifts; each row's tokens and the detail's accounting."""

from __future__ import annotations

import datetime
import json
import re
import time
import zoneinfo
from pathlib import Path

import aiohttp
from aiohttp import web
from playwright.async_api import Browser, expect

from proxy import redact
from tests.fake_upstream import FakeUpstream, sse_event
from tests.harness import StartProxy, recorder
from tests.test_inspector import ACCOUNT, CLIENT_HEADERS, LEGACY
from tests.test_inspector_browser import LIVE_MS, browser, open_inspector
from tests.test_usage import quota

__all__ = ["browser"]  # the fixture, shared with the other browser tests

ZONE = "Asia/Kolkata"  # +05:30: a local time no UTC reading could pass for
USAGE = {
    "input_tokens": 12345,
    "input_tokens_details": {"cached_tokens": 8000},
    "output_tokens": 845,
    "output_tokens_details": {"reasoning_tokens": 300},
}


def local(at: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(at, zoneinfo.ZoneInfo(ZONE))


def resets() -> tuple[int, int]:
    """When the 5-hour and the weekly windows start anew: 2 h 11 min and 3 d 4 h from now
    (and half a minute, for the test's own time)."""
    now = int(time.time())
    return now + 2 * 3600 + 11 * 60 + 30, now + 3 * 86400 + 4 * 3600 + 30


def plan_upstream(fake: FakeUpstream, reset: int, weekly_reset: int) -> None:
    """A stream whose head says 42% of 5h and 12% of the week; a POST with x-test-limit
    gets a 429 usage_limit_reached instead."""

    async def answer(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        if request.headers.get("x-test-limit"):
            body = {"error": {"type": "usage_limit_reached", "resets_at": reset}}
            return web.json_response(
                body,
                status=429,
                headers={"x-codex-active-limit": "codex", "x-codex-primary-used-percent": "100"},
            )
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                **quota(42, reset=reset, weekly_reset=weekly_reset),
            }
        )
        await response.prepare(request)
        created: dict[str, object] = {"response": {"model": "gpt-6.1-sol"}}
        await response.write(sse_event("response.created", created))
        await response.write(sse_event("response.output_text.delta", {"delta": "hi"}))
        done: dict[str, object] = {"response": {"model": "gpt-6.1-sol", "usage": USAGE}}
        await response.write(sse_event("response.completed", done))
        await response.write_eof()
        return response

    fake.handler = answer


async def test_the_usage_strip_bars_local_resets_plan_credits_and_a_limit_reached(
    start_proxy: StartProxy,
    fake: FakeUpstream,
    client: aiohttp.ClientSession,
    browser: Browser,
    tmp_path: Path,
) -> None:
    inspected = await start_proxy(inspector={"enabled": True})
    reset, weekly_reset = resets()
    plan_upstream(fake, reset, weekly_reset)
    view = await open_inspector(browser, inspected, timezone=ZONE)
    page = view.page
    strip = page.locator("#plan")
    await expect(strip).to_have_text(re.compile("Plan usage: none seen yet"))

    async with client.post(inspected.make_url(LEGACY), headers=CLIENT_HEADERS, data=b"{}") as sent:
        await sent.read()
    await recorder(inspected).wait_ended()
    windows = strip.locator(".window")
    await expect(windows).to_have_count(2, timeout=LIVE_MS)
    five, week = local(reset), local(weekly_reset)
    await expect(windows.nth(0)).to_have_text(f"5h42% used, resets at {five:%H:%M} (in 2 h 11 min)")
    await expect(windows.nth(1)).to_have_text(
        f"weekly12% used, resets at {week:%H:%M} on {week.day} {week:%b} (in 3 d 4 h)"
    )
    meter = windows.nth(0).locator("[role=meter]")
    await expect(meter).to_have_attribute("aria-valuenow", "42")
    fill = await meter.locator("span").evaluate("span => span.style.width")
    assert fill == "42%"
    await expect(strip.locator(".who")).to_have_text(redact.marker(ACCOUNT))
    await expect(strip.locator(".plan-type")).to_have_text("plan plus")
    await expect(strip.locator(".credits")).to_have_text("credits: 38 credits")
    await expect(strip.locator(".reached")).to_have_count(0)
    await strip.screenshot(path=tmp_path / "usage.png")

    row = page.locator("#rows tr").first
    await expect(row.locator(".c-events .tokens")).to_have_text("12.3k in / 845 out")
    await row.click()
    detail = page.locator("#detail")
    await expect(detail).to_contain_text("modelgpt-6.1-sol")
    await expect(detail).to_contain_text("cached input tokens8000")
    await expect(detail).to_contain_text("reasoning tokens300")
    await expect(detail).to_contain_text(f"5h42% used, resets at {five:%H:%M} (in 2 h 11 min)")
    await expect(detail.locator(".legend")).to_contain_text("first token")
    await page.keyboard.press("Escape")

    headers = {**CLIENT_HEADERS, "x-test-limit": "1"}
    async with client.post(inspected.make_url(LEGACY), headers=headers, data=b"{}") as sent:
        assert sent.status == 429
        assert json.loads(await sent.read())["error"]["type"] == "usage_limit_reached"
    await recorder(inspected).wait_ended(2)
    reached = strip.locator(".reached")
    await expect(reached).to_have_text(
        f"Limit reached (429): lifts at {five:%H:%M} (in 2 h 11 min)", timeout=LIVE_MS
    )
    await expect(windows.nth(0).locator("[role=meter]")).to_have_class(re.compile(r"\bfull\b"))
    # The 429's headers said no reset: the window keeps the one last said.
    await expect(windows.nth(0)).to_have_text(
        f"5h100% used, resets at {five:%H:%M} (in 2 h 11 min)"
    )
    await strip.screenshot(path=tmp_path / "usage-reached.png")
    view.check_secret_free(await page.content())
    view.check_clean()


async def test_with_metrics_off_the_strip_says_why(
    start_proxy: StartProxy, browser: Browser
) -> None:
    inspected = await start_proxy(inspector={"enabled": True}, metrics={"enabled": False})
    view = await open_inspector(browser, inspected)
    await expect(view.page.locator("#plan")).to_have_text(
        re.compile(r"Plan usage: plan usage is read with the metrics, and they are off")
    )
    # The page's own request for /_proxy/usage was answered 404: Chromium logs it.
    view.errors[:] = [error for error in view.errors if "404" not in error]
    view.check_clean()
