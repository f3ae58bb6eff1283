"""What the stateful fuzz (test_fuzz.py) sends: the shapes of requests and of the scripted
upstream's replies, drawn by hypothesis, and the bytes each shape becomes.

Every request carries a marker of its own (`MK` and eight digits) in its target, a
header and its body; the upstream's reply to it carries the same marker in a header, in
its interim answers, its body and its trailers. Fillers are lower-case letters, so a
marker found anywhere is one put there on purpose, and a foreign one in an answer is a
byte of another exchange.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from hypothesis import strategies as st

MARKER_PATTERN = rb"MK[0-9]{8}"
# A marker no request has: a reply's junk carries it, so junk relayed is caught by name.
STRAY = b"MK99999999"
_LETTERS = b"abcdefghijklmnopqrstuvwxyz"
# A marker recurs every this many bytes of a body, so a spliced body shows whose it is.
_UNIT = 1024


def payload(marker: bytes, size: int, sep: bytes = b"|") -> bytes:
    """`size` bytes of body for `marker`: the marker, then letters, again every _UNIT."""
    head = marker + sep
    unit = head + (_LETTERS * (_UNIT // len(_LETTERS) + 1))[: _UNIT - len(head)]
    return (unit * (size // _UNIT + 1))[:size]


class Framing(enum.Enum):
    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    CLOSE = "close"  # a reply delimited by the upstream closing the connection


class Fault(enum.Enum):
    """What the upstream does wrong with one reply (on a request's first arrival only:
    a request sent again on a fresh connection gets the reply without the fault)."""

    NONE = "none"
    JUNK_AFTER = "junk after"  # the whole reply, then bytes nobody asked for, in one write
    CLOSE_BEFORE = "close before"  # FIN once the head is read, nothing answered
    RESET_BEFORE = "reset before"  # RST once the head is read
    BAD_HEAD = "bad head"  # a reply head that cannot be relayed as it is
    CUT = "cut"  # the reply's bytes up to `cut`, then FIN
    RESET = "reset"  # the reply's bytes up to `cut`, then RST
    SILENT = "silent"  # the request read, then nothing, the connection left open
    SILENT_MID = "silent mid"  # the reply's bytes up to `cut`, then nothing
    STALL_413 = "stall 413"  # a 413 right after the head, then the body is never read


# The faults that cost upstream.idle_timeout of waiting.
SLOW_FAULTS = frozenset({Fault.SILENT, Fault.SILENT_MID})


class Stream(enum.Enum):
    PLAIN = "plain"  # text/plain
    EVENTS = "events"  # text/event-stream, events carrying the marker
    DEEP = "deep"  # an event stream whose first event nests JSON 3,000 deep


# Reply heads that cannot be relayed as they are (Fault.BAD_HEAD picks one): 502.
BAD_HEADS = (
    b"HTTP/1.1 200 OK\r\nX-Marker: {m}\r\nContent-Length: 1x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Marker: {m}\r\nNo colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Marker: {m}\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Marker: {m}\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nX-Marker: {m}\r\nX-Bad: \xff\xfe\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Marker: {m}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nX-Marker: {m}\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    b"HTP/1.1 200 OK\r\nX-Marker: {m}\r\n\r\n",
)


@dataclass(frozen=True, slots=True)
class Reply:
    """How the upstream answers one request."""

    status: int = 200
    framing: Framing = Framing.LENGTH
    size: int = 10
    chunks: int = 1
    trailers: bool = False
    interims: int = 0  # 103 Early Hints before the final answer
    close: bool = False  # Connection: close, and the upstream closes after the reply
    stream: Stream = Stream.PLAIN
    early: bool = False  # answered right after the head, before the body is read
    fault: Fault = Fault.NONE
    cut: int = 500  # where a CUT, RESET or SILENT_MID stops, in thousandths of the reply
    bad: int = 0  # which of BAD_HEADS
    splits: tuple[int, ...] = ()  # where writes split the reply, in thousandths

    def effective(self, method: bytes) -> Reply:
        """The reply with what its request and status allow: HEAD, 204 and 304 carry no
        body; a close-delimited reply closes; a 413 stall is an early, closing 413."""
        reply = self
        if reply.fault is Fault.STALL_413:
            reply = dataclasses.replace(
                reply, status=413, framing=Framing.LENGTH, close=True, early=True
            )
        if reply.framing is Framing.CLOSE:
            reply = dataclasses.replace(reply, close=True)
        if method == b"HEAD" or reply.status in (204, 304):
            reply = dataclasses.replace(reply, size=0, stream=Stream.PLAIN)
        elif reply.framing is Framing.CLOSE and reply.fault is Fault.JUNK_AFTER:
            # Bytes after a body the close delimits are more of that body.
            reply = dataclasses.replace(reply, fault=Fault.NONE)
        return reply

    def without_fault(self) -> Reply:
        """The reply a request sent again gets: the fault is played on the first try only."""
        return dataclasses.replace(self, fault=Fault.NONE)

    @property
    def bodiless(self) -> bool:
        return self.status in (204, 304)


@dataclass(frozen=True, slots=True)
class Wire:
    """A reply's bytes and what the client must get of them."""

    data: bytes
    head_end: int  # where the final head ends (after any interim heads)
    content: bytes  # the body's content
    trailers: tuple[tuple[bytes, bytes], ...]
    interims: int


