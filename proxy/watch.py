"""What watches an answer's body as it passes, after its bytes have gone on: the event
stream tap (for the log line and the inspector), the kept copy (capture, the inspector)
and the exchange's byte count. One that fails is switched off for the exchange (logged
once); the bytes go on."""

from __future__ import annotations

from proxy.exchange import Body, Exchange
from proxy.sse import SSETap


class BodyWatch:
    __slots__ = ("_exchange", "_tap")

    def __init__(self, exchange: Exchange, *, event_stream: bool, keep_streams: bool) -> None:
        self._exchange = exchange
        self._tap: SSETap | None = None
        if event_stream:
            watcher = exchange.watcher

            def changed(_kind: str, _summary: object) -> None:
                exchange.change()

            if watcher is None:
                self._tap = SSETap(changed)
            else:
                self._tap = SSETap(changed, keep=watcher.keep, on_data=watcher.event)
            exchange.sse = self._tap.summary
            if exchange.bodies is not None and not keep_streams:
                exchange.bodies.response = Body(0)  # counted, not kept

    def feed(self, pieces: list[bytes]) -> None:
        exchange = self._exchange
        if exchange.first_byte_ms is None:
            exchange.first_byte_ms = exchange.elapsed_ms()
        exchange.response_bytes += sum(map(len, pieces))
        tap, bodies = self._tap, exchange.bodies
        try:
            for piece in pieces:
                if tap is not None:
                    tap.feed(piece)
                if bodies is not None:
                    bodies.response.add(piece)
        except Exception as exc:  # noqa: BLE001 - an observer's fault must not cut the stream
            self._tap = None
            exchange.observer_failed("the event stream tap", exc)
        if tap is None:
            exchange.change()  # a plain body: its byte count moves

    def close(self) -> None:
        if self._tap is not None:
            self._tap.close()
