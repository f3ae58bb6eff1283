"""Shared test helpers: settings for a test proxy and byte-exact HTTP over raw sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yarl import URL

from proxy.capture import Capture
from proxy.exchange import Exchange, Observer
from proxy.lifecycle import Lifecycle
from proxy.listener import Listener
from proxy.pool import ConnectError, UpstreamConnection
from proxy.settings import Settings


class Recorder(Observer):
    """An observer the tests add last: exchanges that ended, awaitable by count."""

    def __init__(self) -> None:
        self.ended_exchanges: list[Exchange] = []
        self._changed = asyncio.Condition()

    def ended(self, exchange: Exchange) -> None:
        self.ended_exchanges.append(exchange)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_ended(self, count: int = 1, timeout: float = 10) -> list[Exchange]:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.ended_exchanges) >= count)
        return self.ended_exchanges


@dataclass(slots=True, eq=False)
class RunningProxy:
    """A proxy listening on 127.0.0.1 in the test's own loop, as `serve` runs it."""

    listener: Listener
    lifecycle: Lifecycle
    recorder: Recorder
    port: int

    def make_url(self, path: str) -> URL:
        url = URL(path)
        assert not url.absolute
        return URL(f"http://127.0.0.1:{self.port}").join(url)

    async def close(self) -> None:
        await self.listener.close()


StartProxy = Callable[..., Awaitable[RunningProxy]]


def recorder(server: RunningProxy) -> Recorder:
    return server.recorder


def capture_of(server: RunningProxy) -> Capture:
    capture = server.listener.observers.find(Capture)
    assert capture is not None
    return capture


def settings_for(upstream_url: str, **sections: dict[str, Any]) -> Settings:
    """Built-in defaults pointed at a fake upstream, with some keys of some sections changed."""
    base = Settings()
    changes: dict[str, Any] = {"upstream": dataclasses.replace(base.upstream, url=upstream_url)}
    for name, values in sections.items():
        changes[name] = dataclasses.replace(changes.get(name, getattr(base, name)), **values)
    return dataclasses.replace(base, **changes)


@dataclass(slots=True)
class RawResponse:
    status_line: str
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool

    @property
    def status(self) -> int:
        return int(self.status_line.split(" ", 2)[1])

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


async def raw_request(port: int | None, data: bytes, *, timeout: float = 10) -> bytes:
    """Send bytes as they are, return everything the server sends until it closes."""
    assert port is not None, "the server is not started"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()


async def read_until_closed(reader: asyncio.StreamReader, *, timeout: float = 5) -> bytes:
    """What the server sends until it hangs up (b"" for a reset); TimeoutError if it
    does not hang up within `timeout`."""
    async with asyncio.timeout(timeout):
        try:
            return await reader.read()
        except ConnectionError:
            return b""


async def stall_count(progress: asyncio.Event, count: Callable[[], int]) -> int:
    """Wait until a sender stops making progress (no `progress` for 0.5 s) and return
    its count then: how far backpressure let it go."""
    stalled_at = -1
    while stalled_at != count():
        stalled_at = count()
        progress.clear()
        try:
            async with asyncio.timeout(0.5):
                await progress.wait()
        except TimeoutError:
            break
    return stalled_at


async def read_head_and_body(reader: asyncio.StreamReader) -> RawResponse:
    """Read one Content-Length response without waiting for the connection to close."""
    head = await reader.readuntil(b"\r\n\r\n")
    response = parse_response(head)
    response.body = await reader.readexactly(int(response.header("content-length") or 0))
    response.complete = True
    return response


def parse_response(raw: bytes) -> RawResponse:
    """Parse one HTTP/1.1 response, de-chunking; `complete` says whether it ended cleanly."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    response = RawResponse(lines[0], headers, b"", complete=False)
    if (response.header("transfer-encoding") or "").lower() == "chunked":
        body = bytearray()
        while True:
            size_line, crlf, rest = rest.partition(b"\r\n")
            if not crlf:
                break
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                response.complete = rest.startswith(b"\r\n")
                break
            if len(rest) < size + 2:
                body += rest[:size]
                break
            body += rest[:size]
            rest = rest[size + 2 :]
        response.body = bytes(body)
    elif (length := response.header("content-length")) is not None:
        response.body = rest[: int(length)]
        response.complete = len(rest) >= int(length)
    else:
        response.body = rest
        response.complete = True
    return response


class Taker:
    """A waiter for the pool, as a relay is one: what it was given."""

    def __init__(self) -> None:
        self.given: asyncio.Future[UpstreamConnection] = asyncio.get_running_loop().create_future()

    def attach(self, connection: UpstreamConnection) -> None:
        self.given.set_result(connection)

    def connect_failed(self, error: ConnectError) -> None:
        self.given.set_exception(error)


async def run_isolated(unshare: str, setup: str, driver: str) -> Any:
    """Run `python -m <driver>` under `unshare <unshare>` after `setup` (shell), from the
    repository's root (root and unshare needed, as CI has); what it printed, as JSON."""
    root = Path(__file__).parent.parent
    process = await asyncio.create_subprocess_exec(
        "unshare",
        unshare,
        "sh",
        "-c",
        f"{setup} && exec {sys.executable} -m {driver}",
        cwd=root,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-2000:]
    return json.loads(out)
