"""The WebSocket usage reader on the upstream's frames, whatever the reads: fragments,
control frames between them, messages past the bounds, permessage-deflate with and
without context takeover, and what it must leave alone."""

from __future__ import annotations

import json
import random
import struct
import zlib
from typing import Any

import pytest

from proxy.exchange import Exchange, Observer, Observers
from proxy.tunnel import FrameTap
from proxy.usage import Report, Tokens
from proxy.ws_meter import COMPRESSED, WHOLE, MessageMeter, deflate_agreed

LIMITS = {
    "type": "codex.rate_limits",
    "rate_limits": {"primary": {"used_percent": 42, "window_minutes": 300, "reset_at": 1900000000}},
}
ERROR = {
    "type": "error",
    "status": 429,
    "error": {"type": "usage_limit_reached", "resets_at": 1900000000},
    "headers": {"x-codex-primary-used-percent": "100", "x-codex-active-limit": "codex"},
}
USAGE = {"input_tokens": 100, "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 5}}
# Bytes that do not compress: past the compressed bound, compressed.
NOISE = random.Random(23).randbytes(COMPRESSED + 4096)
DEFLATE = [(b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits=15")]


class Seen(Observer):
    def __init__(self) -> None:
        self.reports: list[Report] = []

    def metered(self, exchange: Exchange, report: Report, source: str) -> None:
        assert source == "websocket"
        self.reports.append(report)


def session(headers: list[tuple[bytes, bytes]] | None = None) -> tuple[Exchange, Seen, FrameTap]:
    seen = Seen()
    exchange = Exchange(
        request_id="ws",
        method="GET",
        target="/backend-api/codex/responses",
        raw_response_headers=headers or [],
        observers=Observers([seen]),
    )
    return exchange, seen, FrameTap(meter=MessageMeter(exchange))


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 1 << 16:
        return bytes((first, 126)) + struct.pack("!H", size) + payload
    return bytes((first, 127)) + struct.pack("!Q", size) + payload


def text(value: Any, **kwargs: bool) -> bytes:
    return frame(0x1, json.dumps(value).encode(), **kwargs)


def completed(padding: int = 0) -> dict[str, Any]:
    output = [{"type": "message", "content": [{"text": "y" * padding}]}]
    return {
        "type": "response.completed",
        "response": {"id": "r", "model": "gpt-6.1-sol", "output": output, "usage": USAGE},
    }


class Deflater:
    """The upstream's side of permessage-deflate: one context, or one per message."""

    def __init__(self, *, takeover: bool = True) -> None:
        self.takeover = takeover
        self.context = zlib.compressobj(wbits=-zlib.MAX_WBITS)

    def message(self, data: bytes, opcode: int = 0x1) -> bytes:
        if not self.takeover:
            self.context = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        payload = self.context.compress(data) + self.context.flush(zlib.Z_SYNC_FLUSH)
        return frame(opcode, payload[:-4], rsv1=True)


def feed(tap: FrameTap, data: bytes, step: int | None = None) -> None:
    step = step or len(data) or 1
    for at in range(0, len(data), step):
        tap.feed(data[at : at + step])


@pytest.mark.parametrize("step", [None, 1, 3, 7])
def test_rate_limits_error_and_tokens_whatever_the_reads(step: int | None) -> None:
    exchange, seen, tap = session()
    stream = (
        text({"type": "response.output_text.delta", "delta": "x" * 300})
        + text(LIMITS)
        + text(completed(10))
        + text(ERROR)
        + text(completed(WHOLE))  # past the whole-message bound: its usage from its tail
    )
    feed(tap, stream, step)
    assert [r.readings[0].primary.used_percent for r in seen.reports if r.readings] == [42, 100]  # type: ignore[union-attr]
    assert seen.reports[-1].reached is not None
    assert exchange.meter is not None
    assert exchange.meter.tokens == Tokens(200, 0, 40, 10)
    assert exchange.meter.model == "gpt-6.1-sol"
    assert tap.messages == 5


def test_fragments_with_control_frames_between_them() -> None:
    _, seen, tap = session()
    data = json.dumps(LIMITS).encode()
    parts = [data[:5], data[5:40], data[40:]]
    stream = (
        frame(0x1, parts[0], fin=False)
        + frame(0x9, b"ping")
        + frame(0x0, parts[1], fin=False)
        + frame(0xA, b"")
        + frame(0x0, parts[2])
    )
    feed(tap, stream, 2)
    assert len(seen.reports) == 1


@pytest.mark.parametrize(
    "message",
    [
        b'{"type":"error"}',  # shorter than the prefix read: read at its end, no status
        json.dumps({"type": "error", "status": 500, "error": {"type": "server_error"}}).encode(),
        b'{"type": "codex.rate_limits", not json',
        b'["type", "codex.rate_limits"]',
        b'{"type":"codex.rate_limits","rate_limits":{}}',  # nothing in it
        b'{"type":"response.completed","response":{"usage":"none"}}',
        b'{"type":"response.completed"' + b" " * 70_000 + b"}",  # too long, and no usage
        b'{"type":"response.completed",' + b" " * 70_000,  # too long, cut JSON
        json.dumps({**LIMITS, "padding": "p" * WHOLE}).encode(),  # past the bound: not read
    ],
)
def test_what_it_leaves_alone(message: bytes) -> None:
    exchange, seen, tap = session()
    feed(tap, frame(0x1, message) + frame(0x2, b'{"type":"codex.rate_limits"}'))
    assert seen.reports == []
    assert exchange.meter is None
    # It reads on: the next message is still read.
    feed(tap, text(LIMITS))
    assert len(seen.reports) == 1


def test_a_compressed_session_is_read_message_after_message() -> None:
    exchange, seen, tap = session(DEFLATE)
    upstream = Deflater()
    stream = b"".join(
        (
            upstream.message(b"\x00\x01binary", opcode=0x2),
            upstream.message(json.dumps(LIMITS).encode()),
            upstream.message(json.dumps(completed(200_000)).encode()),
            upstream.message(json.dumps(ERROR).encode()),
        )
    )
    feed(tap, stream, 1000)
    assert len(seen.reports) == 2
    assert exchange.meter is not None
    assert exchange.meter.tokens == Tokens(100, 0, 20, 5)


def test_past_the_compressed_bound_the_context_and_the_rest_are_lost() -> None:
    _, seen, tap = session(DEFLATE)
    upstream = Deflater()
    noise = NOISE
    feed(tap, upstream.message(noise, opcode=0x2) + upstream.message(json.dumps(LIMITS).encode()))
    assert seen.reports == []


def test_without_context_takeover_a_long_message_loses_only_itself() -> None:
    _, seen, tap = session(
        [(b"sec-websocket-extensions", b"permessage-deflate; server_no_context_takeover")]
    )
    upstream = Deflater(takeover=False)
    noise = NOISE
    feed(tap, upstream.message(noise, opcode=0x2) + upstream.message(json.dumps(LIMITS).encode()))
    assert len(seen.reports) == 1


def test_a_message_that_is_no_deflate_loses_the_context() -> None:
    _, seen, tap = session(DEFLATE)
    feed(tap, frame(0x1, b"\xff\xff not deflate", rsv1=True) + Deflater().message(b"{}"))
    assert seen.reports == []


def test_rsv1_without_an_agreed_extension_is_read_as_it_is() -> None:
    _, seen, tap = session()
    feed(tap, text(LIMITS, rsv1=True))
    assert len(seen.reports) == 1


@pytest.mark.parametrize(
    ("headers", "agreed"),
    [
        ([], (False, False)),
        ([(b"Sec-WebSocket-Protocol", b"codex")], (False, False)),
        (DEFLATE, (True, True)),
        (
            [
                (
                    b"sec-websocket-extensions",
                    b"x-foo, permessage-deflate; server_no_context_takeover",
                )
            ],
            (True, False),
        ),
    ],
)
def test_deflate_agreed(headers: list[tuple[bytes, bytes]], agreed: tuple[bool, bool]) -> None:
    assert deflate_agreed(headers) == agreed
