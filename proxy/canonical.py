"""The canonical log line: one per exchange, written when it ends, everything to debug it.

At debug level, extra lines show the request and response headers (through the
redaction allow-list) as each head arrives.
"""

from __future__ import annotations

from typing import Any

import structlog

from proxy import accounting, redact
from proxy.exchange import Exchange, Observer, Outcome
from proxy.log import JSONLines

# Upstream identifiers worth a field of their own when present.
IDENTIFIERS = {
    b"cf-ray": "cf_ray",
    b"x-request-id": "upstream_request_id",
    b"openai-processing-ms": "openai_processing_ms",
}


def fields(exchange: Exchange) -> dict[str, Any]:
    """The canonical line's fields, every value already redacted."""
    target, upstream_target = exchange.target, exchange.upstream_target
    path = redact.redact_target(target)
    line: dict[str, Any] = {
        "request_id": exchange.request_id,
        "client": exchange.client,
        "method": exchange.method,
        "path": path,
        "upstream_path": (
            path
            if upstream_target == target
            else redact.redact_target(upstream_target)
            if upstream_target
            else None
        ),
        "rule": exchange.rule,
        "status": exchange.status,
        "outcome": str(exchange.outcome),
        "cause": exchange.cause,
        "detail": exchange.detail,
        "request_bytes": exchange.request_bytes,
        "response_bytes": exchange.response_bytes,
        "request_encoding": exchange.request_header("Content-Encoding"),
        "response_encoding": exchange.response_header("Content-Encoding"),
        "content_type": exchange.response_header("Content-Type"),
        "connection": exchange.connection,
        "connect_ms": exchange.connect_ms,
        "opened_ms": exchange.opened_ms,
        "tls_ms": exchange.tls_ms,
        "tls_resumed": exchange.tls_resumed,
        "headers_ms": exchange.headers_ms,
        "first_byte_ms": exchange.first_byte_ms,
        "duration_ms": exchange.duration_ms,
    }
    if exchange.limit:
        line["limit"] = exchange.limit
    if exchange.retried:
        # Sent again on a fresh connection: the kept-alive one closed before answering.
        line["retried"] = True
    if exchange.sse is not None:
        sse = exchange.sse
        line.update(
            events=sse.events,
            first_event=sse.first_event,
            last_event=sse.last_event,
            stream_end=sse.terminal,
            completed=sse.completed,
        )
        if sse.error_code or sse.error_message:
            line["error_code"] = sse.error_code
            line["error_message"] = redact.redact_text(sse.error_message or "")
        if sse.usage is not None:
            line["usage"] = sse.usage
    if exchange.websocket is not None:
        ws = exchange.websocket
        line.update(
            websocket=True,
            frames_in=ws.frames_in,
            frames_out=ws.frames_out,
            close_code=ws.close_code,
            close_reason=ws.close_reason,
            closed_by=ws.closed_by,
        )
    quota = {}
    for raw_name, raw_value in exchange.raw_response_headers:
        lowered = raw_name.lower()
        if lowered in IDENTIFIERS or lowered.startswith(b"x-codex-"):
            name, value = raw_name.decode("latin-1"), raw_value.decode("utf-8", "replace")
            if lowered in IDENTIFIERS:
                line[IDENTIFIERS[lowered]] = redact.header_value(name, value)
            else:
                quota[name.lower()] = redact.header_value(name, value)
    if quota:
        line["quota"] = quota
    _spent(line, exchange)
    if exchange.diagnosis:
        line["diagnosis"] = exchange.diagnosis
    return line


def _spent(line: dict[str, Any], exchange: Exchange) -> None:
    """What the exchange used (tokens, model, speed) and the plan usage its answer said."""
    spent = accounting.described(exchange)
    if spent:
        line.update(spent)


def is_warning(exchange: Exchange) -> bool:
    return (
        exchange.outcome is not Outcome.COMPLETED
        or exchange.diagnosis is not None
        or exchange.stream_unfinished
    )


class CanonicalLog(Observer):
    """The observer that writes the line when an exchange ends."""

    def __init__(self, *, level: str = "info") -> None:
        # Checked here, not by structlog's filter: the line's fields are built only when
        # the line will be written.
        self.writes_info = level in ("debug", "info")
        self.writes_warning = level != "error"
        # Bound once: capture_logs swaps processors in the same list, so tests still see
        # every line (structlog >= 25.5), and a line costs no logger set-up.
        self.log = structlog.get_logger("proxy.request").bind()
        self.lines = JSONLines()

    def ended(self, exchange: Exchange) -> None:
        event = "websocket" if exchange.websocket is not None else "request"
        if is_warning(exchange):
            if self.writes_warning and not self.lines.write("warning", event, fields(exchange)):
                self.log.warning(event, **fields(exchange))
        elif self.writes_info and not self.lines.write("info", event, fields(exchange)):
            self.log.info(event, **fields(exchange))


class DebugLog(CanonicalLog):
    """At debug level, also the headers as each head arrives (redacted through the
    allow-list) and, with log.bodies, short body excerpts."""

    def __init__(self, *, bodies: bool) -> None:
        super().__init__(level="debug")
        self.bodies = bodies

    def started(self, exchange: Exchange) -> None:
        secrets = redact.secret_values(exchange.request_headers, exchange.target)
        self.log.debug(
            "request headers",
            request_id=exchange.request_id,
            method=exchange.method,
            path=redact.mask_known(redact.redact_target(exchange.target), secrets),
            headers=redact.headers(exchange.request_headers, secrets),
        )

    def responded(self, exchange: Exchange) -> None:
        # Written as the head arrives: a stream that never ends still shows its headers.
        secrets = redact.secret_values(
            [*exchange.request_headers, *exchange.response_headers], exchange.target
        )
        self.log.debug(
            "response headers",
            request_id=exchange.request_id,
            status=exchange.status,
            headers=redact.headers(exchange.response_headers, secrets),
        )

    def ended(self, exchange: Exchange) -> None:
        if self.bodies and exchange.bodies is not None:
            # Imported here: its decoders (zstd, brotli) load only when bodies are logged.
            from proxy.capture import excerpt  # noqa: PLC0415

            secrets = redact.secret_values(
                [*exchange.request_headers, *exchange.response_headers], exchange.target
            )
            self.log.debug(
                "bodies",
                request_id=exchange.request_id,
                request_body=excerpt(
                    exchange.bodies.request, exchange.request_header("Content-Encoding"), secrets
                ),
                response_body=excerpt(
                    exchange.bodies.response, exchange.response_header("Content-Encoding"), secrets
                ),
            )
        super().ended(exchange)
