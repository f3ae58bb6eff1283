"""Where each HTTP/1.1 message begins and ends in a byte stream, however the reads fall.

A socket promises nothing about where a read ends: one read may hold the end of a body
and the start of the next head, a head may arrive a byte at a time. So the boundaries
are found here, from the bytes themselves (a head ends at its first blank line; a body
by its Content-Length, its chunked framing, or the connection's end), and llhttp is fed
exactly the bytes of one message: the head's, and a chunked body's framing, which it
validates as strictly as it does heads. Where llhttp and this reading disagree on where
a message ends, the message is malformed (`FramingError`).

A `Message` is one message's reading and llhttp's protocol object: its callbacks act by
the message's phase (head, body, trailers, done), so a trailer field never lands among
the header fields and nothing of the next message is taken for this one's.
"""

from __future__ import annotations

import enum
from typing import Any

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserInvalidMethodError,
    HttpParserUpgrade,
    HttpRequestParser,
    HttpResponseParser,
)

from proxy.headers import RawPairs

_BLANK_LINE = b"\r\n\r\n"
_HEX = b"0123456789abcdefABCDEF"
# RFC 9110 §5.6.2: the characters of a token (a method).
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# The methods llhttp knows. Any other token is a method too (RFC 9110 §9.1): llhttp reads
# its head as a POST's, and the method passes as sent.
_LLHTTP_METHODS = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND PROPPATCH "
    b"SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY "
    b"SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE QUERY".split()
)
_STAND_IN = b"POST"
# llhttp's word for stopping at an upgrade's head (httptools raises it as a plain error
# when llhttp's own upgrade flag is unset, as for a 101 nobody asked for).
_PAUSED_UPGRADE = "Pause on CONNECT/Upgrade"
# A chunk-size line (size and extensions) longer than this is refused.
MAX_CHUNK_LINE = 4096
# At most this many field lines in a request head, and in a response head.
MAX_REQUEST_FIELDS = 128
MAX_RESPONSE_FIELDS = 256


class FramingError(Exception):
    """The bytes do not frame a message: llhttp refused them, or read them otherwise."""


class HeadTooLargeError(FramingError):
    """A head (or a trailer section) over its limit."""


class LineTooLongError(FramingError):
    """One header line, or the request target, over its limit."""

    def __init__(self, message: str, *, target: bool = False) -> None:
        super().__init__(message)
        self.target = target


class Phase(enum.Enum):
    HEAD = "head"
    BODY = "body"
    TRAILERS = "trailers"
    DONE = "done"


class Body(enum.Enum):
    """How a body is delimited (RFC 9112 §6.3)."""

    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until close"


# Enum members read through their class pay for a metaclass hook at every use; the hot
# path reads them from these module constants.
P_HEAD, P_BODY, P_TRAILERS, P_DONE = (
    Phase.HEAD,
    Phase.BODY,
    Phase.TRAILERS,
    Phase.DONE,
)
B_NONE, B_LENGTH, B_CHUNKED, B_UNTIL_CLOSE = (
    Body.NONE,
    Body.LENGTH,
    Body.CHUNKED,
    Body.UNTIL_CLOSE,
)

# The chunked framing's states.
_SIZE = 0
_DATA = 1
_DATA_END = 2
_TRAILERS = 3


