"""Plan usage from every exchange into the ledger, and each exchange's own accounting.

`Accounting` is the observer: usage as forwarding reads it (a response head that
carries the usage headers, an event, a WebSocket message: `Exchange.measure`), and at
the end a 429's body or a `wham/usage` answer (kept, bounded, by the body watch). Each
feeds the ledger under the account's redacted fingerprint; the warnings it calls for
are logged once. Nothing is ever requested of the upstream, nothing written anywhere.

`account_of` and `of` are for the log line, the capture and the inspector: what one
exchange used (its tokens, model, time to first token, tokens per second) and the usage
its answer reported.
"""

from __future__ import annotations

import io
import json
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from proxy import redact, usage, usage_text
from proxy.exchange import Exchange, Observer
from proxy.ledger import Ledger
from proxy.usage import Report, Tokens

NO_ACCOUNT = "[no account id]"
# A request body names its model near its start (Codex's and the SDKs' first key).
MODEL_HEAD = 4096
_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,100})"')
# What a kept body may inflate to: a wham/usage answer is a few KiB.
INFLATED = 256 * 1024


def account_of(exchange: Exchange) -> str:
    """The account as the logs show it: its chatgpt-account-id's fingerprint marker."""
    account = exchange.request_header("chatgpt-account-id")
    return redact.marker(account.strip()) if account and account.strip() else NO_ACCOUNT


class Accounting(Observer):
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.ledger = Ledger()
        self.clock = clock

    def metered(self, exchange: Exchange, report: Report, source: str) -> None:
        self._record(exchange, report, source, self.clock())

    def ended(self, exchange: Exchange) -> None:
        meter = exchange.meter
        if meter is None or meter.body is None:
            return
        answer = _json(bytes(meter.body), exchange.response_header("Content-Encoding"))
        meter.body = None
        if answer is None:
            return
        now = self.clock()
        if exchange.status == 429:
            report = usage.from_error(answer, meter.head, now=now)
            source = "429"
        else:
            report = usage.from_wham(answer, now=now)
            source = "wham/usage"
        if report:
            self._record(exchange, report, source, now)

    def _record(self, exchange: Exchange, report: Report, source: str, now: float) -> None:
        notices = self.ledger.record(
            account_of(exchange), report, source=source, request_id=exchange.request_id, now=now
        )
        log = structlog.get_logger("proxy.usage")
        for notice in notices:
            log.warning(notice.message, **notice.fields)


def _json(data: bytes, encoding: str | None) -> dict[str, Any] | None:
    """A kept body's JSON object, decoded (within bounds) by its Content-Encoding."""
    try:
        text = _decoded(data, (encoding or "identity").strip().lower())
        found = json.loads(text) if text is not None else None
    except (ValueError, zlib.error, OSError):
        return None
    return found if isinstance(found, dict) else None


def _decoded(data: bytes, encoding: str, limit: int = INFLATED) -> bytes | None:
    """At most `limit` bytes of a body (or of its start) decoded; None if it cannot be."""
    if encoding == "identity":
        return data[:limit]
    decoder = _DECODERS.get(encoding)
    return None if decoder is None else decoder(data, limit)


def _inflate(wbits: int) -> Callable[[bytes, int], bytes]:
    return lambda data, limit: zlib.decompressobj(wbits=wbits).decompress(data, limit)


def _unbrotli(data: bytes, limit: int) -> bytes | None:
    # Imported only here: a 429 or a wham/usage answer is rare, and rarely compressed.
    import brotli  # noqa: PLC0415

    try:
        return bytes(brotli.Decompressor().process(data, output_buffer_limit=limit))[:limit]
    except brotli.error:
        return None


def _unzstd(data: bytes, limit: int) -> bytes | None:
    import zstandard  # noqa: PLC0415

    try:
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read(limit)
    except zstandard.ZstdError:
        return None


_DECODERS: dict[str, Callable[[bytes, int], bytes | None]] = {
    "gzip": _inflate(zlib.MAX_WBITS | 16),
    "x-gzip": _inflate(zlib.MAX_WBITS | 16),
    "deflate": _inflate(zlib.MAX_WBITS),
    "br": _unbrotli,
    "zstd": _unzstd,
}


@dataclass(frozen=True, slots=True)
class Spent:
    """What one exchange used, for its log line, capture and inspector row."""

    tokens: Tokens | None
    model: str | None
    first_token_ms: float | None
    tokens_per_s: float | None
    report: Report | None


def tokens_of(exchange: Exchange) -> tuple[Tokens | None, str | None]:
    """The tokens an exchange's responses reported, and their model: the closing event's
    (a WebSocket session's last), else the one its request body names when that body was
    kept anyway (capture, the inspector)."""
    sse, meter = exchange.sse, exchange.meter
    tokens = usage.tokens(sse.usage) if sse is not None and sse.usage is not None else None
    model = sse.model if sse is not None else None
    if meter is not None:
        tokens = tokens or meter.tokens
        model = model or meter.model
    if model is None and exchange.bodies is not None:
        # Read once: an empty name says it was looked for.
        meter = exchange.meter = meter or usage.Meter()
        meter.model = model = request_model(exchange)
    return tokens, model or None


def request_model(exchange: Exchange) -> str:
    """The model a kept request body names, from its first bytes decoded ("" if none)."""
    assert exchange.bodies is not None
    kept = exchange.bodies.request
    if not kept.kept:
        return ""
    encoding = (exchange.request_header("Content-Encoding") or "identity").strip().lower()
    try:
        head = _decoded(bytes(kept.data[:MODEL_HEAD]), encoding, MODEL_HEAD)
    except (zlib.error, OSError):
        head = None
    found = _MODEL.search(head) if head is not None else None
    return found.group(1).decode("utf-8", "replace") if found else ""


def of(exchange: Exchange) -> Spent | None:
    """One exchange's accounting, from what forwarding recorded as it passed; None for
    an exchange with none (no stream, no usage in its head or its messages)."""
    if exchange.sse is None and exchange.meter is None:
        return None
    tokens, model = tokens_of(exchange)
    meter = exchange.meter
    first = exchange.first_token_ms
    rate = None
    if tokens is not None and first is not None and exchange.duration_ms is not None:
        seconds = (exchange.duration_ms - first) / 1000
        rate = round(tokens.output / seconds, 1) if seconds > 0 and tokens.output else None
    reports = meter.reports if meter is not None else []
    report = next((found for found in reversed(reports) if found.readings), None)
    return Spent(tokens, model, first, rate, report)


def described(exchange: Exchange) -> dict[str, Any]:
    """The same as fields of a log line (and a HAR entry's `_usage`): the model, tokens,
    first_token_ms, tokens_per_s, and the account and limits its answer said; only
    those known."""
    spent = of(exchange)
    if spent is None:
        return {}
    fields: dict[str, Any] = {}
    if spent.model:
        fields["model"] = spent.model
    if spent.tokens is not None:
        fields["tokens"] = spent.tokens.as_dict()
    if spent.first_token_ms is not None:
        fields["first_token_ms"] = spent.first_token_ms
    if spent.tokens_per_s is not None:
        fields["tokens_per_s"] = spent.tokens_per_s
    if spent.report is not None:
        fields["account"] = account_of(exchange)
        fields["limits"] = [
            {
                "family": reading.family,
                "window": usage_text.window_label(window.minutes, slot),
                "used_percent": window.used_percent,
                "resets_at": window.resets_at,
            }
            for reading in spent.report.readings
            for slot, window in reading.windows()
        ]
    return fields
