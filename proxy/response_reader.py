"""The response reader: the upstream's answer to one request, read in named phases and
turned into the bytes the client receives.

Phases: HEAD (nothing of an answer yet), INTERIM (interim answers relayed, the final one
still to come), BODY, DONE, UPGRADED (a 101: the bytes after it are a new protocol's).
framing.py finds where each head and the body end; llhttp parses the heads and checks a
chunked body's framing. The client gets the upstream's status, reason and end-to-end
headers as sent, and the body as the upstream framed it (its Content-Length, or its
chunks, trailers and all, byte for byte), except where the client cannot take that
framing: an HTTP/1.0 client gets a chunked body un-chunked and delimited by the close; a
body the upstream delimits by its close reaches an HTTP/1.1 client chunked, one chunk
per read. Whatever follows a complete answer was never asked for: it is dropped, and
the connection is never used again.
"""

from __future__ import annotations

import base64
import enum
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.forward import Head
from proxy.framing import (
    B_CHUNKED,
    B_LENGTH,
    B_NONE,
    B_UNTIL_CLOSE,
    P_DONE,
    Body,
    FramingError,
    Message,
)
from proxy.headers import UPGRADE, RawPairs, first_invalid_utf8, hop_by_hop, tokens
from proxy.watch import BodyWatch

if TYPE_CHECKING:
    from proxy.exchange import Exchange
    from proxy.route import Route
    from proxy.sides import ClientSide

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_NOTABLE = {
    b"content-type": 1,
    b"content-length": 2,
    b"transfer-encoding": 3,
    b"connection": 4,
    b"sec-websocket-accept": 5,
}


class Answer(enum.Enum):
    HEAD = "head"
    INTERIM = "interim"
    BODY = "body"
    DONE = "done"
    UPGRADED = "upgraded"


class Delivery(enum.Enum):
    """How the body reaches the client."""

    NONE = "none"  # HEAD, 204, 304, 101
    AS_SENT = "as sent"  # the upstream's Content-Length or chunks, byte for byte
    UNCHUNKED = "unchunked"  # chunks to an HTTP/1.0 client: their content, then the close
    CHUNKED = "chunked"  # a body the upstream ends by closing, to an HTTP/1.1 client
    UNTIL_CLOSE = "until close"  # the same, to an HTTP/1.0 client


# Enum members read through their class pay for a metaclass hook at every use; the hot
# path reads them from these module constants.
A_HEAD, A_INTERIM, A_BODY, A_DONE, A_UPGRADED = (
    Answer.HEAD,
    Answer.INTERIM,
    Answer.BODY,
    Answer.DONE,
    Answer.UPGRADED,
)
D_NONE, D_AS_SENT, D_UNCHUNKED, D_CHUNKED, D_UNTIL_CLOSE = (
    Delivery.NONE,
    Delivery.AS_SENT,
    Delivery.UNCHUNKED,
    Delivery.CHUNKED,
    Delivery.UNTIL_CLOSE,
)


class BadResponseError(Exception):
    """An answer that cannot be relayed as it is."""

    handshake = False


class BadHandshakeError(BadResponseError):
    handshake = True


