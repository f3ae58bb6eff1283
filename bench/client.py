"""The bench's own HTTP/1.1 client: raw asyncio, cheap enough to share a core with the
upstream and still outrun every proxy.

It reads into one preallocated buffer (no copy of body bytes), understands
Content-Length, chunked and read-until-close bodies, keeps connections alive, and can read
slowly (pausing the socket, so the proxy sees real back-pressure). A sink sees each piece
of body as it arrives, with the receive time on the same monotonic clock the upstream
stamps its events with.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

FAKE_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9.YmVuY2gtc2lnbmF0dXJlLW5vdC1yZWFs"
HEADERS = (
    f"Authorization: Bearer {FAKE_TOKEN}\r\n"
    "chatgpt-account-id: 00000000-0000-4000-8000-000000000000\r\n"
    "session_id: 0199a000-0000-7000-8000-000000000000\r\n"
    "originator: codex_exec\r\n"
    "Content-Type: application/json\r\n"
    "Accept: text/event-stream\r\n"
)


def request_bytes(path: str, host: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{HEADERS}Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


class Sink:
    """Receives body bytes as they arrive; the base class only counts them."""

    def feed(self, data: memoryview, now_ns: int) -> None:
        pass


_STAMP = re.compile(rb'"t":(\d+)')


@dataclass(slots=True)
class EventTimes(Sink):
    """Per-event delay (receive time minus the upstream's stamp), for SSE bodies."""

    delays_ns: list[int] = field(default_factory=list)
    events: int = 0
    completed: bool = False
    first_event_ns: int = 0
    _tail: bytearray = field(default_factory=bytearray)

    def feed(self, data: memoryview, now_ns: int) -> None:
        self._tail += data
        end = self._tail.rfind(b"\n\n")
        if end < 0:
            return
        whole = bytes(self._tail[: end + 2])
        del self._tail[: end + 2]
        stamps = _STAMP.findall(whole)
        if stamps and not self.first_event_ns:
            self.first_event_ns = now_ns
        self.delays_ns.extend(now_ns - int(stamp) for stamp in stamps)
        self.events += len(stamps)
        if b"response.completed" in whole:
            self.completed = True


@dataclass(slots=True)
class Result:
    status: int = 0
    sent_ns: int = 0
    first_byte_ns: int = 0
    done_ns: int = 0
    body_bytes: int = 0
    complete: bool = False
    error: str | None = None

    @property
    def ttfb_ns(self) -> int:
        return self.first_byte_ns - self.sent_ns

    @property
    def seconds(self) -> float:
        return (self.done_ns - self.sent_ns) / 1e9


HEAD, LENGTH, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER, UNTIL_CLOSE, DONE = range(8)


class Connection(asyncio.BufferedProtocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, bufsize: int) -> None:
        self.buffer = bytearray(bufsize)
        self.view = memoryview(self.buffer)
        self.transport: asyncio.Transport | None = None
        self.state = DONE
        self.left = 0
        self.line = bytearray()
        self.head = bytearray()
        self.sink = Sink()
        self.result = Result()
        self.waiter: asyncio.Future[Result] | None = None
        self.reusable = True
        self.closed = False
        self.rate = 0.0
        self.read_start = 0.0
        self.read_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self.state == UNTIL_CLOSE:
            self._finish(time.monotonic_ns())
        elif self.state != DONE:
            self.result.error = f"connection closed mid-response: {exc or 'EOF'}"
            self.state = DONE
            self._resolve()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        now = time.monotonic_ns()
        if not self.result.first_byte_ns:
            self.result.first_byte_ns = now
        self._feed(self.view[:nbytes], now)
        if self.rate and self.state != DONE and self.transport is not None:
            self.read_bytes += nbytes
            due = self.read_start + self.read_bytes / self.rate
            wait = due - time.monotonic()
            if wait > 0:
                self.transport.pause_reading()
                asyncio.get_running_loop().call_later(wait, self._resume)

    def _resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        return None

    def send(self, request: bytes, sink: Sink, rate: float = 0.0) -> asyncio.Future[Result]:
        """Send one request; the future resolves when its response has fully arrived."""
        assert self.transport is not None
        assert self.state == DONE
        self.waiter = asyncio.get_running_loop().create_future()
        self.sink, self.result, self.state = sink, Result(), HEAD
        self.head.clear()
        self.rate, self.read_start, self.read_bytes = rate, time.monotonic(), 0
        self.result.sent_ns = time.monotonic_ns()
        self.transport.write(request)
        return self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _resolve(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.result)

    def _finish(self, now: int) -> None:
        self.state = DONE
        self.result.complete = self.result.error is None
        self.result.done_ns = now
        self._resolve()

    def _read_line(self, data: memoryview, pos: int, end: int) -> tuple[bytes | None, int]:
        piece = bytes(data[pos : min(end, pos + 256)])
        newline = piece.find(b"\n")
        if newline < 0:
            self.line += piece
            if len(self.line) > 4096:
                raise ValueError("chunk size line too long")
            return None, pos + len(piece)
        self.line += piece[: newline + 1]
        line = bytes(self.line).strip()
        self.line.clear()
        return line, pos + newline + 1

    def _feed(self, data: memoryview, now: int) -> None:
        try:
            self._parse(data, now)
        except ValueError as exc:
            self.result.error = f"bad response: {exc}"
            self.state = DONE
            self.reusable = False
            self._resolve()
            self.close()

    def _parse(self, data: memoryview, now: int) -> None:
        pos, end = 0, len(data)
        while pos < end and self.state != DONE:
            state = self.state
            if state == HEAD:
                self.head += data[pos:end]
                found = self.head.find(b"\r\n\r\n")
                if found < 0:
                    return
                rest = len(self.head) - found - 4
                self._start_body(bytes(self.head[:found]), now)
                pos = end - rest
            elif state in (LENGTH, CHUNK_DATA, UNTIL_CLOSE):
                take = end - pos if state == UNTIL_CLOSE else min(self.left, end - pos)
                self.result.body_bytes += take
                self.sink.feed(data[pos : pos + take], now)
                pos += take
                self.left -= take
                if self.left == 0 and state == LENGTH:
                    self._finish(now)
                elif self.left == 0 and state == CHUNK_DATA:
                    self.state, self.left = CHUNK_CRLF, 2
            elif state == CHUNK_CRLF:
                take = min(self.left, end - pos)
                pos += take
                self.left -= take
                if self.left == 0:
                    self.state = CHUNK_SIZE
            else:
                line, pos = self._read_line(data, pos, end)
                if line is None:
                    return
                if state == TRAILER:
                    if not line:
                        self._finish(now)
                    continue
                size = int(line.split(b";")[0], 16)
                self.state, self.left = (CHUNK_DATA, size) if size else (TRAILER, 0)

    def _start_body(self, head: bytes, now: int) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ValueError(f"status line {lines[0][:80]!r}")
        self.result.status = int(parts[1])
        length, chunked = None, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection" and b"close" in value.lower():
                self.reusable = False
        if chunked:
            self.state = CHUNK_SIZE
        elif length is not None:
            self.state, self.left = LENGTH, length
            if length == 0:
                self._finish(now)
        else:
            self.state, self.reusable = UNTIL_CLOSE, False


async def connect(port: int, bufsize: int = 64 * 1024) -> Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: Connection(bufsize), "127.0.0.1", port)
    return protocol


class Client:
    """A connection to one target that reconnects when the server closes it."""

    def __init__(self, port: int, bufsize: int = 64 * 1024) -> None:
        self.port = port
        self.bufsize = bufsize
        self.connection: Connection | None = None

    async def fetch(
        self,
        path: str,
        body: bytes,
        sink: Sink | None = None,
        rate: float = 0.0,
        timeout: float = 60,
    ) -> Result:
        if self.connection is None or not self.connection.reusable:
            if self.connection is not None:
                self.connection.close()
            try:
                self.connection = await asyncio.wait_for(connect(self.port, self.bufsize), timeout)
            except (OSError, TimeoutError) as exc:
                self.connection = None
                return Result(error=f"connect: {exc!r}")
        request = request_bytes(path, f"127.0.0.1:{self.port}", body)
        waiter = self.connection.send(request, sink or Sink(), rate)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            self.connection.close()
            self.connection = None
            return Result(error=f"no complete response within {timeout:g} s")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
