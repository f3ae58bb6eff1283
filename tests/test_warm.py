"""A warm way out: an upstream connection ready before the request needs it, replaced
before the edge forgets it, never used once it may be stale."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from proxy.connector import Connector
from proxy.pool import Pool
from tests.harness import (
    StartProxy,
    Taker,
    parse_response,
    raw_request,
    recorder,
    run_isolated,
    settings_for,
)

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
REQUEST = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"


@dataclass
class Upstream:
    """A raw upstream that answers every request with 'ok' and notes each connection:
    when it was accepted, and when a request first arrived on it."""

    accepted: list[float] = field(default_factory=list)
    requested: list[float] = field(default_factory=list)
    close_idle_after: float | None = None
    server: asyncio.Server | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(self.accepted)
        self.accepted.append(time.monotonic())
        self.requested.append(0.0)
        self.connected.set()
        try:
            while True:
                try:
                    async with asyncio.timeout(self.close_idle_after):
                        await reader.readuntil(b"\r\n\r\n")
                except (TimeoutError, asyncio.IncompleteReadError):
                    return
                self.requested[index] = self.requested[index] or time.monotonic()
                writer.write(ANSWER)
                await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    raw = Upstream()
    raw.server = await asyncio.start_server(raw.serve, "127.0.0.1", 0)
    async with raw.server:
        yield raw


async def settle() -> None:
    """Let connections the proxy opens on its own arrive (nothing marks their absence)."""
    await asyncio.sleep(0.2)


async def test_a_spare_is_ready_before_the_first_request_and_replaced_when_used(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    proxy = await start_proxy(upstream.url)
    async with asyncio.timeout(5):
        await upstream.connected.wait()
    assert len(upstream.accepted) == 1  # the spare, before any request
    with capture_logs() as logs:
        assert parse_response(await raw_request(proxy.port, REQUEST)).body == b"ok"
        await recorder(proxy).wait_ended()
    await settle()
    # The request went on the spare; another spare took its place.
    assert upstream.requested[0] > 0
    assert len(upstream.accepted) == 2
    [line] = [line for line in logs if line["event"] == "request"]
    assert (line["connection"], line["connect_ms"]) == ("warm", 0.0)
    assert line["opened_ms"] > 0
    assert line["tls_ms"] is None  # plain HTTP


async def test_no_spare_when_warm_connections_is_0(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    proxy = await start_proxy(upstream.url, upstream={"warm_connections": 0})
    await settle()
    assert upstream.accepted == []
    with capture_logs() as logs:
        await raw_request(proxy.port, REQUEST)
        await raw_request(proxy.port, REQUEST)
        await recorder(proxy).wait_ended(2)
    assert [line["connection"] for line in logs if line["event"] == "request"] == [
        "new",
        "reused",
    ]
    assert len(upstream.accepted) == 1


async def test_an_upstream_that_drops_idle_connections_is_not_dialled_in_a_loop(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    upstream.close_idle_after = 0.05
    await start_proxy(upstream.url)
    await asyncio.sleep(1.5)
    # The spare, dropped at once, then one more a second later; no more meanwhile.
    assert 1 <= len(upstream.accepted) <= 3


async def test_a_client_connecting_starts_a_connection_before_its_request_is_sent(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    """Spares dropped by the far side are replaced only after a pause; a client that
    connects meanwhile does not wait for it: its connection opens while its head comes."""
    upstream.close_idle_after = 0.05
    proxy = await start_proxy(upstream.url)
    await asyncio.sleep(0.3)  # the spare was dropped; the next waits a second
    before = len(upstream.accepted)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        async with asyncio.timeout(5):
            while len(upstream.accepted) == before:  # noqa: ASYNC110 - the subject is timing
                await asyncio.sleep(0.005)
        opened_at = upstream.accepted[-1]
        upstream.close_idle_after = None
        sent_at = time.monotonic()
        writer.write(REQUEST)
        response = parse_response(await reader.read())
    finally:
        writer.close()
    assert response.body == b"ok"
    assert opened_at < sent_at


async def test_a_connection_idle_across_a_sleep_is_never_taken(upstream: Upstream) -> None:
    """The loop's clock stops while a machine sleeps; the wall's does not. A connection
    idle for longer than upstream.keepalive_timeout by the wall is closed, not used."""
    settings = settings_for(upstream.url, upstream={"warm_connections": 0})
    pool = Pool(settings.upstream, connector=Connector(settings.upstream))
    try:
        first = Taker()
        pool.acquire(first)
        connection = await first.given
        connection.served += 1
        pool.release(connection)
        # As after a night asleep: the loop's clock says a moment, the wall's says hours.
        connection.idle_since_wall -= 8 * 3600
        second = Taker()
        pool.acquire(second)
        fresh = await second.given
        assert fresh is not connection
        assert connection.closed
    finally:
        pool.close()


async def test_dns_is_asked_once_refreshed_beside_and_a_failed_refresh_keeps_the_last_answer(
    tmp_path: Path,
) -> None:
    """In a mount namespace of its own, /etc/hosts is the test's file: the name resolves,
    then disappears. Needs root and unshare, as CI has."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.9 upstream.test\n")
    seen = await run_isolated("-m", f"mount --bind {hosts} /etc/hosts", "tests.dns_refresh_driver")
    assert seen["first"] == [[socket.AF_INET, ["127.0.0.9", 443]]]
    assert seen["stale"] == seen["first"]
    assert seen["logged"] == ["DNS refresh failed: using the last good addresses"]
    assert seen["after"].startswith("gaierror")


async def test_an_upstream_named_by_host_name_is_reached_on_an_address_that_answers(
    start_proxy: StartProxy, upstream: Upstream
) -> None:
    """localhost may resolve to ::1 first, where nothing listens: the next address is tried."""
    port = upstream.url.rsplit(":", 1)[1]
    proxy = await start_proxy(f"http://localhost:{port}")
    assert parse_response(await raw_request(proxy.port, REQUEST)).body == b"ok"


async def test_a_way_out_that_keeps_failing_is_said_once_and_its_recovery_once(
    start_proxy: StartProxy,
) -> None:
    """Offline: one warning when the first spare cannot be opened, each later try at debug
    level only, and one line when a spare opens again (issue 25, item 9)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with capture_logs() as logs:
        await start_proxy(f"http://127.0.0.1:{port}")
        async with asyncio.timeout(5):
            # Polled: a captured log line sets no event.
            while sum("could not be opened" in line["event"] for line in logs) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        raw = Upstream()
        raw.server = await asyncio.start_server(raw.serve, "127.0.0.1", port)
        async with raw.server, asyncio.timeout(10):
            await raw.connected.wait()
            while not any(line["event"].endswith("open again") for line in logs):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    failures = [line for line in logs if "could not be opened" in line["event"]]
    assert [line["log_level"] for line in failures] == ["warning", "debug"]
    [recovered] = [line for line in logs if line["event"].endswith("open again")]
    assert recovered["log_level"] == "info"
    assert "connection refused" in recovered["after"]
