"""The inspector without a browser: its ring, its feed to pages, and its endpoints on real sockets.

The helpers at the top (a gated event stream, an event-stream reader) are shared with
tests/test_inspector_browser.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web

from proxy import redact
from proxy.exchange import Exchange, Observers
from proxy.inspector import Inspector
from proxy.inspector.feed import Feed
from proxy.inspector.observer import sse_json
from proxy.inspector.record import Timeline, har_name, record, scrub, servable
from proxy.inspector.ring import Ring
from proxy.inspector.routes import loopback_host, trusted_host
from proxy.sse import StreamSummary
from tests.fake_upstream import FakeUpstream, sse_event
from tests.harness import (
    RunningProxy,
    StartProxy,
    capture_of,
    parse_response,
    raw_request,
    recorder,
)

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJpbnNwZWN0b3ItdXNlciJ9.aW5zcGVjdG9yLXNpZ25hdHVyZQ"
ACCOUNT = "7f6e5d4c-1111-2222-3333-444455556666"
LEGACY = "/backend-api/responses"
CANONICAL = "/backend-api/codex/responses"
CLIENT_HEADERS = {
    "Authorization": f"Bearer {TOKEN}",
    "ChatGPT-Account-Id": ACCOUNT,
    "Accept": "text/event-stream",
    "Content-Type": "application/json",
    "originator": "codex_exec",
}
QUOTA = {"x-codex-primary-used-percent": "37", "x-codex-primary-window-minutes": "300"}
USAGE = {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
CUT = b""  # pushed to a GatedStream: close the connection mid-stream


@dataclass(slots=True)
class GatedStream:
    """An upstream event stream that sends each event only when the test pushes it.

    Push bytes to send them, CUT to close the connection mid-stream, None to end cleanly.
    """

    fake: FakeUpstream
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    status: int = 200

    def install(self) -> GatedStream:
        self.fake.handler = self.answer
        return self

    async def answer(self, request: web.Request) -> web.StreamResponse:
        await self.fake.record(request)
        response = web.StreamResponse(
            status=self.status,
            headers={"Content-Type": "text/event-stream; charset=utf-8", **QUOTA},
        )
        await response.prepare(request)
        while (chunk := await self.queue.get()) is not None:
            if chunk is CUT:
                assert request.transport is not None
                request.transport.close()
                return response
            await response.write(chunk)
        await response.write_eof()
        return response

    def push(self, kind: str, **payload: Any) -> None:
        self.queue.put_nowait(sse_event(kind, payload))

    def complete(self) -> None:
        self.push("response.completed", response={"id": "resp_1", "usage": USAGE})
        self.queue.put_nowait(None)


class Events:
    """A page's view of /_proxy/events, read with a plain client: every payload it received."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.payloads: list[str] = []

    async def next(self, timeout: float = 5) -> tuple[str, Any]:
        kind, data = "message", []
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.response.content.readline()).decode()
                if not line:
                    raise EOFError("the event stream ended")
                line = line.rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
                elif not line and data:
                    self.payloads.append("\n".join(data))
                    return kind, json.loads(self.payloads[-1])

    async def until(self, check: Any, timeout: float = 5) -> dict[str, Any]:
        """The next exchange record for which `check(record)` is true."""
        async with asyncio.timeout(timeout):
            while True:
                kind, data = await self.next()
                if kind == "exchange" and check(data):
                    return dict(data)


@pytest.fixture
async def inspected(start_proxy: StartProxy) -> RunningProxy:
    return await start_proxy(inspector={"enabled": True})


def inspector_of(server: RunningProxy) -> Inspector:
    inspector = server.listener.observers.find(Inspector)
    assert inspector is not None
    return inspector


@contextlib.asynccontextmanager
async def open_events(
    client: aiohttp.ClientSession, server: RunningProxy
) -> AsyncIterator[tuple[Events, dict[str, Any]]]:
    """Subscribe as a page does; the first message is the snapshot of the ring."""
    async with client.get(server.make_url("/_proxy/events")) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        events = Events(response)
        kind, snapshot = await events.next()
        assert kind == "snapshot"
        yield events, snapshot


