"""WebSocket written by hand (RFC 6455), for peers no library would play: frames of any
announced length, a client that stops mid-frame, an upstream that answers the upgrade
and then does as a test says."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from tests.harness import parse_response

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
PATH = "/backend-api/codex/responses"


def accept_for(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def upgrade_request(path: str = PATH, key: bytes | None = None) -> bytes:
    key = key or base64.b64encode(os.urandom(16))
    return (
        f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key.decode()}\r\n\r\n"
    ).encode()


def frame_head(opcode: int, length: int, *, mask: bytes | None, fin: bool = True) -> bytes:
    """A frame's header announcing `length` payload bytes (any 64-bit length, sent or not)."""
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if mask is not None else 0
    if length < 126:
        head = struct.pack("!BB", first, bit | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, bit | 127, length)
    return head + (mask or b"")


def masked(payload: bytes, mask: bytes, offset: int = 0) -> bytes:
    """`payload` XOR the mask, starting `offset` bytes into the frame's payload."""
    if not payload:
        return b""
    size = len(payload)
    turned = mask[offset % 4 :] + mask[: offset % 4]
    key = (turned * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")


def frame(opcode: int, payload: bytes = b"", *, client: bool = True, fin: bool = True) -> bytes:
    """A whole frame: masked as a client sends it, plain as a server does."""
    mask = os.urandom(4) if client else None
    body = masked(payload, mask) if mask is not None else payload
    return frame_head(opcode, len(payload), mask=mask, fin=fin) + body


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


async def read_frame(reader: asyncio.StreamReader, *, limit: int = 64 << 20) -> tuple[int, bytes]:
    """One frame's opcode and payload (unmasked); a frame over `limit` is a test failure."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    assert length <= limit, f"a frame of {length} bytes"
    mask = await reader.readexactly(4) if second & 0x80 else None
    payload = await reader.readexactly(length)
    return first & 0x0F, masked(payload, mask) if mask is not None else payload


async def connect(port: int, path: str = PATH) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client's session through the proxy on `port`, its 101 read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(path))
    head = parse_response(await reader.readuntil(b"\r\n\r\n"))
    assert head.status == 101, head
    return reader, writer


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[Any]]


class RawUpstream:
    """A WebSocket upstream by hand on 127.0.0.1: a valid 101 to each upgrade, then the
    session is `script`'s; what each script returned is put in `ended`. A connection
    that never sends a head (the proxy's warm spare) is let be."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.heads: list[bytes] = []
        self.ended: asyncio.Queue[Any] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_for(key) + b"\r\n\r\n"
            )
            self.ended.put_nowait(await self.script(reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # a spare the proxy closed unused, or a session a test ended abruptly
        finally:
            writer.close()
            self._sessions.discard(task)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._sessions):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._sessions, return_exceptions=True)
        await self._server.wait_closed()
