"""The inspector as an observer: remembers recent exchanges and tells open pages as they change.

Forwarding calls `changed` on every event and frame, so that call only notes the event
and schedules an update: each exchange is published at most once per `interval`, and
its final state always when it ends. Nothing is built while no page is open, except
the final record of each exchange that ends (the ring holds it, serialised once).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from proxy.exchange import Exchange, Observer
from proxy.inspector import record as records
from proxy.inspector.feed import QUEUE_SIZE, Feed
from proxy.inspector.ring import Ring
from proxy.inspector.routes import Pages

# At most this many updates a second per exchange reach a page.
INTERVAL = 0.1
# An event type is the upstream's text (an `event:` line may be long): keep its start.
KIND_LIMIT = 200


@dataclass(slots=True, eq=False)
class Entry:
    """One exchange in the ring: its live object while it runs, its final record after."""

    seq: int
    exchange: Exchange | None
    timeline: records.Timeline = field(default_factory=records.Timeline)
    # Timeline positions already published, and when the last update went out.
    published: int = 0
    published_at: float = float("-inf")
    timer: asyncio.TimerHandle | None = None
    har: str | None = None
    har_path: Path | None = None
    final: str | None = None


class Inspector(Observer):
    """An observer of every exchange, serving what it saw under the reserved prefix."""

    def __init__(
        self,
        *,
        ring_size: int,
        capture_dir: Path | None = None,
        queue_size: int = QUEUE_SIZE,
        interval: float = INTERVAL,
    ) -> None:
        # Where proxy.capture writes the HAR files, when capture is on: pages link them.
        self.capture_dir = capture_dir
        self.ring: Ring[Entry] = Ring(ring_size)
        self.feed = Feed(queue_size)
        self.interval = interval
        # Exchanges are not hashable; while one runs, its object identity finds its entry.
        self._running: dict[int, Entry] = {}
        self._sequence = itertools.count(1)

    def started(self, exchange: Exchange) -> None:
        entry = Entry(seq=next(self._sequence), exchange=exchange)
        for old in self.ring.add(entry.seq, entry):
            self._forget(old)
        self._running[id(exchange)] = entry
        if self.feed:
            # Published a moment later: by then forwarding has chosen the rule.
            self._schedule(entry)

    def changed(self, exchange: Exchange) -> None:
        entry = self._running.get(id(exchange))
        if entry is None:
            return
        sse = exchange.sse
        if sse is not None and sse.events > entry.timeline.total and sse.last_event:
            kind = sse.last_event[:KIND_LIMIT]
            # A tenth of a millisecond is enough, and shorter to send.
            entry.timeline.add(kind, round(exchange.elapsed_ms(), 1), count=sse.events)
        if self.feed:
            self._schedule(entry)

    def ended(self, exchange: Exchange) -> None:
        entry = self._running.pop(id(exchange), None)
        if entry is None:
            return
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        # Built a moment later, off the request's own path: the exchange changes no more.
        asyncio.get_running_loop().call_soon(self._finish, entry, exchange)

    def _finish(self, entry: Entry, exchange: Exchange) -> None:
        if self.ring.get(entry.seq) is not entry:
            return  # evicted meanwhile
        if exchange.bodies is not None and self.capture_dir is not None:
            entry.har = records.har_name(exchange)
            entry.har_path = self.capture_dir / entry.har
        entry.final = _json(self._record(entry, exchange, since=0, live=False))
        # The final record holds all of it now: nothing of the exchange is kept twice.
        entry.exchange = None
        entry.timeline.events.clear()
        if self.feed:
            # The whole timeline: a page skips the positions it already holds.
            self.feed.publish(f"event: exchange\ndata: {entry.final}\n\n")

    def snapshot(self) -> str:
        """Every exchange in the ring, whole, oldest first: what a page starts from."""
        parts = []
        for entry in self.ring:
            if entry.final is None:
                assert entry.exchange is not None  # an entry runs until its final record
                parts.append(_json(self._record(entry, entry.exchange, since=0, live=True)))
            else:
                parts.append(entry.final)
        return f'{{"ring_size":{self.ring.size},"exchanges":[{",".join(parts)}]}}'

    def capture_file(self, name: str) -> Path | None:
        """The HAR file of an exchange still in the ring, if its name is safe to serve."""
        if not records.servable(name):
            return None
        return next((e.har_path for e in self.ring if e.har == name), None)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        Pages(feed=self.feed, snapshot=self.snapshot, capture_file=self.capture_file).add_routes(
            router
        )

    async def on_shutdown(self, _: object = None) -> None:
        """End open pages' streams, so shutdown need not cancel them."""
        self.feed.close()

    def _schedule(self, entry: Entry) -> None:
        if entry.timer is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, entry.published_at + self.interval - loop.time())
        entry.timer = loop.call_later(delay, self._publish, entry)

    def _publish(self, entry: Entry) -> None:
        entry.timer = None
        exchange = entry.exchange
        assert exchange is not None  # its end and its eviction cancel the timer
        entry.published_at = asyncio.get_running_loop().time()
        data = self._record(entry, exchange, since=entry.published, live=True)
        entry.published = entry.timeline.total
        self.feed.publish(f"event: exchange\ndata: {_json(data)}\n\n")

    def _record(
        self, entry: Entry, exchange: Exchange, *, since: int, live: bool
    ) -> dict[str, Any]:
        return records.record(
            exchange,
            seq=entry.seq,
            timeline=entry.timeline,
            since=since,
            live=live,
            har=entry.har,
            har_path=str(entry.har_path) if entry.har_path else None,
        )

    def _forget(self, entry: Entry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
        if entry.exchange is not None:
            self._running.pop(id(entry.exchange), None)


def _json(data: dict[str, Any]) -> str:
    # ASCII-only and on one line: safe inside an SSE data field.
    return json.dumps(data, separators=(",", ":"))