async def read_to_end(reader: asyncio.StreamReader) -> int:
    """Bytes read until the connection ends (closed or reset)."""
    total = 0
    with contextlib.suppress(ConnectionResetError):
        while chunk := await reader.read(65536):
            total += len(chunk)
    return total


# ---- the pure parts -------------------------------------------------------------------------


def test_ring_is_bounded_and_evicts_the_oldest_first() -> None:
    ring: Ring[str] = Ring(3)
    assert [ring.add(n, f"v{n}") for n in range(1, 4)] == [[], [], []]
    assert ring.add(4, "v4") == ["v1"]
    assert ring.add(5, "v5") == ["v2"]
    assert list(ring) == ["v3", "v4", "v5"]
    assert len(ring) == 3
    assert ring.get(2) is None
    assert ring.get(4) == "v4"


def test_ring_of_one_and_a_ring_of_nothing() -> None:
    ring: Ring[int] = Ring(1)
    assert ring.add(1, 1) == []
    assert ring.add(2, 2) == [1]
    assert list(ring) == [2]
    with pytest.raises(ValueError, match="at least one"):
        Ring(0)


def test_timeline_keeps_the_last_events_with_absolute_positions() -> None:
    timeline = Timeline()
    for n in range(1, 251):
        timeline.add(f"e{n}", float(n), count=n)
    assert timeline.total == 250
    first, events = timeline.since(0)
    assert (first, len(events), events[0]) == (50, 200, ("e51", 51.0))
    assert timeline.since(240) == (240, [(f"e{n}", float(n)) for n in range(241, 251)])
    assert timeline.since(250) == (250, [])


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:8780", True),
        ("127.0.0.1", True),
        ("localhost:8780", True),
        ("[::1]:8780", True),
        ("[::1]", True),
        ("127.1.2.3:80", True),
        ("", False),
        ("evil.example:8780", False),
        ("evil.example", False),
        ("127.0.0.1.nip.io:8780", False),
        ("[::1", False),
        ("[::1]x", False),
        ("127.0.0.1:", False),
        ("127.0.0.1:80x", False),
        ("localhost.:8780", False),
    ],
)
def test_loopback_host(host: str, loopback: bool) -> None:
    assert loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("local", "host", "trusted"),
    [
        ("127.0.0.1", "127.0.0.1:8780", True),
        ("127.0.0.1", "rebound.example:8780", False),
        ("::1", "[::1]:8780", True),
        (None, "rebound.example", False),
        (None, "localhost", True),
        # A bind beyond loopback is explicit (inspector.allow_non_loopback): any name goes.
        ("192.0.2.10", "inspector.internal:8780", True),
    ],
)
def test_trusted_host(local: str | None, host: str, trusted: bool) -> None:
    assert trusted_host(local, host) is trusted


@pytest.mark.parametrize(
    ("name", "served"),
    [
        ("20260101T120000.123456-1f2e3d4c5b6a.har", True),
        ("20260101T120000.123456-client-chosen.42_x.har", True),
        ("20260101T120000.123456-../../etc/passwd.har", False),
        ("20260101T120000.123456-a b.har", False),
        ("20260101T120000.123456-.har", False),
        ("../20260101T120000.123456-a.har", False),
        ("20260101T120000.123456-a.har.json", False),
        ("x.har", False),
    ],
)
def test_servable_capture_names(name: str, served: bool) -> None:
    assert servable(name) is served


def test_scrub_masks_credential_shapes_anywhere_and_keeps_markers() -> None:
    marker = redact.header_value("Authorization", f"Bearer {TOKEN}")
    value = {"a": [TOKEN, 1, None, ("x", f"Bearer {TOKEN}")], TOKEN: marker, "n": 2.5}
    scrubbed = scrub(value)
    assert TOKEN not in json.dumps(scrubbed)
    assert scrubbed["a"][1:3] == [1, None]
    assert scrubbed["a"][3][1] == marker
    assert scrubbed[redact.marker(TOKEN)] == marker
    assert scrubbed["n"] == 2.5