class Message:
    """One message read off a stream: its head through llhttp, its body by its framing."""

    __slots__ = (
        "_chunk",
        "_completed",
        "_line",
        "_line_limit",
        "_max_fields",
        "_method",
        "_parser",
        "_tail",
        "body",
        "head_limit",
        "head_size",
        "headers",
        "keep_alive",
        "left",
        "method",
        "phase",
        "reason",
        "trailer_size",
        "upgrade",
        "url",
    )

    def __init__(self, *, request: bool, head_limit: int, line_limit: int) -> None:
        self._parser: Any = HttpRequestParser(self) if request else HttpResponseParser(self)
        self.phase = P_HEAD
        self.head_limit = head_limit
        self._line_limit = line_limit
        self._max_fields = MAX_REQUEST_FIELDS if request else MAX_RESPONSE_FIELDS
        self.head_size = 0
        self._tail = b""  # the head's last bytes so far: a blank line may span reads
        # A request's method, gathered until its space (None once fed, or for a response).
        self._method: bytearray | None = bytearray() if request else None
        self.method = b""
        self.url = b""
        self.reason = b""
        self.headers: RawPairs = []
        # llhttp's judgement of the head: the connection may serve another message; an
        # upgrade (Connection lists `upgrade` and an Upgrade header is present).
        self.keep_alive = False
        self.upgrade = False
        self._completed = False
        self.body = B_NONE
        # LENGTH: bytes left. CHUNKED: a chunk's bytes left, and (set when it is framed so)
        # the framing's state and the line being read (a size line, or a trailer line's
        # start).
        self.left = 0

    @property
    def parser(self) -> Any:
        """llhttp's parser, for what it read off the head (version, status, keep-alive)."""
        return self._parser

    def next(self) -> Message:
        """A message to read the next head with, within the same limits."""
        return Message(
            request=self._max_fields == MAX_REQUEST_FIELDS,
            head_limit=self.head_limit,
            line_limit=self._line_limit,
        )

    def release(self) -> None:
        """The message is read: let llhttp's parser go now (it refers back to this
        message, a cycle the collector would otherwise have to find)."""
        self._parser = None

    # --- The head.

    def read_head(self, data: bytes, at: int) -> int:
        """Read head bytes from data[at:]: where the head ended in `data`, or -1 when it
        goes on in the next read. Empty lines before it are skipped (RFC 9112 §2.2)."""
        end = len(data)
        if not self.head_size:
            whole = self._whole_head(data, at)
            if whole >= 0:
                return whole
            while at < end and data[at] in b"\r\n":
                at += 1
            if at == end:
                return -1
        if self._method is not None:
            at = self._read_method(data, at, end)
            if at < 0:
                return -1
        tail = self._tail
        stop = self._blank_line(data, at, tail)
        upto = end if stop < 0 else stop
        self.head_size += upto - at
        if self.head_size > self.head_limit:
            raise HeadTooLargeError("head is larger than the limits allow")
        self._feed(data, at, upto)
        if stop < 0:
            if self.phase is not P_HEAD:
                raise FramingError("the head ended before its blank line")
            self._tail = (tail + data[at:end])[-3:]
            return -1
        if self.phase is P_HEAD:
            raise FramingError("the head did not end at its blank line")
        return stop

    @staticmethod
    def _blank_line(data: bytes, at: int, tail: bytes) -> int:
        """Where the head's blank line ends in `data`, perhaps begun in `tail` (the last
        bytes of the reads before); -1 if not in this read."""
        if tail:
            found = (tail + data[at : at + 3]).find(_BLANK_LINE)
            if found >= 0:
                return at + found + 4 - len(tail)
        found = data.find(_BLANK_LINE, at)
        return found + 4 if found >= 0 else -1

    def _whole_head(self, data: bytes, at: int) -> int:
        """The common case in one step: a whole head in this read, starting at `at`, with
        a method llhttp knows (for a request). -1: read it the general way."""
        found = data.find(_BLANK_LINE, at)
        if found < 0 or found + 4 - at > self.head_limit or data[at : at + 1] in b"\r\n":
            return -1
        stop = found + 4
        if self._method is not None:
            space = data.find(b" ", at, at + 16)
            method = data[at:space] if space > at else b""
            if method not in _LLHTTP_METHODS:
                return -1
            self._method = None
            self.method = method
        self.head_size = stop - at
        self._feed_bytes(data if not at and stop == len(data) else memoryview(data)[at:stop])
        if self.phase is P_HEAD:
            raise FramingError("the head did not end at its blank line")
        return stop

    def _read_method(self, data: bytes, at: int, end: int) -> int:
        """Gather a request's method up to its space, then feed llhttp the method, or a
        stand-in it knows for one it does not. -1: the method goes on in the next read."""
        gathered = self._method
        assert gathered is not None
        space = data.find(b" ", at, at + 16)
        if space > at and not gathered and data[at:space] in _LLHTTP_METHODS:
            # The common case: a method llhttp knows, whole in this read.
            self._method = None
            self.method = data[at:space]
            self.head_size += space - at
            self._tail = self.method[-3:]
            self._feed_bytes(self.method)
            return space
        stop = at
        tchar = _TCHAR
        while stop < end and data[stop] in tchar:
            stop += 1
        gathered += data[at:stop]
        self.head_size += stop - at
        if len(gathered) > self._line_limit:
            raise LineTooLongError("the request method is too long", target=True)
        if stop == end:
            return -1
        self._method = None
        method = self.method = bytes(gathered)
        if method and data[stop] == 0x20 and method not in _LLHTTP_METHODS:
            method = _STAND_IN
        self._tail = method[-3:]
        if method:
            self._feed_bytes(method)
        return stop

    def frame(self, body: Body, length: int = 0) -> None:
        """How this message's body is delimited, decided by whoever read its head."""
        self.body = body
        self.left = length
        if body is B_CHUNKED:
            self._chunk = _SIZE
            self._line = bytearray()
            self.trailer_size = 0
        done = body is B_NONE or (body is B_LENGTH and not length)
        self.phase = P_DONE if done else P_BODY

    # --- The body.

    def read_body(self, data: bytes, at: int, pieces: list[bytes]) -> int:
        """Read body bytes from data[at:]: where they stop in `data` (the message may end
        before the read does). The body's content, un-chunked, is added to `pieces`."""
        end = len(data)
        body = self.body
        if body is B_LENGTH:
            take = min(self.left, end - at)
            pieces.append(data if take == end else data[at : at + take])
            self.left -= take
            if not self.left:
                self.phase = P_DONE
            return at + take
        if body is B_UNTIL_CLOSE:
            pieces.append(data if not at else data[at:])
            return end
        stop = self._chunked(data, at, end, pieces)
        self._feed(data, at, stop)
        if (self.phase is P_DONE) != self._completed:
            raise FramingError("the chunked body does not end where its framing says")
        return stop

    def _chunked(self, data: bytes, at: int, end: int, pieces: list[bytes]) -> int:
        """Walk the chunked framing (RFC 9112 §7.1); llhttp validates the same bytes."""
        while at < end:
            state = self._chunk
            if state == _DATA:
                take = min(self.left, end - at)
                pieces.append(data[at : at + take])
                self.left -= take
                at += take
                if not self.left:
                    self._chunk = _DATA_END
            elif state == _DATA_END:
                # The CRLF after a chunk's data (llhttp checks which bytes they are).
                line = self._line
                take = min(2 - len(line), end - at)
                line += data[at : at + take]
                at += take
                if len(line) == 2:
                    line.clear()
                    self._chunk = _SIZE
            elif state == _SIZE:
                at = self._size_line(data, at, end)
            else:
                at = self._trailer_line(data, at, end)
                if self.phase is P_DONE:
                    break
        return at

    def _size_line(self, data: bytes, at: int, end: int) -> int:
        line = self._line
        newline = data.find(b"\n", at, end)
        stop = end if newline < 0 else newline + 1
        if len(line) + stop - at > MAX_CHUNK_LINE:
            raise FramingError("a chunk-size line is longer than the limits allow")
        line += data[at:stop]
        if newline < 0:
            return stop
        digits = bytes(line).split(b";", 1)[0].rstrip(b"\r\n")
        line.clear()
        if not digits or digits.strip(_HEX) or len(digits) > 16:
            raise FramingError("a chunk size is not a hexadecimal number")
        size = int(digits, 16)
        if size:
            self.left = size
            self._chunk = _DATA
        else:
            self._chunk = _TRAILERS
            self.phase = P_TRAILERS
        return stop

    def _trailer_line(self, data: bytes, at: int, end: int) -> int:
        """A trailer field line, or the empty line that ends the message. Only a line's
        first bytes are kept, to tell an empty one (llhttp reads the fields)."""
        newline = data.find(b"\n", at, end)
        stop = end if newline < 0 else newline + 1
        self.trailer_size += stop - at
        if self.trailer_size > self.head_limit:
            raise HeadTooLargeError("trailer section is larger than the limits allow")
        line = self._line
        room = 3 - len(line)
        if room > 0:
            line += data[at : min(stop, at + room)]
        if newline < 0:
            return stop
        empty = bytes(line) in (b"\r\n", b"\n")
        line.clear()
        if empty:
            self.phase = P_DONE
        return stop

    # --- llhttp.

    def _feed(self, data: bytes, at: int, stop: int) -> None:
        if at < stop:
            self._feed_bytes(data if not at and stop == len(data) else memoryview(data)[at:stop])

    def _feed_bytes(self, data: bytes | memoryview) -> None:
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade:
            # llhttp stops at the end of an upgrade's (or a CONNECT's) head; what follows
            # is for whoever answers it to read.
            if self.phase is P_HEAD:
                raise FramingError("llhttp stopped inside the head") from None
        except HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, FramingError):
                raise cause from None
            raise
        except HttpParserInvalidMethodError:
            raise FramingError("invalid method") from None
        except HttpParserError as exc:
            reason = str(exc).split("\n", 1)[0].strip().rstrip(":")
            if reason == _PAUSED_UPGRADE and self.phase is not P_HEAD:
                return  # the same stop, where httptools saw no upgrade of its own
            raise FramingError(reason or type(exc).__name__) from None

    # llhttp's callbacks: they record, by phase.

    def on_message_begin(self) -> None:
        if self.phase is not P_HEAD or self.url or self.headers:
            raise FramingError("a second message where one was expected")

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self._line_limit:
            raise LineTooLongError("the request target is too long", target=True)

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        # A trailer field travels as a trailer, inside the body's bytes: not recorded.
        if self.phase is P_HEAD:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.phase is not P_HEAD:
            return
        headers, limit = self.headers, self._line_limit
        if len(headers) > self._max_fields:
            raise HeadTooLargeError("head has too many header fields")
        # (A head no longer than the limit in all has no line over it to look for.)
        if self.head_size > limit and any(len(n) + len(v) > limit for n, v in headers):
            raise LineTooLongError("a header line is longer than the limits allow")
        self.phase = P_BODY  # until whoever reads the head frames the body
        # Read now: llhttp forgets them once the message is complete.
        parser = self._parser
        self.keep_alive = bool(parser.should_keep_alive())
        self.upgrade = bool(parser.should_upgrade())

    def on_message_complete(self) -> None:
        self._completed = True
