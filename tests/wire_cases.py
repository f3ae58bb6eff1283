"""The scripted exchanges the split-invariance and h11 model tests replay: requests and
answers, pipelined, chunked with extensions and trailers, interim answers, upgrades,
early answers, refusals and cuts. The proxy under test runs with small limits (see
LIMITS) so that heads and bodies that cross them are among the cases."""

from __future__ import annotations

import base64
import hashlib

from tests.wire_script import Script

# The proxy's limits for these cases: a head may hold 4 x 512 bytes.
LIMITS = {"max_header_size": 512, "max_body_size": 4096}

LEGACY = b"/backend-api/responses"


def ok(body: bytes = b"ok", *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(line + b"\r\n" for line in extra) + b"\r\n" + body


def chunked(*chunks: bytes, trailer: bytes = b"", ext: bytes = b"") -> bytes:
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(c), ext, c) for c in chunks)
    return body + b"0\r\n" + trailer + b"\r\n"


def sse(*events: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(*events)
    )


_KEY = base64.b64encode(b"0123456789abcdef")
_ACCEPT = base64.b64encode(hashlib.sha1(_KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())


def frame(payload: bytes, *, opcode: int = 1, masked: bool = False) -> bytes:
    """One small WebSocket frame (payload under 126 bytes)."""
    if not masked:
        return bytes((0x80 | opcode, len(payload))) + payload
    mask = b"\x01\x02\x03\x04"
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + body


CLIENT_FRAME = frame(b"hello", masked=True)
SCRIPTS = [
    Script(
        "get",
        b"GET /backend-api/responses?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        (ok(),),
    ),
    Script(
        "post-length",
        b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n"
        b"Connection: close\r\n\r\nhelloworld",
        (ok(b"done"),),
    ),
    Script(
        "post-chunked-trailers",
        b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
        + chunked(b"hello", b"world", trailer=b"X-Sum: 10\r\n", ext=b";a=b"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"
            + chunked(b"ab", b"cd", trailer=b"X-T: 1\r\n"),
        ),
    ),
    Script(
        # The end of a body and the next head in one read (issue 21, defect 1).
        "pipelined-body-end-and-head",
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhelloworld"
        b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        (ok(b"one"), ok(b"two")),
    ),
    Script(
        "pipelined-chunked-then-get",
        b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(b"hello")
        + b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        (ok(b"one"), ok(b"two")),
    ),
    Script(
        "three-gets",
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        (ok(b"1"), ok(b"2"), ok(b"3")),
    ),
    Script(
        "http-1.0-unchunked",
        b"GET /x HTTP/1.0\r\n\r\n",
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"abc", b"de"),),
    ),
    Script(
        "interim-103",
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n" + ok(),),
    ),
    Script(
        "event-stream",
        b"POST /backend-api/responses HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\n{}",
        (
            sse(
                b'data: {"type":"response.created"}\n\n',
                b'data: {"type":"response.output_text.delta","delta":"hi"}\n\n',
                b'data: {"type":"response.completed","response":{"usage":{"output_tokens":1}}}\n\n',
            ),
        ),
    ),
    Script(
        # Bytes after a complete answer are never relayed (defect 4).
        "junk-after-answer",
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        (ok(b"ok") + b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad",),
    ),
    Script(
        "until-close",
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nno framing at all",),
        close_after=True,
        rechunked=True,
    ),
    Script(
        "cut-mid-body",
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",),
        close_after=True,
    ),
    Script(
        "cut-mid-chunk",
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",),
        close_after=True,
    ),
    Script(
        "http-1.0-cut",
        b"GET /x HTTP/1.0\r\n\r\n",
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nab",),
        close_after=True,
    ),
    Script(
        "malformed-after-good",
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\nHost: a\n\n",
        (ok(),),
    ),
    Script(
        # Bytes after a request that ends the connection are not read (RFC 9112 §9.6).
        "close-then-more",
        b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
        (ok(),),
    ),
    Script(
        # A head over 4 x 512 bytes in all, but no line over 512: the body that follows
        # it is not head (defect 3).
        "big-body-after-head",
        b"POST /x HTTP/1.1\r\nHost: a\r\nX-A: "
        + b"a" * 400
        + b"\r\nContent-Length: 3000\r\nConnection: close\r\n\r\n"
        + b"b" * 3000,
        (ok(),),
    ),
    Script(
        "head-over-the-limit",
        b"GET /x HTTP/1.1\r\nHost: a\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 400) for i in range(6))
        + b"\r\n",
        (),
    ),
    Script(
        "body-over-the-limit-chunked",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked(b"x" * 3000, b"y" * 2000),
        (),
    ),
    Script(
        "expect-continue",
        b"POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n"
        b"Connection: close\r\n\r\nbody",
        (ok(),),
    ),
    Script(
        "early-answer",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\nConnection: close\r\n\r\n"
        + b"z" * 20,
        (b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",),
        early=True,
        # How much of the body had come when the answer did is a matter of time.
        timed=("request_bytes",),
    ),
    Script(
        "head-and-204",
        b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\nDELETE /y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ),
    ),
    Script(
        "custom-method-and-absolute-form",
        b"X-CUSTOM http://elsewhere.example/backend-api/responses HTTP/1.1\r\nHost: a\r\n"
        b"Connection: close\r\n\r\n",
        (ok(),),
    ),
    Script(
        "websocket",
        b"GET /backend-api/codex/responses HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
        + _KEY
        + b"\r\n\r\n"
        + CLIENT_FRAME,
        (
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Accept: " + _ACCEPT + b"\r\n\r\n" + frame(b"welcome"),
        ),
        tail=len(CLIENT_FRAME),
        final=frame(b"\x03\xe8bye", opcode=8),
    ),
    Script(
        "refused-upgrade-goes-on",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + _KEY + b"\r\n\r\n"
        b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        (ok(b"no"), ok(b"after")),
    ),
]
