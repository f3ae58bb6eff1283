"""Plan usage and per-request accounting over real sockets: every source fed by the fake
upstream (response headers, a stream's events, WebSocket messages plain and compressed,
a 429, a wham/usage answer), read back from the log line, /_proxy/usage and the metrics."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import time
import zlib
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import aiohttp
import brotli
import zstandard
from aiohttp import WSMsgType, web
from structlog.testing import capture_logs

from proxy import redact, usage, usage_text
from proxy.accounting import Accounting
from proxy.exchange import Exchange, Observers, WebSocketStats
from proxy.exposition import registry, text
from proxy.log import ExchangeLine
from proxy.metrics import Metrics
from proxy.usage import Report, Tokens
from tests.fake_upstream import FakeUpstream, sse_event
from tests.harness import RunningProxy, StartProxy, parse_response, raw_request, recorder

LEGACY = "/backend-api/responses"
CANONICAL = "/backend-api/codex/responses"
WHAM = "/backend-api/wham/usage"
ACCOUNT = "5b4c3d2e-1111-2222-3333-444455556666"
MARKER = redact.marker(ACCOUNT)
CLIENT = {"Authorization": "Bearer sk-usage-test-0123456789", "chatgpt-account-id": ACCOUNT}
RESET = int(time.time()) + 2 * 3600 + 11 * 60
WEEKLY_RESET = int(time.time()) + 4 * 86400
USAGE = {
    "input_tokens": 12345,
    "input_tokens_details": {"cached_tokens": 8000},
    "output_tokens": 845,
    "output_tokens_details": {"reasoning_tokens": 300},
    "total_tokens": 13190,
}
Line = MutableMapping[str, Any]


def quota(
    primary: float, secondary: float = 12, *, reset: int = RESET, weekly_reset: int = WEEKLY_RESET
) -> dict[str, str]:
    """The usage headers of an answer: the 5-hour and the weekly windows, plus, 38 credits."""
    return {
        "x-codex-primary-used-percent": f"{primary:g}",
        "x-codex-primary-window-minutes": "300",
        "x-codex-primary-reset-at": str(reset),
        "x-codex-secondary-used-percent": f"{secondary:g}",
        "x-codex-secondary-window-minutes": "10080",
        "x-codex-secondary-reset-at": str(weekly_reset),
        "x-codex-plan-type": "plus",
        "x-codex-credits-has-credits": "true",
        "x-codex-credits-unlimited": "false",
        "x-codex-credits-balance": "38",
    }


def streams_with(fake: FakeUpstream, headers: Callable[[], dict[str, str]]) -> asyncio.Event:
    """The fake streams a response with these headers; its deltas wait for `go`, so the
    first token comes measurably after the first byte."""
    go = asyncio.Event()

    async def answer(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **headers()})
        await response.prepare(request)
        created: dict[str, object] = {
            "response": {"id": "resp_1", "model": "gpt-6.1-sol", "status": "in_progress"}
        }
        await response.write(sse_event("response.created", created))
        await go.wait()
        for word in ("hi", " from", " fake"):
            await response.write(sse_event("response.output_text.delta", {"delta": word}))
        done: dict[str, object] = {
            "response": {"id": "resp_1", "model": "gpt-6.1-sol", "usage": USAGE}
        }
        await response.write(sse_event("response.completed", done))
        await response.write_eof()
        return response

    fake.handler = answer
    go.set()
    return go


def exchange_lines(logs: list[Line]) -> list[Line]:
    return [line for line in logs if line["event"] in ("request", "websocket")]


def steady(messages: list[str]) -> list[str]:
    """Warnings without their countdown ("(in 2 h 11 min)"), which a minute may turn."""
    return [re.sub(r" \(in [^)]*\)", "", message) for message in messages]


def warnings(logs: list[Line]) -> list[str]:
    return [
        line["event"]
        for line in logs
        if line.get("log_level") == "warning" and line["event"] not in ("request", "websocket")
    ]


async def usage_of(client: aiohttp.ClientSession, proxy: RunningProxy) -> dict[str, Any]:
    async with client.get(proxy.make_url("/_proxy/usage")) as response:
        assert response.status == 200
        found: dict[str, Any] = await response.json()
        return found


async def metrics_of(client: aiohttp.ClientSession, proxy: RunningProxy) -> list[str]:
    async with client.get(proxy.make_url("/_proxy/metrics")) as response:
        return (await response.text()).splitlines()


async def test_a_stream_s_headers_and_tokens_in_the_line_the_usage_and_the_metrics(
    proxy: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    streams_with(fake, lambda: quota(42))
    with capture_logs() as logs:
        async with client.post(proxy.make_url(LEGACY), headers=CLIENT, data=b"{}") as response:
            await response.read()
        [exchange] = await recorder(proxy).wait_ended()
    [line] = exchange_lines(logs)
    assert line["model"] == "gpt-6.1-sol"
    assert line["tokens"] == {"input": 12345, "cached": 8000, "output": 845, "reasoning": 300}
    assert line["first_token_ms"] == exchange.first_token_ms
    assert exchange.first_byte_ms is not None
    assert exchange.duration_ms is not None
    assert exchange.first_byte_ms <= line["first_token_ms"] <= exchange.duration_ms
    seconds = (exchange.duration_ms - line["first_token_ms"]) / 1000
    assert line["tokens_per_s"] == round(845 / seconds, 1)
    assert line["account"] == MARKER
    assert line["limits"] == [
        {"family": "codex", "window": "5h", "used_percent": 42.0, "resets_at": RESET},
        {"family": "codex", "window": "weekly", "used_percent": 12.0, "resets_at": WEEKLY_RESET},
    ]
    assert ExchangeLine.render(line).endswith("12.3k in / 845 out · 42% of 5h")
    assert warnings(logs) == []

    seen = await usage_of(client, proxy)
    assert seen["seen"] is True
    [account] = seen["accounts"]
    assert account["account"] == MARKER
    assert ACCOUNT not in json.dumps(seen)
    assert (account["plan_type"], account["source"]) == ("plus", "headers")
    assert account["request_id"] == exchange.request_id
    assert account["credits"] == {"has_credits": True, "unlimited": False, "balance": "38"}
    [limit] = account["limits"]
    assert [(w["label"], w["used_percent"], w["resets_at"]) for w in limit["windows"]] == [
        ("5h", 42.0, RESET),
        ("weekly", 12.0, WEEKLY_RESET),
    ]

    scraped = await metrics_of(client, proxy)
    assert 'codex_path_proxy_plan_used_percent{family="codex",window="5h"} 42.0' in scraped
    assert 'codex_path_proxy_plan_used_percent{family="codex",window="weekly"} 12.0' in scraped
    reset = 'codex_path_proxy_plan_reset_timestamp_seconds{family="codex",window="5h"}'
    assert [float(line.split()[-1]) for line in scraped if line.startswith(reset)] == [RESET]
    assert 'codex_path_proxy_plan_limit_reached{family="codex"} 0.0' in scraped
    for kind, count in (("input", 12345), ("cached", 8000), ("output", 845), ("reasoning", 300)):
        series = f'codex_path_proxy_tokens_total{{kind="{kind}",model="gpt-6.1-sol"}} {count:.1f}'
        assert series in scraped
    assert "codex_path_proxy_time_to_first_token_seconds_count 1.0" in scraped
    assert not any("account=" in line for line in scraped)


async def test_warnings_once_at_80_and_95_and_at_the_limit_never_per_request(
    proxy: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    percents = iter((50, 81, 82, 83, 96, 97, 100, 100))
    current = [0.0]

    def headers() -> dict[str, str]:
        current[0] = next(percents)
        return quota(current[0])

    streams_with(fake, headers)
    with capture_logs() as logs:
        for n in range(8):
            async with client.post(proxy.make_url(LEGACY), headers=CLIENT, data=b"{}") as sent:
                await sent.read()
            await recorder(proxy).wait_ended(n + 1)
    when = usage_text.resets(RESET, time.time())
    assert steady(warnings(logs)) == steady(
        [
            f"5h window 81% used for account {MARKER}; resets {when}",
            f"5h window 96% used for account {MARKER}; resets {when}",
            f"5h limit reached for account {MARKER}; resets {when}",
        ]
    )
    assert len(exchange_lines(logs)) == 8


async def test_a_429_usage_limit_reached_gzipped_is_read_and_said_once(
    proxy: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    body = json.dumps(
        {
            "error": {
                "type": "usage_limit_reached",
                "message": "The usage limit has been reached",
                "plan_type": "plus",
                "resets_at": RESET,
            }
        }
    ).encode()
    sent = gzip.compress(body)

    async def answer(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        return web.Response(
            status=429,
            body=sent,
            headers={
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
                "x-codex-active-limit": "codex",
                **quota(100, 60),
            },
        )

    fake.handler = answer
    with capture_logs() as logs:
        for n in (1, 2):
            async with client.post(proxy.make_url(LEGACY), headers=CLIENT, data=b"{}") as response:
                assert response.status == 429
                assert await response.read() == sent  # the bytes as the upstream sent them
            await recorder(proxy).wait_ended(n)
    when = usage_text.resets(RESET, time.time())
    assert steady(warnings(logs)) == steady(
        [f"5h limit reached for account {MARKER}; resets {when}"]
    )
    [account] = (await usage_of(client, proxy))["accounts"]
    assert account["source"] == "429"
    [limit] = account["limits"]
    assert limit["reached"] == {"resets_at": RESET}
    scraped = await metrics_of(client, proxy)
    assert 'codex_path_proxy_plan_limit_reached{family="codex"} 1.0' in scraped


async def test_a_wham_usage_answer_passes_unchanged_and_updates_the_view(
    proxy: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    answer = (
        b'{"plan_type":"pro","rate_limit":{"allowed":true,"limit_reached":false,'
        b'"primary_window":{"used_percent":7,"limit_window_seconds":18000,'
        b'"reset_after_seconds":600,"reset_at":%d},"secondary_window":{"used_percent":3,'
        b'"limit_window_seconds":604800,"reset_after_seconds":9000,"reset_at":%d}},'
        b'"credits":{"has_credits":true,"unlimited":true,"balance":null},'
        b'"additional_rate_limits":[{"limit_name":"GPT-5.2-Codex-Sonic","metered_feature":'
        b'"codex_other","rate_limit":{"primary_window":{"used_percent":55,'
        b'"limit_window_seconds":18000,"reset_at":%d}}}]}'
    ) % (RESET, WEEKLY_RESET, RESET)

    async def wham(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        return web.Response(body=answer, headers={"Content-Type": "application/json"})

    fake.handler = wham
    async with client.get(proxy.make_url(WHAM), headers=CLIENT) as response:
        assert await response.read() == answer
    await recorder(proxy).wait_ended()
    assert fake.last.target == WHAM
    [account] = (await usage_of(client, proxy))["accounts"]
    assert (account["plan_type"], account["source"]) == ("pro", "wham/usage")
    assert account["credits"]["unlimited"] is True
    codex, other = account["limits"]
    assert [w["used_percent"] for w in codex["windows"]] == [7.0, 3.0]
    assert (other["family"], other["name"]) == ("codex_other", "GPT-5.2-Codex-Sonic")
    assert other["windows"][0]["used_percent"] == 55.0


async def test_a_rate_limits_event_in_a_stream(
    proxy: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    limits: dict[str, object] = {
        "plan_type": "plus",
        "rate_limits": {"primary": {"used_percent": 88, "window_minutes": 300, "reset_at": RESET}},
    }

    async def answer(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse_event("codex.rate_limits", limits))
        await response.write(sse_event("response.completed", {"response": {"id": "r"}}))
        await response.write_eof()
        return response

    fake.handler = answer
    with capture_logs() as logs:
        async with client.post(proxy.make_url(CANONICAL), headers=CLIENT, data=b"{}") as sent:
            await sent.read()
        await recorder(proxy).wait_ended()
    [line] = exchange_lines(logs)
    assert line["limits"][0]["used_percent"] == 88.0
    assert "tokens" not in line
    assert len(warnings(logs)) == 1
    [account] = (await usage_of(client, proxy))["accounts"]
    assert account["source"] == "event"


def codex_session(fake: FakeUpstream, *, compress: bool) -> None:
    """A Codex-like WebSocket upstream: for each request, the rate limits, an answer, its
    closing event; a second request is refused with a 429 error message."""

    async def answer(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        ws = web.WebSocketResponse(compress=compress, max_msg_size=0)
        await ws.prepare(request)
        turn = 0
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                continue
            turn += 1
            if turn == 1:
                await ws.send_str(json.dumps({"type": "response.created", "response": {}}))
                await ws.send_str(
                    json.dumps(
                        {
                            "type": "codex.rate_limits",
                            "plan_type": "plus",
                            "rate_limits": {
                                "primary": {
                                    "used_percent": 64.5,
                                    "window_minutes": 300,
                                    "reset_at": RESET,
                                }
                            },
                            "credits": {"has_credits": True, "unlimited": False, "balance": "9"},
                        }
                    )
                )
                await ws.send_str(
                    json.dumps({"type": "response.output_text.delta", "delta": "x" * 5000})
                )
                big = {
                    "id": "r1",
                    "model": "gpt-6.1-sol",
                    "output": [{"text": "y" * 90_000}],
                    "usage": USAGE,
                }
                await ws.send_str(json.dumps({"type": "response.completed", "response": big}))
            else:
                await ws.send_str(
                    json.dumps(
                        {
                            "type": "error",
                            "status": 429,
                            "error": {"type": "usage_limit_reached", "resets_at": RESET},
                            "headers": {
                                "x-codex-primary-used-percent": 100,
                                "x-codex-primary-window-minutes": "300",
                                "x-codex-active-limit": "codex",
                            },
                        }
                    )
                )
                await ws.send_str(
                    json.dumps(
                        {
                            "type": "response.completed",
                            "response": {
                                "model": "gpt-6.1-sol",
                                "usage": {"input_tokens": 5, "output_tokens": 1},
                            },
                        }
                    )
                )
        return ws

    fake.handler = answer


async def run_session(
    proxy: RunningProxy, client: aiohttp.ClientSession, *, compress: bool
) -> tuple[list[Line], dict[str, Any]]:
    with capture_logs() as logs:
        async with client.ws_connect(
            proxy.make_url(CANONICAL),
            headers=CLIENT,
            compress=15 if compress else 0,
            max_msg_size=0,
        ) as ws:
            await ws.send_str('{"type":"response.create"}')
            kinds = [json.loads(await ws.receive_str())["type"] for _ in range(4)]
            assert kinds[-1] == "response.completed"
            seen = await usage_of(client, proxy)
            await ws.send_str('{"type":"response.create"}')
            assert json.loads(await ws.receive_str())["type"] == "error"
            await ws.receive_str()
        await recorder(proxy).wait_ended()
    return logs, seen


async def test_websocket_messages_feed_the_view_live_plain_and_compressed(
    start_proxy: StartProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    for compress in (False, True):
        proxy = await start_proxy()
        codex_session(fake, compress=compress)
        logs, during = await run_session(proxy, client, compress=compress)
        # While the session runs: the rate limits are in the view already.
        [account] = during["accounts"]
        assert (account["source"], account["plan_type"]) == ("websocket", "plus")
        assert account["credits"]["balance"] == "9"
        assert account["limits"][0]["windows"][0]["used_percent"] == 64.5
        [line] = exchange_lines(logs)
        assert line["websocket"] is True
        assert line["tokens"] == {"input": 12350, "cached": 8000, "output": 846, "reasoning": 300}
        assert line["model"] == "gpt-6.1-sol"
        when = usage_text.resets(RESET, time.time())
        assert steady(warnings(logs)) == steady(
            [f"5h limit reached for account {MARKER}; resets {when}"]
        )
        [account] = (await usage_of(client, proxy))["accounts"]
        assert account["limits"][0]["reached"] == {"resets_at": RESET}
        assert account["limits"][0]["windows"][0]["used_percent"] == 100.0
        scraped = await metrics_of(client, proxy)
        assert 'codex_path_proxy_tokens_total{kind="output",model="gpt-6.1-sol"} 846.0' in scraped
        await proxy.close()


async def test_with_metrics_off_nothing_is_read_and_usage_says_why(
    start_proxy: StartProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(metrics={"enabled": False})
    streams_with(fake, lambda: quota(99))
    with capture_logs() as logs:
        async with client.post(proxy.make_url(LEGACY), headers=CLIENT, data=b"{}") as sent:
            await sent.read()
        [exchange] = await recorder(proxy).wait_ended()
    assert exchange.meter is not None  # the head's usage, for the line
    assert warnings(logs) == []
    [line] = exchange_lines(logs)
    assert line["limits"][0]["used_percent"] == 99.0  # the line still says what it carried
    async with client.get(proxy.make_url("/_proxy/usage")) as response:
        assert response.status == 404
        message = (await response.json())["error"]["message"]
    assert "metrics.enabled = true" in message


def ended(metrics: Metrics, exchange: Exchange) -> None:
    """As forwarding tells the observers of an exchange whose head carries usage."""
    exchange.observers = Observers([metrics])
    report = usage.from_headers(exchange.raw_response_headers, now=1000.0)
    if report:
        exchange.measure(report, "headers")
    exchange.end()


def test_the_account_label_is_there_only_when_asked_for() -> None:
    now = [1000.0]
    for label in (False, True):
        metrics = Metrics(
            in_flight=lambda: 0,
            sessions=lambda: 0,
            account_label=label,
            usage=Accounting(clock=lambda: now[0]),
        )
        for account, percent in (("a-1", 10), ("a-2", 20)):
            exchange = Exchange(
                request_id=account,
                method="POST",
                target=CANONICAL,
                raw_request_headers=[(b"chatgpt-account-id", account.encode())],
                raw_response_headers=[(b"x-codex-primary-used-percent", str(percent).encode())],
            )
            ended(metrics, exchange)
        scraped = text(registry(metrics)).decode().splitlines()
        used = [line for line in scraped if line.startswith("codex_path_proxy_plan_used_percent{")]
        if label:
            assert used == [
                f'codex_path_proxy_plan_used_percent{{account="{redact.marker("a-1")}",'
                'family="codex",window="5h"} 10.0',
                f'codex_path_proxy_plan_used_percent{{account="{redact.marker("a-2")}",'
                'family="codex",window="5h"} 20.0',
            ]
        else:  # the account seen last
            assert used == ['codex_path_proxy_plan_used_percent{family="codex",window="5h"} 20.0']


def test_model_labels_are_bounded() -> None:
    metrics = Metrics(in_flight=lambda: 0, sessions=lambda: 0)
    names = [f"model-{n}" for n in range(40)] + ["bad model\n", None]
    for name in names:
        exchange = Exchange(request_id="x", method="POST", target=CANONICAL)
        exchange.websocket = WebSocketStats()
        exchange.measure(Report(), "event")  # a meter, with nothing in it yet
        assert exchange.meter is not None
        exchange.meter.tokens = Tokens(1, 0, 1, 0)
        exchange.meter.model = name
        ended(metrics, exchange)
    models = {model for model, _ in metrics.counters["tokens"]}
    assert models == {f"model-{n}" for n in range(32)} | {"other", "unknown"}


async def test_a_429_body_in_every_coding_and_what_cannot_be_read(
    proxy: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    body = json.dumps({"error": {"type": "usage_limit_reached", "resets_at": RESET}}).encode()
    codings = [
        ("br", brotli.compress(body)),
        ("zstd", zstandard.ZstdCompressor().compress(body)),
        ("deflate", zlib.compress(body)),
        ("zstd", b"not zstd"),
        ("br", b"not brotli"),
        ("compress", body),
        ("identity", b"not json"),
        ("identity", b"[1, 2]"),
        # 4 KiB kept of a body that inflates a thousandfold: decoded to 256 KiB, no further.
        ("gzip", gzip.compress(b'{"error": {"type": "usage_limit_reached", "x": "' + b"0" * 10**7)),
    ]
    sent: list[tuple[str, bytes]] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        coding, data = codings[len(sent)]
        sent.append((coding, data))
        return web.Response(status=429, body=data, headers={"Content-Encoding": coding})

    fake.handler = answer
    reached = []
    for n, (_, data) in enumerate(codings, 1):
        headers = {**CLIENT, "chatgpt-account-id": f"account-{n}"}
        async with client.post(proxy.make_url(LEGACY), headers=headers, data=b"{}") as response:
            assert await response.read() == data  # as it came, whatever the proxy read
        await recorder(proxy).wait_ended(n)
        accounts = (await usage_of(client, proxy))["accounts"]
        reached.append(any(a["account"] == redact.marker(f"account-{n}") for a in accounts))
    assert reached == [True, True, True, False, False, False, False, False, False]
    assert [coding for coding, _ in sent] == [coding for coding, _ in codings]


async def test_an_exchange_without_an_account_id_is_kept_as_such(
    proxy: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    streams_with(fake, lambda: quota(30))
    async with client.post(proxy.make_url(LEGACY), data=b"{}") as response:
        await response.read()
    await recorder(proxy).wait_ended()
    [account] = (await usage_of(client, proxy))["accounts"]
    assert account["account"] == "[no account id]"


async def test_a_kept_request_body_names_the_model_when_the_answer_does_not(
    start_proxy: StartProxy, fake: FakeUpstream, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """With capture on, the request body is kept anyway: a stream cut before its closing
    event still says its model (read from the body's start, decoded)."""
    proxy = await start_proxy(capture={"dir": str(tmp_path)})

    async def answer(request: web.Request) -> web.StreamResponse:
        await fake.record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse_event("response.output_text.delta", {"delta": "hi"}))
        await response.write_eof()  # no closing event: no model from the answer
        return response

    fake.handler = answer
    body = json.dumps({"model": "gpt-6.1-sol", "input": "x" * 10000}).encode()
    sent = [
        ({}, body),
        ({"Content-Encoding": "zstd"}, zstandard.ZstdCompressor().compress(body)),
        ({"Content-Encoding": "gzip"}, gzip.compress(body)),
        ({"Content-Encoding": "zstd"}, b"not zstd at all"),
        ({}, b'{"input": "no model"}'),
    ]
    with capture_logs() as logs:
        for n, (headers, data) in enumerate(sent, 1):
            async with client.post(
                proxy.make_url(LEGACY), headers={**CLIENT, **headers}, data=data
            ) as response:
                await response.read()
            await recorder(proxy).wait_ended(n)
    models = [line.get("model") for line in exchange_lines(logs)]
    assert models == ["gpt-6.1-sol", "gpt-6.1-sol", "gpt-6.1-sol", None, None]


async def test_usage_answers_only_requests_addressed_to_a_loopback_host(
    proxy: RunningProxy,
) -> None:
    """A web page that rebinds its own name to 127.0.0.1 reads no account's usage."""
    for host, status in (("evil.example", 403), ("localhost:1", 200), ("[::1]", 200)):
        answer = parse_response(
            await raw_request(
                proxy.port,
                f"GET /_proxy/usage HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode(),
            )
        )
        assert answer.status == status, host
