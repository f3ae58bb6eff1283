"""`codex-path-proxy usage` and `doctor`'s usage line: the real command against the real
proxy process, fed by the fake chatgpt.com; a HAR capture's `_usage`."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from proxy import redact, usage_text
from proxy.doctor.findings import Status
from tests.doctor_homes import line, run_doctor
from tests.fake_upstream import FakeUpstream, sse_event
from tests.harness import StartProxy, capture_of, recorder
from tests.proc import ProxyProcess, run_cli, start_proxy_process
from tests.test_usage import quota

ACCOUNT = "3f2e1d0c-aaaa-bbbb-cccc-ddddeeeeffff"
MARKER = redact.marker(ACCOUNT)
HEADERS = {"Authorization": "Bearer sk-usage-command-0123456789", "chatgpt-account-id": ACCOUNT}
TZ = "UTC"
ENVIRON = {
    **{k: v for k, v in os.environ.items() if not k.startswith("CODEX_PATH_PROXY_")},
    "TZ": TZ,
}


def limited(fake: FakeUpstream) -> tuple[int, int]:
    """Every answer streams, with 42% of 5h and 12% of the week in its head; when the two
    windows start anew (2 h 11 min and 4 d from now, and half a minute)."""
    now = int(time.time())
    reset, weekly_reset = now + 2 * 3600 + 11 * 60 + 30, now + 4 * 86400 + 30

    async def answer(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                **quota(42, reset=reset, weekly_reset=weekly_reset),
            }
        )
        await response.prepare(request)
        usage = {"input_tokens": 10, "output_tokens": 2}
        done: dict[str, object] = {"response": {"model": "gpt-6.1-sol", "usage": usage}}
        await response.write(sse_event("response.completed", done))
        await response.write_eof()
        return response

    fake.handler = answer
    return reset, weekly_reset


async def ended(proxy: ProxyProcess) -> None:
    """Stopped as a person would (SIGTERM), and waited for."""
    proxy.process.send_signal(signal.SIGTERM)
    await proxy.rest()


async def through(proxy: ProxyProcess, client: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{proxy.port}/backend-api/responses"
    async with client.post(url, headers=HEADERS, data=b"{}") as response:
        await response.read()
    await proxy.wait_for("request")


async def test_the_usage_command_prints_bars_and_json_for_scripts(
    fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    reset, _ = limited(fake)
    proxy = await start_proxy_process("--upstream", fake.url, env={"TZ": TZ})
    try:
        port = str(proxy.port)
        code, out, err = await run_cli("usage", "--port", port, environ=ENVIRON)
        assert (code, err) == (0, "")
        assert out == (
            f"No answer through the proxy at http://127.0.0.1:{port} has carried plan usage "
            "yet: every answer from /backend-api/codex/responses does, and it shows here after "
            "the first.\n"
        )
        await through(proxy, client)
        code, out, err = await run_cli("usage", "--port", port, environ=ENVIRON)
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert lines[0] == f"Plan usage as the answers through http://127.0.0.1:{port} said it:"
        assert lines[1].startswith(f"account {MARKER} · plan plus · seen ")
        assert lines[1].endswith(" (headers, request " + lines[1].rsplit("request ", 1)[1])
        # The reset times in this machine's local time (TZ=UTC here).
        five = time.strftime("%H:%M", time.gmtime(reset))
        assert lines[2] == (
            f"  5h limit:      [████████░░░░░░░░░░░░] 42% used, resets at {five} (in 2 h 11 min)"
        )
        assert lines[3].startswith("  Weekly limit:  [██░░░░░░░░░░░░░░░░░░] 12% used, resets at ")
        assert lines[3].endswith("(in 4 d)")
        assert lines[4:] == ["  Credits:       38 credits"]
        assert ACCOUNT not in out

        code, out, err = await run_cli("usage", "--json", "--port", port, environ=ENVIRON)
        assert (code, err) == (0, "")
        seen: dict[str, Any] = json.loads(out)
        [account] = seen["accounts"]
        assert account["account"] == MARKER
        assert [w["used_percent"] for w in account["limits"][0]["windows"]] == [42.0, 12.0]
        await ended(proxy)
    finally:
        proxy.stop()


async def test_no_proxy_and_a_proxy_with_metrics_off_are_said_plainly(
    fake: FakeUpstream, unused_tcp_port: int
) -> None:
    closed = str(unused_tcp_port)
    code, out, err = await run_cli("usage", "--port", closed, environ=ENVIRON)
    assert (code, out) == (1, "")
    assert err == (
        f"codex-path-proxy usage: no proxy answers at http://127.0.0.1:{closed} "
        "(connection refused): start it with `codex-path-proxy`, or name where it listens "
        "(--port, --host, CODEX_PATH_PROXY_LISTEN_PORT)\n"
    )
    code, out, err = await run_cli("usage", "--json", "--port", closed, environ=ENVIRON)
    assert (code, err) == (1, "")
    assert json.loads(out)["error"].startswith("no proxy answers at")

    off = await start_proxy_process(
        "--upstream", fake.url, env={"CODEX_PATH_PROXY_METRICS_ENABLED": "false"}
    )
    try:
        code, out, err = await run_cli("usage", "--port", str(off.port), environ=ENVIRON)
        await ended(off)
    finally:
        off.stop()
    assert (code, out) == (1, "")
    assert err.startswith(
        f"codex-path-proxy usage: the proxy at http://127.0.0.1:{off.port} says: plan usage "
        "is read with the metrics, and they are off"
    )
    # Something else on the port: named as such.
    code, out, err = await run_cli("usage", "--port", str(fake.port), environ=ENVIRON)
    assert code == 1
    assert err == (
        f"codex-path-proxy usage: http://127.0.0.1:{fake.port} answers /_proxy/usage with "
        "200 application/json: not a codex-path-proxy, or one too old to count usage\n"
    )


async def test_doctor_reports_the_last_usage_seen(
    tmp_path: Path, start_proxy: StartProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy()
    home = tmp_path / "home"
    found = await run_doctor(home, fake.url, proxy.port)
    where = f"http://127.0.0.1:{proxy.port}/_proxy/usage"
    assert line(found, where).says == "no answer through it has carried plan usage yet"
    reset, weekly_reset = limited(fake)
    url = proxy.make_url("/backend-api/responses")
    for account in (ACCOUNT, "another-account-id"):
        headers = {**HEADERS, "chatgpt-account-id": account}
        async with client.post(url, headers=headers, data=b"{}") as response:
            await response.read()
    await recorder(proxy).wait_ended(2)
    found = await run_doctor(home, fake.url, proxy.port)
    usage = line(found, where)
    assert usage.status is Status.INFO
    now = time.time()
    newest = redact.marker("another-account-id")
    # Without the times, which a second or a minute may turn between the two readings.
    countdown = re.compile(r" \(in [^)]*\)")
    assert re.match(r"last usage seen (just now|\d+ s ago), account ", usage.says)
    expected = (
        f"last usage seen just now, account {newest} (plus): "
        f"5h 42% used, resets {usage_text.resets(reset, now)}; "
        f"weekly 12% used, resets {usage_text.resets(weekly_reset, now)}; "
        "and 1 other account (`codex-path-proxy usage`)"
    )
    said = usage.says.split(", account ", 1)[1]
    assert countdown.sub("", said) == countdown.sub("", expected.split(", account ", 1)[1])


async def test_a_capture_holds_the_exchange_s_usage(
    start_proxy: StartProxy, fake: FakeUpstream, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    reset, weekly_reset = limited(fake)
    proxy = await start_proxy(capture={"dir": str(tmp_path / "captures")})
    async with client.post(
        proxy.make_url("/backend-api/responses"), headers=HEADERS, data=b"{}"
    ) as response:
        await response.read()
    await recorder(proxy).wait_ended()
    await capture_of(proxy).drain()
    [har] = (tmp_path / "captures").glob("*.har")
    entry = json.loads(har.read_text())["log"]["entries"][0]
    assert entry["_usage"] == {
        "model": "gpt-6.1-sol",
        "tokens": {"input": 10, "cached": 0, "output": 2, "reasoning": 0},
        "account": MARKER,
        "limits": [
            {"family": "codex", "window": "5h", "used_percent": 42.0, "resets_at": reset},
            {
                "family": "codex",
                "window": "weekly",
                "used_percent": 12.0,
                "resets_at": weekly_reset,
            },
        ],
    }
