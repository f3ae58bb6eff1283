"""What watches an answer's body as it passes, after its bytes have gone on: the event
stream tap (for the log line and the inspector), the kept copy (capture, the inspector)
and the exchange's byte count. One that fails is switched off for the exchange (logged
once); the bytes go on.

For plan usage (when an observer reads it): the time of a stream's first output, a
`codex.rate_limits` event, and a bounded copy of an answer that may say how much of the
plan is used: a 429 (`usage_limit_reached`) or `GET /backend-api/wham/usage`.
"""

from __future__ import annotations

import time
from typing import Any

from proxy import usage
from proxy.exchange import Body, Exchange
from proxy.sse import SSETap

# The events that carry a response's output: the first one is its first token.
OUTPUT = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
        "response.code_interpreter_call_code.delta",
        "response.mcp_call_arguments.delta",
        "response.audio.delta",
        "response.audio.transcript.delta",
        "response.image_generation_call.partial_image",
    }
)
WHAM_USAGE = "/backend-api/wham/usage"
# Either in a head means usage headers to read (chatgpt.com sends the first on every
# Codex answer; a 429 names its family by the second).
USAGE_HEADERS = (b"x-codex-primary-used-percent", b"x-codex-active-limit")
# Bytes of such an answer kept to read: a 429's error is small, wham/usage a few KiB.
ERROR_BODY = 4 * 1024
USAGE_BODY = 32 * 1024


class BodyWatch:
    __slots__ = ("_exchange", "_kept", "_tap")

    def __init__(self, exchange: Exchange, *, event_stream: bool, keep_streams: bool) -> None:
        self._exchange = exchange
        self._tap: SSETap | None = None
        self._kept: usage.Meter | None = None
        metered = bool(exchange.observers.metered)
        found = exchange.raw_response_header
        if found(USAGE_HEADERS[0]) is not None or found(USAGE_HEADERS[1]) is not None:
            report = usage.from_headers(exchange.raw_response_headers, now=time.time())
            if report:
                exchange.measure(report, "headers")
        if event_stream:
            watcher = exchange.watcher

            def changed(kind: str, _summary: object) -> None:
                if exchange.first_token_ms is None and kind in OUTPUT:
                    exchange.first_token_ms = exchange.elapsed_ms()
                exchange.change()

            def limits(event: dict[str, Any]) -> None:
                report = usage.from_event(event, now=time.time())
                if report:
                    exchange.measure(report, "event")

            on_limits = limits if metered else None
            if watcher is None:
                self._tap = SSETap(changed, on_limits=on_limits)
            else:
                self._tap = SSETap(
                    changed, keep=watcher.keep, on_data=watcher.event, on_limits=on_limits
                )
            exchange.sse = self._tap.summary
            if exchange.bodies is not None and not keep_streams:
                exchange.bodies.response = Body(0)  # counted, not kept
        elif metered:
            status = exchange.status
            limit = (
                ERROR_BODY
                if status == 429
                else USAGE_BODY
                if status == 200
                and exchange.method == "GET"
                and exchange.target.startswith(WHAM_USAGE)
                else 0
            )
            if limit:
                kept = self._kept = exchange.meter = exchange.meter or usage.Meter()
                kept.body, kept.body_limit = bytearray(), limit

    def feed(self, pieces: list[bytes]) -> None:
        exchange = self._exchange
        if exchange.first_byte_ms is None:
            exchange.first_byte_ms = exchange.elapsed_ms()
        exchange.response_bytes += sum(map(len, pieces))
        tap, bodies, kept = self._tap, exchange.bodies, self._kept
        try:
            for piece in pieces:
                if tap is not None:
                    tap.feed(piece)
                if bodies is not None:
                    bodies.response.add(piece)
                if kept is not None:
                    kept.keep(piece)
        except Exception as exc:  # noqa: BLE001 - an observer's fault must not cut the stream
            self._tap = self._kept = None
            exchange.observer_failed("the event stream tap", exc)
        if tap is None:
            exchange.change()  # a plain body: its byte count moves

    def close(self) -> None:
        if self._tap is not None:
            self._tap.close()
