"""Plan usage through the proxy as the real Codex CLI sees it: the rate limits Codex
records (its rollout's token_count events: what its /status shows) and the tokens it
reports (`codex exec --json`'s turn.completed) against what the proxy says
(`/_proxy/usage`, its log lines), with the fake chatgpt.com sending usage headers, a
codex.rate_limits message over WebSocket, and a 429 usage_limit_reached."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from tests.e2e.harness import Outcome
from tests.e2e.rig import Step

pytestmark = [pytest.mark.e2e, pytest.mark.scenario("codex_usage")]


def codex_limits(step: Step) -> dict[str, Any]:
    """The last rate limits Codex recorded in its rollout (token_count events)."""
    found = [
        event["payload"]["rate_limits"]
        for line in step.run.files["rollout"].splitlines()
        if (event := json.loads(line)).get("type") == "event_msg"
        and event["payload"].get("type") == "token_count"
        and event["payload"].get("rate_limits")
    ]
    assert found, "Codex recorded no rate limits"
    limits: dict[str, Any] = found[-1]
    return limits


def proxy_limit(step: Step) -> dict[str, Any]:
    """The proxy's view of the one account and its codex family."""
    seen = json.loads(step.run.files["proxy usage"])
    [account] = seen["accounts"]
    [limit] = account["limits"]
    limit["credits"] = account["credits"]
    assert isinstance(limit, dict)
    return limit


def same_windows(codex: dict[str, Any], proxy: dict[str, Any]) -> None:
    shown = {w["slot"]: w for w in proxy["windows"]}
    for slot in ("primary", "secondary"):
        ours, theirs = shown[slot], codex[slot]
        assert (ours["used_percent"], ours["minutes"], ours["resets_at"]) == (
            theirs["used_percent"],
            theirs["window_minutes"],
            theirs["resets_at"],
        )
    assert proxy["credits"] == codex["credits"]


def test_over_websocket_codex_and_the_proxy_read_the_same_rate_limits(outcome: Outcome) -> None:
    step = outcome.step("websocket")
    assert step.run.returncode == 0
    codex, proxy = codex_limits(step), proxy_limit(step)
    assert codex["primary"]["used_percent"] == 64  # the message, not the 101's headers
    same_windows(codex, proxy)
    [line] = [line for line in step.proxy_lines if line.get("websocket")]
    assert line["limits"][0]["used_percent"] == 64


def test_over_http_codex_and_the_proxy_read_the_same_headers_and_tokens(
    outcome: Outcome,
) -> None:
    step = outcome.step("http")
    assert step.run.returncode == 0
    codex, proxy = codex_limits(step), proxy_limit(step)
    assert codex["primary"]["used_percent"] == 42
    same_windows(codex, proxy)
    [turn] = [
        event
        for line in step.run.stdout.splitlines()
        if (event := json.loads(line)).get("type") == "turn.completed"
    ]
    [post] = [line for line in step.proxy_lines if line["method"] == "POST" and "tokens" in line]
    tokens = post["tokens"]
    assert (tokens["input"], tokens["cached"], tokens["output"], tokens["reasoning"]) == (
        turn["usage"]["input_tokens"],
        turn["usage"]["cached_input_tokens"],
        turn["usage"]["output_tokens"],
        turn["usage"]["reasoning_output_tokens"],
    )


def test_a_429_codex_and_the_proxy_name_the_same_time_the_limit_lifts(outcome: Outcome) -> None:
    step = outcome.step("limit")
    assert step.run.returncode == 1
    proxy = proxy_limit(step)
    assert proxy["reached"] is not None
    lifts = datetime.datetime.fromtimestamp(proxy["reached"]["resets_at"])  # local, as Codex
    said = f"again at {lifts:%-I:%M %p}."  # "You've hit your usage limit. Try again at 3:43 AM."
    assert said in step.run.stdout, step.run.stdout
    assert codex_limits(step)["primary"]["used_percent"] == 100
    assert [w["used_percent"] for w in proxy["windows"] if w["slot"] == "primary"] == [100]
