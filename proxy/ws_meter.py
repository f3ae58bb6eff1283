"""Plan usage in a WebSocket session: the upstream's `codex.rate_limits` messages, its
`error` messages with a status (a 429 says the limit is reached) and the tokens of each
`response.completed`, read from the frames as they pass (`tunnel.FrameTap` hands each
data frame here), whatever the inspector does.

Bounded, and cheap for the rest: a text message is looked at by its first bytes only,
and only one that starts `{"type": "codex.rate_limits"` or `"error"` is kept whole (at
most 64 KiB; longer ones are not read), and of a `response.completed` only its start
(for the model) and its last 8 KiB (for `usage`). A session that agreed on
permessage-deflate compresses every message with one context (RFC 7692), so each of the
upstream's messages is inflated in turn, within bounds (256 KiB compressed, 2 MiB
inflated); past them the context is lost, and so is the rest of the session's usage.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from typing import TYPE_CHECKING, Any

from proxy import usage
from proxy.sse import Bounded, model_from_head, usage_from_tail

if TYPE_CHECKING:
    from proxy.exchange import Exchange

WHOLE = 64 * 1024
PREFIX = 64
COMPRESSED = 256 * 1024
INFLATED = 2 * 1024 * 1024
HEAD = 4096
_TAIL = b"\x00\x00\xff\xff"  # what each compressed message lost (RFC 7692 §7.2.1)
_KIND = re.compile(rb'\s*\{\s*"type"\s*:\s*"(codex\.rate_limits|error|response\.completed)"')
# What a message is to this reader: not yet known, not of interest, kept whole, kept
# bounded (a closing event), compressed (inflated when whole).
_SNIFF, _SKIP, _WHOLE, _BOUNDED, _DEFLATED = range(5)


def deflate_agreed(headers: list[tuple[bytes, bytes]]) -> tuple[bool, bool]:
    """Whether a 101's headers agreed on permessage-deflate, and whether the server keeps
    its compression context from one message to the next (no server_no_context_takeover)."""
    for name, value in headers:
        if name.lower() != b"sec-websocket-extensions":
            continue
        for extension in value.lower().split(b","):
            kind, *params = (part.strip() for part in extension.split(b";"))
            if kind == b"permessage-deflate":
                names = {param.partition(b"=")[0].strip() for param in params}
                return True, b"server_no_context_takeover" not in names
    return False, False


class MessageMeter:
    """The upstream's messages of one session, read for usage."""

    __slots__ = (
        "_exchange",
        "_fin",
        "_inflater",
        "_kind",
        "_lost",
        "_prefix",
        "_seen",
        "_state",
        "_takeover",
    )

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange
        deflate, self._takeover = deflate_agreed(exchange.raw_response_headers)
        self._inflater: Any = zlib.decompressobj(wbits=-zlib.MAX_WBITS) if deflate else None
        self._lost = False
        self._fin = True
        self._state = _SKIP
        self._kind = b""
        self._prefix = bytearray()
        self._seen: bytearray | Bounded = bytearray()

    def start(self, first: int, length: int) -> bool:
        """A data frame begins (`first`: its header's first byte): whether to be shown it."""
        opcode = first & 0x0F
        if opcode > 2 or self._lost:
            return False  # a control frame between fragments changes nothing
        self._fin = bool(first & 0x80)
        if opcode:  # a message begins
            self._prefix = bytearray()
            self._seen = bytearray()
            if first & 0x40 and self._inflater is not None:
                self._state = _DEFLATED
            else:
                self._state = _SNIFF if opcode == 1 else _SKIP
        state = self._state
        seen = self._seen
        if state == _DEFLATED and isinstance(seen, bytearray) and len(seen) + length > COMPRESSED:
            # Too long to inflate: the context that later messages need is gone with it.
            self._lost = self._takeover
            self._state = _SKIP
            return False
        return state != _SKIP

    def data(self, piece: bytes | memoryview) -> bool:
        """Some of the frame's payload; whether to be shown the rest of the frame."""
        if self._state == _SNIFF:
            room = PREFIX - len(self._prefix)
            self._prefix += piece[:room]
            if len(self._prefix) < PREFIX:
                return True
            if self._decide(bytes(self._prefix)) == _SKIP or not self._store(bytes(self._prefix)):
                return False
            piece = piece[room:]
        return self._state != _SKIP and self._store(piece)

    def _store(self, piece: bytes | memoryview) -> bool:
        seen = self._seen
        if isinstance(seen, Bounded):
            seen.add(piece)
        elif self._state == _WHOLE and len(seen) + len(piece) > WHOLE:
            self._state = _SKIP  # too long to read: not read at all
            return False
        else:
            seen += piece
        return True

    def _decide(self, prefix: bytes) -> int:
        kind = self._kind = _classify(prefix)
        if not kind:
            self._state = _SKIP
        elif kind == b"response.completed":
            self._state = _BOUNDED
            self._seen = Bounded(HEAD)
        else:
            self._state = _WHOLE
        return self._state

    def end(self) -> None:
        """The frame's payload is through; at a message's last frame, read the message."""
        if not self._fin:
            return
        if self._state == _SNIFF and self._decide(bytes(self._prefix)) != _SKIP:
            self._store(bytes(self._prefix))  # a message shorter than the prefix
        state, seen = self._state, self._seen
        self._state, self._seen, self._prefix = _SKIP, bytearray(), bytearray()
        if state == _DEFLATED:
            assert isinstance(seen, bytearray)
            self._inflate(bytes(seen))
        elif state == _WHOLE:
            assert isinstance(seen, bytearray)
            self._read(bytes(seen))
        elif state == _BOUNDED:
            assert isinstance(seen, Bounded)
            self._completed(seen)

    def _inflate(self, payload: bytes) -> None:
        inflater = self._inflater
        if not self._takeover or inflater.eof:
            inflater = self._inflater = zlib.decompressobj(wbits=-zlib.MAX_WBITS)
        try:
            text = inflater.decompress(payload + _TAIL, INFLATED)
        except zlib.error:
            self._lost = True
            return
        if inflater.unconsumed_tail:
            self._lost = self._takeover
            return
        kind = self._kind = _classify(text[:PREFIX])
        if kind == b"response.completed":
            bounded = Bounded(HEAD)
            bounded.add(text)
            self._completed(bounded)
        elif kind and len(text) <= WHOLE:
            self._read(text)

    def _read(self, message: bytes) -> None:
        try:
            event = json.loads(message)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        now = time.time()
        if self._kind == b"codex.rate_limits":
            report = usage.from_event(event, now=now)
        else:
            status = event.get("status", event.get("status_code"))
            error = event.get("error")
            reached = isinstance(error, dict) and error.get("type") == "usage_limit_reached"
            if status != 429 and not reached:
                return
            report = usage.from_error(
                event, usage.from_json_headers(event.get("headers"), now=now), now=now
            )
        if report:
            self._exchange.measure(report, "websocket")

    def _completed(self, seen: Bounded) -> None:
        whole = seen.whole
        if whole is not None:
            try:
                event = json.loads(whole)
            except ValueError:
                return
            response = event.get("response") if isinstance(event, dict) else None
            response = response if isinstance(response, dict) else {}
            found, model = response.get("usage"), response.get("model")
        else:
            found, model = usage_from_tail(bytes(seen.tail)), model_from_head(bytes(seen.head))
        tokens = usage.tokens(found)
        if tokens is None:
            return
        exchange = self._exchange
        meter = exchange.meter = exchange.meter or usage.Meter()
        meter.tokens = tokens if meter.tokens is None else meter.tokens + tokens
        if isinstance(model, str) and model:
            meter.model = model[:100]
        exchange.change()


def _classify(prefix: bytes) -> bytes:
    """The kind of message its first bytes say, among those read here; else b""."""
    found = _KIND.match(prefix)
    return found.group(1) if found else b""
