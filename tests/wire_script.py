"""Scripted exchanges replayed through the proxy with each direction's bytes cut into reads
wherever the test says: the driver behind the split-invariance and h11 model tests.

A `Script` is what a client sends (one or more requests, as bytes) and what the upstream
answers to each request it receives (bytes, per request). The `ScriptedUpstream` is a raw
TCP server: h11 (python-hyper's HTTP/1.1 state machine, an independent reader) finds
where each request it receives ends, and the answer is written once the request is
whole (or, `early`, once its head is). `replay` writes the client's bytes and each
answer in the pieces given, letting the proxy read each piece on its own, and returns
what each side received and the proxy's log lines for the exchanges.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import h11
from structlog.testing import capture_logs

# Log fields that differ from run to run whatever the bytes: times, ids, how the upstream
# connection came (warm or reused).
VARYING = frozenset(
    {
        "request_id",
        "duration_ms",
        "headers_ms",
        "first_byte_ms",
        "first_token_ms",
        "tokens_per_s",
        "connect_ms",
        "opened_ms",
        "tls_ms",
        "tls_resumed",
        "connection",
        "timestamp",
        "client",
        "retried",
    }
)


@dataclass(frozen=True)
class Script:
    name: str
    client: bytes
    answers: tuple[bytes, ...] = ()
    # The upstream closes its connection after its last answer.
    close_after: bool = False
    # The upstream answers once a request's head is in (before its body).
    early: bool = False
    # After its last answer the upstream reads this many more bytes (a WebSocket
    # session's), records them as one more entry, writes `final` and closes.
    tail: int = 0
    final: bytes = b""
    # Log fields that depend on time, not on reads (how much of a body had come when
    # an early answer ended the exchange).
    timed: tuple[str, ...] = ()
    # The client's bytes differ by how reads fell only in chunk boundaries the proxy
    # chose (a body the upstream ended by closing, re-framed as chunks per read): they
    # are compared as messages, not bytes.
    rechunked: bool = False


@dataclass
class Seen:
    """What one replay showed."""

    client: bytes  # every byte the client received, until the proxy closed
    requests: list[bytes]  # each request as the upstream received it, byte for byte
    lines: list[dict[str, Any]]  # the proxy's request and rejection lines, varying fields out
    closed: bool = True  # the proxy closed the client's connection (False: it hung)
    logs: list[dict[str, Any]] = field(default_factory=list)  # every line, as written

    def key(self) -> tuple[bytes, tuple[bytes, ...], str, bool]:
        return (self.client, tuple(self.requests), repr(self.lines), self.closed)


def settle_turns() -> int:
    """Loop turns that let a peer in the same loop read what was just written."""
    return 3


async def settle() -> None:
    for _ in range(settle_turns()):
        await asyncio.sleep(0)


def pieces(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """`data` cut at the given positions (sorted, within it)."""
    out, at = [], 0
    for cut in sorted(set(cuts)):
        if 0 < cut < len(data):
            out.append(data[at:cut])
            at = cut
    out.append(data[at:])
    return out


@dataclass
class _Connection:
    buffer: bytes = b""
    answered: int = 0


@dataclass
class ScriptedUpstream:
    """Answers by script; set `script` and `answer_cuts` before each replay."""

    script: Script = field(default_factory=lambda: Script("none", b""))
    answer_cuts: Mapping[int, Sequence[int]] = field(default_factory=dict)
    requests: list[bytes] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()  # each connection's reader sees its end
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, h11.RemoteProtocolError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection()
        while True:
            raw = await self._read_request(reader, connection)
            if raw is None:
                return
            self.requests.append(raw)
            index = len(self.requests) - 1
            answers = self.script.answers
            if index >= len(answers) or not answers[index]:
                return  # (an empty answer: the connection closes unanswered)
            for piece in pieces(answers[index], self.answer_cuts.get(index, ())):
                writer.write(piece)
                await writer.drain()
                await settle()
            last = index == len(answers) - 1
            if last and self.script.tail:
                tail = connection.buffer
                while len(tail) < self.script.tail:
                    data = await reader.read(65536)
                    if not data:
                        break
                    tail += data
                self.requests.append(tail)
                writer.write(self.script.final)
                await writer.drain()
                return
            if self.script.close_after and last:
                return

    async def _read_request(
        self, reader: asyncio.StreamReader, connection: _Connection
    ) -> bytes | None:
        """The next request's bytes as received; h11 says where it ends (at its head,
        for an early answer)."""
        parser = h11.Connection(h11.SERVER)
        fed = connection.buffer
        if fed:  # (receive_data of nothing says the connection closed)
            parser.receive_data(fed)
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                if not data:
                    return None
                fed += data
                parser.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None
            if isinstance(event, h11.EndOfMessage) or (
                self.script.early and isinstance(event, h11.Request)
            ):
                rest = parser.trailing_data[0]
                connection.buffer = rest
                return fed[: len(fed) - len(rest)]


async def replay(
    proxy_port: int,
    upstream: ScriptedUpstream,
    script: Script,
    *,
    client_cuts: Sequence[int] = (),
    answer_cuts: Mapping[int, Sequence[int]] | None = None,
    ended: Any = None,
    timeout: float = 5.0,
) -> Seen:
    """One replay; `ended` is an awaitable factory that waits for the exchange lines."""
    upstream.script = script
    upstream.answer_cuts = answer_cuts or {}
    upstream.requests = []
    received = bytearray()
    closed = True
    with capture_logs() as logs:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        try:
            for piece in pieces(script.client, client_cuts):
                writer.write(piece)
                await writer.drain()
                await settle()
            try:
                async with asyncio.timeout(timeout):
                    while data := await reader.read(65536):
                        received += data
            except TimeoutError:
                closed = False
            except ConnectionError:
                received += b"<reset>"
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        if ended is not None:
            await ended()
        await settle()
    varying = VARYING | set(script.timed)
    lines = [
        {k: v for k, v in line.items() if k not in varying}
        for line in logs
        if line.get("event") in ("request", "rejected", "websocket")
    ]
    return Seen(
        bytes(received), list(upstream.requests), lines, closed, [dict(line) for line in logs]
    )