def test_a_request_id_shaped_like_a_secret_is_masked_and_its_capture_not_linked() -> None:
    key = "sk-" + "k" * 20
    exchange = Exchange(request_id=key, method="GET", target="/x", started_at=0.0)
    name = har_name(exchange)
    shown = record(
        exchange,
        seq=1,
        timeline=Timeline(),
        since=0,
        live=False,
        har=name,
        har_path=f"/captures/{name}",
    )
    assert servable(name)
    assert key not in json.dumps(shown)
    assert shown["request_id"] == redact.marker(key)
    assert shown["har"]["url"] is None


async def test_a_page_whose_queue_is_full_is_dropped_and_publishing_never_waits() -> None:
    dropped: list[str] = []
    feed = Feed(queue_size=2)
    slow = feed.subscribe(on_drop=lambda: dropped.append("slow"))
    quick = feed.subscribe(on_drop=lambda: dropped.append("quick"))
    for n in range(3):
        feed.publish(f"m{n}")  # synchronous: there is nothing it could wait on
        if n < 2:
            assert quick.queue.get_nowait() == f"m{n}"
    assert dropped == ["slow"]
    assert slow.dropped
    assert len(feed) == 1
    # A dropped page's queue holds only the end of its stream.
    assert slow.queue.get_nowait() is None
    assert slow.queue.empty()
    assert quick.queue.get_nowait() == "m2"
    feed.publish("m3")
    assert slow.queue.empty()


async def test_closing_the_feed_ends_every_stream_after_what_is_queued() -> None:
    feed = Feed(queue_size=2)
    behind = feed.subscribe(on_drop=lambda: None)
    full = feed.subscribe(on_drop=lambda: None)
    feed.publish("m0")
    full.queue.put_nowait("m1")
    feed.close()
    assert len(feed) == 0
    assert [behind.queue.get_nowait(), behind.queue.get_nowait()] == ["m0", None]
    assert full.queue.get_nowait() is None
    assert not behind.dropped


async def test_changes_are_throttled_and_the_final_state_is_always_published() -> None:
    inspector = Inspector(ring_size=10, interval=0.1)
    page = inspector.feed.subscribe(on_drop=lambda: None)
    exchange = Exchange(
        request_id="r1",
        method="POST",
        target=LEGACY,
        observers=Observers((inspector,)),
        sse=StreamSummary(),
    )
    assert exchange.sse is not None
    exchange.start()
    for n in range(1, 1001):
        exchange.sse.events, exchange.sse.last_event = n, f"e{n}"
        exchange.change()
    assert page.queue.empty()  # nothing is built inside forwarding's own calls
    async with asyncio.timeout(5):
        first = await page.queue.get()
    assert first is not None
    record = json.loads(first.partition("data: ")[2])
    assert (record["seq"], record["live"], record["events"]) == (1, True, 1000)
    assert (record["timeline_total"], record["timeline_at"], len(record["timeline"])) == (
        1000,
        800,
        200,
    )
    entry = inspector.ring.get(1)
    assert entry is not None
    for n in range(1001, 1101):
        exchange.sse.events, exchange.sse.last_event = n, f"e{n}"
        exchange.change()
    # The next update waits for the interval since the last one.
    assert entry.timer is not None
    assert entry.timer.when() == pytest.approx(entry.published_at + 0.1)
    exchange.end()
    assert entry.timer is None
    async with asyncio.timeout(5):
        final = await page.queue.get()
    assert final is not None
    record = json.loads(final.partition("data: ")[2])
    assert (record["live"], record["events"], record["timeline"][-1][0]) == (False, 1100, "e1100")
    assert page.queue.empty()


