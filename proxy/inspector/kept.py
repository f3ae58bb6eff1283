"""What the inspector keeps of one exchange's content, and how the page is shown it.

While the exchange runs, a `Kept` is its watcher: each event and WebSocket message is
read as it passes (parsed once, fed to the answer, kept while the exchange's
`body_limit` allows). When it ends, its kept bodies are taken over (a stream's own body
is not: its events say it better). All of it counts towards the inspector's
`total_limit`; the oldest exchanges give theirs up first (`drop`).

Forwarding waits for none of the showing: an event is kept as it came and folded
(redacted, blobs summarised, long strings cut) only when a page first asks for it, and
a stream of small events costs the answer's reading and a copy each. Only an event too
long to keep as it is (an image) is folded at once, into its summary. WebSocket messages
are folded as they pass: the page lists them all at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from proxy import redact
from proxy.exchange import Body, Exchange, Watcher
from proxy.inspector.answer import Answer, Image
from proxy.inspector.content import EVENT_STRING, REQUEST_STRING, body_view, dumps, fold
from proxy.inspector.inflate import Budget, Inflater, agreed

_KINDS = {0x1: "text", 0x2: "binary", 0x8: "close", 0x9: "ping", 0xA: "pong"}
# What keeping one event or message is counted at beyond its bytes (its record, its slot).
RECORD_COST = 120
# An event up to this long is kept as it came, folded when first shown; a longer one is
# folded as it passes (its blobs summarised, so that it fits the budget).
FOLD_LATER = 16 * 1024


@dataclass(slots=True)
class Message:
    side: str
    at_ms: float
    kind: str
    size: int
    compressed: bool
    json: bytes | None  # a folded JSON value (a tree or a text), or None when not kept
    note: str | None = None


class Kept(Watcher):
    def __init__(
        self,
        exchange: Exchange,
        *,
        body_limit: int,
        event_limit: int,
        inflating: Budget | None = None,
    ) -> None:
        self.keep = event_limit
        self.budget = body_limit
        self.started = exchange.started
        # Whose headers' secrets to mask, read when first needed (`secrets`): the exchange's
        # while it runs, its request's and response's once it ended.
        self._exchange: Exchange | None = exchange
        self._headers: list[list[tuple[str, str]]] = []
        self._target = exchange.target
        self._secrets: list[str] | None = None
        self.answer = Answer()
        # Each event's data as it came, or folded and redacted JSON where its position is
        # in `_folded`, or None when too long to read. Plain bytes in a list: a stream's
        # hundreds of events add nothing for the garbage collector to walk.
        self.events: list[bytes | None] = []
        self._folded: set[int] = set()
        self.messages: list[Message] = []
        self.used = 0  # bytes of kept events and messages
        self.request: Body | None = None
        self.response: Body | None = None
        self.dropped = False
        # Each side's permessage-deflate, once its first compressed message came; what
        # all sessions may inflate is shared.
        self._inflaters: dict[str, Inflater | None] = {}
        self._inflating = inflating or Budget(event_limit)
        # Each body's Content-Encoding and Content-Type, once the exchange is gone.
        self._types: dict[str, tuple[str | None, str | None]] = {}

    @property
    def secrets(self) -> list[str]:
        """The credentials the exchange's headers and query carry, longest first, to mask
        anywhere."""
        if self._secrets is None:
            headers = self._headers
            if self._exchange is not None:
                headers = [self._exchange.request_headers]
            self._secrets = redact.secret_values(
                [pair for pairs in headers for pair in pairs], self._target
            )
        return self._secrets

    # As it passes.

    def event(self, kind: str, data: bytes | None, size: int) -> None:
        parsed = _parse(data)
        if isinstance(parsed, dict):
            self._read(parsed)
        if self.used >= self.budget:
            return  # counted by the tap, not kept
        if data is not None and len(data) <= FOLD_LATER:
            self.used += RECORD_COST + len(data)
            self.events.append(data)
            return
        folded = self._fold(_shown_value(parsed, data), EVENT_STRING)
        self._folded.add(len(self.events))
        self.events.append(folded)

    def message(
        self, side: str, opcode: int, payload: bytes | None, size: int, compressed: bool
    ) -> None:
        note = None
        if compressed:
            payload, note = self._inflate(side, payload)
        elif payload is None:
            note = "too long to keep"
        value: Any = None
        if payload is not None and opcode == 0x1:
            value = _parse(payload)
            if isinstance(value, dict) and side == "upstream":
                self._read(value)
            value = _shown_value(value, payload)
        elif payload is not None and opcode == 0x8 and len(payload) >= 2:
            code = int.from_bytes(payload[:2], "big")
            value = {"code": code, "reason": payload[2:].decode("utf-8", "replace")}
        if self.used >= self.budget:
            return
        limit = REQUEST_STRING if side == "client" else EVENT_STRING
        kind = _KINDS.get(opcode, f"opcode {opcode}")
        folded = self._fold(value, limit)
        self.messages.append(Message(side, self._at(), kind, size, compressed, folded, note))

    def _read(self, event: dict[str, Any]) -> None:
        # Upstream JSON of any shape: a surprise in it must never reach the forwarding.
        try:
            self.answer.read(event)
        except (TypeError, ValueError, KeyError, AttributeError):
            self.answer.unreadable += 1

    def _fold(self, value: Any, limit: int) -> bytes | None:
        folded = None
        if value is not None:
            folded = dumps(fold(value, limit=limit, secrets=self.secrets))
        self.used += RECORD_COST + (len(folded) if folded is not None else 0)
        return folded

    def _inflate(self, side: str, payload: bytes | None) -> tuple[bytes | None, str | None]:
        if side not in self._inflaters:
            exchange = self._exchange
            params = agreed(exchange.response_headers) if exchange is not None else None
            self._inflaters[side] = None
            if params is not None:
                sender = "server" if side == "upstream" else "client"
                self._inflaters[side] = Inflater(
                    takeover=f"{sender}_no_context_takeover" not in params,
                    limit=self.keep,
                    budget=self._inflating,
                )
        inflater = self._inflaters[side]
        if inflater is None:
            return None, "RSV1 set, but no permessage-deflate was agreed: not inflated"
        if payload is None:
            inflater.lose()
            return None, "compressed, too long to read"
        if side == "client" and self.used >= self.budget:
            # Nothing more of this side is kept, nor read for the answer.
            inflater.lose()
            return None, None
        return inflater.inflate(payload)

    def _at(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 1)

    # When it ends, and after.

    def finish(self, exchange: Exchange) -> None:
        """Take over the exchange's kept bodies; a stream's body is its events."""
        self._exchange = None
        self._headers = [exchange.request_headers, exchange.response_headers]
        self._secrets = None
        self._types = _types(exchange)
        bodies = exchange.bodies
        if bodies is not None:
            self.request = bodies.request
            self.response = None if exchange.sse is not None else bodies.response

    @property
    def weight(self) -> int:
        """Bytes held for the page."""
        bodies = sum(len(body.data) for body in (self.request, self.response) if body is not None)
        return bodies + self.used + self.answer.weight

    def drop(self) -> None:
        """Give up the contents (the inspector's total budget needs the room)."""
        self.dropped = True
        self.request = self.response = None
        self.events = []
        self._folded = set()
        self.messages = []
        self.used = 0
        self.answer.drop_images()

    def image(self, key: str) -> Image | None:
        return self.answer.image(key)

    def event_json(self, position: int) -> bytes | None:
        """An event's JSON as shown (folded now if it was never shown before)."""
        if not 0 <= position < len(self.events):
            return None
        data = self.events[position]
        if position not in self._folded:
            value = _shown_value(_parse(data), data)
            data = self.events[position] = dumps(
                fold(value, limit=EVENT_STRING, secrets=self.secrets)
            )
            self._folded.add(position)
        return data

    def bodies(self, exchange: Exchange | None) -> list[Shown]:
        """The bodies to show, as they are now (copies a body still growing would not
        change): `show` folds them, off the event loop; `exchange` while it still runs."""
        request = self.request
        response = self.response
        types = self._types
        if exchange is not None:
            types = _types(exchange)
            if exchange.bodies is not None:
                request = exchange.bodies.request
                response = None if exchange.sse is not None else exchange.bodies.response
        found = []
        for side, body in (("request", request), ("response", response)):
            if body is not None and body.size:
                encoding, kind = types.get(side, (None, None))
                found.append(Shown(side, frozen(body), encoding, kind))
        return found

    def view(
        self, exchange: Exchange | None, image_url: Callable[[str], str], bodies: dict[str, bytes]
    ) -> dict[str, Any]:
        """The contents as the page shows them, with the `bodies` `show` folded; `exchange`
        while it still runs."""
        view: dict[str, Any] = {"dropped": self.dropped}
        for side, shown in bodies.items():
            view[side] = orjson.Fragment(shown)
        if self.events or self.answer.items or self.answer.error or self.answer.usage:
            view["answer"] = self.answer.view(self.secrets, image_url)
        if self.events:
            view["events_kept"] = len(self.events)
        if self.messages:
            view["messages"] = [
                {
                    "side": m.side,
                    "at_ms": m.at_ms,
                    "kind": m.kind,
                    "size": m.size,
                    "compressed": m.compressed,
                    "note": m.note,
                    "value": orjson.Fragment(m.json) if m.json is not None else None,
                }
                for m in self.messages
            ]
        return view


@dataclass(frozen=True, slots=True)
class Shown:
    """A body to show: its side, its bytes so far, its Content-Encoding and Content-Type."""

    side: str
    body: Body
    encoding: str | None
    kind: str | None


def show(bodies: list[Shown], secrets: list[str]) -> dict[str, bytes]:
    """Each body as the page shows it, serialised: pure, so any thread may run it (a
    mebibyte of JSON takes about 100 ms to fold)."""
    shown = {}
    for found in bodies:
        view = body_view(
            found.body,
            encoding=found.encoding,
            content_type=found.kind,
            secrets=secrets,
            request=found.side == "request",
        )
        if view is not None:
            shown[found.side] = dumps(view)
    return shown


def frozen(body: Body) -> Body:
    """What a body holds now, in a body of its own that nothing adds to."""
    copy = Body(body.limit)
    copy.add(body.data)
    copy.size = body.size
    return copy


def _types(exchange: Exchange) -> dict[str, tuple[str | None, str | None]]:
    return {
        "request": (
            exchange.request_header("Content-Encoding"),
            exchange.request_header("Content-Type"),
        ),
        "response": (
            exchange.response_header("Content-Encoding"),
            exchange.response_header("Content-Type"),
        ),
    }


def _shown_value(parsed: Any, data: bytes | None) -> Any:
    """What is shown of a payload: its JSON, or the start of its text if it is not JSON."""
    if parsed is None and data is not None:
        return data[:REQUEST_STRING].decode("utf-8", "replace")
    return parsed


def _parse(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
