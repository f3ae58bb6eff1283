"""WebSocket sessions after the upstream's 101: bytes pass both ways as they arrive.

The handshake went through the rule table like any request, its headers end to end
(extensions and subprotocols are the client's and the upstream's to agree on). From the
101 on, each side's bytes are written to the other as they come, with backpressure both
ways, and a tap on each direction reads frame headers only: frame kinds and counts,
payload sizes and close codes, for the log line and the inspector. Frames are never
held whole, so a frame of any size passes; only with the inspector on is a copy of each
message kept (up to `inspector.event_limit`) and handed to it once the message ends.
When plan usage is read (metrics on), the upstream's data frames are also shown to a
`ws_meter.MessageMeter`, which reads the few messages that carry it, within bounds.

A side that vanishes without a close frame closes the other (1001 to the upstream,
1014 to the client); when the proxy stops, both sides get a 1001 close.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.failures import Failure
from proxy.headers import RawPairs
from proxy.response_reader import switching_head
from proxy.ws_meter import MessageMeter

if TYPE_CHECKING:
    from proxy.exchange import Exchange, Watcher, WebSocketStats
    from proxy.route import Route
    from proxy.sides import ClientSide
    from proxy.upstream import UpstreamConnection

GOING_AWAY = 1001
BAD_GATEWAY = 1014  # RFC 6455 registry: "Bad Gateway"
_CLOSE = 0x8
_DATA = frozenset({0x0, 0x1, 0x2})
_MESSAGE_START = frozenset({0x1, 0x2})
# RFC 6455 §5.5: a control frame's payload is at most this long; no more is ever kept.
MAX_CONTROL_PAYLOAD = 125


# A watcher's view of one message: opcode, payload (None past the limit), size, compressed.
OnMessage = Callable[[int, bytes | None, int, bool], None]


class FrameTap:
    """Reads one direction's frame headers as the bytes pass, never holding a payload:
    of a close frame at most its 125 bytes (RFC 6455 §5.5), of a watched message at
    most `keep`. Counts what passed, never what a header announces."""

    __slots__ = (
        "_cap",
        "_close",
        "_fin",
        "_header",
        "_keep",
        "_mask",
        "_masked",
        "_message",
        "_message_size",
        "_meter",
        "_metering",
        "_on_message",
        "_opcode",
        "_payload",
        "_remaining",
        "_rsv1",
        "_started",
        "bytes",
        "close",
        "messages",
    )

    def __init__(
        self, on_message: OnMessage | None = None, keep: int = 0, meter: MessageMeter | None = None
    ) -> None:
        self._on_message = on_message
        self._keep = keep
        self._meter = meter
        self._metering = False  # the meter reads the current frame's payload
        self._cap = keep  # of the current frame's payload, the most a watcher is shown
        # The watched message so far: its first opcode and RSV1 bit, its payload, its size.
        self._started = 0
        self._rsv1 = False
        self._message: bytearray | None = None
        self._message_size = 0
        self._payload: bytearray | None = None
        self._fin = True
        self.messages = 0  # text and binary messages (a fragmented one counts once)
        self.bytes = 0  # payload bytes of data frames that passed
        self.close: tuple[int, str] | None = None  # the first close frame: code, reason
        self._header = bytearray()
        self._remaining = 0
        self._opcode = 0
        self._masked = False
        self._mask = b""
        self._close: bytearray | None = None

    @property
    def at_boundary(self) -> bool:
        """Between frames: a frame of the proxy's own may be written now."""
        return self._remaining == 0 and not self._header

    def feed(self, data: bytes) -> None:
        at, end = 0, len(data)
        while at < end:
            if self._remaining:
                take = min(self._remaining, end - at)
                if self._opcode in _DATA:
                    self.bytes += take
                close = self._close
                if close is not None and len(close) < MAX_CONTROL_PAYLOAD:
                    close += data[at : at + min(take, MAX_CONTROL_PAYLOAD - len(close))]
                payload = self._payload
                if payload is not None and len(payload) < self._cap:
                    payload += data[at : at + min(take, self._cap - len(payload))]
                if self._metering:
                    assert self._meter is not None
                    self._metering = self._meter.data(memoryview(data)[at : at + take])
                self._remaining -= take
                at += take
                if not self._remaining:
                    self._frame_done()
                continue
            at = self._read_header(data, at, end)

    def _read_header(self, data: bytes, at: int, end: int) -> int:
        header = self._header
        needed = 2
        while at < end:
            header.append(data[at])
            at += 1
            if len(header) < 2:
                continue
            length = header[1] & 0x7F
            masked = bool(header[1] & 0x80)
            needed = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if masked else 0)
            if len(header) == needed:
                break
        if len(header) < 2 or len(header) < needed:
            return at
        self._start_frame(bytes(header))
        header.clear()
        return at

    def _start_frame(self, header: bytes) -> None:
        opcode = header[0] & 0x0F
        length = header[1] & 0x7F
        at = 2
        if length == 126:
            (length,) = struct.unpack_from("!H", header, 2)
            at = 4
        elif length == 127:
            (length,) = struct.unpack_from("!Q", header, 2)
            at = 10
        self._masked = bool(header[1] & 0x80)
        self._mask = header[at : at + 4] if self._masked else b""
        self._opcode = opcode
        self._remaining = length
        self._cap = self._keep if opcode in _DATA else min(self._keep, MAX_CONTROL_PAYLOAD)
        if opcode in _MESSAGE_START:
            self.messages += 1
        self._close = bytearray() if opcode == _CLOSE and self.close is None else None
        if self._meter is not None:
            self._metering = self._meter.start(header[0], length)
        if self._on_message is not None:
            self._fin = bool(header[0] & 0x80)
            self._watch(header[0], length)
        if not length:
            self._frame_done()

    def _watch(self, first: int, length: int) -> None:
        opcode = first & 0x0F
        if opcode in _MESSAGE_START or (opcode == 0 and self._message is None):
            self._started = opcode
            self._rsv1 = bool(first & 0x40)
            self._message = bytearray()
            self._message_size = 0
        self._payload = bytearray()
        if opcode in _DATA:
            self._message_size += length

    def _frame_done(self) -> None:
        if self._payload is not None:
            self._watched_frame_done()
        if self._metering:
            self._metering = False
            assert self._meter is not None
            self._meter.end()
        payload = self._close
        if payload is None:
            return
        self._close = None
        if self._masked:
            payload = bytearray(unmask(payload, self._mask))
        code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
        self.close = (code, bytes(payload[2:]).decode("utf-8", "replace"))

    def _watched_frame_done(self) -> None:
        payload = bytes(self._payload or b"")
        self._payload = None
        if self._masked:
            payload = unmask(payload, self._mask)
        assert self._on_message is not None
        if self._opcode not in _DATA:
            self._on_message(self._opcode, payload, len(payload), False)
            return
        message = self._message
        if message is None:
            return
        room = self._keep - len(message)
        message += payload[: max(room, 0)]
        if self._fin:
            self._message = None
            whole = self._message_size <= self._keep
            self._on_message(
                self._started, bytes(message) if whole else None, self._message_size, self._rsv1
            )