async def test_without_a_page_nothing_is_scheduled_and_the_ring_still_fills() -> None:
    inspector = Inspector(ring_size=2)
    for n in range(3):
        exchange = Exchange(
            request_id="same", method="GET", target=f"/p{n}", observers=Observers((inspector,))
        )
        exchange.start()
        exchange.change()
        entry = inspector.ring.get(n + 1)
        assert entry is not None
        assert entry.timer is None
        exchange.end()
    await asyncio.sleep(0)  # one loop turn: final records are built in a callback of their own
    snapshot = json.loads(inspector.snapshot())
    assert snapshot["ring_size"] == 2
    assert [(r["seq"], r["path"], r["request_id"], r["live"]) for r in snapshot["exchanges"]] == [
        (2, "/p1", "same", False),
        (3, "/p2", "same", False),
    ]


async def test_an_exchange_evicted_while_running_or_ending_is_forgotten() -> None:
    inspector = Inspector(ring_size=1)
    page = inspector.feed.subscribe(on_drop=lambda: None)
    running = Exchange(
        request_id="a", method="GET", target="/long", observers=Observers((inspector,))
    )
    running.start()
    ending = Exchange(
        request_id="b", method="GET", target="/short", observers=Observers((inspector,))
    )
    ending.start()
    ending.end()
    # Evicts both: one still running, one whose final record is not built yet.
    Exchange(
        request_id="c", method="GET", target="/next", observers=Observers((inspector,))
    ).start()
    running.change()
    running.end()
    async with asyncio.timeout(5):
        message = await page.queue.get()
    assert message is not None
    assert json.loads(message.partition("data: ")[2])["path"] == "/next"
    assert page.queue.empty()


# ---- on real sockets ------------------------------------------------------------------------


