"""The inspector as an observer: remembers recent exchanges and tells open pages as they change.

Forwarding calls `changed` on every event and frame, so that call only notes the event
and schedules an update: each exchange is published at most once per `interval`, and
its final state always when it ends. Nothing is built while no page is open, except
the final record of each exchange that ends (the ring holds it, serialised once).

Each exchange's content (bodies, events, messages, the answer, images) is kept by its
`Kept` watcher; once it ends, its view is built when a page first asks for it (or
searches) and kept serialised. All of it together stays within `total_limit`: past it,
the oldest exchanges' contents go first. Bodies are folded for the page (and the curl
command built) on the inspector's own thread, never on the event loop: a mebibyte of
JSON takes about 100 ms to fold, and every stream would wait for it. Searches run one
at a time, over the views exactly as the page shows them (secrets masked).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import orjson
from aiohttp import web

from proxy.exchange import Exchange, Observer
from proxy.inspector import record as records
from proxy.inspector.content import dumps
from proxy.inspector.curl import command
from proxy.inspector.feed import QUEUE_SIZE, Feed
from proxy.inspector.inflate import Budget
from proxy.inspector.kept import Kept, frozen, show
from proxy.inspector.ring import Ring
from proxy.inspector.routes import Pages
from proxy.settings import CONTROL_PREFIX

T = TypeVar("T")

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
    kept: Kept | None = None
    # Once it ended: its content's view, serialised (once asked for), and the request's
    # method, target and headers (for the curl command).
    detail: bytes | None = None
    request: tuple[str, str, list[tuple[str, str]], str | None] | None = None
    weight: int = 0


class Inspector(Observer):
    """An observer of every exchange, serving what it saw under the reserved prefix."""

    def __init__(
        self,
        *,
        ring_size: int,
        capture_dir: Path | None = None,
        queue_size: int = QUEUE_SIZE,
        interval: float = INTERVAL,
        body_limit: int = 1024 * 1024,
        total_limit: int = 64 * 1024 * 1024,
        event_limit: int = 16 * 1024 * 1024,
    ) -> None:
        self.body_limit = body_limit
        self.total_limit = total_limit
        self.event_limit = event_limit
        # What all WebSocket sessions' compressed messages may inflate to, a second.
        self.inflating = Budget(event_limit)
        # Bytes the ended exchanges' contents hold.
        self.held = 0
        # Where proxy.capture writes the HAR files, when capture is on: pages link them.
        self.capture_dir = capture_dir
        self.ring: Ring[Entry] = Ring(ring_size)
        self.feed = Feed(queue_size)
        self.interval = interval
        # Exchanges are not hashable; while one runs, its object identity finds its entry.
        self._running: dict[int, Entry] = {}
        self._sequence = itertools.count(1)
        # One thread: folding never takes more than its share of the interpreter's lock,
        # however many pages ask at once. Started when first needed.
        self._folding = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inspector")
        self._searching = asyncio.Lock()

    def started(self, exchange: Exchange) -> None:
        entry = Entry(seq=next(self._sequence), exchange=exchange)
        entry.kept = exchange.watcher = Kept(
            exchange,
            body_limit=self.body_limit,
            event_limit=self.event_limit,
            inflating=self.inflating,
        )
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
        # Kept first: the secrets to mask are the request's and the response's now.
        self._keep(entry, exchange)
        entry.final = sse_json(self._record(entry, exchange, since=0, live=False))
        # The final record holds all of it now: nothing of the exchange is kept twice.
        entry.exchange = None
        exchange.watcher = None
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
                parts.append(sse_json(self._record(entry, entry.exchange, since=0, live=True)))
            else:
                parts.append(entry.final)
        return f'{{"ring_size":{self.ring.size},"exchanges":[{",".join(parts)}]}}'

    def capture_file(self, name: str) -> Path | None:
        """The HAR file of an exchange still in the ring, if its name is safe to serve."""
        if not records.servable(name):
            return None
        return next((e.har_path for e in self.ring if e.har == name), None)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        Pages(
            feed=self.feed,
            snapshot=self.snapshot,
            capture_file=self.capture_file,
            contents=self,
        ).add_routes(router)

    async def on_shutdown(self, _: object = None) -> None:
        """End open pages' streams, so shutdown need not cancel them."""
        self.feed.close()
        self._folding.shutdown(wait=False, cancel_futures=True)

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
        self.feed.publish(f"event: exchange\ndata: {sse_json(data)}\n\n")

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
            secrets=entry.kept.secrets if entry.kept is not None else (),
        )

    def _forget(self, entry: Entry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
        if entry.exchange is not None:
            self._running.pop(id(entry.exchange), None)
        self.held -= entry.weight
        entry.weight = 0
        entry.kept = None
        entry.detail = None

    # Contents.

    def _keep(self, entry: Entry, exchange: Exchange) -> None:
        """Take over the ended exchange's content, then keep the total within its limit."""
        kept = entry.kept
        if kept is None:
            return
        kept.finish(exchange)
        entry.request = (
            exchange.method,
            exchange.target,
            exchange.request_headers,
            exchange.request_header("Content-Encoding"),
        )
        self._weigh(entry, kept.weight)

    async def _shown(self, entry: Entry, kept: Kept) -> bytes | None:
        """The entry's content as the page shows it, serialised (an ended exchange's kept
        once built); None if it left the ring meanwhile."""
        if entry.detail is not None:
            return entry.detail
        exchange, dropped = entry.exchange, kept.dropped
        bodies = kept.bodies(exchange)
        shown = await self._off_loop(partial(show, bodies, kept.secrets)) if bodies else {}
        if entry.kept is not kept:
            return None
        view = kept.view(exchange, partial(image_url, entry.seq), shown)
        if exchange is not None or entry.detail is not None or kept.dropped != dropped:
            return orjson.dumps(view)  # still changing
        detail = entry.detail = dumps(view)
        if not dropped:
            # The view holds the response as shown; the request's bytes stay for the
            # curl command.
            kept.response = None
            self._weigh(entry, len(detail) + kept.weight)
        return detail

    async def _off_loop(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._folding, work)

    def _weigh(self, entry: Entry, weight: int) -> None:
        """Count what `entry` holds now; past the total, the oldest others give theirs up."""
        self.held += weight - entry.weight
        entry.weight = weight
        if self.held <= self.total_limit:
            return
        for old in self.ring:
            if self.held <= self.total_limit:
                break
            if old.exchange is None and old.weight and old is not entry:
                self._drop(old)

    def _drop(self, entry: Entry) -> None:
        self.held -= entry.weight
        entry.weight = 0
        entry.detail = None  # built again, without the contents, when asked for
        if entry.kept is not None:
            entry.kept.drop()

    async def content(self, seq: int, origin: str) -> bytes | None:
        """One exchange's content as the page shows it (JSON), or None if it left the ring."""
        entry = self.ring.get(seq)
        if entry is None or entry.kept is None:
            return None
        kept = entry.kept
        if entry.exchange is not None:
            exchange = entry.exchange
            request = (
                exchange.method,
                exchange.target,
                exchange.request_headers,
                exchange.request_header("Content-Encoding"),
            )
            body = exchange.bodies.request if exchange.bodies is not None else None
        else:
            assert entry.request is not None
            request, body = entry.request, kept.request
        detail = await self._shown(entry, kept)
        if detail is None:
            return None
        method, target, headers, encoding = request
        curl = None
        if not kept.dropped:
            curl = await self._off_loop(
                partial(
                    command,
                    method=method,
                    url=origin + target,
                    headers=headers,
                    body=frozen(body) if body is not None else None,
                    encoding=encoding,
                    secrets=kept.secrets,
                )
            )
        extra = orjson.dumps(
            {
                "seq": seq,
                "curl": curl,
                "bounds": {
                    "body_limit": self.body_limit,
                    "total_limit": self.total_limit,
                    "held": self.held,
                },
            }
        )
        # The view's members after these: `{…extra…, …view…}`.
        return extra[:-1] + b"," + detail[1:]

    def event(self, seq: int, position: int) -> bytes | None:
        entry = self.ring.get(seq)
        if entry is None or entry.kept is None:
            return None
        return entry.kept.event_json(position)

    def image(self, seq: int, key: str) -> tuple[bytes, str] | None:
        entry = self.ring.get(seq)
        image = entry.kept.image(key) if entry is not None and entry.kept is not None else None
        if image is None or image.data is None or image.mime is None:
            return None
        return image.data, image.mime

    async def search(self, text: str) -> list[int]:
        """The exchanges whose content as shown holds `text`, any case: each view is built
        (once, for an ended exchange) and matched off the event loop, one search at a time."""
        needle = text.lower().encode()
        async with self._searching:
            shown = []
            for entry in list(self.ring):
                kept = entry.kept
                detail = await self._shown(entry, kept) if kept is not None else None
                if detail is not None:
                    shown.append((entry.seq, detail))
            return await self._off_loop(partial(_matching, shown, needle))


def _matching(shown: list[tuple[int, bytes]], needle: bytes) -> list[int]:
    return [seq for seq, detail in shown if needle in detail.lower()]


def image_url(seq: int, key: str) -> str:
    return f"{CONTROL_PREFIX}exchanges/{seq}/images/{quote(key, safe='')}"


def sse_json(data: dict[str, Any]) -> str:
    """On one line (control characters in strings are escaped): safe inside an SSE data
    field. orjson is ten times faster at this than json; an integer past 64 bits in an
    upstream's `usage` is the one value it refuses."""
    try:
        return orjson.dumps(data).decode()
    except orjson.JSONEncodeError:
        return json.dumps(data, separators=(",", ":"))
