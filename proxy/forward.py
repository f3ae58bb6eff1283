"""What goes upstream: a request head read once, refused when it cannot be relayed as it
is, and rebuilt for the next hop as bytes in one join.

Pure functions over the head as llhttp handed it over (raw target, raw pairs): no I/O,
no event loop. What no rule rewrites passes unchanged: method, raw target, header names,
values, order and repeats (minus hop-by-hop and Expect); only Host names the upstream.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from proxy.failures import Failure
from proxy.headers import (
    REQUEST_ONLY,
    TRANSFER_ENCODING,
    UPGRADE,
    RawPairs,
    first_invalid_utf8,
    hop_by_hop,
    tokens,
)
from proxy.rules import Rule, rewrite

# What the relay needs to know of a head, by lower-cased name; the rest only passes.
_CONNECTION = 1
_LENGTH = 2
_CODING = 3
_EXPECT = 4
_HOST = 5
_UPGRADE = 6
_REQUEST_ID = 7
_WS_KEY = 8
_WS_VERSION = 9
_NOTABLE = {
    b"connection": _CONNECTION,
    b"content-length": _LENGTH,
    b"transfer-encoding": _CODING,
    b"expect": _EXPECT,
    b"host": _HOST,
    b"upgrade": _UPGRADE,
    b"x-request-id": _REQUEST_ID,
    b"sec-websocket-key": _WS_KEY,
    b"sec-websocket-version": _WS_VERSION,
}
MAX_REQUEST_ID = 200
# RFC 9112 §3.2 with RFC 3986 §3.2.2: uri-host [ ":" port ] (an empty host is allowed).
_HOST_VALUE = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?")
# RFC 9112 §3.2.2: absolute-form, as sent to a proxy; a server must accept it too.
_ABSOLUTE = re.compile(rb"(?i)https?://[^/?#]*")


@dataclass(slots=True)
class Head:
    """One request head as parsed, and what its framing and routing need."""

    method: bytes
    # The target as it goes on: origin-form (an absolute-form target's path and query).
    target: bytes
    version: str
    headers: RawPairs
    keep_alive: bool
    # llhttp's judgement: Connection lists `upgrade` and an Upgrade header is present.
    upgrade: bool
    # An upgrade to WebSocket (a GET asking for it).
    websocket: bool = False

    hosts: list[bytes] = field(default_factory=list)
    length: int | None = None
    codings: list[bytes] = field(default_factory=list)
    expect: bytes | None = None
    listed: frozenset[bytes] = frozenset()
    upgrade_to: bytes | None = None
    request_id: bytes | None = None
    ws_key: bytes | None = None
    ws_version: bytes | None = None

    @classmethod
    def read(
        cls,
        method: bytes,
        target: bytes,
        version: str,
        headers: RawPairs,
        *,
        keep_alive: bool,
        upgrade: bool,
    ) -> Head:
        head = cls(method, target, version, headers, keep_alive, upgrade)
        if target[:1] != b"/":
            head.target = _origin_form(target)
        listed: frozenset[bytes] = frozenset()
        notable = _NOTABLE
        for name, value in headers:
            kind = notable.get(name.lower())
            if kind is None:
                continue
            if kind == _CONNECTION:
                listed |= tokens(value)
            elif kind == _LENGTH:
                head.length = int(value)  # llhttp allows one, of digits only
            elif kind == _CODING:
                head.codings += (coding.strip().lower() for coding in value.split(b","))
            elif kind == _EXPECT:
                head.expect = value.strip().lower()
            elif kind == _HOST:
                head.hosts.append(value)
            elif kind == _UPGRADE:
                head.upgrade_to = value.strip().lower()
            elif kind == _REQUEST_ID:
                head.request_id = head.request_id or value
            elif kind == _WS_KEY:
                head.ws_key = value.strip()
            else:
                head.ws_version = value.strip()
        head.listed = listed
        head.websocket = upgrade and method == b"GET" and head.upgrade_to == b"websocket"
        return head

    @property
    def chunked(self) -> bool:
        return bool(self.codings)

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.length)

    @property
    def continue_expected(self) -> bool:
        return self.expect == b"100-continue" and self.version == "1.1"

    @property
    def idempotent(self) -> bool:
        """RFC 9110 §9.2.2: the methods a proxy may send again after a connection failed."""
        return self.method in (b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE")


def malformed(head: Head) -> str | None:
    """What makes a head unfit to be read as a request at all (RFC 9112 §3.2: a server
    must answer 400 to a missing, repeated or invalid Host), or None."""
    hosts = head.hosts
    if head.version == "1.1" and not hosts:
        return "an HTTP/1.1 request must carry a Host header"
    if len(hosts) > 1:
        return "a request must carry one Host header (RFC 9112 §3.2)"
    if hosts and not _HOST_VALUE.fullmatch(hosts[0]):
        return "the Host header is not a host[:port] (RFC 9112 §3.2)"
    return None


def refusal(head: Head) -> tuple[Failure, str] | None:
    """Why this request must not be forwarded, or None. Checked before anything is sent:
    the bearer token in a request only ever reaches the configured upstream, and what the
    proxy cannot relay faithfully is refused rather than altered."""
    target = head.target
    invalid = first_invalid_utf8(head.headers)
    if head.version not in ("1.1", "1.0"):
        found = Failure.VERSION_NOT_SUPPORTED, f"HTTP/{head.version} is not supported"
    elif head.method == b"CONNECT":
        found = Failure.METHOD_NOT_ALLOWED, "CONNECT is not supported: this is a reverse proxy"
    elif not target.startswith(b"/") or b"#" in target:
        found = Failure.BAD_REQUEST, "the request target must be a path or an http(s) URL"
    elif head.codings and head.version == "1.0":
        found = Failure.BAD_REQUEST, "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)"
    elif head.codings and head.codings != [b"chunked"]:
        found = Failure.NOT_IMPLEMENTED, "only the chunked transfer coding is supported"
    elif invalid is not None:
        name = invalid.decode("ascii", "replace")
        found = (
            Failure.BAD_REQUEST,
            f"header {name!r} is not valid UTF-8: it cannot be forwarded unchanged",
        )
    elif head.upgrade and head.has_body:
        found = Failure.BAD_REQUEST, "an upgrade request cannot carry a body here"
    elif head.websocket and not _valid_handshake(head):
        found = Failure.BAD_REQUEST, "the WebSocket handshake is invalid"
    else:
        return None
    return found


def _origin_form(target: bytes) -> bytes:
    """An absolute-form target's path and query (its authority is never used); any other
    target as it is."""
    absolute = _ABSOLUTE.match(target)
    if absolute is None:
        return target
    rest = target[absolute.end() :]
    return rest if rest.startswith(b"/") else b"/" + rest


def _valid_handshake(head: Head) -> bool:
    """RFC 6455 §4.2.1: a key of 16 random bytes in base64, and version 13."""
    if head.ws_version != b"13" or head.ws_key is None:
        return False
    try:
        return len(base64.b64decode(head.ws_key, validate=True)) == 16
    except binascii.Error:
        return False


def _dropped(head: Head) -> frozenset[bytes]:
    """The names that stay at this hop. A WebSocket upgrade keeps the Connection and
    Upgrade that carry it to the next hop, a chunked body its Transfer-Encoding."""
    keep = UPGRADE if head.websocket else frozenset()
    if head.chunked:
        keep |= TRANSFER_ENCODING
    return hop_by_hop(head.listed, keep=keep) | REQUEST_ONLY


def upstream_head(head: Head, target: bytes, *, host: bytes) -> bytes:
    """The head the upstream receives, in one join: the client's pairs minus the hop's,
    one Host naming the upstream where the client's first Host stood (else first)."""
    drop = _dropped(head)
    parts = [head.method, b" ", target, b" HTTP/1.1\r\n"]
    host_at = -1
    for name, value in head.headers:
        lowered = name.lower()
        if lowered == b"host":
            if host_at < 0:
                host_at = len(parts)
                parts += (name, b": ", host, b"\r\n")
        elif lowered not in drop:
            parts += (name, b": ", value, b"\r\n")
    if host_at < 0:
        parts[4:4] = (b"Host: ", host, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def outgoing(head: Head, rules: tuple[Rule, ...], *, host: bytes) -> tuple[str, str | None, bytes]:
    """The rule table applied to the target (raw, never decoded), and the head built: the
    target as it goes up, in words; the rule that made it; the head."""
    rewritten = rewrite(rules, head.target.decode("latin-1"))
    target = (
        head.target
        if rewritten.rule is None
        else rewritten.target.encode("latin-1", "surrogateescape")
    )
    rule = rewritten.rule.name if rewritten.rule else None
    return rewritten.target, rule, upstream_head(head, target, host=host)


def forwarded_pairs(head: Head, *, host: bytes) -> RawPairs:
    """The pairs `upstream_head` puts on the wire, for showing what was sent (a capture)."""
    lines = upstream_head(head, b"/", host=host).split(b"\r\n")[1:-2]
    return [(name, value) for name, _, value in (line.partition(b": ") for line in lines)]


def request_id(head: Head) -> str | None:
    """An incoming X-Request-Id, honoured when it is printable and not too long."""
    raw = head.request_id
    if not raw:
        return None
    text = raw[:MAX_REQUEST_ID].decode("latin-1")
    return text if text.isprintable() else None
