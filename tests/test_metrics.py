"""Metrics scraped over HTTP and parsed with prometheus-client's own text parser."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from proxy import __version__
from tests.fake_upstream import FakeUpstream, sse_event
from tests.harness import RunningProxy, StartProxy, raw_request, recorder
from tests.proc import start_proxy_process

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(proxy: RunningProxy) -> Samples:
    async with (
        aiohttp.ClientSession() as session,
        session.get(proxy.make_url("/_proxy/metrics")) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counts_outcomes_bytes_and_rewrites_after_known_traffic(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    request = b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    for _ in range(3):
        await raw_request(proxy.port, request)
    await raw_request(
        proxy.port, b"GET /backend-api/models HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    await raw_request(proxy.port, b"PROPFIND /pot HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    await recorder(proxy).wait_ended(5)
    samples = await scrape(proxy)
    prefix = "codex_path_proxy_"
    assert (
        value(
            samples,
            prefix + "requests_total",
            kind="http",
            method="POST",
            rule="legacy-responses",
            status_class="2xx",
        )
        == 3
    )
    assert (
        value(
            samples,
            prefix + "requests_total",
            kind="http",
            method="GET",
            rule="none",
            status_class="2xx",
        )
        == 1
    )
    assert (
        value(
            samples,
            prefix + "requests_total",
            kind="http",
            method="other",
            rule="none",
            status_class="2xx",
        )
        == 1
    )
    assert value(samples, prefix + "rewrites_total", rule="legacy-responses") == 3
    assert value(samples, prefix + "outcomes_total", kind="http", outcome="completed") == 5
    assert value(samples, prefix + "stream_ends_total", end="response.completed") == 3
    assert value(samples, prefix + "bytes_total", direction="request") == 6
    assert value(samples, prefix + "request_duration_seconds_count", kind="http") == 5
    assert value(samples, prefix + "time_to_first_byte_seconds_count") == 5
    assert value(samples, prefix + "request_duration_seconds_bucket", kind="http", le="3600.0") == 5
    assert value(samples, prefix + "in_flight", kind="http") == 0
    assert value(samples, prefix + "in_flight", kind="websocket") == 0
    # No label carries a path or anything the client chose.
    for _, labels in samples:
        for _, label in labels:
            assert "/" not in label
            assert label != "PROPFIND"


async def test_upstream_errors_by_kind(start_proxy: StartProxy, fake: FakeUpstream) -> None:
    proxy = await start_proxy("http://127.0.0.1:9")
    await raw_request(proxy.port, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    await recorder(proxy).wait_ended()
    samples = await scrape(proxy)
    assert value(samples, "codex_path_proxy_upstream_errors_total", error="unreachable") == 1
    assert (
        value(
            samples, "codex_path_proxy_outcomes_total", kind="http", outcome="upstream_unreachable"
        )
        == 1
    )
    assert (
        value(
            samples,
            "codex_path_proxy_requests_total",
            kind="http",
            method="GET",
            rule="none",
            status_class="5xx",
        )
        == 1
    )


async def test_in_flight_gauges_rise_during_streams_and_return_to_zero(
    proxy: RunningProxy, fake: FakeUpstream
) -> None:
    release = asyncio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade"):
            return await fake.websocket_echo(request)
        await fake.record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse_event("response.created", {}))
        await release.wait()
        await response.write_eof()
        return response

    fake.handler = held
    async with aiohttp.ClientSession() as session:
        streams = [
            await session.post(proxy.make_url("/backend-api/responses"), data=b"{}")
            for _ in range(2)
        ]
        for stream in streams:
            await stream.content.readuntil(b"\n\n")
        async with session.ws_connect(proxy.make_url("/backend-api/responses")) as ws:
            await ws.send_str("x")
            await ws.receive_str()
            during = await scrape(proxy)
        release.set()
        for stream in streams:
            await stream.read()
            stream.release()
    await recorder(proxy).wait_ended(3)
    after = await scrape(proxy)
    # The scrape itself is an exchange in flight while it is answered.
    assert value(during, "codex_path_proxy_in_flight", kind="http") == 2
    assert value(during, "codex_path_proxy_in_flight", kind="websocket") == 1
    assert value(after, "codex_path_proxy_in_flight", kind="http") == 0
    assert value(after, "codex_path_proxy_in_flight", kind="websocket") == 0
    assert (
        value(
            after,
            "codex_path_proxy_requests_total",
            kind="websocket",
            method="GET",
            rule="legacy-responses",
            status_class="1xx",
        )
        == 1
    )


async def test_metrics_can_be_turned_off(start_proxy: StartProxy, fake: FakeUpstream) -> None:
    proxy = await start_proxy(metrics={"enabled": False})
    async with (
        aiohttp.ClientSession() as session,
        session.get(proxy.make_url("/_proxy/metrics")) as response,
    ):
        assert response.status == 404
    assert fake.received == []


async def test_the_real_process_serves_the_standard_collectors_and_its_version(
    fake: FakeUpstream,
) -> None:
    proxy = await start_proxy_process("--upstream", fake.url)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{proxy.address}/_proxy/metrics") as response,
        ):
            text = await response.text()
        proxy.process.send_signal(signal.SIGTERM)
        await proxy.rest()
    finally:
        proxy.stop()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = {sample.name for family in families.values() for sample in family.samples}
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "python_gc_objects_collected_total",
    ):
        assert name in samples, name
    [python] = families["python_info"].samples
    assert python.labels["implementation"] == "CPython"
    [build] = families["codex_path_proxy_build_info"].samples
    assert (build.labels, build.value) == ({"version": __version__}, 1.0)
    # One series per counter and histogram, not a `_created` twin beside each.
    assert not [name for name in samples if name.endswith("_created")]
    assert "codex_path_proxy_requests_created" not in text


async def test_upstream_connections_are_counted_by_how_they_came(
    start_proxy: StartProxy, fake: FakeUpstream
) -> None:
    proxy = await start_proxy()
    request = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    for _ in range(2):
        await raw_request(proxy.port, request)
    await recorder(proxy).wait_ended(2)
    samples = await scrape(proxy)
    name = "codex_path_proxy_upstream_connections_total"
    assert value(samples, name, connection="warm", tls="none") == 1
    assert value(samples, name, connection="reused", tls="none") == 1
    assert value(samples, "codex_path_proxy_upstream_connect_seconds_count") == 1
    assert value(samples, "codex_path_proxy_upstream_tls_seconds_count") == 0
