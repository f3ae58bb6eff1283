"""The bench's fast upstream: a raw asyncio HTTP/1.1 server standing in for chatgpt.com.

Only `/backend-api/codex/responses` answers 200, so a comparator that does not rewrite
(or drops the `session_id` header, as nginx does without `underscores_in_headers`)
fails the run instead of being measured. What it answers is chosen by the query, which
every proxy passes unchanged:

  ?w=small                      a 300 B JSON body (Content-Length)
  ?w=sse&n=200&size=100&every_ms=10
                                n SSE events of ~size bytes, chunked, each carrying
                                "t": time.monotonic_ns() taken just before it is written
  ?w=line&mb=4                  one SSE event whose single data: line is mb MB
  ?w=body&mb=50                 mb MB of application/octet-stream (Content-Length)

Faults, for the soak (bench/soak.py):
  ?w=sse&cut_after=K            the connection is cut after K events (no clean end)
  ?w=stall&seconds=S            SSE headers, then S seconds of silence, then the end
  ?w=status&code=C              status C with a JSON error body
  ?w=drop                       the connection is closed without any response

Run as a process: `python upstream.py --port 0` prints `port N` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys
import time
from collections.abc import Coroutine
from typing import Any
from urllib.parse import parse_qsl

CANONICAL = b"/backend-api/codex/responses"
SMALL_BODY = (
    b'{"id":"resp_bench","object":"response","status":"completed","model":"gpt-5-codex",'
    b'"output":[{"type":"message","role":"assistant","content":[{"type":"output_text",'
    b'"text":"ok"}]}],"usage":{"input_tokens":512,"output_tokens":1,"total_tokens":513}'
)
SMALL_BODY += b" " * (300 - len(SMALL_BODY) - 1) + b"}"
MB = 1 << 20
# One shared 64 MiB source of body bytes: responses are slices of it, never copies.
_BLOB = memoryview(bytes(range(33, 123)) * (64 * MB // 90 + 1))
SLICE = 256 * 1024


def _head(status: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [b"HTTP/1.1 " + status]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


SMALL_RESPONSE = (
    _head(
        b"200 OK",
        [
            (b"Content-Type", b"application/json"),
            (b"Content-Length", str(len(SMALL_BODY)).encode()),
            (b"x-request-id", b"req_bench"),
        ],
    )
    + SMALL_BODY
)
SSE_HEAD = _head(
    b"200 OK",
    [
        (b"Content-Type", b"text/event-stream; charset=utf-8"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Cache-Control", b"no-cache"),
    ],
)


def _plain(status: bytes, text: bytes) -> bytes:
    return (
        _head(
            status,
            [(b"Content-Type", b"text/plain"), (b"Content-Length", str(len(text)).encode())],
        )
        + text
    )


def chunk(data: bytes | memoryview) -> list[bytes | memoryview]:
    return [b"%x\r\n" % len(data), data, b"\r\n"]


def delta_event(seq: int, size: int) -> bytes:
    """One token event of about `size` bytes, stamped with the monotonic clock when built."""
    head = b'event: delta\ndata: {"type":"response.output_text.delta","seq":%d,"t":%d,"delta":"' % (
        seq,
        time.monotonic_ns(),
    )
    pad = max(1, size - len(head) - 4)
    return head + b"x" * pad + b'"}\n\n'


def completed_event(seq: int) -> bytes:
    return (
        b'event: response.completed\ndata: {"type":"response.completed",'
        b'"sequence_number":%d,"response":{"status":"completed"}}\n\n' % seq
    )


class Request:
    __slots__ = ("headers", "method", "target")

    def __init__(self, method: bytes, target: bytes, headers: dict[bytes, bytes]) -> None:
        self.method = method
        self.target = target
        self.headers = headers


class UpstreamProtocol(asyncio.Protocol):
    """One client connection: parse requests one at a time, answer each in turn."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.request: Request | None = None
        self.body_left = 0
        self.chunked = False
        self.busy: asyncio.Task[None] | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        transport.set_write_buffer_limits(high=1 * MB)  # type: ignore[attr-defined]
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable.set()
        if self.busy is not None:
            self.busy.cancel()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._advance()

    def _advance(self) -> None:
        while self.busy is None and not self.closed:
            if self.request is None and not self._parse_head():
                return
            if not self._consume_body():
                return
            request, self.request = self.request, None
            assert request is not None
            self._answer(request)

    def _parse_head(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self.buffer[:end]).split(b"\r\n")
        del self.buffer[: end + 4]
        method, target, _ = lines[0].split(b" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        self.request = Request(method, target, headers)
        self.chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        self.body_left = 0 if self.chunked else int(headers.get(b"content-length", b"0"))
        return True

    def _consume_body(self) -> bool:
        """Drop the request body; True once all of it has arrived."""
        if not self.chunked:
            take = min(self.body_left, len(self.buffer))
            del self.buffer[:take]
            self.body_left -= take
            return self.body_left == 0
        while True:
            if self.body_left > 0:
                take = min(self.body_left, len(self.buffer))
                del self.buffer[:take]
                self.body_left -= take
                if self.body_left > 0:
                    return False
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                return False
            line = bytes(self.buffer[:line_end])
            if line == b"" and self.body_left == -1:
                del self.buffer[:2]
                self.body_left = 0
                return True
            if self.body_left == -1:  # a trailer line after the last chunk
                del self.buffer[: line_end + 2]
                continue
            size = int(line.split(b";")[0], 16)
            del self.buffer[: line_end + 2]
            # The CRLF after each chunk's data is dropped with the next size line.
            self.body_left = size + 2 if size else -1
            if size:
                continue

    def _answer(self, request: Request) -> None:
        assert self.transport is not None
        path, _, query = request.target.partition(b"?")
        if path != CANONICAL:
            self.transport.write(_plain(b"404 Not Found", b"not rewritten: " + path))
            return
        if b"session_id" not in request.headers:
            self.transport.write(_plain(b"400 Bad Request", b"session_id header lost"))
            return
        params = dict(parse_qsl(query.decode()))
        kind = params.get("w", "small")
        if kind == "small":
            self.transport.write(SMALL_RESPONSE)
            return
        if kind == "status":
            code = int(params.get("code", "500"))
            self.transport.write(_plain(b"%d Error" % code, b'{"error":{"message":"bench"}}'))
            return
        if kind == "drop":
            self.transport.close()
            return
        if kind == "sse":
            work = self._sse(
                int(params.get("n", "200")),
                int(params.get("size", "100")),
                float(params.get("every_ms", "0")) / 1000,
                int(params.get("cut_after", "-1")),
            )
        elif kind == "stall":
            work = self._stall(float(params.get("seconds", "1")))
        elif kind == "line":
            work = self._line(int(float(params.get("mb", "4")) * MB))
        elif kind == "body":
            work = self._body(int(float(params.get("mb", "50")) * MB))
        else:
            self.transport.write(_plain(b"400 Bad Request", b"unknown w"))
            return
        self.busy = asyncio.get_running_loop().create_task(self._run(work))

    async def _run(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except (asyncio.CancelledError, ConnectionError):
            return
        self.busy = None
        self._advance()

    async def _write(self, *parts: bytes | memoryview) -> None:
        assert self.transport is not None
        if self.closed:
            raise ConnectionError
        self.transport.writelines(parts)
        if not self.writable.is_set():
            await self.writable.wait()
        if self.closed:
            raise ConnectionError

    async def _sse(self, n: int, size: int, every: float, cut_after: int = -1) -> None:
        await self._write(SSE_HEAD)
        for seq in range(n):
            if seq == cut_after:
                assert self.transport is not None
                self.transport.abort()
                raise ConnectionError
            if every:
                await asyncio.sleep(every)
            else:
                # As fast as possible, yet one write per event, as a model server sends.
                await asyncio.sleep(0)
            await self._write(*chunk(delta_event(seq, size)))
        await self._write(*chunk(completed_event(n)), b"0\r\n\r\n")

    async def _stall(self, seconds: float) -> None:
        await self._write(SSE_HEAD)
        await asyncio.sleep(seconds)
        await self._write(*chunk(completed_event(0)), b"0\r\n\r\n")

    async def _line(self, size: int) -> None:
        prefix = (
            b"event: response.image_generation_call.partial_image\n"
            b'data: {"type":"response.image_generation_call.partial_image",'
            b'"sequence_number":0,"partial_image_b64":"'
        )
        suffix = b'"}\n\n'
        payload = _BLOB[: max(0, size - len(prefix) - len(suffix))]
        await self._write(SSE_HEAD, b"%x\r\n" % (len(prefix) + len(payload) + len(suffix)), prefix)
        for start in range(0, len(payload), SLICE):
            await self._write(payload[start : start + SLICE])
        await self._write(suffix, b"\r\n", *chunk(completed_event(1)), b"0\r\n\r\n")

    async def _body(self, size: int) -> None:
        await self._write(
            _head(
                b"200 OK",
                [
                    (b"Content-Type", b"application/octet-stream"),
                    (b"Content-Length", str(size).encode()),
                ],
            )
        )
        for start in range(0, size, SLICE):
            await self._write(_BLOB[start : min(size, start + SLICE)])


async def serve(
    port: int, ready: asyncio.Future[int] | None = None, tls: ssl.SSLContext | None = None
) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        UpstreamProtocol, "127.0.0.1", port, backlog=4096, reuse_address=True, ssl=tls
    )
    bound = server.sockets[0].getsockname()[1]
    if ready is not None:
        ready.set_result(bound)
    else:
        print(f"port {bound}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS (W6)")
    args = parser.parse_args()
    tls = None
    if args.tls:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(*args.tls)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop  # noqa: PLC0415  (optional: a faster loop for the bench's own side)
        except ImportError:
            asyncio.run(serve(args.port, tls=tls))
        else:
            uvloop.run(serve(args.port, tls=tls))
    sys.exit(0)


if __name__ == "__main__":
    main()