class ResponseReader:
    __slots__ = (
        "_accept",
        "_client",
        "_closing",
        "_codings",
        "_exchange",
        "_keep_streams",
        "_length",
        "_message",
        "_watch",
        "closes",
        "delivery",
        "event_stream",
        "headers",
        "interim_heads",
        "junk",
        "phase",
        "reason",
        "request",
        "reusable",
        "status",
    )

    def __init__(
        self,
        request: Head,
        client: ClientSide,
        exchange: Exchange,
        route: Route,
        closing: Callable[[], bool],
    ) -> None:
        """`closing`: asked when the final head goes whether the client's connection ends
        with this answer."""
        self.request = request
        self._client = client
        self._exchange = exchange
        self._keep_streams = route.record_streams
        self._watch: BodyWatch | None = None
        self._closing = closing
        self.phase = A_HEAD
        limits = route.limits
        self._message = Message(
            request=False, head_limit=limits.max_head_size, line_limit=limits.max_header_size
        )
        self.status = 0
        self.reason = b""
        self.headers: RawPairs = []
        self.delivery = D_NONE
        # The client connection ends with this answer (its head said so).
        self.closes = False
        self.event_stream = False
        # The answer came framed and llhttp says the connection may serve another.
        self.reusable = False
        # Bytes came after the answer was complete.
        self.junk = False
        self.interim_heads = 0
        self._length: bytes | None = None
        self._codings: bytes | None = None
        self._accept: bytes | None = None

    @property
    def answered(self) -> bool:
        """The final answer's head is through."""
        return self.phase in (A_BODY, A_DONE)

    @property
    def close_delimited(self) -> bool:
        """The client can tell the body's end only by the connection's: a cut must be a
        reset, never a FIN."""
        return self.delivery in (D_UNTIL_CLOSE, D_UNCHUNKED)

    @property
    def started(self) -> bool:
        """Something of an answer reached the client (an interim answer counts)."""
        return self.phase is not A_HEAD

    def read(self, data: bytes) -> int:
        """Read what the upstream sent and give the client its bytes, in one write; the
        body's content goes to the watch after them. Returns where a new protocol begins
        after a 101 (else -1); raises, once what was valid is written, when the answer
        cannot be relayed (an interim answer before a final one that cannot is dropped:
        the client gets the proxy's error instead)."""
        phase = self.phase
        answered = phase is A_BODY or phase is A_DONE
        out: list[bytes] = []
        pieces: list[bytes] = []
        try:
            switched = self.feed(data, out, pieces)
        except (BadResponseError, FramingError):
            self._deliver(answered, out, pieces, failed=True)
            raise
        self._deliver(answered, out, pieces, failed=False)
        return switched

    def _deliver(
        self, answered: bool, out: list[bytes], pieces: list[bytes], *, failed: bool
    ) -> None:
        phase = self.phase
        now_answered = phase is A_BODY or phase is A_DONE
        if not answered and (now_answered or phase is A_UPGRADED):
            exchange = self._exchange
            exchange.headers_ms = exchange.elapsed_ms()
            exchange.respond(self.status, self.reason.decode("latin-1"), self.headers)
            self._watch = BodyWatch(
                exchange, event_stream=self.event_stream, keep_streams=self._keep_streams
            )
        if out and (now_answered or not failed):
            if len(out) == 1:
                self._client.write(out[0])
            else:
                self._client.writelines(out)
        if pieces and self._watch is not None:
            self._watch.feed(pieces)

    def done(self) -> None:
        """The exchange is over, however it ended: what it holds is let go now (the
        relay's callback and llhttp's parser refer back), not by the cycle collector."""
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self._closing = _closes
        self._message.release()

    def feed(self, data: bytes, out: list[bytes], pieces: list[bytes]) -> int:
        """Read what the upstream sent: the client's bytes are added to `out`, the body's
        content to `pieces`. Returns where a new protocol begins in `data` after a 101
        (else -1). BadResponseError or FramingError: the answer cannot be relayed."""
        at, end = 0, len(data)
        while at < end:
            phase = self.phase
            if phase is A_HEAD or phase is A_INTERIM:
                stop = self._message.read_head(data, at)
                if stop < 0:
                    return -1
                at = stop
                self._head(out)
                if self.phase is A_UPGRADED:
                    return at
            elif phase is A_BODY:
                at = self._body(data, at, out, pieces)
            else:
                self.junk = True  # whatever follows a complete answer
                return -1
        return -1

    def upstream_closed(self) -> bool:
        """The upstream closed: whether that ends the body as it should (a body delimited
        by the close), rather than cutting it."""
        if self.phase is A_BODY and self._message.body is B_UNTIL_CLOSE:
            if self.delivery is D_CHUNKED:
                self._client.write(b"0\r\n\r\n")
            self.phase = A_DONE
            return True
        return False

    # --- Heads.

    def _head(self, out: list[bytes]) -> None:
        message = self._message
        parser = message.parser
        status = parser.get_status_code()
        headers, reason = message.headers, message.reason
        if 100 <= status < 200 and status != 101:
            # 103 Early Hints and the like are relayed; 100 was this hop's to send (it
            # answered Expect itself); an HTTP/1.0 client gets none (RFC 9110 §15.2).
            self.phase = A_INTERIM
            self._message = message.next()
            message.release()
            if status != 100 and self.request.version == "1.1":
                self.interim_heads += 1
                out.append(_client_head("1.1", status, reason, headers, self._drop(headers)))
            return
        drop = self._scan(headers)
        self._check(status, headers)
        self.status, self.reason, self.headers = status, reason, headers
        if status == 101:
            self.phase = A_UPGRADED
            return
        body, length = self._framing(status)
        message.frame(body, length)
        client = self.request.version
        close = self._closing()
        if body is B_LENGTH or (body is B_CHUNKED and client == "1.1"):
            self.delivery = D_AS_SENT
        elif body is B_UNTIL_CLOSE:
            self.delivery = D_UNTIL_CLOSE if client == "1.0" else D_CHUNKED
            close = close or client == "1.0"
        elif body is B_CHUNKED:
            self.delivery = D_UNCHUNKED
            close = True
        chunked = body is B_CHUNKED or self.delivery is D_CHUNKED
        self.closes = close
        out.append(
            _client_head(
                client,
                status,
                reason,
                headers,
                drop,
                chunked=chunked and client == "1.1",
                close=close,
            )
        )
        if message.phase is P_DONE:
            self._done()
        else:
            self.phase = A_BODY

    def _drop(self, headers: RawPairs) -> frozenset[bytes]:
        """The names that stay at this hop, for an interim answer."""
        listed: frozenset[bytes] = frozenset()
        for name, value in headers:
            if name.lower() == b"connection":
                listed |= tokens(value)
        return hop_by_hop(listed)

    def _scan(self, headers: RawPairs) -> frozenset[bytes]:
        """What the head says of its framing, and the names that stay at this hop."""
        notable = _NOTABLE
        listed: frozenset[bytes] = frozenset()
        for name, value in headers:
            kind = notable.get(name.lower())
            if kind is None:
                continue
            if kind == 1:
                self.event_stream = value[:17].lower() == b"text/event-stream"
            elif kind == 2:
                self._length = value
            elif kind == 3:
                self._codings = value if self._codings is None else self._codings + b"," + value
            elif kind == 4:
                listed |= tokens(value)
            else:
                self._accept = value.strip()
        return hop_by_hop(listed)

    def _check(self, status: int, headers: RawPairs) -> None:
        """What cannot be relayed as it is fails here, before any of it reaches the client."""
        invalid = first_invalid_utf8(headers)
        if invalid is not None:
            raise BadResponseError(
                f"header {invalid.decode('ascii', 'replace')!r} is not valid UTF-8: "
                "it cannot be relayed unchanged"
            )
        if status == 101:
            if not self.request.websocket:
                raise BadResponseError("101 Switching Protocols to a request that asked none")
            key = self.request.ws_key
            assert key is not None
            expected = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())  # noqa: S324 - RFC 6455
            if self._accept != expected:
                raise BadHandshakeError("Sec-WebSocket-Accept does not match the key")
        codings = self._codings
        if codings is not None and codings.strip().lower() != b"chunked":
            raise BadResponseError(f"unsupported Transfer-Encoding {codings.decode('latin-1')!r}")

    def _framing(self, status: int) -> tuple[Body, int]:
        """RFC 9112 §6.3, in its order."""
        if self.request.method == b"HEAD" or status in (204, 304):
            return B_NONE, 0
        if self._codings is not None:
            return B_CHUNKED, 0
        if self._length is not None:
            return B_LENGTH, int(self._length)
        return B_UNTIL_CLOSE, 0

    # --- The body.

    def _body(self, data: bytes, at: int, out: list[bytes], pieces: list[bytes]) -> int:
        message = self._message
        first = len(pieces)
        stop = message.read_body(data, at, pieces)
        delivery = self.delivery
        if message.body is B_LENGTH:
            out.append(pieces[-1])  # the same bytes, as they came
        elif delivery is D_AS_SENT or delivery is D_UNTIL_CLOSE:
            out.append(data if not at and stop == len(data) else data[at:stop])
        elif delivery is D_UNCHUNKED:
            out += pieces[first:]
        else:
            content = pieces[first:]
            size = sum(map(len, content))
            if size:
                out += (b"%x\r\n" % size, *content, b"\r\n")
        if message.phase is P_DONE:
            self._done()
        return stop

    def _done(self) -> None:
        self.phase = A_DONE
        message = self._message
        self.reusable = message.body is not B_UNTIL_CLOSE and message.keep_alive
        message.release()


def _client_head(
    version: str,
    status: int,
    reason: bytes,
    headers: RawPairs,
    drop: frozenset[bytes],
    *,
    chunked: bool = False,
    close: bool = False,
) -> bytes:
    """The response head the client receives, in one join: the upstream's status, reason
    and end-to-end pairs as sent, then this hop's framing and connection headers."""
    http10 = version == "1.0"
    parts = [b"HTTP/1.0 " if http10 else b"HTTP/1.1 ", b"%d " % status, reason, b"\r\n"]
    for name, value in headers:
        if name.lower() not in drop:
            parts += (name, b": ", value, b"\r\n")
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if close and not http10:
        parts.append(b"Connection: close\r\n")
    elif not close and http10:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def switching_head(reason: bytes, headers: RawPairs) -> bytes:
    """The 101 the client receives: its headers end to end, Connection and Upgrade kept."""
    listed: frozenset[bytes] = frozenset()
    for name, value in headers:
        if name.lower() == b"connection":
            listed |= tokens(value)
    return _client_head("1.1", 101, reason, headers, hop_by_hop(listed, keep=UPGRADE))


def _closes() -> bool:
    return True