async def test_off_by_default_and_the_prefix_is_never_forwarded(
    proxy: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    for path in ("/_proxy/", "/_proxy/events", "/_proxy/inspector.js"):
        async with client.get(proxy.make_url(path)) as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "not_found"
    assert proxy.listener.observers.find(Inspector) is None
    assert fake.received == []


async def test_off_its_address_says_how_to_turn_it_on(
    proxy: RunningProxy, client: aiohttp.ClientSession
) -> None:
    for path in ("/_proxy/", "/_proxy"):
        async with client.get(proxy.make_url(path), allow_redirects=False) as response:
            assert response.status == 404
            assert (await response.json())["error"] == {
                "message": "the inspector is off: start the proxy with --inspector (or set "
                "inspector.enabled = true, or CODEX_PATH_PROXY_INSPECTOR_ENABLED=true) to see "
                "it at /_proxy/",
                "type": "proxy_error",
                "code": "not_found",
            }
    async with client.get(proxy.make_url("/_proxy/nothing")) as response:
        assert (
            "reserved for the proxy's own endpoints" in (await response.json())["error"]["message"]
        )


async def test_page_and_assets_are_self_contained_with_a_strict_policy(
    inspected: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    kinds = {
        "/_proxy/": "text/html; charset=utf-8",
        "/_proxy/inspector.js": "text/javascript; charset=utf-8",
        "/_proxy/inspector.css": "text/css; charset=utf-8",
    }
    for path, kind in kinds.items():
        async with client.get(inspected.make_url(path)) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == kind
            policy = response.headers["Content-Security-Policy"]
            assert "default-src 'none'" in policy
            assert "connect-src 'self'" in policy
            assert "require-trusted-types-for 'script'" in policy
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            text = await response.text()
        assert "http://" not in text
        assert "https://" not in text
        assert "//" + "fonts" not in text
    html = (Path(__file__).parent.parent / "proxy/inspector/static/inspector.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in html
    assert fake.received == []


async def test_requests_not_addressed_to_a_loopback_host_are_refused(
    inspected: RunningProxy,
) -> None:
    """A page elsewhere that rebinds its host name to 127.0.0.1 still sends its own Host."""
    cases = [
        ("/_proxy/", "evil.example:8780", 403),
        ("/_proxy/events", "evil.example:8780", 403),
        ("/_proxy/captures/x.har", "evil.example", 403),
        ("/_proxy/", "localhost:8780", 200),
        ("/_proxy/inspector.js", "[::1]:8780", 200),
        ("/_proxy/captures/x.har", "127.0.0.1", 404),
    ]
    for path, host, status in cases:
        raw = await raw_request(
            inspected.port,
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode(),
        )
        assert parse_response(raw).status == status, (path, host)


async def test_the_event_stream_shows_a_legacy_stream_live_and_redacted(
    inspected: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    stream = GatedStream(fake).install()
    async with open_events(client, inspected) as (events, snapshot):
        assert snapshot == {"ring_size": 500, "exchanges": []}
        sending = asyncio.create_task(
            client.post(inspected.make_url(LEGACY), headers=CLIENT_HEADERS, data=b'{"x":1}')
        )
        first = await events.until(lambda r: r["path"] == LEGACY)
        assert (first["seq"], first["live"], first["method"]) == (1, True, "POST")
        assert (first["upstream_path"], first["rule"]) == (CANONICAL, "legacy-responses")
        stream.push("response.created", response={"id": "resp_1"})
        seen = await events.until(lambda r: r.get("events") == 1)
        assert seen["timeline"] == [["response.created", pytest.approx(seen["timeline"][0][1])]]
        assert seen["quota"] == QUOTA
        for n in range(2, 5):
            stream.push("response.output_text.delta", delta=f"d{n}")
            seen = await events.until(lambda r, n=n: r.get("events") == n)
            assert seen["live"]
        stream.complete()
        response = await sending
        assert response.status == 200
        await response.read()
        final = await events.until(lambda r: not r["live"])
        assert final["outcome"] == "completed"
        assert (final["events"], final["stream_end"], final["usage"]) == (
            5,
            "response.completed",
            USAGE,
        )
        assert [kind for kind, _ in final["timeline"]] == [
            "response.created",
            *["response.output_text.delta"] * 3,
            "response.completed",
        ]
        assert final["connect_ms"] <= final["headers_ms"] <= final["first_byte_ms"]
        assert final["first_byte_ms"] <= final["duration_ms"] == final["elapsed_ms"]
        headers = dict(final["request_headers"])
        assert headers["Authorization"] == redact.header_value("Authorization", f"Bearer {TOKEN}")
        assert headers["Authorization"].startswith("Bearer [redacted #")
        assert headers["ChatGPT-Account-Id"].startswith("[redacted #")
        assert headers["originator"] == "codex_exec"
        assert final["har"] is None
        for payload in events.payloads:
            assert TOKEN not in payload
            assert ACCOUNT not in payload
            for part in TOKEN.split("."):
                assert part not in payload
    async with open_events(client, inspected) as (_, snapshot):
        [whole] = snapshot["exchanges"]
        assert whole == final
        assert TOKEN not in json.dumps(snapshot)


async def test_a_cut_stream_ends_as_cut_with_its_diagnosis(
    inspected: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    stream = GatedStream(fake).install()
    stream.push("response.created", response={"id": "resp_1"})
    stream.push("response.output_text.delta", delta="half")
    stream.queue.put_nowait(CUT)
    async with open_events(client, inspected) as (events, _):
        async with client.post(inspected.make_url(LEGACY), headers=CLIENT_HEADERS) as response:
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        final = await events.until(lambda r: not r["live"])
    assert (final["outcome"], final["cause"], final["events"]) == (
        "upstream_cut",
        "upstream_cut_mid_body",
        2,
    )
    assert final["diagnosis"] == (
        "the event stream ended without response.completed (last: response.output_text.delta)"
    )


async def test_a_websocket_session_shows_its_frames(
    inspected: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    async with open_events(client, inspected) as (events, _):
        async with client.ws_connect(inspected.make_url(LEGACY), headers=CLIENT_HEADERS) as ws:
            for text in ("one", "two"):
                await ws.send_str(text)
                assert (await ws.receive_str()) == text
            live = await events.until(lambda r: r.get("frames_out") == 2)
            assert live["live"]
        final = await events.until(lambda r: not r["live"])
    assert (final["websocket"], final["frames_in"], final["frames_out"]) == (True, 2, 2)
    assert (final["status"], final["rule"], final["closed_by"]) == (
        101,
        "legacy-responses",
        "client",
    )
    assert TOKEN not in json.dumps(final)


async def test_the_ring_keeps_the_newest_exchanges(
    start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(inspector={"enabled": True, "ring_size": 3})
    for n in range(5):
        async with client.get(proxy.make_url(f"/backend-api/models?n={n}")) as response:
            await response.read()
    await recorder(proxy).wait_ended(5)
    async with open_events(client, proxy) as (_, snapshot):
        assert snapshot["ring_size"] == 3
        assert [(r["seq"], r["path"]) for r in snapshot["exchanges"]] == [
            (3, "/backend-api/models?n=2"),
            (4, "/backend-api/models?n=3"),
            (5, "/backend-api/models?n=4"),
        ]


async def test_a_page_that_stops_reading_is_dropped_and_never_slows_forwarding(
    inspected: RunningProxy, client: aiohttp.ClientSession
) -> None:
    inspector = inspector_of(inspected)
    inspector.feed.queue_size = 4
    page = socket.socket()
    # A tiny receive window, and a reader that stops taking bytes after 8 KiB.
    page.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    page.connect(("127.0.0.1", inspected.port or 0))
    page.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=page, limit=4096)
    writer.write(b"GET /_proxy/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert len(inspector.feed) == 1
    # Allow-listed header values are shown, so each update carries this one whole.
    padding = {"x-codex-padding": "p" * 32768}
    exchanges = 0
    while len(inspector.feed):
        exchanges += 1
        assert exchanges <= 200, "the stuck page was never dropped"
        async with (
            asyncio.timeout(5),
            client.get(inspected.make_url("/backend-api/models"), headers=padding) as response,
        ):
            assert response.status == 200
            await response.read()
    # Dropped: its connection is gone (after whatever was already buffered for it).
    async with asyncio.timeout(5):
        await read_to_end(reader)
    writer.close()
    # The page comes back (as EventSource does) and starts from a fresh snapshot.
    async with (
        aiohttp.ClientSession(read_bufsize=1 << 24) as roomy,
        open_events(roomy, inspected) as (_, snapshot),
    ):
        assert len(snapshot["exchanges"]) == exchanges


async def test_shutdown_ends_open_pages_after_what_is_queued(
    inspected: RunningProxy, client: aiohttp.ClientSession
) -> None:
    inspector = inspector_of(inspected)
    sent = [("exchange", {"seq": n}) for n in range(2)]
    async with (
        open_events(client, inspected) as (idle, _),
        open_events(client, inspected) as (behind, _),
    ):
        for n in range(2):
            inspector.feed.publish(f'event: exchange\ndata: {{"seq":{n}}}\n\n')
        assert [await idle.next(), await idle.next()] == sent
        # Shutdown ends both streams: a page that had not read yet still gets what was
        # sent before the end.
        await inspector.on_shutdown()
        assert [await behind.next(), await behind.next()] == sent
        for events in (idle, behind):
            with pytest.raises(EOFError):
                await events.next()
    assert len(inspector.feed) == 0


async def test_a_page_opened_mid_stream_starts_from_the_stream_so_far(
    inspected: RunningProxy, fake: FakeUpstream, client: aiohttp.ClientSession
) -> None:
    stream = GatedStream(fake).install()
    async with (
        open_events(client, inspected) as (first_page, _),
        await client.post(inspected.make_url(LEGACY), headers=CLIENT_HEADERS) as sent,
    ):
        for kind in ("response.created", "response.in_progress"):
            stream.push(kind)
        await first_page.until(lambda r: r.get("events") == 2)
        async with open_events(client, inspected) as (late_page, snapshot):
            [running] = snapshot["exchanges"]
            assert (running["live"], running["events"], running["timeline_at"]) == (True, 2, 0)
            assert [kind for kind, _ in running["timeline"]] == [
                "response.created",
                "response.in_progress",
            ]
            stream.complete()
            final = await late_page.until(lambda r: not r["live"])
        await sent.read()
    assert final["timeline_total"] == 3
    assert final["elapsed_ms"] >= running["elapsed_ms"]


async def test_bodies_kept_for_the_log_alone_have_no_capture_link(
    start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    proxy = await start_proxy(inspector={"enabled": True}, log={"bodies": True})
    async with client.get(proxy.make_url("/backend-api/models")) as response:
        await response.read()
    await recorder(proxy).wait_ended()
    async with open_events(client, proxy) as (_, snapshot):
        [record] = snapshot["exchanges"]
    assert record["har"] is None


async def test_capture_files_are_linked_and_served_only_from_the_ring(
    start_proxy: StartProxy, fake: FakeUpstream, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    captures = tmp_path / "captures"
    proxy = await start_proxy(inspector={"enabled": True}, capture={"dir": str(captures)})
    for request_id in ("client-chosen-7", "../not/a path!"):
        headers = {**CLIENT_HEADERS, "X-Request-Id": request_id}
        async with client.get(proxy.make_url("/backend-api/models"), headers=headers) as response:
            await response.read()
    await recorder(proxy).wait_ended(2)
    await capture_of(proxy).drain()
    async with open_events(client, proxy) as (_, snapshot):
        served, sanitised = (r["har"] for r in snapshot["exchanges"])
    assert served["name"].endswith("-client-chosen-7.har")
    assert served["url"] == f"/_proxy/captures/{served['name']}"
    assert served["path"] == str(captures / served["name"])
    # A client-chosen id never makes the file name a path: unsafe characters become "_".
    assert sanitised["name"].endswith("-_not_a_path_.har")
    assert (captures / sanitised["name"]).is_file()
    async with client.get(proxy.make_url(served["url"])) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Content-Disposition"].startswith("attachment;")
        har = json.loads(await response.read())
    assert har["log"]["entries"][0]["request"]["url"].endswith("/backend-api/models")
    assert TOKEN not in json.dumps(har)
    # Well-formed names outside the ring, other files, traversal: all the same 404.
    elsewhere = captures / "20200101T000000.000000-elsewhere.har"
    elsewhere.write_text("{}")
    for name in (elsewhere.name, "..%2F..%2Fetc%2Fpasswd", "%2E%2E", quote("../" + served["name"])):
        raw = await raw_request(
            proxy.port,
            f"GET /_proxy/captures/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode(),
        )
        assert parse_response(raw).status == 404, name
    # A capture rotated away is gone; one replaced by a symbolic link is not followed.
    target = captures / served["name"]
    target.unlink()
    async with client.get(proxy.make_url(served["url"])) as response:
        assert response.status == 404
    os.symlink(elsewhere, target)
    async with client.get(proxy.make_url(served["url"])) as response:
        assert response.status == 404
    assert all(seen.target == "/backend-api/models" for seen in fake.received)


def test_har_name_matches_the_capture_files_name() -> None:
    exchange = Exchange(request_id="x" * 40, method="GET", target="/", started_at=0.5)
    assert har_name(exchange) == "19700101T000000.500000-" + "x" * 32 + ".har"


@pytest.mark.parametrize(
    "record",
    [
        {"error_message": "line one\r\nline two \u2028 é 漢", "seq": 1},
        {"usage": {"input_tokens": 2**70}, "seq": 2},  # past orjson's 64 bits
    ],
)
def test_a_record_is_one_line_of_json(record: dict[str, object]) -> None:
    data = sse_json(record)
    assert "\n" not in data
    assert "\r" not in data
    assert json.loads(data) == record