def reply_wire(marker: bytes, reply: Reply, method: bytes) -> Wire:
    """The bytes the upstream writes for `reply` (already `effective`) to a request."""
    if reply.fault is Fault.BAD_HEAD:
        data = BAD_HEADS[reply.bad % len(BAD_HEADS)].replace(b"{m}", marker)
        return Wire(data, len(data), b"", (), 0)
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: </%s.css>; rel=preload\r\n\r\n" % marker
    parts = [interim * reply.interims]
    content = _content(marker, reply)
    lines = [b"HTTP/1.1 %d Fuzzed\r\n" % reply.status, b"X-Marker: %s\r\n" % marker]
    events = reply.stream is not Stream.PLAIN
    lines.append(
        b"Content-Type: text/event-stream\r\n" if events else b"Content-Type: text/plain\r\n"
    )
    trailers: tuple[tuple[bytes, bytes], ...] = ()
    if reply.status == 304:
        lines.append(b"Content-Length: %d\r\n" % (reply.size + 7))
    elif reply.status == 204:
        pass
    elif reply.framing is Framing.LENGTH:
        lines.append(b"Content-Length: %d\r\n" % len(content))
    elif reply.framing is Framing.CHUNKED:
        lines.append(b"Transfer-Encoding: chunked\r\n")
        if reply.trailers:
            trailers = ((b"x-trailer", marker), (b"x-checksum", b"%d" % len(content)))
    if reply.close:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    parts += lines
    head_end = sum(map(len, parts))
    if method != b"HEAD" and not reply.bodiless:
        if reply.framing is Framing.CHUNKED:
            parts.append(_chunked(content, reply.chunks, trailers))
        else:
            parts.append(content)
    return Wire(b"".join(parts), head_end, content, trailers, reply.interims)


