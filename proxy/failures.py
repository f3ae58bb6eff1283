"""Every way an exchange can fail, in one table: its status, error code, outcome and message.

A failure before the response head reaches the client becomes the proxy's own JSON
answer in OpenAI's error shape with the table's status; after it, the client
connection is cut (status None here) so the client sees an incomplete response, never
a clean end. Either way the canonical line carries the outcome and the code as `cause`,
and `reason` says in words what a person can act on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import orjson


class Outcome(enum.StrEnum):
    COMPLETED = "completed"
    CLIENT_DISCONNECTED = "client_disconnected"
    UPSTREAM_CUT = "upstream_cut"
    TIMEOUT = "timeout"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    REJECTED = "rejected"
    # The proxy itself ended it: the shutdown grace ran out, or a second Ctrl-C came.
    PROXY_SHUTDOWN = "proxy_shutdown"


@dataclass(frozen=True, slots=True)
class Row:
    status: int | None
    code: str
    outcome: Outcome


class Failure(enum.Enum):
    # The client's request cannot be forwarded as sent.
    BAD_REQUEST = Row(400, "bad_request", Outcome.REJECTED)
    URI_TOO_LONG = Row(414, "uri_too_long", Outcome.REJECTED)
    HEADERS_TOO_LARGE = Row(431, "request_header_fields_too_large", Outcome.REJECTED)
    METHOD_NOT_ALLOWED = Row(405, "method_not_allowed", Outcome.REJECTED)
    NOT_IMPLEMENTED = Row(501, "not_implemented", Outcome.REJECTED)
    VERSION_NOT_SUPPORTED = Row(505, "http_version_not_supported", Outcome.REJECTED)
    TOO_LARGE = Row(413, "request_too_large", Outcome.REJECTED)
    NOT_FOUND = Row(404, "not_found", Outcome.REJECTED)
    # The client went away, or stopped sending what it announced.
    INCOMPLETE_REQUEST = Row(400, "incomplete_request", Outcome.CLIENT_DISCONNECTED)
    # The client stopped sending its body for limits.body_timeout.
    BODY_TIMEOUT = Row(408, "request_timeout", Outcome.TIMEOUT)
    CLIENT_GONE = Row(None, "client closed the connection", Outcome.CLIENT_DISCONNECTED)
    CLIENT_VANISHED = Row(None, "client vanished", Outcome.CLIENT_DISCONNECTED)
    # The shutdown grace ran out (or a second Ctrl-C came): the proxy cut the connection.
    SHUTDOWN = Row(None, "proxy_shutdown", Outcome.PROXY_SHUTDOWN)
    # The proxy is shutting down, or has no room for another client: try again elsewhere.
    SHUTTING_DOWN = Row(503, "proxy_shutting_down", Outcome.REJECTED)
    NO_ROOM = Row(503, "too_many_connections", Outcome.REJECTED)
    # The upstream could not be reached.
    UNREACHABLE = Row(502, "upstream_unreachable", Outcome.UPSTREAM_UNREACHABLE)
    TLS = Row(502, "upstream_tls_error", Outcome.UPSTREAM_UNREACHABLE)
    OUTBOUND_PROXY = Row(502, "upstream_proxy_error", Outcome.UPSTREAM_UNREACHABLE)
    CONNECT_TIMEOUT = Row(504, "upstream_connect_timeout", Outcome.TIMEOUT)
    # The upstream was reached, and failed before its answer's head was through.
    NO_RESPONSE = Row(504, "upstream_timeout", Outcome.TIMEOUT)
    DISCONNECTED = Row(502, "upstream_disconnected", Outcome.UPSTREAM_CUT)
    BAD_RESPONSE = Row(502, "upstream_bad_response", Outcome.UPSTREAM_CUT)
    BAD_HANDSHAKE = Row(502, "upstream_bad_handshake", Outcome.UPSTREAM_CUT)
    # ... or after it: the client sees a cut.
    CUT_MID_BODY = Row(None, "upstream_cut_mid_body", Outcome.UPSTREAM_CUT)
    SILENT_MID_BODY = Row(None, "upstream_idle_timeout", Outcome.TIMEOUT)
    UPSTREAM_VANISHED = Row(None, "upstream vanished", Outcome.UPSTREAM_CUT)
    # A WebSocket session silent both ways for limits.websocket_idle_timeout.
    SESSION_IDLE = Row(None, "websocket_idle_timeout", Outcome.TIMEOUT)
    # A fault of the proxy's own.
    INTERNAL = Row(500, "internal_error", Outcome.UPSTREAM_CUT)

    @property
    def status(self) -> int | None:
        return self.value.status

    @property
    def code(self) -> str:
        return self.value.code

    @property
    def outcome(self) -> Outcome:
        return self.value.outcome


REASONS = {
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


def error_body(code: str, message: str) -> bytes:
    """OpenAI's error shape, as every proxy-made answer carries it."""
    return orjson.dumps({"error": {"message": message, "type": "proxy_error", "code": code}})


def error_response(
    status: int, code: str, message: str, *, close: bool, head_only: bool = False
) -> bytes:
    """A whole HTTP/1.1 response: the JSON error, framed by its length. The answer to a
    HEAD request ends at its head (RFC 9110 §9.3.2): `head_only`."""
    body = error_body(code, message)
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
        status,
        REASONS.get(status, b"Error"),
        len(body),
    )
    head += b"Connection: close\r\n\r\n" if close else b"\r\n"
    return head if head_only else head + body