def unmask(payload: bytes | bytearray, mask: bytes) -> bytes:
    """A masked payload in clear: XOR with the mask repeated, as one big integer."""
    size = len(payload)
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")


def close_frame(code: int, reason: bytes, *, masked: bool) -> bytes:
    """A close frame of the proxy's own; a client's (towards the upstream) is masked."""
    payload = struct.pack("!H", code) + reason[:123]
    if not masked:
        return bytes((0x80 | _CLOSE, len(payload))) + payload
    mask = os.urandom(4)
    return (
        bytes((0x80 | _CLOSE, 0x80 | len(payload)))
        + mask
        + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    )


class Tunnel:
    """One relayed WebSocket session: the client's connection, the upstream's, the record."""

    __slots__ = (
        "_last_heard",
        "client",
        "ended",
        "exchange",
        "inbound",
        "outbound",
        "route",
        "stats",
        "upstream",
    )

    def __init__(
        self, route: Route, client: ClientSide, upstream: UpstreamConnection, exchange: Exchange
    ) -> None:
        self.route = route
        self.client = client
        self.upstream = upstream
        self.exchange = exchange
        assert exchange.websocket is not None
        self.stats: WebSocketStats = exchange.websocket
        watcher = exchange.watcher
        meter = MessageMeter(exchange) if exchange.observers.metered else None
        if watcher is None:
            self.inbound = FrameTap()  # from the client
            self.outbound = FrameTap(meter=meter)  # from the upstream
        else:
            self.inbound = FrameTap(_side(watcher, "client"), watcher.keep)
            self.outbound = FrameTap(_side(watcher, "upstream"), watcher.keep, meter)
        self.ended = False
        self._last_heard = route.loop.time()

    @classmethod
    def open(
        cls,
        route: Route,
        client: ClientSide,
        upstream: UpstreamConnection,
        exchange: Exchange,
        *,
        head: tuple[bytes, RawPairs],
        early: bytes,
    ) -> Tunnel:
        """Hand the client the upstream's 101 (its headers end to end, Connection and
        Upgrade included), then relay what either side already sent."""
        tunnel = cls(route, client, upstream, exchange)
        client.write(switching_head(*head))
        upstream.user = tunnel
        route.sessions.add(tunnel)
        # A session may stay quiet for long: TCP keepalive finds a peer that vanished
        # (a laptop asleep, a NAT that forgot) on both sides.
        client.keep_alive_probes()
        upstream.keep_alive_probes()
        route.deadlines.watch(tunnel)
        exchange.change()
        if early:
            tunnel.upstream_data(early)
        client.become(tunnel)
        return tunnel

    # Bytes both ways.

    def client_data(self, data: bytes) -> None:
        if not self.ended:
            self._last_heard = self.route.loop.time()
            self.upstream.write(data)
            self._tap(data, self.inbound, "client")

    def upstream_data(self, data: bytes) -> None:
        if not self.ended:
            self._last_heard = self.route.loop.time()
            self.client.write(data)
            self._tap(data, self.outbound, "upstream")

    def _tap(self, data: bytes, tap: FrameTap, side: str) -> None:
        """Read what just passed: frames counted, payload bytes, the first close. A tap
        that fails is switched off for this session; the bytes go on."""
        messages, size = tap.messages, tap.bytes
        try:
            tap.feed(data)
        except Exception as exc:  # noqa: BLE001 - an observer's fault must not end the session
            quiet = FrameTap()
            quiet.messages, quiet.bytes = tap.messages, tap.bytes
            if side == "client":
                self.inbound = quiet
            else:
                self.outbound = quiet
            self.exchange.observer_failed(f"the {side} frame tap", exc)
            return
        if tap.messages != messages or tap.bytes != size:
            if side == "client":
                self.stats.frames_in, self.exchange.request_bytes = tap.messages, tap.bytes
            else:
                self.stats.frames_out, self.exchange.response_bytes = tap.messages, tap.bytes
            self.exchange.change()
        if tap.close is not None:
            self._closed_by(side, tap.close)

    def _closed_by(self, side: str, close: tuple[int, str]) -> None:
        stats = self.stats
        if stats.closed_by is None:
            stats.closed_by = side
            stats.close_code, stats.close_reason = close

    # Backpressure: a side that cannot keep up stops the other from reading.

    def upstream_write_paused(self) -> None:
        self.client.pause_reading()

    def upstream_write_resumed(self) -> None:
        if not self.ended:
            self.client.resume_reading()

    def client_write_paused(self) -> None:
        self.upstream.pause_reading()

    def client_write_resumed(self) -> None:
        self.upstream.resume_reading()

    # A silent session (the route's deadlines ask).

    def deadline(self) -> float | None:
        return None if self.ended else self._last_heard + self.route.limits.websocket_idle_timeout

    def expired(self) -> None:
        """Nothing either way for limits.websocket_idle_timeout: a 1001 to both sides."""
        if self.stats.closed_by is None:
            self.exchange.fail(Failure.SESSION_IDLE)
        self._close_both("idle timeout")

    # The ends.

    def upstream_lost(self, exc: BaseException | None) -> None:
        """The upstream's connection closed: after its close handshake, or vanishing."""
        if self.ended:
            return
        if self.stats.closed_by is None:
            self.stats.closed_by, self.stats.close_code = "upstream", 1006
            self.exchange.fail(Failure.UPSTREAM_VANISHED)
            if self.outbound.at_boundary:
                self.client.write(close_frame(BAD_GATEWAY, b"", masked=False))
        self._end()

    def client_lost(self) -> None:
        """The client's connection closed: after its close handshake, or vanishing."""
        if self.ended:
            return
        if self.stats.closed_by is None:
            self.stats.closed_by, self.stats.close_code = "client", 1006
            self.exchange.fail(Failure.CLIENT_VANISHED)
            if self.inbound.at_boundary and not self.upstream.closed:
                self.upstream.write(close_frame(GOING_AWAY, b"", masked=True))
        self._end()

    def shutdown(self) -> None:
        """The shutdown grace is over: a 1001 close to both sides, then both closed."""
        self._close_both("proxy shutting down")

    def _close_both(self, reason: str) -> None:
        if self.ended:
            return
        stats = self.stats
        if stats.closed_by is None:
            stats.closed_by, stats.close_code = "proxy", GOING_AWAY
            stats.close_reason = reason
        said = reason.encode()
        if self.outbound.at_boundary:
            self.client.write(close_frame(GOING_AWAY, said, masked=False))
        if self.inbound.at_boundary and not self.upstream.closed:
            self.upstream.write(close_frame(GOING_AWAY, said, masked=True))
        self._end()

    def _end(self) -> None:
        self.ended = True
        self.route.deadlines.unwatch(self)
        self.upstream.close()
        self.client.close()
        self.route.sessions.discard(self)
        self.exchange.end()


def _side(watcher: Watcher, side: str) -> OnMessage:
    def on_message(opcode: int, payload: bytes | None, size: int, compressed: bool) -> None:
        watcher.message(side, opcode, payload, size, compressed)

    return on_message