def _content(marker: bytes, reply: Reply) -> bytes:
    if not reply.size:
        return b""
    if reply.stream is Stream.PLAIN:
        return payload(marker, reply.size, b"#")
    event = b'data: {"m":"%s","filler":"%s"}\n\n' % (marker, _LETTERS)
    body = event * (reply.size // len(event) + 1)
    if reply.stream is Stream.DEEP:
        body = b"data: " + b"[" * 3000 + b"]" * 3000 + b"\n\n" + body
    return body


def _chunked(content: bytes, chunks: int, trailers: tuple[tuple[bytes, bytes], ...]) -> bytes:
    out = []
    step = max(1, -(-len(content) // max(1, chunks)))
    for at in range(0, len(content), step):
        piece = content[at : at + step]
        # A chunk extension on the first chunk: legal, and the proxy must pass it on.
        out.append(b"%x%s\r\n%s\r\n" % (len(piece), b";ext=1" if not at else b"", piece))
    out.append(b"0\r\n")
    out += (b"%s: %s\r\n" % pair for pair in trailers)
    out.append(b"\r\n")
    return b"".join(out)


# --- Requests.

METHODS = (b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"X-CUSTOM")
# RFC 9110 §9.2.2: what the proxy may send again on a fresh connection.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


@dataclass(frozen=True, slots=True)
class Ask:
    """A well-formed request and the reply it gets."""

    method: bytes = b"GET"
    version: str = "1.1"
    framing: Framing = Framing.NONE
    size: int = 0
    chunks: int = 1
    trailers: bool = False
    close: bool = False  # 1.1: Connection: close; 1.0: no Connection: keep-alive
    expect: bool = False  # Expect: 100-continue
    absolute: bool = False  # an absolute-form target (the proxy uses its path only)
    pads: int = 0  # long header lines (1,900 bytes each) towards the head limit
    reply: Reply = Reply()


@dataclass(frozen=True, slots=True)
class Sent:
    """A request's bytes and what the upstream must receive of them."""

    data: bytes
    content: bytes
    trailers: tuple[tuple[bytes, bytes], ...]


def request_bytes(marker: bytes, ask: Ask) -> Sent:
    target = b"/fz/" + marker
    if ask.absolute:
        target = b"http://elsewhere.example" + target
    lines = [b"%s %s HTTP/%s\r\n" % (ask.method, target, ask.version.encode())]
    lines.append(b"Host: fuzz.example\r\nX-Marker: %s\r\n" % marker)
    lines += [b"X-Pad-%d: %s\r\n" % (i, b"p" * 1900) for i in range(ask.pads)]
    if ask.version == "1.0" and not ask.close:
        lines.append(b"Connection: keep-alive\r\n")
    elif ask.version == "1.1" and ask.close:
        lines.append(b"Connection: close\r\n")
    if ask.expect and ask.framing is not Framing.NONE:
        lines.append(b"Expect: 100-continue\r\n")
    content = payload(marker, ask.size) if ask.framing is not Framing.NONE else b""
    trailers: tuple[tuple[bytes, bytes], ...] = ()
    body = b""
    if ask.framing is Framing.LENGTH:
        lines.append(b"Content-Length: %d\r\n" % len(content))
        body = content
    elif ask.framing is Framing.CHUNKED:
        lines.append(b"Transfer-Encoding: chunked\r\n")
        if ask.trailers:
            trailers = ((b"x-request-trailer", marker),)
        body = _chunked(content, ask.chunks, trailers)
    lines.append(b"\r\n")
    return Sent(b"".join(lines) + body, content, trailers)


@dataclass(frozen=True, slots=True)
class Junk:
    """Bytes the proxy must refuse with its JSON error (one of `statuses`) and then
    close. `reaches`: the head is whole and valid, so it goes upstream before the body
    turns out malformed."""

    name: str
    template: bytes
    statuses: frozenset[int]
    reaches: bool = False

    def data(self, marker: bytes) -> bytes:
        return self.template.replace(b"{m}", marker)


def _junk(name: str, template: bytes, *statuses: int, reaches: bool = False) -> Junk:
    return Junk(name, template, frozenset(statuses), reaches)


JUNK = (
    _junk("two hosts", b"GET /fz/{m} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    _junk("no host", b"GET /fz/{m} HTTP/1.1\r\nX-Marker: {m}\r\n\r\n", 400),
    _junk("bad host", b"GET /fz/{m} HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    _junk("no colon", b"GET /fz/{m} HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", 400),
    _junk("nul", b"GET /fz/{m} HTTP/1.1\r\nHost: a\r\nX-Nul: a\x00b\r\n\r\n", 400),
    _junk("obs-fold", b"GET /fz/{m} HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n b\r\n\r\n", 400),
    _junk(
        "length and chunked",
        b"POST /fz/{m} HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    _junk("bad length", b"POST /fz/{m} HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400),
    _junk(
        "two lengths",
        b"POST /fz/{m} HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        400,
    ),
    _junk(
        "gzip coding",
        b"POST /fz/{m} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        400,
        501,
    ),
    _junk("HTTP/2.0", b"GET /fz/{m} HTTP/2.0\r\nHost: a\r\n\r\n", 400, 505),
    _junk("CONNECT", b"CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n", 405),
    _junk("fragment", b"GET /fz/{m}#f HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    _junk("asterisk", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    _junk(
        "long line", b"GET /fz/{m} HTTP/1.1\r\nHost: a\r\nX-Long: " + b"x" * 3000 + b"\r\n\r\n", 431
    ),
    _junk("long target", b"GET /fz/{m}" + b"x" * 3000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    _junk("bad method", b"G\x01T /fz/{m} HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    _junk(
        "bad chunk size",
        b"POST /fz/{m} HTTP/1.1\r\nHost: a\r\nX-Marker: {m}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
        reaches=True,
    ),
    _junk(
        "chunk overrun",
        b"POST /fz/{m} HTTP/1.1\r\nHost: a\r\nX-Marker: {m}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
        400,
        reaches=True,
    ),
)


# --- Strategies: the simplest first, which is where hypothesis shrinks to.

_SIZES = st.one_of(st.integers(0, 3000), st.sampled_from([70_000, 280_000, 330_000]))
_REPLY_SIZES = st.one_of(st.integers(0, 3000), st.sampled_from([70_000, 2_000_000]))
_SPLITS = st.lists(st.integers(1, 999), max_size=4).map(lambda xs: tuple(sorted(set(xs))))

replies = st.builds(
    Reply,
    status=st.sampled_from([200, 201, 404, 500, 204, 304]),
    framing=st.sampled_from([Framing.LENGTH, Framing.CHUNKED, Framing.CLOSE]),
    size=_REPLY_SIZES,
    chunks=st.integers(1, 4),
    trailers=st.booleans(),
    interims=st.integers(0, 2),
    close=st.booleans(),
    stream=st.sampled_from(list(Stream)),
    early=st.booleans(),
    fault=st.sampled_from(list(Fault)),
    cut=st.integers(0, 1000),
    bad=st.integers(0, len(BAD_HEADS) - 1),
    splits=_SPLITS,
)


@st.composite
def asks(draw: st.DrawFn) -> Ask:
    method = draw(st.sampled_from(METHODS))
    version = draw(st.sampled_from(["1.1", "1.0"]))
    framings = [Framing.NONE, Framing.LENGTH]
    if version == "1.1":
        framings.append(Framing.CHUNKED)
    framing = draw(st.sampled_from(framings))
    return Ask(
        method=method,
        version=version,
        framing=framing,
        size=draw(_SIZES) if framing is not Framing.NONE else 0,
        chunks=draw(st.integers(1, 4)),
        trailers=draw(st.booleans()),
        close=draw(st.booleans()),
        expect=version == "1.1" and draw(st.booleans()),
        absolute=draw(st.booleans()),
        pads=draw(st.integers(0, 3)),
        reply=draw(replies),
    )


junks = st.sampled_from(JUNK)
